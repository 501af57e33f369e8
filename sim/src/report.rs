//! Scenario evaluation: bisection for the sustainable load, one detailed run per strategy at
//! the scenario's nominal load, a markdown table, acceptance checks and SVG plots.

use std::fmt::Write;

use crate::engine::{
    max_sustainable, max_sustainable_with_producer, run, run_with_producer, RunResult,
};
use crate::producer::ProducerMode;
use crate::scenario::Scenario;
use crate::strategies::Strategy;
use crate::svg::{line_chart, Series};

pub struct Row {
    pub strategy: Strategy,
    pub cooperative: bool,
    pub max_sustainable: f64,
    pub detail: RunResult,
}

pub struct ScenarioReport {
    pub rows: Vec<Row>,
    pub checks: Vec<(String, bool)>,
    pub markdown: String,
    /// `(file name, contents)`.
    pub svgs: Vec<(String, String)>,
}

impl ScenarioReport {
    pub fn row(&self, s: Strategy) -> Option<&Row> {
        self.rows.iter().find(|r| r.strategy == s)
    }
}

pub fn evaluate(sc: &Scenario, strategies: &[Strategy]) -> ScenarioReport {
    let rows: Vec<Row> = strategies
        .iter()
        .map(|&s| Row {
            strategy: s,
            cooperative: s.make(&sc.settings).cooperative(),
            max_sustainable: max_sustainable(sc, s),
            detail: run(sc, s, sc.load, true),
        })
        .collect();
    let mut rep = ScenarioReport {
        rows,
        checks: Vec::new(),
        markdown: String::new(),
        svgs: Vec::new(),
    };
    rep.checks = checks(sc, &rep);
    rep.markdown = markdown(sc, &rep);
    rep.svgs = plots(sc, &rep);
    rep
}

/// The acceptance targets of issue 4 that apply to this scenario.
pub fn checks(sc: &Scenario, rep: &ScenarioReport) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let lb = rep.row(Strategy::LagBalance);
    let st = rep.row(Strategy::CooperativeSticky);
    let rr = rep.row(Strategy::RoundRobin);
    for r in &rep.rows {
        out.push((
            format!(
                "{}: all {} plans passed cooperative::validate",
                r.strategy.name(),
                r.detail.plans_validated
            ),
            r.detail.plans_validated > 0,
        ));
    }
    match sc.name {
        "agoda" => {
            if let Some(lb) = lb {
                out.push((
                    format!(
                        "lagbalance sustains >= 98 % of capacity with bounded lag (got {:.1} %)",
                        lb.max_sustainable * 100.0
                    ),
                    lb.max_sustainable >= 0.98,
                ));
            }
            for r in [rr, st].into_iter().flatten() {
                out.push((
                    format!(
                        "{} sustains about 60 % (got {:.1} %)",
                        r.strategy.name(),
                        r.max_sustainable * 100.0
                    ),
                    (0.55..=0.65).contains(&r.max_sustainable),
                ));
            }
        }
        "hermes" => {
            if let Some(lb) = lb {
                out.push((
                    format!(
                        "lagbalance steady-state utilisation spread <= 5 pp (got {:.2} pp)",
                        lb.detail.util_spread_pp
                    ),
                    lb.detail.util_spread_pp <= 5.0,
                ));
            }
        }
        "hot-partitions" => {
            if let (Some(lb), Some(st)) = (lb, st) {
                out.push((
                    format!(
                        "lagbalance p99 lag <= 0.2 x cooperative-sticky's ({:.0} vs {:.0} records)",
                        lb.detail.lag_p99, st.detail.lag_p99
                    ),
                    lb.detail.lag_p99 <= 0.2 * st.detail.lag_p99,
                ));
            }
        }
        "noisy-neighbour" => {
            if let Some(lb) = lb {
                out.push((
                    format!(
                        "lagbalance: group lag back under its pre-event level ({:.0} records) without human action, after {}",
                        lb.detail.pre_event_lag.unwrap_or(0.0),
                        lb.detail
                            .recovery_s
                            .map_or("never".to_string(), |s| format!("{s:.0} s"))
                    ),
                    lb.detail.recovery_s.is_some(),
                ));
            }
        }
        "oscillating" => {
            if let Some(lb) = lb {
                out.push((
                    format!(
                        "lagbalance: at most {} triggered rebalances in any hour (got {})",
                        sc.triggers.budget_per_hour, lb.detail.max_rebalances_per_hour
                    ),
                    lb.detail.max_rebalances_per_hour <= sc.triggers.budget_per_hour,
                ));
                out.push((
                    format!(
                        "lagbalance: no partition moved twice within the {} s stabilisation window (got {} such moves)",
                        sc.settings.stabilisation_window_ms / 1000,
                        lb.detail.double_moves
                    ),
                    lb.detail.double_moves == 0,
                ));
            }
        }
        _ => {}
    }
    out
}

fn markdown(sc: &Scenario, rep: &ScenarioReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### `{}` — {}\n", sc.name, sc.description);
    let _ = writeln!(
        s,
        "Run: {:.0} s simulated, step {} s; detailed columns at {:.0} % load; rebalance round {} s, mover pause {} s.\n",
        sc.duration_s,
        sc.dt_s,
        sc.load * 100.0,
        sc.rebalance.round_s,
        sc.rebalance.move_pause_s
    );
    let _ = writeln!(
        s,
        "| strategy | protocol | max sustainable (% of capacity) | bounded at {:.0} % | p50 lag | p99 lag | max lag | p99 latency (s) | rebalances | rounds | moves | util spread (pp) |",
        sc.load * 100.0
    );
    let _ = writeln!(
        s,
        "|---|---|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &rep.rows {
        let d = &r.detail;
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {} | {} | {} | {:.1} |",
            r.strategy.name(),
            if r.cooperative {
                "cooperative"
            } else {
                "eager"
            },
            r.max_sustainable * 100.0,
            if d.bounded { "yes" } else { "no" },
            d.lag_p50,
            d.lag_p99,
            d.lag_max,
            d.latency_p99_s,
            d.rebalances,
            d.rounds,
            d.moves,
            d.util_spread_pp
        );
    }
    if sc.event_s.is_some() {
        let _ = writeln!(s, "\nRecovery after the event at {:.0} s (30 s moving average of group lag back at or under its maximum over the 5 minutes before):\n", sc.event_s.unwrap_or(0.0));
        for r in &rep.rows {
            let _ = writeln!(
                s,
                "- {}: {}",
                r.strategy.name(),
                match (r.detail.disturbed, r.detail.recovery_s) {
                    (false, _) => "lag never rose above its pre-event level".to_string(),
                    (true, None) => "not within the run".to_string(),
                    (true, Some(x)) => format!("{x:.0} s"),
                }
            );
        }
    }
    if sc.name == "oscillating" {
        let _ = writeln!(
            s,
            "\nRebalance budget {} per hour; stabilisation window {} s:\n",
            sc.triggers.budget_per_hour,
            sc.settings.stabilisation_window_ms / 1000
        );
        for r in &rep.rows {
            let _ = writeln!(
                s,
                "- {}: max {} triggered rebalances in an hour, {} moves inside the window",
                r.strategy.name(),
                r.detail.max_rebalances_per_hour,
                r.detail.double_moves
            );
        }
    }
    let _ = writeln!(s, "\nAcceptance checks:\n");
    for (text, ok) in &rep.checks {
        let _ = writeln!(s, "- [{}] {}", if *ok { "x" } else { " " }, text);
    }
    let _ = writeln!(
        s,
        "\n![lag over time]({n}-lag.svg)\n![utilisation, lagbalance]({n}-util-lagbalance.svg)\n![utilisation, cooperative-sticky]({n}-util-cooperative-sticky.svg)\n",
        n = sc.name
    );
    s
}

fn plots(sc: &Scenario, rep: &ScenarioReport) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let series: Vec<Series> = rep
        .rows
        .iter()
        .map(|r| Series {
            name: r.strategy.name(),
            xs: &r.detail.series_t,
            ys: &r.detail.series_lag,
        })
        .collect();
    out.push((
        format!("{}-lag.svg", sc.name),
        line_chart(
            &format!(
                "{}: total group lag at {:.0} % load",
                sc.name,
                sc.load * 100.0
            ),
            "time (s)",
            "lag (records, log scale)",
            &series,
            true,
        ),
    ));
    for strat in [Strategy::LagBalance, Strategy::CooperativeSticky] {
        let Some(r) = rep.row(strat) else { continue };
        let d = &r.detail;
        let m = d.series_util.first().map_or(0, Vec::len);
        let per: Vec<Vec<f64>> = (0..m)
            .map(|i| d.series_util.iter().map(|u| u[i] * 100.0).collect())
            .collect();
        let names: Vec<String> = (0..m)
            .map(|i| format!("consumer {i} ({:.2})", sc.consumers[i].speed))
            .collect();
        let series: Vec<Series> = (0..m)
            .map(|i| Series {
                name: &names[i],
                xs: &d.series_t,
                ys: &per[i],
            })
            .collect();
        out.push((
            format!("{}-util-{}.svg", sc.name, strat.name()),
            line_chart(
                &format!(
                    "{}: CPU utilisation per consumer, {}",
                    sc.name,
                    strat.name()
                ),
                "time (s)",
                "utilisation (%)",
                &series,
                false,
            ),
        ));
    }
    out
}

/// The three strategies of issue 7 (and both lag-aware ones together), with the scenario's
/// dedicated producer: even spread vs the lag-aware partitioner vs lag-aware consumer
/// balancing (the `lagbalance` assignor).
pub const PRODUCER_COMBOS: [(ProducerMode, Strategy); 4] = [
    (ProducerMode::Even, Strategy::CooperativeSticky),
    (ProducerMode::LagAware, Strategy::CooperativeSticky),
    (ProducerMode::Even, Strategy::LagBalance),
    (ProducerMode::LagAware, Strategy::LagBalance),
];

pub struct ProducerRow {
    pub mode: ProducerMode,
    pub strategy: Strategy,
    pub max_sustainable: f64,
    pub detail: RunResult,
}

pub struct ProducerReport {
    pub rows: Vec<ProducerRow>,
    pub markdown: String,
    pub svgs: Vec<(String, String)>,
}

impl ProducerReport {
    pub fn row(&self, mode: ProducerMode, strategy: Strategy) -> Option<&ProducerRow> {
        self.rows
            .iter()
            .find(|r| r.mode == mode && r.strategy == strategy)
    }
}

/// Evaluate a scenario that has a dedicated producer (`scenario::with_producer`).
pub fn evaluate_producer(sc: &Scenario) -> ProducerReport {
    let rows: Vec<ProducerRow> = PRODUCER_COMBOS
        .iter()
        .map(|&(mode, strategy)| ProducerRow {
            mode,
            strategy,
            max_sustainable: max_sustainable_with_producer(sc, strategy, mode),
            detail: run_with_producer(sc, strategy, mode, sc.load, true),
        })
        .collect();
    let mut s = String::new();
    let keyed = sc.producer.as_ref().is_some_and(|p| p.keyed);
    let _ = writeln!(
        s,
        "### `{}` with a dedicated producer — {}\n",
        sc.name, sc.description
    );
    if let Some(p) = &sc.producer {
        let _ = writeln!(
            s,
            "Producer: {}; partitioner refresh {} s, slow_lag {:.1} records, observe {} s, probe {} s at share {}, at most {:.0} % closed. Run: {:.0} s simulated, detailed columns at {:.0} % load.\n",
            if keyed {
                "keyed records (the hot partitions are hot keys), lag-aware keyed routing on"
            } else {
                "unkeyed records"
            },
            p.interval_s,
            p.settings.slow_lag as f64 / crate::producer::LAG_UNIT,
            p.settings.observe_ms / 1000,
            p.settings.probe_period_ms / 1000,
            p.settings.probe_share,
            p.settings.max_closed_ratio * 100.0,
            sc.duration_s,
            sc.load * 100.0
        );
    }
    let _ = writeln!(
        s,
        "| producer + assignor | max sustainable (% of capacity) | bounded at {:.0} % | p50 lag | p99 lag | max lag | p99 latency (s) | peak consumer demand (input ÷ capacity) | records redirected | partitioner state changes | rebalances |",
        sc.load * 100.0
    );
    let _ = writeln!(
        s,
        "|---|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &rows {
        let d = &r.detail;
        let _ = writeln!(
            s,
            "| {} | {:.1} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.2} | {:.1} % | {} | {} |",
            d.strategy,
            r.max_sustainable * 100.0,
            if d.bounded { "yes" } else { "no" },
            d.lag_p50,
            d.lag_p99,
            d.lag_max,
            d.latency_p99_s,
            d.peak_demand,
            d.redirected * 100.0,
            d.transitions,
            d.rebalances
        );
    }
    let _ = writeln!(
        s,
        "\n![lag over time](partitioner-{n}-lag.svg)\n",
        n = sc.name
    );
    let series: Vec<Series> = rows
        .iter()
        .map(|r| Series {
            name: &r.detail.strategy,
            xs: &r.detail.series_t,
            ys: &r.detail.series_lag,
        })
        .collect();
    let svg = line_chart(
        &format!(
            "{} with a dedicated producer: total group lag at {:.0} % load",
            sc.name,
            sc.load * 100.0
        ),
        "time (s)",
        "lag (records, log scale)",
        &series,
        true,
    );
    let svgs = vec![(format!("partitioner-{}-lag.svg", sc.name), svg)];
    ProducerReport {
        rows,
        markdown: s,
        svgs,
    }
}
