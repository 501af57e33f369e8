//! Minimal hand-written SVG line charts (no plotting dependency).

use std::fmt::Write;

pub struct Series<'a> {
    pub name: &'a str,
    pub xs: &'a [f64],
    pub ys: &'a [f64],
}

/// Line colours, in the order series are drawn.
pub const PALETTE: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939",
];

/// `s` as SVG text: `&`, `<` and `>` escaped.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG document of `w` × `h` on a white background, open for the chart's elements; the
/// caller closes it with `</svg>`.
pub fn open(w: f64, h: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    s
}

/// A line chart. With `log_y`, values are plotted as log10(1 + y) with decade ticks.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> String {
    let (w, h) = (900.0, 420.0);
    let (left, right, top, bottom) = (80.0, 190.0, 40.0, 50.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let ty = |y: f64| if log_y { (1.0 + y.max(0.0)).log10() } else { y };
    let xmax = series
        .iter()
        .flat_map(|s| s.xs.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mut ymax = series
        .iter()
        .flat_map(|s| s.ys.iter().map(|&y| ty(y)))
        .filter(|y| y.is_finite())
        .fold(0.0f64, f64::max);
    if log_y {
        ymax = ymax.ceil().max(1.0);
    } else {
        ymax = nice_ceiling(ymax.max(1e-9));
    }
    let px = |x: f64| left + pw * x / xmax;
    let py = |y: f64| top + ph * (1.0 - ty(y) / ymax);
    let mut s = open(w, h);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        esc(title)
    );
    // Axes and grid.
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let yticks: Vec<(f64, String)> = if log_y {
        // Ticks at 0, 1, 10, 100, … placed where log10(1 + v) puts them.
        std::iter::once(0.0)
            .chain((0..=ymax as i32).map(|d| 10f64.powi(d)))
            .map(|v| (py(v), tick_label(v)))
            .collect()
    } else {
        (0..=5)
            .map(|i| {
                let v = ymax * i as f64 / 5.0;
                (top + ph * (1.0 - i as f64 / 5.0), tick_label(v))
            })
            .collect()
    };
    for (y, label) in yticks {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left + pw,
            left - 6.0,
            y + 4.0
        );
    }
    let xstep = nice_ceiling(xmax / 6.0);
    let mut x = 0.0;
    while x <= xmax + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{top}" x2="{:.1}" y2="{}" stroke="#eee"/><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
            px(x),
            px(x),
            top + ph,
            px(x),
            top + ph + 16.0,
            tick_label(x)
        );
        x += xstep;
    }
    axis_titles(
        &mut s,
        (left + pw / 2.0, h - 12.0),
        top + ph / 2.0,
        x_label,
        y_label,
    );
    for (i, se) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut d = String::new();
        for (j, (&x, &y)) in se.xs.iter().zip(se.ys).enumerate() {
            if !y.is_finite() {
                continue;
            }
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if j == 0 { "M" } else { " L" },
                px(x),
                py(y)
            );
        }
        let _ = writeln!(
            s,
            r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.6"/>"#
        );
        legend_entry(&mut s, i, left + pw, top, color, se.name);
    }
    s.push_str("</svg>\n");
    s
}

/// The axis titles: `x_label` centred on `x_at`, `y_label` turned upright along the left edge,
/// centred at height `y_middle`.
pub fn axis_titles(s: &mut String, x_at: (f64, f64), y_middle: f64, x_label: &str, y_label: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        x_at.0,
        x_at.1,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        y_middle,
        esc(y_label)
    );
}

/// The legend entry of the `i`-th series, in the right margin of a plot area that ends at
/// `right` and starts at `top`: a short stroke in `color`, then `name`.
pub fn legend_entry(s: &mut String, i: usize, right: f64, top: f64, color: &str, name: &str) {
    let ly = top + 14.0 + 18.0 * i as f64;
    let lx = right + 12.0;
    let _ = writeln!(
        s,
        r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
        lx + 18.0,
        lx + 24.0,
        ly + 4.0,
        esc(name)
    );
}

/// The smallest of 1, 2, 2.5, 5 and 10 times a power of ten that is at least `v`: a round top
/// for an axis.
pub fn nice_ceiling(v: f64) -> f64 {
    let e = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * e >= v {
            return m * e;
        }
    }
    10.0 * e
}

/// An axis tick: from 10 000 in k and from a million in M (a decimal only when needed), a
/// whole number from 10, two decimals below that unless whole.
pub fn tick_label(v: f64) -> String {
    let short = |x: f64, suffix: &str| {
        if (x - x.round()).abs() < 1e-9 {
            format!("{x:.0}{suffix}")
        } else {
            format!("{x:.1}{suffix}")
        }
    };
    if v >= 1e6 {
        short(v / 1e6, "M")
    } else if v >= 1e4 {
        short(v / 1e3, "k")
    } else if v >= 10.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_well_formed_svg() {
        let xs = [0.0, 10.0, 20.0];
        let ys = [0.0, 5.0, 1e4];
        let svg = line_chart(
            "t<1>",
            "x",
            "y",
            &[Series {
                name: "a&b",
                xs: &xs,
                ys: &ys,
            }],
            true,
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t&lt;1&gt;") && svg.contains("a&amp;b"));
        assert_eq!(svg.matches("<path").count(), 1);
    }
}
