//! The demo (`scripts/demo`): the same heterogeneous group twice, first with
//! `cooperative-sticky`, then with `lagbalance`, on a local broker (Apache Kafka by default).
//!
//! Three example workers (`assignor/examples/worker.rs`), two fast and one half as fast (per-record
//! cost slept, so the result does not depend on this machine's CPU), each with its sidecar agent
//! (`lagbalance-agent`); a producer writes round-robin over 30 partitions at a fixed rate that an
//! even spread cannot sustain (the slow member gets a third of it) but the group can. A live
//! table shows each member's lag (end offsets acknowledged to the producer − committed offsets,
//! grouped by the partitions each member owns per its audit file). At the end: the two runs side
//! by side, `docs/demo-lag.svg` (group and member lag over time) and `docs/demo.md`.
//!
//! ```text
//! cargo build --release -p lagbalance --examples && cargo build --release -p lagbalance-agent
//! cargo run --release -p lagbalance-integration --example demo -- [--bootstrap HOST:PORT]
//!     [--duration-s 75] [--rate 900] [--partitions 30] [--fast-cost-us 2000]
//!     [--slow-cost-us 4000] [--drain-s 20] [--out docs] [--debug] [--keep-logs]
//!     [--assignors cooperative-sticky,lagbalance]
//! ```
//!
//! Without `--bootstrap` (or `LAGBALANCE_BOOTSTRAP`) it starts its own broker (installed by
//! `scripts/test-broker install`). Ctrl-C stops the workers, the agents and that broker.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use lagbalance_integration::broker::BrokerKind;
use lagbalance_integration::e2e::{self, GroupKind, Progress, RunParams, RunResult, Sample};
use lagbalance_integration::e2e_cli::{
    bootstrap_arg, exit_with_help_if_asked, flag, until_interrupted, RunBroker,
};
use lagbalance_integration::e2e_report::{comparison, lag_svg};
use lagbalance_integration::unique_temp_dir;

/// "Stable" = no ownership change for this long (tansu pauses rejoining followers ~3 s).
const QUIET: Duration = Duration::from_secs(8);

struct Args {
    bootstrap: Option<String>,
    duration: Duration,
    rate: f64,
    partitions: i32,
    fast_cost_us: u64,
    slow_cost_us: u64,
    drain: Duration,
    out: PathBuf,
    debug: bool,
    keep_logs: bool,
    assignors: Vec<String>,
}

fn parse() -> Result<Args> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    exit_with_help_if_asked(&a, include_str!("demo.rs"), 20);
    Ok(Args {
        bootstrap: bootstrap_arg(&a),
        duration: Duration::from_secs(flag(&a, "--duration-s", 75u64)?),
        rate: flag(&a, "--rate", 900.0)?,
        partitions: flag(&a, "--partitions", 30)?,
        fast_cost_us: flag(&a, "--fast-cost-us", 2_000u64)?,
        slow_cost_us: flag(&a, "--slow-cost-us", 4_000u64)?,
        drain: Duration::from_secs(flag(&a, "--drain-s", 20u64)?),
        out: PathBuf::from(flag(&a, "--out", "docs".to_string())?),
        debug: a.iter().any(|x| x == "--debug"),
        keep_logs: a.iter().any(|x| x == "--keep-logs"),
        assignors: flag(
            &a,
            "--assignors",
            "cooperative-sticky,lagbalance".to_string(),
        )?
        .split(',')
        .map(str::to_owned)
        .collect(),
    })
}

/// The live table: redrawn in place on a terminal, a plain line every 5 s otherwise.
struct Live {
    tty: bool,
    drawn: usize,
    title: String,
    costs: Vec<u64>,
    rate: f64,
    duration: f64,
    prev: Option<Sample>,
    last_plain: f64,
}

impl Live {
    fn phase(&mut self, what: &str) {
        println!("[{}] {what}", self.title);
        self.drawn = 0;
        self.prev = None;
    }

    fn sample(&mut self, s: &Sample) {
        let dt = self.prev.as_ref().map_or(0.0, |p| s.t - p.t);
        let rate_of = |i: usize| -> String {
            match (&self.prev, dt > 0.0) {
                (Some(p), true) => format!(
                    "{:.0}",
                    (s.members[i].consumed as f64 - p.members[i].consumed as f64) / dt
                ),
                _ => "-".into(),
            }
        };
        if !self.tty {
            if s.t - self.last_plain >= 5.0 || self.last_plain == 0.0 {
                self.last_plain = s.t;
                let members: Vec<String> = s
                    .members
                    .iter()
                    .map(|m| format!("{}={} ({}p)", m.name, m.lag, m.partitions))
                    .collect();
                println!(
                    "[{}] t={:>3.0}s group lag {:>6}  {}",
                    self.title,
                    s.t,
                    s.group_lag,
                    members.join("  ")
                );
            }
            self.prev = Some(s.clone());
            return;
        }
        let mut lines = vec![
            format!(
                "{}: {:.0} s of {:.0} s, input {:.0} records/s",
                self.title, s.t, self.duration, self.rate
            ),
            format!(
                "{:<8} {:>12} {:>11} {:>8} {:>11} {:>12}",
                "member", "cost/record", "partitions", "lag", "consumed/s", "agent acted"
            ),
        ];
        for (i, m) in s.members.iter().enumerate() {
            lines.push(format!(
                "{:<8} {:>9} µs {:>11} {:>8} {:>11} {:>12}",
                m.name,
                self.costs.get(i).copied().unwrap_or(0),
                m.partitions,
                m.lag,
                rate_of(i),
                if m.actions == 0 {
                    "-".to_string()
                } else {
                    format!("{}×", m.actions)
                }
            ));
        }
        let group_rate = match (&self.prev, dt > 0.0) {
            (Some(p), true) => format!("{:.0}", (s.consumed() as f64 - p.consumed() as f64) / dt),
            _ => "-".into(),
        };
        lines.push(format!(
            "{:<8} {:>12} {:>11} {:>8} {:>11}",
            "group",
            "",
            s.members.iter().map(|m| m.partitions).sum::<usize>(),
            s.group_lag,
            group_rate
        ));
        lines.push(format!(
            "{:<8} {:>12} {:>11} {:>8}",
            "unowned", "", "", s.unowned_lag
        ));
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            // Back to the first line of the previous table, then overwrite line by line.
            let _ = write!(out, "\x1b[{}F", self.drawn);
        }
        for l in &lines {
            let _ = writeln!(out, "\x1b[2K{l}");
        }
        let _ = out.flush();
        self.drawn = lines.len();
        self.prev = Some(s.clone());
    }
}

async fn demo(args: &Args, bootstrap: &str, logs: &std::path::Path) -> Result<Vec<RunResult>> {
    let mut results = Vec::new();
    for (i, assignor) in args.assignors.iter().enumerate() {
        let kind = GroupKind::Workers {
            assignor: assignor.clone(),
            agents: true,
        };
        let mut p = RunParams::demo(bootstrap, kind, logs.join(format!("run-{i}-{assignor}")));
        p.duration = args.duration;
        p.rate = args.rate;
        p.partitions = args.partitions;
        p.members[0].cost_us = args.fast_cost_us;
        p.members[1].cost_us = args.fast_cost_us;
        p.members[2].cost_us = args.slow_cost_us;
        p.drain = args.drain;
        p.agent_env = e2e::demo_agent_env(args.rate);
        if args.debug {
            p.worker_log = Some("lagbalance=debug,lagbalance_assign=debug".into());
        }
        let mut live = Live {
            tty: std::io::stdout().is_terminal(),
            drawn: 0,
            title: format!("{assignor} ({} of {})", i + 1, args.assignors.len()),
            costs: p.members.iter().map(|m| m.cost_us).collect(),
            rate: p.rate,
            duration: p.duration.as_secs_f64(),
            prev: None,
            last_plain: 0.0,
        };
        let r = e2e::run(&p, &mut |ev| match ev {
            Progress::Phase(what) => live.phase(what),
            Progress::Sample(s) => live.sample(s),
        })
        .await
        .with_context(|| format!("the {assignor} run"))?;
        println!();
        results.push(r);
    }
    Ok(results)
}

fn write_outputs(args: &Args, results: &[RunResult]) -> Result<()> {
    let refs: Vec<&RunResult> = results.iter().collect();
    let table = comparison(&refs, args.rate, QUIET);
    println!("{}", table.text());
    std::fs::create_dir_all(&args.out)?;
    let svg = args.out.join("demo-lag.svg");
    std::fs::write(&svg, lag_svg(&refs, ""))?;
    let mut md = String::new();
    md.push_str("# The demo: cooperative-sticky vs lagbalance on a heterogeneous group\n\n");
    md.push_str("Written by `scripts/demo` (`integration/examples/demo.rs`); rerunning it rewrites this page.\n\n");
    md.push_str(&format!(
        "Command: `scripts/demo{}`\n\n",
        std::env::args()
            .skip(1)
            .map(|a| format!(" {a}"))
            .collect::<String>()
    ));
    md.push_str(&format!(
        "Setup: {} on 127.0.0.1; a {}-partition topic; records produced \
         round-robin at {:.0}/s for {:.0} s; three example workers with sleep-mode per-record costs \
         a = {} µs, b = {} µs, c = {} µs (capacities {:.0}, {:.0} and {:.0} records/s), each with a \
         `lagbalance-agent` (mode rejoin, interval 1 s, sustain 3, lag floor {:.0}, cooldown 20 s, \
         CPU limit 256 because every process shares one cgroup here). An even spread gives each \
         member {:.0} records/s. Lag = end offsets acknowledged to the producer − committed \
         offsets, per member by the partitions its audit file says it owns. Machine: 2 cores, \
         shared with other work — read the figures as one run, not a benchmark.\n\n",
        BrokerKind::describe_run(args.bootstrap.as_deref()),
        args.partitions,
        args.rate,
        args.duration.as_secs_f64(),
        args.fast_cost_us,
        args.fast_cost_us,
        args.slow_cost_us,
        1e6 / args.fast_cost_us as f64,
        1e6 / args.fast_cost_us as f64,
        1e6 / args.slow_cost_us as f64,
        2.0 * args.rate,
        args.rate / 3.0,
    ));
    md.push_str(&table.markdown());
    md.push_str(
        "\nEach group forms evenly before input begins. \"moves\": partitions whose owner \
         differs between a start — input beginning (the members' own measurements at work), \
         then each agent trigger — and the point where every partition was owned and ownership \
         then held still for 8 s; \"paused ÷ moved\": partitions revoked or lost in that span \
         against those moved (a cooperative move pauses only what moves: 1.00); \"stable \
         after\": start → that point. \"unconsumed\": records still unconsumed when the run \
         stopped waiting (the drain limit), not losses of a finished run.\n\n",
    );
    md.push_str("![group and member lag over time](demo-lag.svg)\n");
    std::fs::write(args.out.join("demo.md"), md)?;
    println!(
        "wrote {} and {}",
        svg.display(),
        args.out.join("demo.md").display()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse()?;
    if args.bootstrap.is_none() {
        println!(
            "starting a local {} on 127.0.0.1…",
            BrokerKind::describe_run(None)
        );
    }
    let broker = RunBroker::named_or_own(args.bootstrap.as_deref()).await?;
    let bootstrap = broker.bootstrap.clone();
    println!("broker: {bootstrap}");
    let logs = unique_temp_dir("lagbalance-demo")?;
    // Dropping the demo future kills the workers and agents; the broker goes when `broker` drops.
    let outcome = until_interrupted(demo(&args, &bootstrap, &logs)).await?;
    let result = match outcome {
        None => {
            println!(
                "\ninterrupted: stopped the workers and agents; logs in {}",
                logs.display()
            );
            Ok(())
        }
        Some(Err(e)) => {
            println!("logs kept in {}", logs.display());
            Err(e)
        }
        Some(Ok(results)) => {
            let written = write_outputs(&args, &results);
            if args.keep_logs || written.is_err() {
                println!("logs in {}", logs.display());
            } else {
                let _ = std::fs::remove_dir_all(&logs);
            }
            written
        }
    };
    broker.stop();
    result
}
