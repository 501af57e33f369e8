//! Issue 4's acceptance targets as regression tests, on shortened runs of the scenario presets.
//! The simulator itself panics if any plan fails `cooperative::validate`, so every test here
//! also checks plan validity for every round it simulates.

use lagbalance_sim::engine::BOUNDED_SLOPE;
use lagbalance_sim::{by_name, max_sustainable, run, Scenario, Strategy};

fn scenario(name: &str, factor: f64) -> Scenario {
    by_name(name).expect("preset exists").shortened(factor)
}

#[test]
fn agoda_lagbalance_sustains_98_percent_and_count_based_strategies_about_60() {
    let sc = scenario("agoda", 0.5);
    let lb = run(&sc, Strategy::LagBalance, 0.98, false);
    assert!(
        lb.bounded,
        "lagbalance at 98 %: slope {} records/s",
        lb.lag_slope
    );
    assert!(max_sustainable(&sc, Strategy::LagBalance) >= 0.98);
    for s in [
        Strategy::RoundRobin,
        Strategy::CooperativeSticky,
        Strategy::Range,
    ] {
        assert!(run(&sc, s, 0.55, false).bounded, "{} at 55 %", s.name());
        let over = run(&sc, s, 0.65, false);
        assert!(!over.bounded, "{} at 65 % should pile up lag", s.name());
        assert!(over.lag_slope > BOUNDED_SLOPE * over.input_rate);
    }
}

#[test]
fn hermes_utilisation_spread_within_5_pp() {
    let sc = scenario("hermes", 0.5);
    let lb = run(&sc, Strategy::LagBalance, sc.load, false);
    assert!(lb.bounded);
    assert!(
        lb.util_spread_pp <= 5.0,
        "spread {} pp: {:?}",
        lb.util_spread_pp,
        lb.util_mean
    );
    // Without capacity awareness the slow generation saturates.
    let st = run(&sc, Strategy::CooperativeSticky, sc.load, false);
    assert!(st.util_spread_pp > 20.0);
}

#[test]
fn hot_partitions_p99_lag_at_most_a_fifth_of_cooperative_sticky() {
    let sc = scenario("hot-partitions", 0.5);
    let lb = run(&sc, Strategy::LagBalance, sc.load, false);
    let st = run(&sc, Strategy::CooperativeSticky, sc.load, false);
    assert!(
        lb.lag_p99 <= 0.2 * st.lag_p99,
        "lagbalance p99 {} vs cooperative-sticky {}",
        lb.lag_p99,
        st.lag_p99
    );
}

#[test]
fn noisy_neighbour_recovers_without_human_action() {
    let sc = scenario("noisy-neighbour", 0.67);
    let lb = run(&sc, Strategy::LagBalance, sc.load, false);
    assert!(lb.disturbed, "the slowdown must hurt before it heals");
    let t = lb.recovery_s.expect("lag back under its pre-event level");
    assert!(t < 400.0, "recovered only after {t} s");
    assert!(lb.bounded);
    // Count-based assignment never recovers: the slow member keeps its share.
    let st = run(&sc, Strategy::CooperativeSticky, sc.load, false);
    assert!(st.recovery_s.is_none());
}

#[test]
fn oscillating_respects_budget_and_stabilisation_window() {
    let sc = scenario("oscillating", 1.0);
    let lb = run(&sc, Strategy::LagBalance, sc.load, false);
    assert!(lb.rebalances > 2, "the hot set must provoke rebalances");
    assert!(lb.max_rebalances_per_hour <= sc.triggers.budget_per_hour);
    assert_eq!(lb.double_moves, 0);
    assert!(lb.moves > 0);
}

#[test]
fn every_strategy_produces_valid_plans_in_every_scenario() {
    for name in lagbalance_sim::NAMES {
        let sc = scenario(name, 0.25);
        for s in Strategy::ALL {
            let r = run(&sc, s, sc.load, true);
            assert!(r.plans_validated >= 1, "{name}/{}", s.name());
            assert_eq!(r.plans_validated, r.rounds);
        }
    }
}

#[test]
fn runs_are_deterministic() {
    let sc = scenario("noisy-neighbour", 0.3);
    let a = run(&sc, Strategy::LagBalance, 0.8, true);
    let b = run(&sc, Strategy::LagBalance, 0.8, true);
    assert_eq!(a.series_lag, b.series_lag);
    assert_eq!(a.moves, b.moves);
    assert_eq!(a.util_mean, b.util_mean);
}

#[test]
fn every_rate_model_delivers_the_requested_mean_load() {
    use lagbalance_sim::scenario::{Modulation, Weights};
    let mut sc = scenario("noisy-neighbour", 1.0);
    sc.consumers.iter_mut().for_each(|c| c.changes.clear());
    let capacity = sc.total_capacity();
    let models = [
        (Weights::Uniform, Modulation::None),
        (Weights::Zipf { s: 1.0 }, Modulation::None),
        (
            Weights::Uniform,
            Modulation::Diurnal {
                amplitude: 0.5,
                period_s: 150.0,
            },
        ),
        (
            Weights::Uniform,
            Modulation::MovingHot {
                count: 6,
                factor: 5.0,
                period_s: 120.0,
            },
        ),
        (
            Weights::Hot {
                hot: vec![1, 2],
                factor: 10.0,
            },
            Modulation::Bursty {
                factor: 3.0,
                mean_burst_s: 10.0,
                mean_gap_s: 50.0,
            },
        ),
    ];
    for (w, m) in models {
        sc.weights = w.clone();
        sc.modulation = m.clone();
        sc.cost = lagbalance_sim::scenario::Cost::Constant;
        let r = run(&sc, Strategy::LagBalance, 0.5, false);
        // input_rate is the mean over the last quarter (450 s = three diurnal periods; bursty
        // and moving-hot sets average out within a few percent).
        let expected = 0.5 * capacity;
        assert!(
            (r.input_rate - expected).abs() < 0.1 * expected,
            "{w:?}/{m:?}: {} vs {expected}",
            r.input_rate
        );
        assert!(r.bounded, "{w:?}/{m:?} at 50 %");
    }
}

/// Eager rounds stop every partition for the round; cooperative rounds stop only movers. With
/// nothing to move (equal consumers, uniform partitions), periodic rebalances cost an eager
/// group a lag spike of about `input × round` and a cooperative group nothing.
#[test]
fn eager_rounds_pause_everyone_cooperative_rounds_only_movers() {
    let mut sc = scenario("agoda", 0.5);
    sc.consumers.iter_mut().for_each(|c| c.speed = 20.0);
    sc.triggers.outlier = None;
    sc.triggers.periodic_s = Some(120.0);
    let load = 0.5;
    let input = load * sc.total_capacity();
    let eager = run(&sc, Strategy::RoundRobin, load, true);
    let coop = run(&sc, Strategy::CooperativeSticky, load, true);
    assert!(eager.rebalances > 3 && coop.rebalances == eager.rebalances);
    assert_eq!(coop.moves, 0);
    assert!(
        coop.lag_max <= input * 1.01,
        "cooperative lag {}",
        coop.lag_max
    );
    let round = sc.rebalance.round_s;
    assert!(
        eager.lag_max >= input * round,
        "eager lag {} < {}",
        eager.lag_max,
        input * round
    );
}

/// Issue 7: with a dedicated producer, the lag-aware partitioner keeps lag bounded at the
/// nominal load where even spread into cooperative-sticky does not, in both presets.
#[test]
fn lag_aware_partitioner_bounds_lag_where_even_spread_does_not() {
    use lagbalance_sim::{run_with_producer, with_producer, ProducerMode};
    for name in lagbalance_sim::PRODUCER_NAMES {
        let sc = with_producer(name).expect("preset").shortened(0.5);
        let even = run_with_producer(
            &sc,
            Strategy::CooperativeSticky,
            ProducerMode::Even,
            sc.load,
            false,
        );
        let aware = run_with_producer(
            &sc,
            Strategy::CooperativeSticky,
            ProducerMode::LagAware,
            sc.load,
            false,
        );
        assert!(
            !even.bounded,
            "{name}: even spread at {} should pile up",
            sc.load
        );
        assert!(
            aware.bounded,
            "{name}: partitioner slope {} records/s",
            aware.lag_slope
        );
        assert!(aware.transitions > 0, "{name}");
        assert!(
            aware.lag_p99 < 0.2 * even.lag_p99,
            "{name}: p99 lag {} vs even spread {}",
            aware.lag_p99,
            even.lag_p99
        );
        assert!(
            aware.peak_demand <= 1.05 && even.peak_demand > 1.2,
            "{name}: peak demand {} vs even {}",
            aware.peak_demand,
            even.peak_demand
        );
        // Without a producer preset nothing is routed.
        let plain = run_with_producer(
            &by_name(name).expect("preset").shortened(0.5),
            Strategy::CooperativeSticky,
            ProducerMode::LagAware,
            sc.load,
            false,
        );
        assert_eq!(plain.transitions, 0);
    }
}
