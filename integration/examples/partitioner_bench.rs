//! The lag-aware partitioner on a real broker, the figures in docs/partitioner.md: even
//! spread, the lag-aware partitioner, and lag-aware consumer balancing (the `lagbalance`
//! assignor) with one slow consumer of three, each on its own topic and group, run side by
//! side so they share the broker's conditions.
//!
//! ```text
//! cargo run --release -p lagbalance-integration --example partitioner_bench -- \
//!     [--bootstrap HOST:PORT] [--duration-s 40] [--rate 240]
//! ```
//! Without `--bootstrap` (or `LAGBALANCE_BOOTSTRAP`) it starts its own broker (Apache Kafka by default). Settings are
//! those of `lagrun::Params::new` (12 partitions; consumers at 20 ms / 2 ms / 2 ms per record;
//! partitioner slow_lag 40, refresh 500 ms, observe and probe 3 s, probe share 0.2).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use lagbalance_integration::lagrun::{run, Params, Report, Routing};
use lagbalance_integration::TestBroker;

fn row(name: &str, r: &Report) -> String {
    let half = r.elapsed.as_secs_f64() / 2.0;
    let slow_produced: u64 = r
        .slow_partitions
        .iter()
        .filter_map(|p| r.produced.get(*p as usize))
        .sum();
    let total: u64 = r.produced.iter().sum();
    format!(
        "| {name} | {} / {} ({:.1} %, even {:.1} %) | {} | {} | {:.1} | {} | {:?} | {} |",
        slow_produced,
        total,
        r.slow_share() * 100.0,
        r.fair_share() * 100.0,
        r.max_lag_after(half),
        r.final_lag(),
        r.lag_slope_after(half),
        r.transitions,
        r.consumed,
        if r.ownership_changed { "yes" } else { "no" },
    )
}

const USAGE: &str = "\
usage: partitioner_bench [--bootstrap HOST:PORT] [--duration-s 40] [--rate 240]

Even spread, the lag-aware partitioner and the lagbalance assignor side by side, one slow
consumer of three each. Without --bootstrap (or LAGBALANCE_BOOTSTRAP) it starts its own broker.
  -h, --help    print this and exit
";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut bootstrap = std::env::var("LAGBALANCE_BOOTSTRAP").ok();
    let mut duration = 40u64;
    let mut rate = 240.0;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if lagbalance::settings::wants_help(&args) {
        print!("{USAGE}");
        return Ok(());
    }
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bootstrap" => bootstrap = Some(val()?),
            "--duration-s" => duration = val()?.parse()?,
            "--rate" => rate = val()?.parse()?,
            other => bail!("unknown flag {other}\n\n{USAGE}"),
        }
    }
    let broker = match bootstrap {
        Some(b) => {
            std::env::set_var("LAGBALANCE_BOOTSTRAP", &b);
            TestBroker::start().await?
        }
        None => TestBroker::start_own().await?,
    };
    let params = |routing, assignor: &str| {
        let mut p = Params::new(&broker.bootstrap, routing);
        p.duration = Duration::from_secs(duration);
        p.rate = rate;
        p.assignor = assignor.into();
        p.join_limit = Duration::from_secs(60);
        p
    };
    let even = params(Routing::Even, "range");
    let aware = params(Routing::LagAware, "range");
    let balanced = params(Routing::Even, "lagbalance");
    let (even, aware, balanced) = tokio::join!(run(&even), run(&aware), run(&balanced));
    println!(
        "{rate} records/s for {duration} s, 12 partitions, consumers at 20/2/2 ms per record (50/500/500 records/s)\n"
    );
    println!("| strategy | records to the slow consumer's partitions | max lag, 2nd half | final lag | lag slope, 2nd half (records/s) | partitioner state changes | records consumed per consumer | partitions moved |");
    println!("|---|---:|---:|---:|---:|---:|---|:---:|");
    for (name, r) in [
        ("even spread + range", even),
        ("lag-aware partitioner + range", aware),
        ("even spread + lagbalance assignor", balanced),
    ] {
        match r {
            Ok(r) => println!("{}", row(name, &r)),
            Err(e) => println!("| {name} | failed: {e:#} | | | | | | |"),
        }
    }
    Ok(())
}
