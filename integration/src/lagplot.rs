//! A hand-written SVG line chart of lag over time (no plotting dependency), for the demo and the
//! end-to-end benchmark. Same approach as `sim/src/svg.rs`, whose pieces it uses (escaping, axis
//! tops and titles, legend), plus vertical event markers (agent triggers) and several panels
//! stacked in one file.

use std::fmt::Write;

use lagbalance_sim::svg::{
    self, axis_titles, esc, legend_entry, nice_ceiling, tick_label, PALETTE,
};

/// One line.
pub struct Series<'a> {
    pub name: String,
    /// `(x, y)` points, x ascending.
    pub points: &'a [(f64, f64)],
}

/// A vertical dashed line at `x` labelled `label` (e.g. an agent's trigger).
pub struct Marker {
    pub x: f64,
    pub label: String,
}

/// One chart.
pub struct Panel<'a> {
    pub title: String,
    pub series: Vec<Series<'a>>,
    pub markers: Vec<Marker>,
}

const W: f64 = 900.0;
const H: f64 = 340.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 46.0;

/// Panels stacked vertically in one SVG, sharing the x range and (if `same_y`) the y range, so
/// two runs can be compared at a glance.
pub fn chart(panels: &[Panel], x_label: &str, y_label: &str, same_y: bool) -> String {
    let xmax = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0)))
        .fold(1e-9f64, f64::max);
    let ymax_of = |p: &Panel| {
        p.series
            .iter()
            .flat_map(|s| s.points.iter().map(|q| q.1))
            .filter(|y| y.is_finite())
            .fold(1.0f64, f64::max)
    };
    let shared = panels.iter().map(ymax_of).fold(1.0f64, f64::max);
    let total_h = H * panels.len().max(1) as f64;
    let mut s = svg::open(W, total_h);
    for (i, p) in panels.iter().enumerate() {
        let ymax = nice_ceiling(if same_y { shared } else { ymax_of(p) });
        panel(&mut s, p, H * i as f64, xmax, ymax, x_label, y_label);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, p: &Panel, y0: f64, xmax: f64, ymax: f64, x_label: &str, y_label: &str) {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let top = y0 + TOP;
    let px = |x: f64| LEFT + pw * x / xmax;
    let py = |y: f64| top + ph * (1.0 - y.clamp(0.0, ymax) / ymax);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        y0 + 22.0,
        esc(&p.title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    for i in 0..=5 {
        let v = ymax * i as f64 / 5.0;
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            tick_label(v)
        );
    }
    let xstep = nice_ceiling(xmax / 6.0);
    let mut x = 0.0;
    while x <= xmax + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{1}" stroke="#eee"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            px(x),
            top + ph,
            top + ph + 16.0,
            tick_label(x)
        );
        x += xstep;
    }
    let x_at = (LEFT + pw / 2.0, y0 + H - 10.0);
    axis_titles(s, x_at, top + ph / 2.0, x_label, y_label);
    for m in &p.markers {
        let x = px(m.x.clamp(0.0, xmax));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="4,3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
            top + ph,
            x + 3.0,
            top + 12.0,
            esc(&m.label)
        );
    }
    for (i, se) in p.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut d = String::new();
        for &(x, y) in se.points.iter().filter(|q| q.1.is_finite()) {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if d.is_empty() { "M" } else { " L" },
                px(x),
                py(y)
            );
        }
        let width = if i == 0 { 2.2 } else { 1.4 };
        let _ = writeln!(
            s,
            r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="{width}"/>"#
        );
        legend_entry(s, i, LEFT + pw, top, color, &se.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_panels_with_markers_are_well_formed() {
        let a = [(0.0, 0.0), (10.0, 500.0), (20.0, 1e4)];
        let b = [(0.0, 3.0), (20.0, 7.0)];
        let svg = chart(
            &[
                Panel {
                    title: "x<y".into(),
                    series: vec![Series {
                        name: "a&b".into(),
                        points: &a,
                    }],
                    markers: vec![Marker {
                        x: 5.0,
                        label: "trigger".into(),
                    }],
                },
                Panel {
                    title: "second".into(),
                    series: vec![Series {
                        name: "b".into(),
                        points: &b,
                    }],
                    markers: vec![],
                },
            ],
            "s",
            "records",
            true,
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("x&lt;y") && svg.contains("a&amp;b"));
        assert_eq!(svg.matches("<path").count(), 2);
        assert_eq!(svg.matches("stroke-dasharray").count(), 1);
    }
}
