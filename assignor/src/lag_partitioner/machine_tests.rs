//! Good / Slow / OK transitions driven by a simulated clock: no sockets, no sleeps.

use super::*;

const S: u64 = 1000;

fn settings() -> MachineSettings {
    MachineSettings {
        slow_lag: 100,
        observe_ms: 10 * S,
        probe_period_ms: 10 * S,
        probe_share: 0.2,
        max_closed_ratio: 0.5,
        stale_after_ms: 30 * S,
    }
}

fn lags(v: &[i64]) -> Vec<Option<i64>> {
    v.iter().map(|l| Some(*l)).collect()
}

use PartitionState::{Good, Slow};
const OK: PartitionState = PartitionState::Ok;

#[test]
fn good_partition_over_the_threshold_closes() {
    let mut m = LagStates::new(settings());
    assert!(m.observe(0, &lags(&[0, 0, 0, 0])).is_empty());
    assert_eq!(m.states(), vec![Good; 4]);
    // At the threshold is not above it.
    assert!(m.observe(S, &lags(&[100, 0, 0, 0])).is_empty());
    let t = m.observe(2 * S, &lags(&[101, 0, 0, 0]));
    assert_eq!(
        t,
        vec![Transition {
            partition: 0,
            from: Good,
            to: Slow,
            lag: Some(101)
        }]
    );
    assert_eq!(m.states(), vec![Slow, Good, Good, Good]);
}

#[test]
fn slow_waits_for_the_observation_period_and_a_drained_lag() {
    let mut m = LagStates::new(settings());
    m.observe(0, &lags(&[500, 0, 0, 0]));
    assert_eq!(m.state(0), Some(Slow));
    // Drained, but the observation period is not over.
    m.observe(9 * S, &lags(&[0, 0, 0, 0]));
    assert_eq!(m.state(0), Some(Slow));
    // Period over, but lag still above half the threshold (hysteresis).
    m.observe(10 * S, &lags(&[51, 0, 0, 0]));
    assert_eq!(m.state(0), Some(Slow));
    let t = m.observe(11 * S, &lags(&[50, 0, 0, 0]));
    assert_eq!(t[0].to, OK);
    assert_eq!(m.state(0), Some(OK));
}

#[test]
fn ok_is_promoted_when_its_lag_keeps_falling() {
    let mut m = LagStates::new(settings());
    m.observe(0, &lags(&[500, 0, 0, 0]));
    m.observe(10 * S, &lags(&[40, 0, 0, 0]));
    assert_eq!(m.state(0), Some(OK));
    // Mid-probe readings do not judge.
    m.observe(15 * S, &lags(&[30, 0, 0, 0]));
    assert_eq!(m.state(0), Some(OK));
    let t = m.observe(20 * S, &lags(&[20, 0, 0, 0]));
    assert_eq!(t[0].from, OK);
    assert_eq!(t[0].to, Good);
    assert_eq!(m.states(), vec![Good; 4]);
}

#[test]
fn ok_goes_back_to_slow_when_its_lag_grows() {
    let mut m = LagStates::new(settings());
    m.observe(0, &lags(&[500, 0, 0, 0]));
    m.observe(10 * S, &lags(&[20, 0, 0, 0]));
    assert_eq!(m.state(0), Some(OK));
    // Grew by more than a tenth of the threshold over the probe.
    m.observe(20 * S, &lags(&[31, 0, 0, 0]));
    assert_eq!(m.state(0), Some(Slow));
    // And it must sit out a full observation period again.
    m.observe(25 * S, &lags(&[0, 0, 0, 0]));
    assert_eq!(m.state(0), Some(Slow));
    m.observe(30 * S, &lags(&[0, 0, 0, 0]));
    assert_eq!(m.state(0), Some(OK));
}

#[test]
fn ok_tolerates_noise_of_a_tenth_of_the_threshold() {
    let mut m = LagStates::new(settings());
    m.observe(0, &lags(&[500, 0, 0, 0]));
    m.observe(10 * S, &lags(&[0, 0, 0, 0]));
    m.observe(20 * S, &lags(&[10, 0, 0, 0]));
    assert_eq!(m.state(0), Some(Good));
}

#[test]
fn ok_over_the_threshold_trips_at_once() {
    let mut m = LagStates::new(settings());
    m.observe(0, &lags(&[500, 0, 0, 0]));
    m.observe(10 * S, &lags(&[0, 0, 0, 0]));
    let t = m.observe(11 * S, &lags(&[101, 0, 0, 0]));
    assert_eq!((t[0].from, t[0].to), (OK, Slow));
}

#[test]
fn never_closes_more_than_the_cap_and_closes_the_worst_first() {
    let mut m = LagStates::new(settings());
    // 3 of 5 over the threshold, cap floor(5 × 0.5) = 2: the two worst close.
    m.observe(0, &lags(&[200, 900, 0, 500, 0]));
    assert_eq!(m.states(), vec![Good, Slow, Good, Slow, Good]);
    // A partition in OK still counts against the cap.
    m.observe(10 * S, &lags(&[200, 0, 0, 900, 0]));
    assert_eq!(m.states(), vec![Good, OK, Good, Slow, Good]);
    m.observe(11 * S, &lags(&[300, 0, 0, 900, 0]));
    assert_eq!(m.state(0), Some(Good));
}

#[test]
fn never_closes_every_partition() {
    let mut cfg = settings();
    cfg.max_closed_ratio = 1.0;
    let mut m = LagStates::new(cfg.clone());
    m.observe(0, &lags(&[500, 500, 0]));
    assert_eq!(m.states(), vec![Slow, Slow, Good], "one stays open");
    // A single partition is never closed.
    let mut one = LagStates::new(cfg);
    one.observe(0, &lags(&[1_000_000]));
    assert_eq!(one.states(), vec![Good]);
}

#[test]
fn everyone_behind_falls_back_to_even_spread() {
    let mut m = LagStates::new(settings());
    m.observe(0, &lags(&[500, 0, 0, 0]));
    assert_eq!(m.state(0), Some(Slow));
    let t = m.observe(S, &lags(&[500, 200, 300, 400]));
    assert_eq!(m.states(), vec![Good; 4]);
    assert_eq!(t.len(), 1);
    assert!(m.routing().is_even());
}

#[test]
fn unknown_lag_keeps_the_state() {
    let mut m = LagStates::new(settings());
    m.observe(0, &lags(&[500, 0, 0, 0]));
    m.observe(20 * S, &[None, Some(0), None, Some(0)]);
    assert_eq!(m.states(), vec![Slow, Good, Good, Good]);
}

#[test]
fn failures_keep_states_until_stale_then_fail_open() {
    let mut m = LagStates::new(settings());
    m.observe(0, &lags(&[500, 0, 0, 0]));
    assert!(m.observe_failure(10 * S).is_empty());
    assert!(m.observe_failure(29 * S).is_empty());
    assert_eq!(m.state(0), Some(Slow));
    assert!(!m.failed_open());
    let t = m.observe_failure(30 * S);
    assert_eq!(t.len(), 1);
    assert!(m.failed_open());
    assert_eq!(m.states(), vec![Good; 4]);
    // A good reading ends fail-open.
    m.observe(31 * S, &lags(&[0, 0, 0, 0]));
    assert!(!m.failed_open());
}

#[test]
fn partition_count_changes_are_followed() {
    let mut m = LagStates::new(settings());
    m.observe(0, &lags(&[500, 0]));
    m.observe(S, &lags(&[500, 0, 0, 0]));
    assert_eq!(m.states(), vec![Slow, Good, Good, Good]);
    m.observe(2 * S, &lags(&[500]));
    assert_eq!(m.states(), vec![Good], "the only partition must be open");
    m.observe(3 * S, &[]);
    assert!(m.states().is_empty());
    assert!(m.routing().is_empty());
}

#[test]
fn negative_and_huge_lags_do_not_panic() {
    let mut cfg = settings();
    cfg.slow_lag = u64::MAX;
    let mut m = LagStates::new(cfg);
    m.observe(0, &lags(&[i64::MIN, i64::MAX, -1, 0]));
    assert_eq!(m.states(), vec![Good; 4]);
    let mut m = LagStates::new(settings());
    m.observe(u64::MAX, &lags(&[i64::MAX, i64::MIN]));
    m.observe(0, &lags(&[i64::MAX, 0]));
    assert_eq!(m.states(), vec![Slow, Good]);
}

#[test]
fn unkeyed_routing_follows_the_weights() {
    let r = Routing::new(vec![Good, Slow, OK, Good], 0.2);
    let mut counts = [0usize; 4];
    for k in 0..22_000u64 {
        counts[r.pick_unkeyed(k) as usize] += 1;
    }
    assert_eq!(counts[1], 0, "Slow gets nothing");
    // Shares 1 : 0 : 0.2 : 1 of 2.2.
    assert!((counts[0] as i64 - 10_000).abs() < 50, "{counts:?}");
    assert!((counts[2] as i64 - 2_000).abs() < 50, "{counts:?}");
    assert!((counts[3] as i64 - 10_000).abs() < 50, "{counts:?}");
    // Even over a short run (low discrepancy).
    let even = Routing::even(3);
    let mut c = [0usize; 3];
    for k in 0..30u64 {
        c[even.pick_unkeyed(k) as usize] += 1;
    }
    assert!(c.iter().all(|x| (9..=11).contains(x)), "{c:?}");
    let shares = r.shares();
    assert!((shares[2] - 0.2 / 2.2).abs() < 1e-9);
}

#[test]
fn keyed_routing_keeps_keys_home_unless_their_partition_is_closed() {
    let n = 6;
    let states = vec![Good, Slow, Good, OK, Good, Good];
    let r = Routing::new(states.clone(), 0.25);
    let mut probe_home = 0;
    let mut probe_total = 0;
    for k in 0..5_000 {
        let key = format!("key-{k}");
        let home = partition_for_key(key.as_bytes(), n);
        let p = r.pick_keyed(key.as_bytes());
        assert_eq!(p, r.pick_keyed(key.as_bytes()), "stable per key");
        match states[home as usize] {
            PartitionState::Good => assert_eq!(p, home),
            PartitionState::Slow => assert_eq!(states[p as usize], Good),
            PartitionState::Ok => {
                probe_total += 1;
                if p == home {
                    probe_home += 1;
                } else {
                    assert_eq!(states[p as usize], Good);
                }
            }
        }
    }
    let frac = probe_home as f64 / probe_total as f64;
    assert!((frac - 0.25).abs() < 0.05, "probe share of keys {frac}");
}

#[test]
fn routing_without_a_good_partition_spreads_evenly() {
    let r = Routing::new(vec![Slow, Slow], 0.5);
    assert!(r.is_even());
    let r = Routing::new(vec![Good, Slow], f64::NAN);
    assert_eq!(r.shares(), vec![1.0, 0.0]);
}
