//! Measures the agent's two actions on a real broker (tansu): the scenario of
//! `tests/agent_tansu.rs` (three workers, one 3× slower, one agent each) once per mode, printing
//! a markdown table for docs/agent.md.
//!
//! cargo run --release -p lagbalance-integration --example agent_modes -- [--runs N]

use lagbalance_integration::agent_scenario::{run, Outcome, Scenario};

fn secs(d: Option<std::time::Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

const USAGE: &str = "\
usage: agent_modes [--runs N]

Runs the agent scenario (three workers, one 3x slower, one agent each) once per mode, N times
(default 1), on a test broker (TestBroker::start), and prints a markdown table.
  -h, --help    print this and exit
";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if lagbalance::settings::wants_help(&args) {
        print!("{USAGE}");
        return Ok(());
    }
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(1);
    let mut rows: Vec<(String, Outcome)> = Vec::new();
    for _ in 0..runs {
        for mode in ["rejoin", "leave"] {
            let s = Scenario {
                mode: mode.into(),
                ..Scenario::default()
            };
            eprintln!("running mode {mode} …");
            let out = run(&s).await?;
            let _ = std::fs::remove_dir_all(&out.logs);
            rows.push((mode.into(), out));
        }
    }
    let s = Scenario::default();
    println!(
        "{} partitions, {} records/s, fast cost {} µs, slow ×{}, lag floor {}, sleep-mode cost",
        s.partitions, s.rate, s.fast_cost_us, s.slow_factor, s.lag_floor
    );
    println!();
    println!("| mode | trigger after (s) | trigger → lag < floor (s) | peak lag | slow member partitions before → after | ownership changes after trigger | redelivered records | audit |");
    println!("|---|---|---|---|---|---|---|---|");
    for (mode, o) in &rows {
        println!(
            "| {mode} | {} | {} | {} | {} → {} | {} | {} | {} |",
            secs(o.trigger_after),
            secs(o.recovered_after),
            o.peak_lag,
            o.slow_partitions_before,
            o.slow_partitions_after,
            o.ownership_changes_after_trigger,
            o.report.duplicates,
            if o.report.is_clean() {
                "clean"
            } else {
                "FAILED"
            },
        );
    }
    Ok(())
}
