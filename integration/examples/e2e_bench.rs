//! End-to-end benchmark: a `lagbalance` group (our example workers, each with its sidecar
//! agent) against a group of `rdkafka` (librdkafka) consumers with `cooperative-sticky`, on the
//! same local broker (Apache Kafka by default), the same heterogeneous per-record costs (slept) and the same input.
//!
//! For every input rate of its grid, each group runs on a fresh topic: records produced
//! round-robin at that rate for `--duration-s`. A group's grid is `--rates-<group>` when given,
//! else `--rates`; the whole sweep runs `--repeats` times. Figures:
//!
//! - **sustained throughput**: a group *sustains* a rate when its group lag does not grow over the
//!   second half of the input (least-squares trend ≤ `--bounded-pct` % of the rate); per sweep,
//!   the highest sustained rate of each group and their ratio (bracketed by the grid), then the
//!   median and spread of that ratio over the sweeps, plus the records/s each group consumed in
//!   that window at every rate;
//! - **per capacity-driven rebalance** (from input start, and from each agent trigger):
//!   partitions paused (revoked or lost) ÷ partitions whose owner changed, between the start and
//!   the point where ownership held still for `--quiet-s`, from the workers' audit files, and
//!   the time from the start to that point.
//!
//! Writes `<out>/RESULTS.md` and `<out>/e2e-bench-lag.svg`. Workers run with
//! `RUST_LOG=lagbalance=debug,lagbalance_assign=debug`; their `leader plan` / `lagbalance plan`
//! lines go into the report.
//!
//! ```text
//! cargo build --release -p lagbalance --examples && cargo build --release -p lagbalance-agent
//! cargo run --release -p lagbalance-integration --example e2e_bench -- [--bootstrap HOST:PORT]
//!     [--rates 750,900,1150] [--rates-rdkafka R,..] [--rates-lagbalance R,..] [--repeats 1]
//!     [--duration-s 80] [--partitions 30] [--costs-us 2000,2000,4000]
//!     [--groups rdkafka,lagbalance] [--quiet-s 8] [--bounded-pct 1] [--drain-s 15] [--out docs]
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lagbalance::assign::stats::min_median_max;
use lagbalance_integration::broker::BrokerKind;
use lagbalance_integration::e2e::{
    self, capacity_rebalances, GroupKind, MemberSpec, Progress, RunParams, RunResult,
};
use lagbalance_integration::e2e_cli::{
    bootstrap_arg, exit_with_help_if_asked, flag, until_interrupted, RunBroker,
};
use lagbalance_integration::e2e_report::{
    comparison, one_decimal, paused_per_moved, steady_window, time_to_stable,
};
use lagbalance_integration::lagplot::{chart, Marker, Panel, Series};
use lagbalance_integration::unique_temp_dir;

struct Args {
    bootstrap: Option<String>,
    /// Each group with the input rates it runs at, in order.
    grids: Vec<(String, Vec<f64>)>,
    repeats: usize,
    duration: Duration,
    partitions: i32,
    costs: Vec<u64>,
    quiet: Duration,
    bounded_pct: f64,
    drain: Duration,
    out: PathBuf,
}

fn list<T: std::str::FromStr>(s: &str, name: &str) -> Result<Vec<T>> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{name}: cannot parse '{x}'"))
        })
        .collect()
}

fn parse() -> Result<Args> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    exit_with_help_if_asked(&a, include_str!("e2e_bench.rs"), 30);
    let rates = flag(&a, "--rates", "750,900,1150".to_string())?;
    let groups: Vec<String> = list(
        &flag(&a, "--groups", "rdkafka,lagbalance".to_string())?,
        "--groups",
    )?;
    for g in &groups {
        if g != "rdkafka" && g != "lagbalance" {
            bail!("--groups: unknown group '{g}' (rdkafka, lagbalance)");
        }
    }
    let grids = groups
        .into_iter()
        .map(|g| {
            let name = format!("--rates-{g}");
            let rates = list(&flag(&a, &name, rates.clone())?, &name)?;
            Ok((g, rates))
        })
        .collect::<Result<Vec<_>>>()?;
    let args = Args {
        bootstrap: bootstrap_arg(&a),
        grids,
        repeats: flag(&a, "--repeats", 1usize)?,
        duration: Duration::from_secs(flag(&a, "--duration-s", 80u64)?),
        partitions: flag(&a, "--partitions", 30)?,
        costs: list(
            &flag(&a, "--costs-us", "2000,2000,4000".to_string())?,
            "--costs-us",
        )?,
        quiet: Duration::from_secs(flag(&a, "--quiet-s", 8u64)?),
        bounded_pct: flag(&a, "--bounded-pct", 1.0)?,
        drain: Duration::from_secs(flag(&a, "--drain-s", 15u64)?),
        out: PathBuf::from(flag(&a, "--out", "docs".to_string())?),
    };
    if args.costs.is_empty() || args.costs.contains(&0) {
        bail!("--costs-us needs positive per-record costs, one per member");
    }
    if args.repeats == 0 {
        bail!("--repeats needs at least 1");
    }
    Ok(args)
}

impl Args {
    /// Every rate any group runs at, ascending.
    fn all_rates(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.grids.iter().flat_map(|(_, r)| r.clone()).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    }
}

/// One run's outcome and what the report needs about it.
struct Row {
    /// Which sweep (1-based).
    sweep: usize,
    group: String,
    rate: f64,
    result: RunResult,
}

impl Row {
    fn consumed(&self) -> Option<f64> {
        let (a, b) = steady_window(&self.result);
        self.result.consumed_rate(a, b)
    }
    fn trend(&self) -> Option<f64> {
        let (a, b) = steady_window(&self.result);
        self.result.lag_slope(a, b)
    }
    fn sustained(&self, pct: f64) -> bool {
        self.trend().is_some_and(|t| t <= self.rate * pct / 100.0)
    }
}

fn kind_of(group: &str) -> GroupKind {
    match group {
        "rdkafka" => GroupKind::Rdkafka,
        _ => GroupKind::Workers {
            assignor: "lagbalance".into(),
            agents: true,
        },
    }
}

fn params(args: &Args, bootstrap: &str, group: &str, rate: f64, dir: PathBuf) -> RunParams {
    let mut p = RunParams::demo(bootstrap, kind_of(group), dir);
    p.rate = rate;
    p.partitions = args.partitions;
    p.duration = args.duration;
    p.drain = args.drain;
    p.members = args
        .costs
        .iter()
        .enumerate()
        .map(|(i, c)| MemberSpec {
            name: ((b'a' + i as u8) as char).to_string(),
            cost_us: *c,
        })
        .collect();
    p.agent_env = e2e::demo_agent_env(rate);
    p.worker_log = Some("lagbalance=debug,lagbalance_assign=debug".into());
    p
}

/// The leader's plan lines from the workers' logs (the last `keep` of them).
fn plan_lines(dir: &Path, keep: usize) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "log")
                && !p.to_string_lossy().ends_with("-agent.log")
        })
        .collect();
    logs.sort();
    for l in logs {
        let name = l
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for line in std::fs::read_to_string(&l).unwrap_or_default().lines() {
            if line.contains("leader plan") || line.contains("lagbalance plan") {
                let clean: String = line.chars().take(600).collect();
                out.push(format!("[{name}] {clean}"));
            }
        }
    }
    let skip = out.len().saturating_sub(keep);
    out.into_iter().skip(skip).collect()
}

/// A group's best rate in one sweep: the highest it sustained, and the lowest rate above that
/// it failed (the bracket the grid puts on its true limit).
struct Highest {
    best: Option<f64>,
    failed_above: Option<f64>,
}

impl Highest {
    fn bracket(&self) -> String {
        match (self.best, self.failed_above) {
            (Some(b), Some(f)) => format!("≥ {b:.0} and < {f:.0}"),
            (Some(b), None) => format!("≥ {b:.0}"),
            (None, Some(f)) => format!("< {f:.0}"),
            (None, None) => "not measured".into(),
        }
    }
}

fn highest_sustained(rows: &[Row], sweep: usize, group: &str, pct: f64) -> Highest {
    let these = || rows.iter().filter(|r| r.sweep == sweep && r.group == group);
    let best = these()
        .filter(|r| r.sustained(pct))
        .map(|r| r.rate)
        .max_by(f64::total_cmp);
    let failed_above = these()
        .filter(|r| !r.sustained(pct) && best.is_none_or(|b| r.rate > b))
        .map(|r| r.rate)
        .min_by(f64::total_cmp);
    Highest { best, failed_above }
}

fn report(args: &Args, rows: &[Row], plans: &[(String, Vec<String>)]) -> String {
    let mut md = String::new();
    md.push_str("# End-to-end results: lagbalance vs rdkafka cooperative-sticky\n\n");
    md.push_str(
        "Written by `integration/examples/e2e_bench.rs`; rerunning it rewrites this page.\n\n",
    );
    md.push_str(&format!(
        "Command:\n\n```sh\ncargo build --release -p lagbalance --examples && cargo build --release -p lagbalance-agent\ncargo run --release -p lagbalance-integration --example e2e_bench --{}\n```\n\n",
        std::env::args().skip(1).map(|a| format!(" {a}")).collect::<String>()
    ));
    let cap: f64 = args.costs.iter().map(|c| 1e6 / *c as f64).sum();
    let n = args.costs.len() as f64;
    let even = args
        .costs
        .iter()
        .map(|c| 1e6 / *c as f64 * n)
        .fold(f64::INFINITY, f64::min);
    md.push_str(&format!(
        "Machine: 2 cores shared with other work (builds, other tests), {} on \
         127.0.0.1 — read ratios within this page, not absolute numbers across runs.\n\n\
         Setup: {} partitions, records produced round-robin for {:.0} s per run; {} members with \
         sleep-mode per-record costs {:?} µs (capacities {}; {:.0} records/s in all). An even \
         spread sustains at most {:.0} records/s (the slowest member's capacity × members); a \
         capacity-proportional one up to {:.0} — theory {:.2}×. **lagbalance group**: the example \
         workers (`--assignor lagbalance`), each with a `lagbalance-agent` (rejoin, interval 1 s, \
         sustain 3, lag floor = 2 s of input, cooldown 20 s, CPU limit 256). **rdkafka group**: \
         in-process `BaseConsumer`s, `partition.assignment.strategy=cooperative-sticky`, same costs \
         slept per batch, offsets stored after processing and auto-committed every 200 ms (as the \
         workers). Lag = acknowledged end offsets − committed offsets (OffsetFetch), every second.\n\n",
        BrokerKind::describe_run(args.bootstrap.as_deref()),
        args.partitions,
        args.duration.as_secs_f64(),
        args.costs.len(),
        args.costs,
        args.costs
            .iter()
            .map(|c| format!("{:.0}/s", 1e6 / *c as f64))
            .collect::<Vec<_>>()
            .join(", "),
        cap,
        even,
        cap,
        cap / even
    ));

    md.push_str("## Sustained throughput\n\n");
    md.push_str(&format!(
        "A group sustains a rate when its group lag's least-squares trend over the second half of \
         the input is ≤ {}% of the rate.\n\n",
        args.bounded_pct
    ));
    md.push_str("| sweep | input/s | group | consumed/s (2nd half) | lag trend/s (2nd half) | lag when input stopped | p99 lag while producing | peak lag | sustained |\n|---:|---:|---|---:|---:|---:|---:|---:|---|\n");
    for r in rows {
        md.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.sweep,
            r.rate,
            r.result.label,
            one_decimal(r.consumed()),
            one_decimal(r.trend()),
            r.result.lag_at_end_of_input(),
            r.result.p99_lag(),
            r.result.peak_lag(),
            if r.sustained(args.bounded_pct) {
                "yes"
            } else {
                "no"
            }
        ));
    }
    md.push_str(
        "\nHighest sustained input rate per sweep (bracketed by the next rate of the grid that \
         failed):\n\n| sweep | lagbalance | rdkafka | ratio |\n|---:|---|---|---:|\n",
    );
    let mut ratios = Vec::new();
    for sweep in 1..=args.repeats {
        let l = highest_sustained(rows, sweep, "lagbalance", args.bounded_pct);
        let r = highest_sustained(rows, sweep, "rdkafka", args.bounded_pct);
        let ratio = l.best.zip(r.best).map(|(l, r)| l / r);
        ratios.extend(ratio);
        md.push_str(&format!(
            "| {sweep} | {} | {} | {} |\n",
            l.bracket(),
            r.bracket(),
            ratio.map_or("-".into(), |x| format!("{x:.2}×"))
        ));
    }
    if let Some((lo, median, hi)) = min_median_max(&ratios) {
        md.push_str(&format!(
            "\n**Ratio of the highest sustained rates: median {median:.2}×, spread {lo:.2}–{hi:.2}× \
             over {} sweep(s).**\n",
            ratios.len()
        ));
    }
    md.push_str("\nConsumed records/s, lagbalance ÷ rdkafka, where both ran at a rate: ");
    let mut consumed = Vec::new();
    for sweep in 1..=args.repeats {
        for rate in args.all_rates() {
            let get = |g: &str| {
                rows.iter()
                    .find(|r| r.sweep == sweep && r.group == g && r.rate == rate)
                    .and_then(Row::consumed)
            };
            if let (Some(l), Some(r)) = (get("lagbalance"), get("rdkafka")) {
                consumed.push(format!("{rate:.0}/s → {:.2}× (sweep {sweep})", l / r));
            }
        }
    }
    md.push_str(&if consumed.is_empty() {
        "-".to_string()
    } else {
        consumed.join(", ")
    });
    md.push_str(
        " (below an even spread's limit both keep up and the ratio is ~1 by construction).\n\n",
    );

    md.push_str(
        "## Capacity-driven rebalances (lagbalance group: from input start, then per agent trigger)\n\n",
    );
    md.push_str(&format!(
        "The group forms evenly before input begins, so the first row of a run is what the \
         members' own measurements moved (a fresh heterogeneous group converging); every agent \
         trigger starts another. Stable = every partition owned and no ownership change for {} s. \
         Paused = partitions revoked or lost between the start and the stable point (in a \
         cooperative rebalance only revoked partitions stop); moved = partitions whose owner \
         differs between the two instants. Goal: paused ÷ moved = 1.0.\n\n",
        args.quiet.as_secs()
    ));
    md.push_str("| sweep | input/s | cause | at (s after input began) | first change after (s) | start → stable (s) | paused | moved | paused ÷ moved | callbacks |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows.iter().filter(|r| r.group == "lagbalance") {
        for b in capacity_rebalances(&r.result, args.quiet) {
            md.push_str(&format!(
                "| {} | {:.0} | {} | {:.1} | {} | {} | {} | {} | {} | {} |\n",
                r.sweep,
                r.rate,
                b.cause,
                b.start_t,
                one_decimal(b.first_change_after),
                time_to_stable(&b),
                b.paused,
                b.moved,
                paused_per_moved(&b),
                b.callbacks
            ));
        }
    }

    md.push_str("\n## Every run of the first sweep side by side\n\n");
    for rate in args.all_rates() {
        let these: Vec<&RunResult> = rows
            .iter()
            .filter(|r| r.sweep == 1 && r.rate == rate)
            .map(|r| &r.result)
            .collect();
        md.push_str(&format!("### {rate:.0} records/s\n\n"));
        md.push_str(&comparison(&these, rate, args.quiet).markdown());
        md.push('\n');
    }
    md.push_str("![group lag over time, per input rate (every sweep)](e2e-bench-lag.svg)\n\n");
    md.push_str("## Leader debug lines (lagbalance group, first sweep)\n\n");
    for (label, lines) in plans {
        md.push_str(&format!(
            "{label} — the last {} `leader plan` / `lagbalance plan` lines:\n\n```text\n",
            lines.len()
        ));
        for l in lines {
            md.push_str(l);
            md.push('\n');
        }
        md.push_str("```\n\n");
    }
    md
}

fn plot(args: &Args, rows: &[Row]) -> String {
    let lines: Vec<Vec<(f64, f64)>> = rows
        .iter()
        .map(|r| {
            r.result
                .samples
                .iter()
                .map(|s| (s.t, s.group_lag as f64))
                .collect()
        })
        .collect();
    let panels: Vec<Panel> = args
        .all_rates()
        .into_iter()
        .map(|rate| {
            let these = || rows.iter().zip(&lines).filter(|(r, _)| r.rate == rate);
            Panel {
                title: format!("group lag at {rate:.0} records/s input"),
                series: these()
                    .map(|(r, points)| Series {
                        name: if args.repeats > 1 {
                            format!("{}, sweep {}", r.result.label, r.sweep)
                        } else {
                            r.result.label.clone()
                        },
                        points,
                    })
                    .collect(),
                markers: these()
                    .flat_map(|(r, _)| {
                        r.result.triggers.iter().map(|t| Marker {
                            x: r.result.t_of(t.ts_ms),
                            label: format!("agent {}", t.member),
                        })
                    })
                    .collect(),
            }
        })
        .collect();
    chart(
        &panels,
        "seconds since input began",
        "group lag (records)",
        false,
    )
}

async fn bench(args: &Args, bootstrap: &str, logs: &Path) -> Result<()> {
    let mut rows = Vec::new();
    let mut plans = Vec::new();
    let mut md = String::new();
    let runs = (1..=args.repeats).flat_map(|sweep| {
        args.grids
            .iter()
            .flat_map(move |(group, rates)| rates.iter().map(move |rate| (sweep, group, *rate)))
    });
    for (sweep, group, rate) in runs {
        let dir = logs.join(format!("{group}-{rate:.0}-{sweep}"));
        let p = params(args, bootstrap, group, rate, dir.clone());
        let label = format!("{} at {rate:.0}/s", p.kind.label());
        eprintln!(
            "sweep {sweep}/{}: running {label} for {:?} …",
            args.repeats, p.duration
        );
        let mut last = 0.0;
        let result = e2e::run(&p, &mut |ev| match ev {
            Progress::Phase(what) => eprintln!("  {what}"),
            Progress::Sample(s) => {
                if s.t - last >= 10.0 {
                    last = s.t;
                    let lags: Vec<String> = s
                        .members
                        .iter()
                        .map(|m| format!("{}={}", m.name, m.lag))
                        .collect();
                    eprintln!(
                        "  t={:>3.0}s group lag {} ({})",
                        s.t,
                        s.group_lag,
                        lags.join(" ")
                    );
                }
            }
        })
        .await
        .with_context(|| label.clone())?;
        if group == "lagbalance" && sweep == 1 {
            plans.push((label.clone(), plan_lines(&dir, 12)));
        }
        rows.push(Row {
            sweep,
            group: group.clone(),
            rate,
            result,
        });
        // Rewritten after every run, so a long sweep cut short still leaves its figures.
        md = write_report(args, &rows, &plans)?;
    }
    println!("{md}");
    println!(
        "wrote {} and {}",
        args.out.join("RESULTS.md").display(),
        args.out.join("e2e-bench-lag.svg").display()
    );
    Ok(())
}

/// Write `RESULTS.md` and the plot for the runs so far; returns the page.
fn write_report(args: &Args, rows: &[Row], plans: &[(String, Vec<String>)]) -> Result<String> {
    let md = report(args, rows, plans);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("RESULTS.md"), &md)?;
    std::fs::write(args.out.join("e2e-bench-lag.svg"), plot(args, rows))?;
    Ok(md)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse()?;
    let broker = RunBroker::named_or_own(args.bootstrap.as_deref()).await?;
    let bootstrap = broker.bootstrap.clone();
    eprintln!("broker: {bootstrap}");
    let logs = unique_temp_dir("lagbalance-e2e-bench")?;
    let outcome = until_interrupted(bench(&args, &bootstrap, &logs)).await?;
    eprintln!("logs in {}", logs.display());
    broker.stop();
    outcome.unwrap_or_else(|| {
        eprintln!("interrupted");
        Ok(())
    })
}
