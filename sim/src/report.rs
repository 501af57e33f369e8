//! Scenario evaluation over several seeds: a grid scan for the sustainable load and one
//! detailed run per strategy at the scenario's nominal load, for every seed; a markdown table
//! of min / median / max over the seeds, acceptance checks that every seed must pass, and SVG
//! plots of the first seed.

use std::fmt::Write;

use lagbalance_assign::stats::min_median_max;

use crate::engine::{
    max_sustainable, max_sustainable_with_producer, run, run_with_producer, RunResult, Sustainable,
};
use crate::producer::ProducerMode;
use crate::scenario::Scenario;
use crate::strategies::Strategy;
use crate::svg::{line_chart, Series};

/// One seed's results for one strategy.
pub struct SeedRun {
    pub seed: u64,
    pub sustainable: Sustainable,
    /// The run at the scenario's nominal load.
    pub detail: RunResult,
}

pub struct Row {
    pub strategy: Strategy,
    pub cooperative: bool,
    /// One per seed, in the order the seeds were given.
    pub runs: Vec<SeedRun>,
}

impl Row {
    /// `metric` of every seed, in seed order.
    pub fn per_seed(&self, metric: impl Fn(&SeedRun) -> f64) -> Vec<f64> {
        self.runs.iter().map(metric).collect()
    }
}

/// One scan and one nominal-load run per seed of `sc`.
fn over_seeds(
    sc: &Scenario,
    seeds: &[u64],
    sustainable: impl Fn(&Scenario) -> Sustainable,
    detail: impl Fn(&Scenario) -> RunResult,
) -> Vec<SeedRun> {
    seeds
        .iter()
        .map(|&seed| {
            let sc = sc.with_seed(seed);
            SeedRun {
                seed,
                sustainable: sustainable(&sc),
                detail: detail(&sc),
            }
        })
        .collect()
}

/// The first seed's nominal-load run (the one plotted).
fn first_detail(runs: &[SeedRun]) -> RunResult {
    runs.first().map(|x| x.detail.clone()).unwrap_or_default()
}

/// `1, 2, 3` for the seeds line above a table.
fn seeds_text(seeds: &[u64]) -> String {
    list(&seeds.iter().map(|&x| x as f64).collect::<Vec<_>>(), 0)
}

/// Table cell: `metric` of the nominal-load runs as min / median / max.
fn cell(runs: &[SeedRun], metric: impl Fn(&RunResult) -> f64, decimals: usize) -> String {
    Spread::of(&runs.iter().map(|x| metric(&x.detail)).collect::<Vec<_>>()).cell(decimals)
}

/// Table cell for the sustainable load, `(!)` when some seed's scan was not monotonic.
fn sustainable_cell(runs: &[SeedRun]) -> String {
    let loads: Vec<f64> = runs.iter().map(|x| x.sustainable.load * 100.0).collect();
    let flag = runs.iter().any(|x| !x.sustainable.bounded_above.is_empty());
    format!(
        "{}{}",
        Spread::of(&loads).cell(0),
        if flag { " (!)" } else { "" }
    )
}

/// Table cell: seeds whose nominal-load run had bounded lag, of all seeds.
fn bounded_cell(runs: &[SeedRun]) -> String {
    let bounded = runs.iter().filter(|r| r.detail.bounded).count();
    format!("{bounded}/{}", runs.len())
}

/// The columns every results table starts with, as Markdown cells: max sustainable load,
/// seeds bounded at the scenario's load, p50 / p99 / max lag and p99 latency.
fn lag_cells(runs: &[SeedRun]) -> String {
    [
        sustainable_cell(runs),
        bounded_cell(runs),
        cell(runs, |d| d.lag_p50, 0),
        cell(runs, |d| d.lag_p99, 0),
        cell(runs, |d| d.lag_max, 0),
        cell(runs, |d| d.latency_p99_s, 0),
    ]
    .join(" | ")
}

/// Total group lag over time (log scale), one line per named run.
fn lag_chart<'a>(title: &str, runs: impl Iterator<Item = (&'a str, &'a RunResult)>) -> String {
    let series: Vec<Series> = runs
        .map(|(name, d)| Series {
            name,
            xs: &d.series_t,
            ys: &d.series_lag,
        })
        .collect();
    line_chart(title, "time (s)", "lag (records, log scale)", &series, true)
}

/// `seed 2 (limit 70 %, bounded again at 73, 74 %); …` for the seeds whose scan was not
/// monotonic; empty when all were.
fn non_monotonic(runs: &[SeedRun]) -> String {
    runs.iter()
        .filter(|x| !x.sustainable.bounded_above.is_empty())
        .map(|x| {
            let above: Vec<f64> = x
                .sustainable
                .bounded_above
                .iter()
                .map(|l| l * 100.0)
                .collect();
            format!(
                "seed {} (limit {:.0} %, bounded again at {} %)",
                x.seed,
                x.sustainable.load * 100.0,
                list(&above, 0)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The note under a table listing every non-monotonic scan, one line per row label.
fn non_monotonic_note<'a>(rows: impl Iterator<Item = (&'a str, &'a [SeedRun])>) -> String {
    let lines: Vec<String> = rows
        .filter_map(|(label, runs)| {
            let seeds = non_monotonic(runs);
            (!seeds.is_empty()).then(|| format!("- {label}: {seeds}"))
        })
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\n(!) Not monotonic in load: bounded again above the reported limit (which counts only loads with every lower grid load bounded):\n\n{}\n",
        lines.join("\n")
    )
}

/// Min, median and max of a metric over the seeds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// NaN everywhere when there are no values.
    pub fn of(values: &[f64]) -> Spread {
        let (min, median, max) = min_median_max(values).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        Spread { min, median, max }
    }

    /// `min / median / max` with `decimals` decimals; one figure when they all print the same.
    pub fn cell(&self, decimals: usize) -> String {
        let f = |x: f64| format!("{x:.decimals$}");
        let (lo, mid, hi) = (f(self.min), f(self.median), f(self.max));
        if lo == hi {
            lo
        } else {
            format!("{lo} / {mid} / {hi}")
        }
    }
}

/// `values` as `a, b, c` with `decimals` decimals (per-seed figures in check texts).
fn list(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|x| format!("{x:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub struct ScenarioReport {
    pub seeds: Vec<u64>,
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

/// Evaluate `sc` (its measurement model included) for every strategy over `seeds`.
pub fn evaluate(sc: &Scenario, strategies: &[Strategy], seeds: &[u64]) -> ScenarioReport {
    let rows: Vec<Row> = strategies
        .iter()
        .map(|&s| Row {
            strategy: s,
            cooperative: s.make(&sc.settings).cooperative(),
            runs: over_seeds(
                sc,
                seeds,
                |sc| max_sustainable(sc, s),
                |sc| run(sc, s, sc.load, true),
            ),
        })
        .collect();
    let mut rep = ScenarioReport {
        seeds: seeds.to_vec(),
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

/// The acceptance targets of issue 4 that apply to this scenario; each must hold for every
/// seed. Where a target is an analytic limit, lagbalance must also beat cooperative-sticky
/// (the real `CooperativeStickyAssignor`, what a Kafka group uses today) on the same seed.
pub fn checks(sc: &Scenario, rep: &ScenarioReport) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let lb = rep.row(Strategy::LagBalance);
    let st = rep.row(Strategy::CooperativeSticky);
    let rr = rep.row(Strategy::RoundRobin);
    let pct = |r: &SeedRun| r.sustainable.load * 100.0;
    for r in &rep.rows {
        let plans: usize = r.runs.iter().map(|x| x.detail.plans_validated).sum();
        out.push((
            format!(
                "{}: all {plans} plans (all seeds) passed cooperative::validate",
                r.strategy.name()
            ),
            r.runs.iter().all(|x| x.detail.plans_validated > 0),
        ));
    }
    match sc.name {
        "agoda" => {
            if let Some(lb) = lb {
                let v = lb.per_seed(pct);
                out.push((
                    format!(
                        "lagbalance sustains >= 98 % of capacity with bounded lag on every seed (got {} %)",
                        list(&v, 0)
                    ),
                    v.iter().all(|&x| x >= 98.0),
                ));
            }
            for r in [rr, st].into_iter().flatten() {
                let v = r.per_seed(pct);
                out.push((
                    format!(
                        "{} sustains about 60 % on every seed (got {} %)",
                        r.strategy.name(),
                        list(&v, 0)
                    ),
                    v.iter().all(|x| (55.0..=65.0).contains(x)),
                ));
            }
            if let (Some(lb), Some(st)) = (lb, st) {
                out.push(beats(
                    "max sustainable load (%)",
                    &lb.per_seed(pct),
                    &st.per_seed(pct),
                    |l, s| l > s,
                ));
            }
        }
        "hermes" => {
            if let Some(lb) = lb {
                let v = lb.per_seed(|r| r.detail.util_spread_pp);
                out.push((
                    format!(
                        "lagbalance steady-state utilisation spread <= 5 pp on every seed (got {} pp)",
                        list(&v, 2)
                    ),
                    v.iter().all(|&x| x <= 5.0),
                ));
                if let Some(st) = st {
                    out.push(beats(
                        "utilisation spread (pp)",
                        &v,
                        &st.per_seed(|r| r.detail.util_spread_pp),
                        |l, s| l < s,
                    ));
                }
            }
        }
        "hot-partitions" => {
            if let (Some(lb), Some(st)) = (lb, st) {
                let l = lb.per_seed(|r| r.detail.lag_p99);
                let s = st.per_seed(|r| r.detail.lag_p99);
                out.push((
                    format!(
                        "lagbalance p99 lag <= 0.2 x cooperative-sticky's on every seed ({} vs {} records)",
                        list(&l, 0),
                        list(&s, 0)
                    ),
                    l.iter().zip(&s).all(|(l, s)| *l <= 0.2 * s),
                ));
            }
        }
        "noisy-neighbour" => {
            if let Some(lb) = lb {
                let recovered = |r: &Row| {
                    r.runs
                        .iter()
                        .map(|x| {
                            x.detail
                                .recovery_s
                                .map_or("never".to_string(), |s| format!("{s:.0} s"))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                out.push((
                    format!(
                        "lagbalance: group lag back under its pre-event level without human action on every seed, after {} (cooperative-sticky: {})",
                        recovered(lb),
                        st.map_or("not run".to_string(), recovered)
                    ),
                    lb.runs.iter().all(|x| x.detail.recovery_s.is_some()),
                ));
            }
        }
        "oscillating" => {
            if let Some(lb) = lb {
                out.push((
                    format!(
                        "lagbalance: lag bounded at {:.0} % load on every seed (bounded on {})",
                        sc.load * 100.0,
                        bounded_cell(&lb.runs)
                    ),
                    lb.runs.iter().all(|x| x.detail.bounded),
                ));
                let v = lb.per_seed(|r| r.detail.max_rebalances_per_hour as f64);
                out.push((
                    format!(
                        "lagbalance: at most {} triggered rebalances in any hour on every seed (got {})",
                        sc.group_budget_per_hour(),
                        list(&v, 0)
                    ),
                    v.iter()
                        .all(|&x| x <= sc.group_budget_per_hour() as f64),
                ));
                let v = lb.per_seed(|r| r.detail.double_moves as f64);
                out.push((
                    format!(
                        "lagbalance: no partition moved twice within the {} s stabilisation window on any seed (got {} such moves)",
                        sc.settings.stabilisation_window_ms / 1000,
                        list(&v, 0)
                    ),
                    v.iter().all(|&x| x == 0.0),
                ));
            }
        }
        _ => {}
    }
    out
}

/// The check that lagbalance's `metric` beats cooperative-sticky's on every seed.
fn beats(
    metric: &str,
    lb: &[f64],
    st: &[f64],
    better: impl Fn(f64, f64) -> bool,
) -> (String, bool) {
    (
        format!(
            "lagbalance beats cooperative-sticky on every seed, {metric}: {} vs {}",
            list(lb, 1),
            list(st, 1)
        ),
        lb.iter().zip(st).all(|(&l, &s)| better(l, s)),
    )
}

/// Who triggers rebalances, for the report's run line.
fn agents_text(sc: &Scenario) -> String {
    match &sc.triggers.agents {
        Some(a) => format!("Agents: {}.", a.describe()),
        None => "No agents.".to_string(),
    }
}

fn markdown(sc: &Scenario, rep: &ScenarioReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### `{}` — {}
",
        sc.name, sc.description
    );
    let _ = writeln!(
        s,
        "Run: {:.0} s simulated, step {} s; detailed columns at {:.0} % load; rebalance round {} s, mover pause {} s. Members measure themselves every {} s with ±{:.0} % error per sample. {} Seeds {}; every cell is min / median / max over the seeds (one figure when they agree).\n",
        sc.duration_s,
        sc.dt_s,
        sc.load * 100.0,
        sc.rebalance.round_s,
        sc.rebalance.move_pause_s,
        sc.measurement.period_s,
        sc.measurement.noise * 100.0,
        agents_text(sc),
        seeds_text(&rep.seeds)
    );
    let _ = writeln!(
        s,
        "| strategy | protocol | max sustainable (% of capacity) | bounded at {:.0} % (seeds) | p50 lag | p99 lag | max lag | p99 latency (s) | rebalances | rounds | moves | util spread (pp) |",
        sc.load * 100.0
    );
    let _ = writeln!(
        s,
        "|---|---|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &rep.rows {
        let runs = &r.runs;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.strategy.name(),
            if r.cooperative {
                "cooperative"
            } else {
                "eager"
            },
            lag_cells(runs),
            cell(runs, |d| d.rebalances as f64, 0),
            cell(runs, |d| d.rounds as f64, 0),
            cell(runs, |d| d.moves as f64, 0),
            cell(runs, |d| d.util_spread_pp, 1)
        );
    }
    s.push_str(&non_monotonic_note(
        rep.rows
            .iter()
            .map(|r| (r.strategy.name(), r.runs.as_slice())),
    ));
    if let Some(event) = sc.event_s {
        let _ = writeln!(s, "\nRecovery after the event at {event:.0} s (30 s moving average of group lag back at or under its maximum over the 5 minutes before), per seed:\n");
        for r in &rep.rows {
            let per: Vec<String> = r
                .runs
                .iter()
                .map(|x| match (x.detail.disturbed, x.detail.recovery_s) {
                    (false, _) => "never disturbed".to_string(),
                    (true, None) => "not within the run".to_string(),
                    (true, Some(t)) => format!("{t:.0} s"),
                })
                .collect();
            let _ = writeln!(s, "- {}: {}", r.strategy.name(), per.join(", "));
        }
    }
    if sc.name == "oscillating" {
        let _ = writeln!(
            s,
            "\nRebalance budget {} per hour; stabilisation window {} s:\n",
            sc.group_budget_per_hour(),
            sc.settings.stabilisation_window_ms / 1000
        );
        for r in &rep.rows {
            let _ = writeln!(
                s,
                "- {}: max {} triggered rebalances in an hour, {} moves inside the window",
                r.strategy.name(),
                cell(&r.runs, |d| d.max_rebalances_per_hour as f64, 0),
                cell(&r.runs, |d| d.double_moves as f64, 0)
            );
        }
    }
    let _ = writeln!(s, "\nAcceptance checks (every seed):\n");
    for (text, ok) in &rep.checks {
        let _ = writeln!(s, "- [{}] {}", if *ok { "x" } else { " " }, text);
    }
    let _ = writeln!(
        s,
        "\nPlots: seed {}.\n\n![lag over time]({n}-lag.svg)\n![utilisation, lagbalance]({n}-util-lagbalance.svg)\n![utilisation, cooperative-sticky]({n}-util-cooperative-sticky.svg)\n",
        rep.seeds.first().copied().unwrap_or(sc.seed),
        n = sc.name
    );
    s
}

/// Plots of the first seed.
fn plots(sc: &Scenario, rep: &ScenarioReport) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let details: Vec<RunResult> = rep.rows.iter().map(|r| first_detail(&r.runs)).collect();
    out.push((
        format!("{}-lag.svg", sc.name),
        lag_chart(
            &format!(
                "{}: total group lag at {:.0} % load",
                sc.name,
                sc.load * 100.0
            ),
            rep.rows.iter().map(|r| r.strategy.name()).zip(&details),
        ),
    ));
    for strat in [Strategy::LagBalance, Strategy::CooperativeSticky] {
        let Some(r) = rep.row(strat) else { continue };
        let d = &first_detail(&r.runs);
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
    /// One per seed, in the order the seeds were given.
    pub runs: Vec<SeedRun>,
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

/// Evaluate a scenario that has a dedicated producer (`scenario::with_producer`) over `seeds`;
/// the plot is of the first seed.
pub fn evaluate_producer(sc: &Scenario, seeds: &[u64]) -> ProducerReport {
    let rows: Vec<ProducerRow> = PRODUCER_COMBOS
        .iter()
        .map(|&(mode, strategy)| ProducerRow {
            mode,
            strategy,
            runs: over_seeds(
                sc,
                seeds,
                |sc| max_sustainable_with_producer(sc, strategy, mode),
                |sc| run_with_producer(sc, strategy, mode, sc.load, true),
            ),
        })
        .collect();
    let label = |r: &ProducerRow| format!("{} + {}", r.mode.name(), r.strategy.name());
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
            "Producer: {}; partitioner refresh {} s, slow_lag {:.1} records, observe {} s, probe {} s at share {}, at most {:.0} % closed. Run: {:.0} s simulated, detailed columns at {:.0} % load. Members measure themselves every {} s with ±{:.0} % error per sample. {} Seeds {}; every cell is min / median / max over the seeds (one figure when they agree).\n",
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
            sc.load * 100.0,
            sc.measurement.period_s,
            sc.measurement.noise * 100.0,
            agents_text(sc),
            seeds_text(seeds)
        );
    }
    let _ = writeln!(
        s,
        "| producer + assignor | max sustainable (% of capacity) | bounded at {:.0} % (seeds) | p50 lag | p99 lag | max lag | p99 latency (s) | peak consumer demand (input ÷ capacity) | records redirected (%) | partitioner state changes | rebalances |",
        sc.load * 100.0
    );
    let _ = writeln!(
        s,
        "|---|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &rows {
        let runs = &r.runs;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            label(r),
            lag_cells(runs),
            cell(runs, |d| d.peak_demand, 2),
            cell(runs, |d| d.redirected * 100.0, 1),
            cell(runs, |d| d.transitions as f64, 0),
            cell(runs, |d| d.rebalances as f64, 0)
        );
    }
    let labels: Vec<String> = rows.iter().map(label).collect();
    s.push_str(&non_monotonic_note(
        labels
            .iter()
            .zip(&rows)
            .map(|(l, r)| (l.as_str(), r.runs.as_slice())),
    ));
    let _ = writeln!(
        s,
        "\nPlot: seed {}.\n\n![lag over time](partitioner-{n}-lag.svg)\n",
        seeds.first().copied().unwrap_or(sc.seed),
        n = sc.name
    );
    let first: Vec<RunResult> = rows.iter().map(|r| first_detail(&r.runs)).collect();
    let svg = lag_chart(
        &format!(
            "{} with a dedicated producer: total group lag at {:.0} % load",
            sc.name,
            sc.load * 100.0
        ),
        first.iter().map(|d| (d.strategy.as_str(), d)),
    );
    let svgs = vec![(format!("partitioner-{}-lag.svg", sc.name), svg)];
    ProducerReport {
        rows,
        markdown: s,
        svgs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_min_median_max_and_prints_one_figure_when_all_agree() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 10.0));
        assert_eq!(Spread::of(&[5.0, 1.0, 4.0]).median, 4.0);
        assert_eq!(s.cell(1), "1.0 / 2.5 / 10.0");
        assert_eq!(Spread::of(&[7.0, 7.04]).cell(0), "7");
    }
}
