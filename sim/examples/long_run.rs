//! A scenario stretched to several hours, for telling lag that grows from lag that only
//! fluctuates: per seed, the slope test's verdict and the mean group lag of every hour, for
//! cooperative-sticky and lagbalance at the scenario's nominal load.
//!
//! ```text
//! cargo run --release -p lagbalance-sim --example long_run -- oscillating 4 20
//! ```

use lagbalance_sim::{by_name, run, Strategy, NAMES};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("usage: long_run SCENARIO HOURS SEEDS   (scenarios: {NAMES:?})");
        std::process::exit(2);
    };
    let [name, hours, seeds] = args.as_slice() else {
        usage()
    };
    let (Some(sc), Ok(hours), Ok(seeds)) =
        (by_name(name), hours.parse::<u32>(), seeds.parse::<u64>())
    else {
        usage()
    };
    if hours == 0 || seeds == 0 {
        usage();
    }
    let sc = sc.shortened(f64::from(hours) * 3600.0 / sc.duration_s);
    for strategy in [Strategy::CooperativeSticky, Strategy::LagBalance] {
        let mut bounded = 0;
        println!("{} over {hours} h:", strategy.name());
        for seed in 1..=seeds {
            let sc = sc.with_seed(seed);
            let r = run(&sc, strategy, sc.load, true);
            bounded += usize::from(r.bounded);
            let hourly: Vec<f64> = (0..hours)
                .map(|h| {
                    let hour = f64::from(h) * 3600.0..f64::from(h + 1) * 3600.0;
                    let lags: Vec<f64> = r
                        .series_t
                        .iter()
                        .zip(&r.series_lag)
                        .filter(|(t, _)| hour.contains(t))
                        .map(|(_, lag)| *lag)
                        .collect();
                    (lags.iter().sum::<f64>() / lags.len().max(1) as f64).round()
                })
                .collect();
            println!(
                "  seed {seed:2}: slope test {}, mean lag per hour {hourly:?}",
                if r.bounded { "bounded" } else { "unbounded" }
            );
        }
        println!("  bounded by the slope test on {bounded} of {seeds} seeds");
    }
}
