//! One detailed `lagbalance` run of a scenario at its nominal load (the scenario's seed, or the
//! one given), printing mean utilisation per consumer; with `LAGBALANCE_SIM_TRACE=1` every
//! join/sync round is printed too.
//!
//! ```text
//! LAGBALANCE_SIM_TRACE=1 cargo run --release -p lagbalance-sim --example trace -- oscillating
//! LAGBALANCE_SIM_TRACE=1 cargo run --release -p lagbalance-sim --example trace -- oscillating 4
//! ```

fn main() {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "agoda".to_string());
    if name == "--help" || name == "-h" {
        println!(
            "usage: trace [SCENARIO [SEED]]   (default agoda; LAGBALANCE_SIM_TRACE=1 prints every round)\n\
             scenarios: {:?}",
            lagbalance_sim::NAMES
        );
        return;
    }
    let Some(sc) = lagbalance_sim::by_name(&name) else {
        eprintln!(
            "unknown scenario {name:?}; known: {:?}",
            lagbalance_sim::NAMES
        );
        std::process::exit(2);
    };
    let sc = match std::env::args().nth(2).map(|s| s.parse::<u64>()) {
        None => sc,
        Some(Ok(seed)) => sc.with_seed(seed),
        Some(Err(_)) => {
            eprintln!("SEED must be a non-negative integer");
            std::process::exit(2);
        }
    };
    let r = lagbalance_sim::run(&sc, lagbalance_sim::Strategy::LagBalance, sc.load, true);
    println!(
        "{:?}",
        r.util_mean
            .iter()
            .map(|u| (u * 1000.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    println!(
        "moves {} rounds {} rebalances {}",
        r.moves, r.rounds, r.rebalances
    );
}
