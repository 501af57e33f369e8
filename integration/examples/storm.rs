//! The storm case on a real broker: the agent scenario (three workers, one agent each, the
//! client's own capacity-news rejoin on) with the third worker's host alternating between normal
//! speed and 3× slower every `--period-s` seconds for `--for-s` seconds. Prints, per period, how
//! many rebalance rounds the group ran against how often the load changed, for docs/agent.md.
//!
//! cargo run --release -p lagbalance-integration --example storm -- [--periods 10,30] [--for-s 120]

use std::time::Duration;

use lagbalance_integration::agent_scenario::{run, Scenario};
use lagbalance_integration::e2e_cli::{exit_with_help_if_asked, flag};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    exit_with_help_if_asked(&args, include_str!("storm.rs"), 6);
    let periods: Vec<u64> = flag(&args, "--periods", "10,30".to_string())?
        .split(',')
        .map(|p| p.trim().parse())
        .collect::<Result<_, _>>()?;
    let window = Duration::from_secs(flag(&args, "--for-s", 120u64)?);
    let mut rows = Vec::new();
    for period in periods {
        let s = Scenario {
            oscillate_every: Some(Duration::from_secs(period.max(1))),
            capacity_rejoin: true,
            produce_with_agents: window,
            ..Scenario::default()
        };
        eprintln!("running: speed changes every {period} s for {window:?} …");
        let out = run(&s).await?;
        let _ = std::fs::remove_dir_all(&out.logs);
        rows.push((period, out));
    }
    let s = Scenario::default();
    println!(
        "{} partitions, {} records/s, fast cost {} µs, slow ×{} on worker c, agents in mode {} \
         (cooldown 20 s), capacity-news rejoin on (at most one per member per 30 s), {} s window",
        s.partitions,
        s.rate,
        s.fast_cost_us,
        s.slow_factor,
        s.mode,
        window.as_secs()
    );
    println!();
    println!("| speed changes every (s) | speed changes | rebalance rounds (generations) | agent actions | peak lag | slow member partitions before → after | audit |");
    println!("|---:|---:|---:|---|---:|---|---|");
    for (period, o) in &rows {
        let actions: Vec<String> = o.actions.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        println!(
            "| {period} | {} | {} | {} | {} | {} → {} | {} |",
            o.speed_changes,
            o.rounds_after_slowdown,
            actions.join(" "),
            o.peak_lag,
            o.slow_partitions_before,
            o.slow_partitions_after,
            if o.report.is_clean() {
                "clean"
            } else {
                "FAILED"
            },
        );
    }
    Ok(())
}
