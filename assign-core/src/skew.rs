//! Whether the group's heavy partitions stay heavy. Pure: the leader feeds the partition rates
//! of each plan with its clock.
//!
//! A plan that relieves a member holding heavy partitions by moving its *other* partitions away
//! leaves partition counts uneven. That is right while the same partitions stay heavy (a hot
//! key), and wrong once the heat moves to other partitions: a member's load then becomes, on
//! average, its count × the mean partition rate, and the members that took the extra
//! partitions are the next to be overloaded, until a later plan evens the counts — which the
//! agents' budget may not allow (the simulator's `oscillating`). So the leader compares where
//! the rate above the median sits now with where it sat a while ago; when little of it is on
//! the same partitions, the skew is *volatile* and the balance search keeps each member's
//! count near its capacity's share ([`crate::lagbalance`]).

use std::collections::HashMap;

/// Below this share of the excess rate on the same partitions as a while ago, the skew counts
/// as volatile. Half: a hot set that kept most of its members is the same hot set.
pub const VOLATILE_BELOW: f64 = 0.5;

/// An excess under this share of the total rate is no skew at all (measurement noise on equal
/// partitions); its placement says nothing.
const NO_SKEW_BELOW: f64 = 0.05;

/// How much of the rate above the median sits on the same partitions in `old` and `new`
/// (index = partition), whatever its size: each sample's excess over its own median as shares
/// of its total excess, and the overlap Σ min(share) of the two, from 0 (disjoint) to 1 (the
/// same partitions in the same proportions). `None` when either sample has no skew worth the
/// name, or they differ in length.
pub fn persistence(old: &[f64], new: &[f64]) -> Option<f64> {
    if old.len() != new.len() || old.is_empty() {
        return None;
    }
    let (e_old, total_old) = excess(old);
    let (e_new, total_new) = excess(new);
    let (sum_old, sum_new) = (e_old.iter().sum::<f64>(), e_new.iter().sum::<f64>());
    let skewed = |sum: f64, total: f64| sum > 0.0 && sum >= NO_SKEW_BELOW * total;
    if !skewed(sum_old, total_old) || !skewed(sum_new, total_new) {
        return None;
    }
    Some(
        e_old
            .iter()
            .zip(&e_new)
            .map(|(a, b)| (a / sum_old).min(b / sum_new))
            .sum(),
    )
}

/// Per partition the rate above the median (0 below it), and the total rate. Rates that are
/// not finite or negative count as 0.
fn excess(rates: &[f64]) -> (Vec<f64>, f64) {
    let clean: Vec<f64> = rates
        .iter()
        .map(|&r| if r.is_finite() && r > 0.0 { r } else { 0.0 })
        .collect();
    let median = crate::stats::median(&clean).unwrap_or(0.0);
    let total = clean.iter().sum();
    (clean.iter().map(|r| (r - median).max(0.0)).collect(), total)
}

/// The leader's memory of where the rate sat: a reference sample, replaced once it is at least
/// `min_age_ms` old (a follow-up round seconds later would otherwise always look persistent),
/// and the last verdict.
#[derive(Debug, Default)]
pub struct SkewMemory {
    reference: Option<(u64, HashMap<String, Vec<f64>>)>,
    volatile: bool,
}

impl SkewMemory {
    /// Feed this plan's rates (`topic name → rate per partition`) at `now_ms`; returns whether
    /// the skew is volatile. Partitions of topics missing from either sample are left out. A
    /// plan without measured rates (`None`: the group's first seconds) changes nothing: as a
    /// reference it would say there was no skew to move.
    pub fn observe(
        &mut self,
        now_ms: u64,
        rates: Option<HashMap<String, Vec<f64>>>,
        min_age_ms: u64,
    ) -> bool {
        let Some(rates) = rates else {
            return self.volatile;
        };
        match &self.reference {
            Some((at, _)) if now_ms.saturating_sub(*at) < min_age_ms => return self.volatile,
            Some((_, old)) => {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for (topic, new) in &rates {
                    if let Some(old) = old.get(topic).filter(|o| o.len() == new.len()) {
                        a.extend_from_slice(old);
                        b.extend_from_slice(new);
                    }
                }
                self.volatile = persistence(&a, &b).is_some_and(|p| p < VOLATILE_BELOW);
            }
            None => self.volatile = false,
        }
        self.reference = Some((now_ms, rates));
        self.volatile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hot(n: usize, hot: &[usize]) -> Vec<f64> {
        (0..n)
            .map(|p| if hot.contains(&p) { 6.0 } else { 1.0 })
            .collect()
    }

    #[test]
    fn the_same_hot_partitions_persist_and_a_moved_hot_set_does_not() {
        let a = hot(48, &[1, 7, 13, 20]);
        assert_eq!(persistence(&a, &a), Some(1.0));
        let p = persistence(&a, &hot(48, &[1, 8, 14, 21])).unwrap();
        assert!((p - 0.25).abs() < 1e-9, "{p}");
        assert_eq!(persistence(&a, &hot(48, &[2, 8, 14, 21])), Some(0.0));
        // A hot key that doubled its rate is the same hot key.
        let doubled: Vec<f64> = a
            .iter()
            .map(|r| if *r > 1.0 { 11.0 } else { 1.0 })
            .collect();
        assert_eq!(persistence(&a, &doubled), Some(1.0));
    }

    #[test]
    fn equal_rates_with_noise_are_no_skew() {
        let a: Vec<f64> = (0..30).map(|p| 10.0 + (p % 3) as f64 * 0.1).collect();
        let b: Vec<f64> = (0..30).map(|p| 10.0 + ((p + 1) % 3) as f64 * 0.1).collect();
        assert_eq!(persistence(&a, &b), None);
        assert_eq!(persistence(&a, &a[..29]), None);
        assert_eq!(persistence(&[], &[]), None);
        assert_eq!(persistence(&[f64::NAN, -1.0], &[f64::INFINITY, 0.0]), None);
    }

    #[test]
    fn the_verdict_compares_with_a_sample_old_enough() {
        let rates = |hot_set: &[usize]| Some(HashMap::from([("t".to_string(), hot(48, hot_set))]));
        let mut m = SkewMemory::default();
        assert!(!m.observe(0, None, 120_000), "no rates measured yet");
        assert!(
            !m.observe(0, rates(&[1, 2, 3]), 120_000),
            "nothing to compare with"
        );
        // A follow-up round 3 s later keeps the verdict and the old reference.
        assert!(!m.observe(3_000, rates(&[4, 5, 6]), 120_000));
        assert!(m.observe(240_000, rates(&[4, 5, 6]), 120_000));
        assert!(m.observe(250_000, rates(&[4, 5, 6]), 120_000), "kept");
        assert!(m.observe(400_000, None, 120_000), "kept without rates");
        assert!(
            !m.observe(480_000, rates(&[4, 5, 6]), 120_000),
            "the same set again"
        );
        // A topic that is new or was resized has nothing to compare with.
        let other = Some(HashMap::from([("u".to_string(), hot(48, &[9]))]));
        assert!(!m.observe(720_000, other, 120_000));
    }
}
