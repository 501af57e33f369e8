//! The outlier rule. Pure.
//!
//! A member is an outlier in one interval when **all** of these hold:
//! 1. its lag is above the absolute floor (`LAGBALANCE_LAG_FLOOR`) — small lag is never worth a
//!    rebalance;
//! 2. its lag is at least `ratio ×` the median lag of its **peers** (the other members) —
//!    leave-one-out, so one slow member in a group of two or three is not hidden by pulling the
//!    median up, and a group-wide backlog (everyone's lag high) fails the test;
//! 3. its robust z-score against the peers, `0.6745 · (lag − median) / MAD`, is at least
//!    `zscore` — so in a group whose lags are naturally spread, the largest is not flagged just
//!    for being largest. A MAD of zero (identical peers) makes any excess infinitely unusual;
//!    rule 2 then does the gating;
//! 4. it is not already draining: if its lag shrinks fast enough to reach zero within
//!    `drain_ok`, waiting is cheaper than a rebalance.
//!
//! The rule must hold for `sustain` consecutive intervals ([`Streaks`]); a transient spike
//! resets nothing but never accumulates enough intervals.

use std::collections::HashMap;

use lagbalance::assign::stats::median_of_sorted;

use crate::view::GroupLagView;

#[derive(Clone, Debug, PartialEq)]
pub struct OutlierSettings {
    pub floor: i64,
    pub ratio: f64,
    pub zscore: f64,
    pub sustain: u32,
    /// Seconds; 0 disables the draining exemption.
    pub drain_ok_s: f64,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        OutlierSettings {
            floor: 1000,
            ratio: 3.0,
            zscore: 3.5,
            sustain: 3,
            drain_ok_s: 60.0,
        }
    }
}

/// How one member compares with its peers in one interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Score {
    pub member_id: String,
    pub lag: i64,
    pub peer_median: f64,
    pub peer_mad: f64,
    /// `lag / max(peer_median, 1)`.
    pub ratio: f64,
    /// Robust z-score (may be +∞ when the peers' MAD is 0).
    pub z: f64,
    /// Whether the instantaneous rule holds.
    pub outlier: bool,
}

/// Score every member of `view` (same order as `view.members`). Only a member with partitions
/// can be an outlier, and only members with partitions are peers: an idle member (more members
/// than partitions) says nothing about how fast a busy one should drain.
pub fn score(view: &GroupLagView, s: &OutlierSettings) -> Vec<Score> {
    let mut sorted_all: Vec<i64> = view
        .members
        .iter()
        .filter(|m| !m.info.partitions.is_empty())
        .map(|m| m.lag)
        .collect();
    sorted_all.sort_unstable();
    view.members
        .iter()
        .map(|m| {
            let mut peers: Vec<f64> = Vec::with_capacity(sorted_all.len());
            let mut skipped = false;
            let is_active = !m.info.partitions.is_empty();
            for l in &sorted_all {
                // Remove exactly one copy of this member's own lag.
                if is_active && !skipped && *l == m.lag {
                    skipped = true;
                    continue;
                }
                peers.push(*l as f64);
            }
            let med = median_of_sorted(&peers).unwrap_or(0.0);
            let mut dev: Vec<f64> = peers.iter().map(|p| (p - med).abs()).collect();
            dev.sort_unstable_by(f64::total_cmp);
            let mad = median_of_sorted(&dev).unwrap_or(0.0);
            let excess = m.lag as f64 - med;
            let z = if excess <= 0.0 {
                0.0
            } else if mad > 0.0 {
                0.6745 * excess / mad
            } else {
                f64::INFINITY
            };
            let ratio = m.lag as f64 / med.max(1.0);
            let draining = s.drain_ok_s > 0.0
                && m.time_to_drain.is_some_and(|t| t <= s.drain_ok_s)
                && m.lag_trend < 0.0;
            let outlier = is_active
                && !peers.is_empty()
                && m.lag > s.floor
                && m.lag as f64 >= s.ratio * med
                && z >= s.zscore
                && !draining;
            Score {
                member_id: m.info.member_id.clone(),
                lag: m.lag,
                peer_median: med,
                peer_mad: mad,
                ratio,
                z,
                outlier,
            }
        })
        .collect()
}

/// Score the agent's own member when the broker hides the other members' assignments
/// (tansu 0.6.0). Only the own member's lag is known exactly; the peers' lag is known as a sum
/// (every other partition of the group), so each peer is estimated at the mean
/// `(total − own) / (members − 1)` and the z-score cannot be computed (reported as NaN).
///
/// The election needs no peer details here: besides the floor, ratio and draining rules, the
/// member must hold a **strict majority of the group's lag** (`2 × own > total`). At most one
/// member can, and every agent sees the same total, so still at most one acts.
pub fn score_partial(view: &GroupLagView, me: &str, s: &OutlierSettings) -> Option<Score> {
    let m = view.member(me)?;
    let total = view.total_lag();
    let peers = view.members.len().saturating_sub(1);
    let peer_mean = if peers == 0 {
        0.0
    } else {
        total.saturating_sub(m.lag) as f64 / peers as f64
    };
    let draining = s.drain_ok_s > 0.0
        && m.time_to_drain.is_some_and(|t| t <= s.drain_ok_s)
        && m.lag_trend < 0.0;
    let outlier = peers > 0
        && !m.info.partitions.is_empty()
        && m.lag > s.floor
        && m.lag as f64 >= s.ratio * peer_mean
        && m.lag.saturating_mul(2) > total
        && !draining;
    Some(Score {
        member_id: m.info.member_id.clone(),
        lag: m.lag,
        peer_median: peer_mean,
        peer_mad: f64::NAN,
        ratio: m.lag as f64 / peer_mean.max(1.0),
        z: f64::NAN,
        outlier,
    })
}

/// Consecutive intervals each member has been an outlier.
#[derive(Debug, Default)]
pub struct Streaks {
    counts: HashMap<String, u32>,
}

impl Streaks {
    /// Record one interval's scores; members not in `scores` are forgotten.
    pub fn observe(&mut self, scores: &[Score]) {
        let mut next = HashMap::with_capacity(scores.len());
        for s in scores {
            if s.outlier {
                let c = self.counts.get(&s.member_id).copied().unwrap_or(0);
                next.insert(s.member_id.clone(), c.saturating_add(1));
            }
        }
        self.counts = next;
    }

    pub fn get(&self, member_id: &str) -> u32 {
        self.counts.get(member_id).copied().unwrap_or(0)
    }

    /// Whether `member_id` has been an outlier for at least `sustain` intervals.
    pub fn sustained(&self, member_id: &str, sustain: u32) -> bool {
        self.get(member_id) >= sustain.max(1)
    }

    pub fn reset(&mut self) {
        self.counts.clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::view::tests::member;
    use crate::view::MemberLag;

    pub(crate) fn view_with(lags: &[(&str, i64)]) -> GroupLagView {
        GroupLagView {
            state: "Stable".into(),
            members: lags
                .iter()
                .enumerate()
                .map(|(i, (id, lag))| MemberLag {
                    info: member(id, &[("t", i as i32)]),
                    lag: *lag,
                    lag_smoothed: *lag as f64,
                    lag_trend: 0.0,
                    processing_rate: 0.0,
                    incoming_rate: 0.0,
                    time_to_drain: None,
                })
                .collect(),
            ..GroupLagView::default()
        }
    }

    /// Run the rule over a series of lag vectors; return each interval's sustained members.
    fn run(series: &[Vec<(&str, i64)>], s: &OutlierSettings) -> Vec<Vec<String>> {
        let mut streaks = Streaks::default();
        series
            .iter()
            .map(|lags| {
                let scores = score(&view_with(lags), s);
                streaks.observe(&scores);
                scores
                    .iter()
                    .filter(|x| streaks.sustained(&x.member_id, s.sustain))
                    .map(|x| x.member_id.clone())
                    .collect()
            })
            .collect()
    }

    fn s() -> OutlierSettings {
        OutlierSettings::default()
    }

    #[test]
    fn uniform_lag_never_trips() {
        let lags = vec![("a", 50_000), ("b", 50_000), ("c", 50_000)];
        let out = run(&vec![lags; 10], &s());
        assert!(out.iter().all(|v| v.is_empty()), "{out:?}");
        // Uniform but noisy.
        let noisy: Vec<Vec<(&str, i64)>> = (0..10)
            .map(|i| {
                vec![
                    ("a", 50_000 + i * 100),
                    ("b", 51_000),
                    ("c", 49_500 - i * 50),
                ]
            })
            .collect();
        assert!(run(&noisy, &s()).iter().all(|v| v.is_empty()));
    }

    #[test]
    fn group_wide_backlog_never_trips() {
        // Everyone falls behind together (a producer burst), one a bit more.
        let series: Vec<Vec<(&str, i64)>> = (1..=10)
            .map(|i| vec![("a", i * 10_000), ("b", i * 12_000), ("c", i * 25_000)])
            .collect();
        let out = run(&series, &s());
        assert!(out.iter().all(|v| v.is_empty()), "{out:?}");
    }

    #[test]
    fn transient_spike_never_trips() {
        let calm = vec![("a", 100), ("b", 120), ("c", 90)];
        let spike = vec![("a", 100), ("b", 50_000), ("c", 90)];
        let series = vec![
            calm.clone(),
            spike.clone(),
            spike.clone(),
            calm.clone(),
            spike.clone(),
            calm.clone(),
            spike,
            calm,
        ];
        let out = run(&series, &s());
        assert!(out.iter().all(|v| v.is_empty()), "{out:?}");
    }

    #[test]
    fn sustained_outlier_trips_after_n_intervals() {
        let lags = vec![("a", 100), ("b", 20_000), ("c", 120)];
        let out = run(&vec![lags; 4], &s());
        assert!(out[0].is_empty() && out[1].is_empty());
        assert_eq!(out[2], vec!["b".to_string()]);
        assert_eq!(out[3], vec!["b".to_string()]);
    }

    #[test]
    fn below_floor_never_trips_and_two_member_groups_work() {
        let out = run(&vec![vec![("a", 1), ("b", 900), ("c", 2)]; 5], &s());
        assert!(out.iter().all(|v| v.is_empty()));
        let out = run(&vec![vec![("a", 100), ("b", 9_000)]; 3], &s());
        assert_eq!(out[2], vec!["b".to_string()]);
    }

    #[test]
    fn spread_out_group_needs_a_high_z_score() {
        // Peers 1000, 3000, 5000, 7000 (median 4000, MAD 2000): 13 000 is 3.25× the median but
        // only z = 3.0, so with zscore 3.5 it is not an outlier.
        let lags = vec![
            ("a", 1000),
            ("b", 3000),
            ("c", 5000),
            ("d", 7000),
            ("e", 13_000),
        ];
        let sc = score(&view_with(&lags), &s());
        assert!(!sc[4].outlier, "{:?}", sc[4]);
        assert!((sc[4].z - 0.6745 * 9000.0 / 2000.0).abs() < 1e-9);
    }

    #[test]
    fn draining_member_is_exempt() {
        let mut v = view_with(&[("a", 100), ("b", 20_000), ("c", 120)]);
        v.members[1].lag_trend = -1000.0;
        v.members[1].time_to_drain = Some(20.0);
        assert!(!score(&v, &s())[1].outlier);
        v.members[1].time_to_drain = Some(600.0);
        v.members[1].lag_trend = -1.0;
        assert!(score(&v, &s())[1].outlier);
    }

    fn hidden(lags: &[(&str, i64)], unattributed: i64) -> GroupLagView {
        let mut v = view_with(lags);
        v.assignments_visible = false;
        v.unattributed_lag = unattributed;
        v
    }

    #[test]
    fn partial_view_needs_a_majority_of_the_group_lag() {
        // Three members, only "b" known (its own agent): the others' partitions are unattributed.
        let v = hidden(&[("a", 0), ("b", 20_000), ("c", 0)], 400);
        let sc = score_partial(&v, "b", &s()).unwrap();
        assert!(sc.outlier, "{sc:?}");
        assert_eq!(sc.peer_median, 200.0);
        // Group-wide backlog: own lag high, but neither 3x the peer mean nor a majority.
        let v = hidden(&[("a", 0), ("b", 20_000), ("c", 0)], 30_000);
        assert!(!score_partial(&v, "b", &s()).unwrap().outlier);
        // Uniform lag.
        let v = hidden(&[("a", 0), ("b", 5_000), ("c", 0)], 10_000);
        assert!(!score_partial(&v, "b", &s()).unwrap().outlier);
        // Even with ratio 1 in a big group, 45 % of the lag is not a majority.
        let loose = OutlierSettings {
            ratio: 1.0,
            zscore: 0.0,
            ..s()
        };
        let ids = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let lags: Vec<(&str, i64)> = ids.iter().map(|i| (*i, 0)).collect();
        let mut v = hidden(&lags, 55_000);
        v.members[1].lag = 45_000;
        assert!(!score_partial(&v, "b", &loose).unwrap().outlier);
        v.members[1].lag = 56_000;
        assert!(score_partial(&v, "b", &loose).unwrap().outlier);
        assert!(score_partial(&v, "nobody", &s()).is_none());
    }

    #[test]
    fn idle_members_are_not_peers_or_outliers() {
        let mut v = view_with(&[("a", 100), ("b", 20_000), ("c", 120)]);
        v.members.push(MemberLag {
            info: member("d", &[]),
            ..v.members[0].clone()
        });
        v.members[3].lag = 0;
        let sc = score(&v, &s());
        assert!(!sc[3].outlier);
        assert_eq!(sc[1].peer_median, 110.0);
        // A single active member has no peers.
        let v = view_with(&[("a", 1_000_000)]);
        assert!(!score(&v, &s())[0].outlier);
    }
}
