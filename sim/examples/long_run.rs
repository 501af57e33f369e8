//! A scenario stretched to several hours, for telling lag that grows from lag that only
//! fluctuates: per seed, the slope test's verdict and the mean group lag of every hour, for
//! cooperative-sticky and lagbalance at the scenario's nominal load. Trailing `VAR=VALUE`
//! arguments set an agent variable for every member's agent, as `lagbalance-sim --agent` does.
//!
//! ```text
//! cargo run --release -p lagbalance-sim --example long_run -- oscillating 4 20
//! cargo run --release -p lagbalance-sim --example long_run -- oscillating 4 20 LAGBALANCE_BUDGET_PER_HOUR=4
//! ```

use lagbalance_sim::{by_name, run, Strategy, NAMES};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let text =
        format!("usage: long_run SCENARIO HOURS SEEDS [VAR=VALUE...]   (scenarios: {NAMES:?})");
    if lagbalance::settings::wants_help(&args) {
        println!("{text}");
        return;
    }
    let usage = || {
        eprintln!("{text}");
        std::process::exit(2);
    };
    let [name, hours, seeds, agent_env @ ..] = args.as_slice() else {
        usage()
    };
    let (Some(mut sc), Ok(hours), Ok(seeds)) =
        (by_name(name), hours.parse::<u32>(), seeds.parse::<u64>())
    else {
        usage()
    };
    if hours == 0 || seeds == 0 {
        usage();
    }
    for pair in agent_env {
        let Some((var, value)) = pair.split_once('=') else {
            usage()
        };
        let Some(agents) = &mut sc.triggers.agents else {
            eprintln!("scenario {name} runs without agents");
            std::process::exit(2);
        };
        agents.env.retain(|(k, _)| k != var);
        agents.env.push((var.to_string(), value.to_string()));
    }
    if let Err(e) = sc.agent_config(sc.load) {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let sc = sc.shortened(f64::from(hours) * 3600.0 / sc.duration_s);
    for strategy in [Strategy::CooperativeSticky, Strategy::LagBalance] {
        let mut bounded = 0;
        let mut all_hours = Vec::new();
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
            all_hours.extend(hourly);
        }
        println!("  bounded by the slope test on {bounded} of {seeds} seeds");
        let mean = all_hours.iter().sum::<f64>() / all_hours.len() as f64;
        let (min, max) = all_hours
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        println!("  mean lag per hour over all seeds and hours: {min} to {max}, mean {mean:.0}");
    }
}
