//! Tables and plots of [`crate::e2e`] runs, for the demo and the end-to-end benchmark.

use std::time::Duration;

use crate::e2e::{capacity_rebalances, Rebalance, RunResult};
use crate::lagplot::{chart, Marker, Panel, Series};

/// A table: a header row and rows of cells.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// GitHub markdown; the first column left-aligned, the others right-aligned.
    pub fn markdown(&self) -> String {
        let mut s = format!("| {} |\n|", self.header.join(" | "));
        for i in 0..self.header.len() {
            s.push_str(if i == 0 { "---|" } else { "---:|" });
        }
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        s
    }

    /// Aligned plain text for a terminal.
    pub fn text(&self) -> String {
        let n = self.header.len();
        let width = |i: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..n).map(width).collect();
        let line = |r: &Vec<String>| {
            r.iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        format!("{c:<w$}", w = widths[i])
                    } else {
                        format!("{c:>w$}", w = widths[i])
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut s = line(&self.header);
        s.push('\n');
        for r in &self.rows {
            s.push_str(&line(r));
            s.push('\n');
        }
        s
    }
}

/// The steady window of a run: the second half of its input.
pub fn steady_window(r: &RunResult) -> (f64, f64) {
    (r.produce_s / 2.0, r.produce_s)
}

/// A figure as a table cell: one decimal, "-" when unknown.
pub fn one_decimal(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1}"))
}

/// A rebalance's partitions paused ÷ moved as a table cell: "-" when nothing paused or moved,
/// `N/0` when partitions paused but none changed owner.
pub fn paused_per_moved(b: &Rebalance) -> String {
    match b.moved {
        0 if b.paused == 0 => "-".into(),
        0 => format!("{}/0", b.paused),
        m => format!("{:.2}", b.paused as f64 / m as f64),
    }
}

/// A rebalance's start → stable time as a table cell: "no move" when no partition callback
/// ran, "never" when ownership did not hold still within its window.
pub fn time_to_stable(b: &Rebalance) -> String {
    match (b.stable_after, b.callbacks) {
        (_, 0) => "no move".into(),
        (Some(s), _) => format!("{s:.1}"),
        (None, _) => "never".into(),
    }
}

/// Runs side by side (one column each): throughput, lag, partitions, triggers and what they
/// caused, the audit.
pub fn comparison(runs: &[&RunResult], rate: f64, quiet: Duration) -> Table {
    let mut header = vec![String::new()];
    header.extend(runs.iter().map(|r| r.label.clone()));
    let row = |name: &str, f: &dyn Fn(&RunResult) -> String| {
        let mut v = vec![name.to_owned()];
        v.extend(runs.iter().map(|r| f(r)));
        v
    };
    // One cell per capacity-driven rebalance of the run, space-separated; "-" for none.
    let per_rebalance = |r: &RunResult, cell: &dyn Fn(&Rebalance) -> String| {
        let v = capacity_rebalances(r, quiet);
        if v.is_empty() {
            return "-".to_string();
        }
        v.iter().map(cell).collect::<Vec<_>>().join(" ")
    };
    let rows = vec![
        row("input (records/s)", &|_| format!("{rate:.0}")),
        row("records produced", &|r| r.produced.to_string()),
        row("consumed/s, 2nd half of input", &|r| {
            let (a, b) = steady_window(r);
            one_decimal(r.consumed_rate(a, b))
        }),
        row("group lag trend, 2nd half (records/s)", &|r| {
            let (a, b) = steady_window(r);
            one_decimal(r.lag_slope(a, b))
        }),
        row("group lag when input stopped", &|r| {
            r.lag_at_end_of_input().to_string()
        }),
        row("p99 group lag while producing", &|r| {
            r.p99_lag().to_string()
        }),
        row("peak group lag", &|r| r.peak_lag().to_string()),
        row("partitions per member at the end", &|r| {
            r.final_partitions()
                .iter()
                .map(|(n, c)| format!("{n}:{c}"))
                .collect::<Vec<_>>()
                .join(" ")
        }),
        row("agent triggers (s after input began)", &|r| {
            if r.triggers.is_empty() {
                "none".into()
            } else {
                r.triggers
                    .iter()
                    .map(|t| format!("{}@{:.0}", t.member, r.t_of(t.ts_ms)))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }),
        row("moves: after input began, per trigger", &|r| {
            per_rebalance(r, &|b| b.moved.to_string())
        }),
        row("  paused ÷ moved", &|r| {
            per_rebalance(r, &paused_per_moved)
        }),
        row("  stable after (s)", &|r| per_rebalance(r, &time_to_stable)),
        row("audit: overlaps, unowned reads", &|r| match &r.audit {
            None => "n/a".into(),
            Some(a) => format!("{}, {}", a.overlaps.len(), a.unowned_consumption.len()),
        }),
        row("audit: redelivered, unconsumed", &|r| match &r.audit {
            None => "n/a".into(),
            Some(a) => format!("{}, {}", a.duplicates, a.missing.len()),
        }),
    ];
    Table { header, rows }
}

/// One panel per run: group lag and each member's lag, agent triggers as dashed lines.
pub fn lag_svg(runs: &[&RunResult], title_suffix: &str) -> String {
    let data: Vec<Vec<Vec<(f64, f64)>>> = runs
        .iter()
        .map(|r| {
            let mut series = vec![r
                .samples
                .iter()
                .map(|s| (s.t, s.group_lag as f64))
                .collect::<Vec<_>>()];
            let names: Vec<String> = r
                .samples
                .first()
                .map(|s| s.members.iter().map(|m| m.name.clone()).collect())
                .unwrap_or_default();
            series.push(
                r.samples
                    .iter()
                    .map(|s| (s.t, s.unowned_lag as f64))
                    .collect(),
            );
            for (i, _) in names.iter().enumerate() {
                series.push(
                    r.samples
                        .iter()
                        .map(|s| (s.t, s.members.get(i).map_or(0.0, |m| m.lag as f64)))
                        .collect(),
                );
            }
            series
        })
        .collect();
    let panels: Vec<Panel> = runs
        .iter()
        .zip(&data)
        .map(|(r, series)| {
            let names: Vec<String> = r
                .samples
                .first()
                .map(|s| s.members.iter().map(|m| m.name.clone()).collect())
                .unwrap_or_default();
            let mut out = vec![Series {
                name: "group".into(),
                points: &series[0],
            }];
            out.push(Series {
                name: "unowned (moving)".into(),
                points: &series[1],
            });
            for (i, n) in names.iter().enumerate() {
                out.push(Series {
                    name: format!("member {n}"),
                    points: &series[i + 2],
                });
            }
            let mut markers: Vec<Marker> = r
                .triggers
                .iter()
                .map(|t| Marker {
                    x: r.t_of(t.ts_ms),
                    label: format!("agent {} acts", t.member),
                })
                .collect();
            markers.push(Marker {
                x: r.produce_s,
                label: "input stops".into(),
            });
            Panel {
                title: format!("{}{title_suffix}", r.label),
                series: out,
                markers,
            }
        })
        .collect();
    chart(&panels, "seconds since input began", "lag (records)", true)
}
