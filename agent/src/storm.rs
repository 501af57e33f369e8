//! Storm protection. Pure: the caller passes a monotonic clock in milliseconds.
//!
//! - **Cooldown after any rebalance**: a change of the group's fingerprint (who owns what, or a
//!   member's generation) or a state other than `Stable` counts as a rebalance; no action until
//!   `cooldown` after the last one. Our own action starts the cooldown too.
//! - **Hourly budget**: at most `budget_per_hour` actions in any rolling hour.

use std::collections::VecDeque;

const HOUR_MS: u64 = 3_600_000;

/// Why an action is not allowed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The group is rebalancing right now.
    Rebalancing,
    /// Cooling down after a rebalance; free again at `until_ms`.
    Cooldown { until_ms: u64 },
    /// Hourly budget spent; the oldest action expires at `until_ms` (`u64::MAX` when the
    /// budget is 0).
    Budget { until_ms: u64 },
}

#[derive(Debug)]
pub struct StormGuard {
    cooldown_ms: u64,
    budget_per_hour: u32,
    fingerprint: Option<u64>,
    rebalancing: bool,
    last_rebalance_ms: Option<u64>,
    triggers: VecDeque<u64>,
    rebalances_seen: u64,
}

impl StormGuard {
    pub fn new(cooldown_ms: u64, budget_per_hour: u32) -> Self {
        StormGuard {
            cooldown_ms,
            budget_per_hour,
            fingerprint: None,
            rebalancing: false,
            last_rebalance_ms: None,
            triggers: VecDeque::new(),
            rebalances_seen: 0,
        }
    }

    /// Feed one poll. Returns whether a rebalance was observed since the previous poll (the
    /// first poll only records the baseline: the agent may start in a long-stable group).
    pub fn observe(&mut self, now_ms: u64, fingerprint: u64, stable: bool) -> bool {
        let changed = matches!(self.fingerprint, Some(f) if f != fingerprint);
        let started = !stable && !self.rebalancing;
        self.fingerprint = Some(fingerprint);
        self.rebalancing = !stable;
        if changed || !stable {
            self.last_rebalance_ms = Some(now_ms);
        }
        let seen = changed || started;
        if seen {
            self.rebalances_seen += 1;
        }
        seen
    }

    fn prune(&mut self, now_ms: u64) {
        while self
            .triggers
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= HOUR_MS)
        {
            self.triggers.pop_front();
        }
    }

    /// Whether the group is past any rebalance and its cooldown: the holds every agent of the
    /// group sees alike (the budget is each agent's own).
    pub fn group_hold(&self, now_ms: u64) -> Result<(), Hold> {
        if self.rebalancing {
            return Err(Hold::Rebalancing);
        }
        if let Some(t) = self.last_rebalance_ms {
            let until = t.saturating_add(self.cooldown_ms);
            if now_ms < until {
                return Err(Hold::Cooldown { until_ms: until });
            }
        }
        Ok(())
    }

    /// May the agent act now?
    pub fn check(&mut self, now_ms: u64) -> Result<(), Hold> {
        self.group_hold(now_ms)?;
        self.prune(now_ms);
        if self.triggers.len() >= self.budget_per_hour as usize {
            let until = if self.budget_per_hour == 0 {
                u64::MAX
            } else {
                self.triggers
                    .front()
                    .map_or(u64::MAX, |t| t.saturating_add(HOUR_MS))
            };
            return Err(Hold::Budget { until_ms: until });
        }
        Ok(())
    }

    /// Record an action taken at `now_ms`; it also starts a cooldown.
    pub fn record_trigger(&mut self, now_ms: u64) {
        self.triggers.push_back(now_ms);
        self.last_rebalance_ms = Some(now_ms);
    }

    pub fn triggers_last_hour(&mut self, now_ms: u64) -> usize {
        self.prune(now_ms);
        self.triggers.len()
    }

    pub fn rebalances_seen(&self) -> u64 {
        self.rebalances_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn first_poll_is_a_baseline_not_a_rebalance() {
        let mut g = StormGuard::new(2 * MIN, 4);
        assert!(!g.observe(0, 42, true));
        assert_eq!(g.check(0), Ok(()));
    }

    #[test]
    fn cooldown_after_observed_rebalance() {
        let mut g = StormGuard::new(2 * MIN, 4);
        g.observe(0, 1, true);
        // Assignment changed between polls.
        assert!(g.observe(10 * MIN, 2, true));
        assert_eq!(g.rebalances_seen(), 1);
        assert_eq!(
            g.check(10 * MIN + 1),
            Err(Hold::Cooldown { until_ms: 12 * MIN })
        );
        assert_eq!(g.check(12 * MIN), Ok(()));
        // A rebalance in progress holds, and its end restarts the cooldown.
        assert!(g.observe(20 * MIN, 2, false));
        assert_eq!(g.check(20 * MIN), Err(Hold::Rebalancing));
        assert!(
            !g.observe(21 * MIN, 2, false),
            "same rebalance counted once"
        );
        assert!(g.observe(22 * MIN, 3, true));
        assert_eq!(g.rebalances_seen(), 3);
        assert!(matches!(g.check(23 * MIN), Err(Hold::Cooldown { .. })));
        assert_eq!(g.check(24 * MIN), Ok(()));
    }

    #[test]
    fn own_action_starts_a_cooldown() {
        let mut g = StormGuard::new(MIN, 10);
        g.observe(0, 1, true);
        g.record_trigger(5 * MIN);
        assert!(matches!(g.check(5 * MIN + 1), Err(Hold::Cooldown { .. })));
        assert_eq!(g.check(6 * MIN), Ok(()));
    }

    #[test]
    fn hourly_budget_is_rolling() {
        let mut g = StormGuard::new(0, 2);
        g.observe(0, 1, true);
        g.record_trigger(0);
        assert_eq!(g.check(1), Ok(()));
        g.record_trigger(30 * MIN);
        assert_eq!(g.check(31 * MIN), Err(Hold::Budget { until_ms: 60 * MIN }));
        assert_eq!(
            g.check(60 * MIN),
            Ok(()),
            "the first action left the window"
        );
        assert_eq!(g.triggers_last_hour(60 * MIN), 1);
        let mut never = StormGuard::new(0, 0);
        assert_eq!(never.check(0), Err(Hold::Budget { until_ms: u64::MAX }));
    }
}
