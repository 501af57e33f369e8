//! Capacity learning by feedback: each member estimates how many records/s it could process,
//! from what it actually processed and how busy it was, so nobody configures weights.
//!
//! The idea follows Hermes's workload balancer (a proportional controller steering consumers
//! toward equal utilisation), adapted to a member that measures itself:
//!
//! 1. Each sample yields an *implied capacity*: when the member was backlogged for the whole
//!    window its throughput *is* its capacity; otherwise throughput ÷ CPU utilisation
//!    extrapolates to full utilisation. Samples with too little utilisation to extrapolate
//!    from, or with garbage numbers, carry no information and are skipped.
//! 2. Implied capacities are smoothed by an EWMA whose weight depends on the real time between
//!    samples, `α = 1 − exp(−Δt / window)`, so irregular sampling (rebalances come when they
//!    come) weighs old and new evidence by age, not by count.
//!    Except downwards under load: a backlogged sample below the estimate replaces it at once
//!    (a member that cannot keep up cannot do more than it does; overestimating costs lag,
//!    underestimating only idle capacity until the next sample).
//! 3. The published estimate moves toward the smoothed value by a proportional gain: with the
//!    assignor in the loop (its plan changes what the member measures next), a gain below 1
//!    damps over-correction the way Hermes's controller does.
//!
//! Because the leader then gives every member load in proportion to its estimate, members on
//! slower hardware get less, and utilisations converge to equal.

use crate::model::MemberStats;
use crate::userdata::MemberUserData;

/// Tuning of [`CapacityEstimator`]. The defaults suit samples taken every few seconds to
/// minutes.
#[derive(Clone, Debug, PartialEq)]
pub struct CapacitySettings {
    /// EWMA time window in ms (the time constant of the smoothing). Default 30 000.
    pub window_ms: u64,
    /// Proportional gain in `(0, 1]`: the fraction of the gap between the smoothed implied
    /// capacity and the current estimate closed per sample. Default 0.7.
    pub gain: f64,
    /// Utilisation (fraction of the CPU limit) below which throughput ÷ utilisation is too
    /// noisy to extrapolate from; such samples are skipped unless backlogged. Default 0.05.
    pub min_utilisation: f64,
}

impl Default for CapacitySettings {
    fn default() -> Self {
        CapacitySettings {
            window_ms: 30_000,
            gain: 0.7,
            min_utilisation: 0.05,
        }
    }
}

/// `α = 1 − exp(−Δt / window)`: the weight of a new sample taken `dt_ms` after the previous.
/// A zero window means "no smoothing" (α = 1).
pub fn ewma_alpha(dt_ms: u64, window_ms: u64) -> f64 {
    if window_ms == 0 {
        return 1.0;
    }
    1.0 - (-(dt_ms as f64) / window_ms as f64).exp()
}

/// Below this utilisation a backlogged sample's utilisation is not trusted (see
/// [`implied_capacity`]).
const BACKLOGGED_TRUSTED_UTILISATION: f64 = 0.5;

/// The capacity (records/s) one measurement implies, or `None` if it says nothing.
///
/// `throughput` is records/s processed; `utilisation` the CPU used ÷ limit, when known.
pub fn implied_capacity(
    throughput: f64,
    backlogged: bool,
    utilisation: Option<f64>,
    min_utilisation: f64,
) -> Option<f64> {
    if !throughput.is_finite() || throughput <= 0.0 {
        return None;
    }
    let u = utilisation.filter(|u| u.is_finite());
    if backlogged {
        // Processing as fast as it can: whatever limits it (CPU, I/O, downstream), this is the
        // rate it achieves under load. A window that was only partly backlogged (the backlog
        // arrived with a partition moved to it mid-window) still shows in the utilisation:
        // dividing by it keeps such a sample from understating the member. Utilisation below
        // one half beside a backlog means it missed the bottleneck; the throughput is then
        // the better figure.
        return Some(match u {
            Some(u) if u >= BACKLOGGED_TRUSTED_UTILISATION => throughput / u.min(1.0),
            _ => throughput,
        });
    }
    let u = u?;
    if u < min_utilisation.max(f64::MIN_POSITIVE) {
        return None;
    }
    // Reported utilisation above 1 (accounting skew) would shrink the estimate below the
    // observed throughput, which is impossible; clamp.
    Some(throughput / u.min(1.0))
}

/// Utilisation from a member's stats: the higher of its CPU utilisation (used ÷ limit) and the
/// fraction of time its application spent processing, whichever are usable. A member is as
/// saturated as its most saturated resource: a consumer waiting on I/O has idle CPU but no time
/// to spare, and one sharing a busy pod has time but no CPU.
pub fn utilisation(stats: &MemberStats) -> Option<f64> {
    let cpu = (|| {
        let used = stats
            .cpu_used_cores
            .filter(|u| u.is_finite() && *u >= 0.0)?;
        let limit = stats
            .cpu_limit_cores
            .filter(|l| l.is_finite() && *l > 0.0)?;
        Some(used / limit)
    })();
    let busy = stats
        .busy_fraction
        .filter(|b| b.is_finite() && *b >= 0.0)
        .map(|b| b.min(1.0));
    match (cpu, busy) {
        (Some(c), Some(b)) => Some(c.max(b)),
        (c, b) => c.or(b),
    }
}

/// Utilisation from which a member counts as saturated even when nothing was left waiting at
/// its last hand-out (a consumer that fetches everything available and then works for seconds
/// finds the next batch waiting, but its sample is not "backlogged").
pub const SATURATED_UTILISATION: f64 = 0.9;

/// Whether a sample says the member cannot take more work: it was backlogged, or busy for at
/// least [`SATURATED_UTILISATION`] of the window.
pub fn saturated(stats: &MemberStats) -> bool {
    stats.backlogged || utilisation(stats).is_some_and(|u| u >= SATURATED_UTILISATION)
}

/// The same rule read by the leader from a member's user data: backlogged, or processing at
/// least [`SATURATED_UTILISATION`] of its own capacity estimate.
pub fn reports_saturation(data: &MemberUserData) -> bool {
    data.backlogged
        || data
            .capacity
            .is_some_and(|c| c > 0.0 && data.observed_rate >= SATURATED_UTILISATION * c)
}

/// One member's running capacity estimate. Owned by the member (its assignor instance), fed
/// with its own [`MemberStats`], published through its user data.
#[derive(Clone, Debug)]
pub struct CapacityEstimator {
    settings: CapacitySettings,
    smoothed: Option<f64>,
    estimate: Option<f64>,
    last_ms: Option<u64>,
}

impl CapacityEstimator {
    pub fn new(settings: CapacitySettings) -> Self {
        CapacityEstimator {
            settings,
            smoothed: None,
            estimate: None,
            last_ms: None,
        }
    }

    pub fn settings(&self) -> &CapacitySettings {
        &self.settings
    }

    /// Current estimate in records/s; `None` until the first informative sample.
    pub fn estimate(&self) -> Option<f64> {
        self.estimate
    }

    /// Feed a member's latest self-measurement; returns the updated estimate.
    pub fn observe_stats(&mut self, stats: &MemberStats) -> Option<f64> {
        self.observe(
            stats.measured_at_ms,
            stats.processed_rate,
            stats.backlogged,
            utilisation(stats),
        )
    }

    /// Feed one measurement taken at `now_ms` (member clock).
    pub fn observe(
        &mut self,
        now_ms: u64,
        throughput: f64,
        backlogged: bool,
        utilisation: Option<f64>,
    ) -> Option<f64> {
        let dt = match self.last_ms {
            // A repeated sample (same timestamp) is not new evidence.
            Some(last) if now_ms == last => return self.estimate,
            // The clock went backwards (process restart): restart the time base, keep estimate.
            Some(last) if now_ms < last => {
                self.last_ms = Some(now_ms);
                return self.estimate;
            }
            Some(last) => now_ms - last,
            None => 0,
        };
        self.last_ms = Some(now_ms);
        let Some(sample) = implied_capacity(
            throughput,
            backlogged,
            utilisation,
            self.settings.min_utilisation,
        ) else {
            return self.estimate;
        };
        // Down fast, up slow: a backlogged member processing less than we estimated cannot do
        // more right now, whatever older samples said. Smoothing that away kept a member whose
        // host had just got 3× slower at about twice its real capacity (half its old estimate
        // still in the average), so the leader moved one partition of four off it and its lag
        // kept growing until the next trigger (agent end-to-end test on tansu). Overestimating
        // costs lag; underestimating only leaves some capacity unused until the next sample.
        if backlogged && self.estimate.is_some_and(|e| sample < e) {
            self.smoothed = Some(sample);
            self.estimate = Some(sample);
            return self.estimate;
        }
        let smoothed = match self.smoothed {
            None => sample,
            Some(s) => s + ewma_alpha(dt, self.settings.window_ms) * (sample - s),
        };
        self.smoothed = Some(smoothed);
        let gain = if self.settings.gain.is_finite() {
            self.settings.gain.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.estimate = Some(match self.estimate {
            None => smoothed,
            Some(e) => e + gain * (smoothed - e),
        });
        self.estimate
    }
}

impl Default for CapacityEstimator {
    fn default() -> Self {
        CapacityEstimator::new(CapacitySettings::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlogged_member_that_slowed_down_publishes_its_new_capacity_at_once() {
        let mut e = CapacityEstimator::default();
        // 250 records/s at half utilisation: 500/s, for a while.
        for i in 0..10 {
            e.observe(i * 5_000, 250.0, false, Some(0.5));
        }
        let before = e.estimate().unwrap();
        assert!((before - 500.0).abs() < 1.0, "{before}");
        // The host gets 3× slower: backlogged at 166/s.
        let after = e.observe(55_000, 166.0, true, Some(1.0)).unwrap();
        assert!((after - 166.0).abs() < 1e-9, "{after}");
        // Recovery upwards stays smoothed: one sample does not jump back to 500.
        let up = e.observe(60_000, 250.0, false, Some(0.5)).unwrap();
        assert!(up > 166.0 && up < 400.0, "{up}");
        // A backlogged sample above the estimate is ordinary evidence, smoothed as well.
        let mut f = CapacityEstimator::default();
        f.observe(0, 100.0, true, None);
        let up = f.observe(5_000, 300.0, true, None).unwrap();
        assert!(up > 100.0 && up < 300.0, "{up}");
    }

    #[test]
    fn alpha_follows_elapsed_time() {
        assert_eq!(ewma_alpha(0, 1000), 0.0);
        assert!((ewma_alpha(1000, 1000) - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        assert!(ewma_alpha(100_000, 1000) > 0.999);
        assert_eq!(ewma_alpha(5, 0), 1.0);
    }

    #[test]
    fn implied_capacity_rules() {
        assert_eq!(implied_capacity(100.0, true, Some(0.3), 0.05), Some(100.0));
        // Backlogged for most of the window: busy 80 % of it at 100/s means 125/s.
        assert_eq!(implied_capacity(100.0, true, Some(0.8), 0.05), Some(125.0));
        assert_eq!(implied_capacity(100.0, true, Some(1.2), 0.05), Some(100.0));
        assert_eq!(implied_capacity(100.0, false, Some(0.5), 0.05), Some(200.0));
        assert_eq!(implied_capacity(100.0, false, Some(1.5), 0.05), Some(100.0));
        assert_eq!(implied_capacity(100.0, false, Some(0.01), 0.05), None);
        assert_eq!(implied_capacity(100.0, false, None, 0.05), None);
        assert_eq!(implied_capacity(f64::NAN, true, None, 0.05), None);
        assert_eq!(implied_capacity(0.0, true, None, 0.05), None);
        assert_eq!(implied_capacity(10.0, false, Some(f64::NAN), 0.05), None);
    }

    /// A member whose true capacity drops from 1000 to 500 records/s; samples every 5 s of a
    /// simulated clock at a fixed utilisation. The estimate must follow within a few windows
    /// and never overshoot (gain ≤ 1 and EWMA are both convex combinations).
    #[test]
    fn step_response_on_a_simulated_clock() {
        let mut est = CapacityEstimator::default();
        let mut now = 0u64;
        for _ in 0..20 {
            now += 5_000;
            est.observe(now, 600.0, false, Some(0.6));
        }
        assert!((est.estimate().unwrap() - 1000.0).abs() < 1e-6);
        let mut history = Vec::new();
        for _ in 0..60 {
            now += 5_000;
            // Same input load now needs more CPU: 600/500 > 1 → backlogged at 500.
            history.push(est.observe(now, 500.0, true, Some(1.0)).unwrap());
        }
        assert!(history.windows(2).all(|w| w[1] <= w[0] + 1e-9), "monotone");
        assert!(history.iter().all(|&e| e >= 500.0 - 1e-9), "no overshoot");
        // Time constant 30 s plus the controller: within 10 % after 90 s, 1 % after 300 s.
        assert!(history[17] < 550.0, "{}", history[17]);
        assert!(history[59] < 505.0, "{}", history[59]);
    }

    #[test]
    fn smaller_gain_moves_slower() {
        let run = |gain: f64| {
            let mut est = CapacityEstimator::new(CapacitySettings {
                gain,
                ..CapacitySettings::default()
            });
            est.observe(0, 100.0, true, None);
            est.observe(60_000, 200.0, true, None).unwrap()
        };
        assert!(run(0.2) < run(0.7));
        assert!(run(0.7) < run(1.0));
        assert!(run(1.0) < 200.0);
    }

    #[test]
    fn uninformative_and_repeated_samples_change_nothing() {
        let mut est = CapacityEstimator::default();
        assert_eq!(est.observe(1000, 0.0, false, Some(0.0)), None);
        assert_eq!(est.observe(2000, 50.0, false, Some(0.5)), Some(100.0));
        assert_eq!(est.observe(2000, 10.0, true, None), Some(100.0));
        assert_eq!(est.observe(3000, 1.0, false, Some(0.01)), Some(100.0));
        assert_eq!(
            est.observe(500, 10.0, true, None),
            Some(100.0),
            "clock went back"
        );
        // An informative sample after the clock reset is smoothed in (not backlogged: a
        // backlogged one below the estimate would be taken as is).
        let e = est.observe(500 + 30_000, 10.0, false, Some(0.5)).unwrap();
        assert!(e < 100.0 && e > 20.0);
    }

    /// Three hardware generations (1.0 / 0.8 / 0.5 of a 1000 records/s machine), total input
    /// 70 % of the sum, CPU with a fixed 5 % overhead so throughput ÷ utilisation is biased.
    #[test]
    fn utilisation_is_the_most_saturated_resource() {
        let with = |cpu: Option<(f64, f64)>, busy: Option<f64>| MemberStats {
            cpu_used_cores: cpu.map(|c| c.0),
            cpu_limit_cores: cpu.map(|c| c.1),
            busy_fraction: busy,
            ..MemberStats::default()
        };
        assert_eq!(utilisation(&with(None, None)), None);
        assert_eq!(utilisation(&with(Some((0.5, 2.0)), None)), Some(0.25));
        // I/O-bound: idle CPU, but the application is busy half the time.
        assert_eq!(utilisation(&with(Some((0.1, 1.0)), Some(0.5))), Some(0.5));
        assert_eq!(utilisation(&with(Some((0.9, 1.0)), Some(0.5))), Some(0.9));
        assert_eq!(utilisation(&with(None, Some(0.4))), Some(0.4));
        // Garbage is ignored, over-full clamps.
        assert_eq!(utilisation(&with(None, Some(f64::NAN))), None);
        assert_eq!(utilisation(&with(None, Some(7.0))), Some(1.0));
        // A sleep-mode worker: 250 records/s, busy half the time → capacity 500/s.
        let implied = implied_capacity(250.0, false, utilisation(&with(None, Some(0.5))), 0.05);
        assert_eq!(implied, Some(500.0));
    }

    /// A leader splitting load in proportion to published estimates drives the members to
    /// equal utilisation with nobody configuring weights.
    #[test]
    fn heterogeneous_members_converge_to_equal_utilisation() {
        let truth = [1000.0, 1000.0, 800.0, 800.0, 500.0, 500.0];
        let total_in = 0.7 * truth.iter().sum::<f64>();
        let mut ests: Vec<CapacityEstimator> =
            truth.iter().map(|_| CapacityEstimator::default()).collect();
        let mut utils = vec![0.0; truth.len()];
        for step in 1..=60u64 {
            let known: Vec<f64> = ests.iter().filter_map(|e| e.estimate()).collect();
            let fallback = if known.is_empty() {
                1.0
            } else {
                known.iter().sum::<f64>() / known.len() as f64
            };
            let weights: Vec<f64> = ests
                .iter()
                .map(|e| e.estimate().unwrap_or(fallback))
                .collect();
            let wsum: f64 = weights.iter().sum();
            for (i, e) in ests.iter_mut().enumerate() {
                let load = total_in * weights[i] / wsum;
                let throughput = load.min(truth[i]);
                let busy = throughput / truth[i];
                let cpu = (0.05 + 0.95 * busy).min(1.0);
                utils[i] = cpu;
                e.observe(step * 10_000, throughput, load > truth[i], Some(cpu));
            }
        }
        let max = utils.iter().cloned().fold(f64::MIN, f64::max);
        let min = utils.iter().cloned().fold(f64::MAX, f64::min);
        assert!(max - min < 0.01, "utilisations {utils:?}");
    }
}
