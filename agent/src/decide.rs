//! One interval's decision, sans I/O: snapshot + the app's identity + clock in, view, scores and
//! at most one action out. The poll loop ([`crate::run`]) does the I/O around it; tests drive
//! several deciders over one simulated group.

use std::sync::Arc;

use lagbalance::control::AppIdentity;

use crate::config::{Config, Mode};
use crate::election::{deputy, elect};
use crate::outlier::{score, score_partial, OutlierSettings, Score, Streaks};
use crate::storm::{Hold, StormGuard};
use crate::view::{GroupLagView, Snapshot, ViewTracker};

/// How an action's reason names the view it was decided on: every member's assignment from
/// DescribeGroups (Kafka), or only the own member's (a broker that hides assignments).
pub const FULL_VIEW: &str = "full group view";
pub const OWN_VIEW: &str = "own member only: the broker hides assignments";

/// What to ask the app to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Leave {
        cooldown_ms: u64,
        reason: String,
    },
    Rejoin {
        reason: String,
    },
    /// Dry run: the agent would have acted (already accounted as a trigger).
    DryRun {
        reason: String,
    },
}

/// Everything one interval computed.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Shared: a simulation hands one view to many deciders.
    pub view: Arc<GroupLagView>,
    pub scores: Vec<Score>,
    pub me: Option<String>,
    pub own_streak: u32,
    pub elected: bool,
    /// The elected member this agent stands in for this poll, its agent having let a
    /// cooldown's worth of chances pass ([`crate::election::deputy`]).
    pub deputy_for: Option<String>,
    pub hold: Result<(), Hold>,
    pub rebalance_observed: bool,
    pub action: Option<Action>,
}

pub struct Decider {
    group: String,
    mode: Mode,
    dry_run: bool,
    leave_cooldown_ms: u64,
    settings: OutlierSettings,
    tracker: ViewTracker,
    storm: StormGuard,
    streaks: Streaks,
    /// Polls in a row in which another member was the sustained elected outlier and the group
    /// was neither rebalancing nor cooling down, yet no rebalance followed.
    overdue: u32,
    /// Polls per deputy turn: a cooldown, the time a rebalance an agent asks for has to show.
    deputy_turn: u32,
}

pub fn outlier_settings(c: &Config) -> OutlierSettings {
    OutlierSettings {
        floor: c.lag_floor.min(i64::MAX as u64) as i64,
        ratio: c.lag_ratio,
        zscore: c.zscore,
        sustain: c.sustain,
        drain_ok_s: c.drain_ok.as_secs_f64(),
    }
}

impl Decider {
    pub fn new(cfg: &Config) -> Self {
        Decider {
            group: cfg.group.clone(),
            mode: cfg.mode,
            dry_run: cfg.dry_run,
            leave_cooldown_ms: cfg.leave_cooldown.as_millis() as u64,
            settings: outlier_settings(cfg),
            tracker: ViewTracker::new(cfg.ewma_window.as_millis() as u64),
            storm: StormGuard::new(cfg.cooldown.as_millis() as u64, cfg.budget_per_hour),
            streaks: Streaks::default(),
            overdue: 0,
            deputy_turn: cfg
                .cooldown
                .as_millis()
                .div_ceil(cfg.interval.as_millis().max(1))
                .clamp(1, u32::MAX as u128) as u32,
        }
    }

    /// The app's identity if it belongs to our group.
    pub fn own<'a>(&self, identity: Option<&'a AppIdentity>) -> Option<&'a AppIdentity> {
        identity.filter(|i| i.group == self.group && !i.member_id.is_empty())
    }

    /// Process one poll. An `Action::Leave`/`Rejoin` must be reported back with
    /// [`Decider::acted`] once the app accepted it; `DryRun` is accounted here.
    pub fn step(
        &mut self,
        now_ms: u64,
        mut snap: Snapshot,
        identity: Option<&AppIdentity>,
    ) -> Decision {
        if let Some(id) = self.own(identity) {
            snap.apply_own_assignment(&id.member_id, &id.partitions);
        }
        let view = Arc::new(self.tracker.update(&snap));
        self.decide(now_ms, view, identity)
    }

    /// Decide on a view computed elsewhere: agents that poll the same group at the same
    /// instant compute the same view, so a simulation of many agents can compute it once with
    /// one [`ViewTracker`] (fed the snapshot with no own assignment applied: every assignment
    /// visible).
    pub fn decide(
        &mut self,
        now_ms: u64,
        view: Arc<GroupLagView>,
        identity: Option<&AppIdentity>,
    ) -> Decision {
        let own = self.own(identity).cloned();
        // The app's generation catches rebalances that DescribeGroups cannot show (tansu hides
        // assignments); every member shares it, so every agent sees the same.
        let generation = own.as_ref().map(|i| i.generation).unwrap_or(-1);
        let fingerprint =
            view.fingerprint ^ (generation as u32 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let rebalance_observed = self.storm.observe(now_ms, fingerprint, view.stable());
        if rebalance_observed {
            // Streaks measured against the old assignment say nothing about the new one.
            self.streaks.reset();
        }
        let me = own.as_ref().map(|i| i.member_id.clone());
        // Full view: score everyone, elect the worst. Hidden assignments: score only our
        // member, with the majority-of-lag rule standing in for the election (outlier.rs).
        let scores: Vec<Score> = if view.assignments_visible {
            score(&view, &self.settings)
        } else {
            me.as_deref()
                .and_then(|m| score_partial(&view, m, &self.settings))
                .into_iter()
                .collect()
        };
        self.streaks.observe(&scores);
        let winner = elect(&scores).map(|s| s.member_id.clone());
        let own_streak = me.as_deref().map(|m| self.streaks.get(m)).unwrap_or(0);
        let elected = me.is_some() && winner == me;
        let hold = self.storm.check(now_ms);
        let winner_sustained = winner
            .as_deref()
            .is_some_and(|w| self.streaks.sustained(w, self.settings.sustain));
        if rebalance_observed || elected || !winner_sustained {
            self.overdue = 0;
        } else if self.storm.group_hold(now_ms).is_ok() {
            self.overdue = self.overdue.saturating_add(1);
        }
        // A deputy rejoins: leaving would hand its own partitions to the group, outlier included.
        let deputy_for = match (&winner, &me) {
            (Some(w), Some(m))
                if self.mode == Mode::Rejoin
                    && view.assignments_visible
                    && deputy(&scores, w, self.overdue, self.deputy_turn) == Some(m.as_str()) =>
            {
                Some(w.clone())
            }
            _ => None,
        };
        let sustained = elected && own_streak >= self.settings.sustain;
        let mut action = None;
        if (sustained || deputy_for.is_some()) && hold.is_ok() {
            let subject = deputy_for.as_ref().or(me.as_ref());
            let reason = scores
                .iter()
                .find(|s| Some(&s.member_id) == subject)
                .map(|s| {
                    let view_kind = if view.assignments_visible {
                        FULL_VIEW
                    } else {
                        OWN_VIEW
                    };
                    let lag = format!(
                        "lag {} is {:.1}x the peers' {:.0} (z {:.1})",
                        s.lag, s.ratio, s.peer_median, s.z
                    );
                    match &deputy_for {
                        Some(w) => format!(
                            "deputy for {w}: its {lag} and its agent let {} chances pass ({view_kind})",
                            self.overdue
                        ),
                        None => format!("{lag} for {own_streak} intervals ({view_kind})"),
                    }
                })
                .unwrap_or_default();
            action = Some(if self.dry_run {
                self.storm.record_trigger(now_ms);
                Action::DryRun { reason }
            } else {
                match self.mode {
                    Mode::Leave => Action::Leave {
                        cooldown_ms: self.leave_cooldown_ms,
                        reason,
                    },
                    Mode::Rejoin => Action::Rejoin { reason },
                }
            });
        }
        Decision {
            view,
            scores,
            me,
            own_streak,
            elected,
            deputy_for,
            hold,
            rebalance_observed,
            action,
        }
    }

    /// The app accepted our action at `now_ms`: spend budget, start the cooldown.
    pub fn acted(&mut self, now_ms: u64) {
        self.storm.record_trigger(now_ms);
        self.streaks.reset();
    }

    pub fn rebalances_seen(&self) -> u64 {
        self.storm.rebalances_seen()
    }

    pub fn triggers_last_hour(&mut self, now_ms: u64) -> usize {
        self.storm.triggers_last_hour(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::view::tests::member;

    fn cfg(mode: &str) -> Config {
        cfg_with(mode, &[])
    }

    fn cfg_with(mode: &str, extra: &[(&str, &str)]) -> Config {
        let env: BTreeMap<String, String> = [
            ("LAGBALANCE_BOOTSTRAP", "127.0.0.1:1"),
            ("LAGBALANCE_GROUP", "g"),
            ("LAGBALANCE_MODE", mode),
            ("LAGBALANCE_COOLDOWN", "60s"),
            ("LAGBALANCE_EWMA_WINDOW", "0s"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Config::from_sources(&env, &[]).unwrap()
    }

    /// A simulated group: 9 partitions of "t", 3 per member; member "b" falls behind by
    /// `slow_lag` per partition, the others by 10.
    struct Sim {
        assignment: Vec<(&'static str, Vec<i32>)>,
        generation: i32,
        visible: bool,
    }

    impl Sim {
        fn new(visible: bool) -> Sim {
            Sim {
                assignment: vec![
                    ("a", vec![0, 1, 2]),
                    ("b", vec![3, 4, 5]),
                    ("c", vec![6, 7, 8]),
                ],
                generation: 5,
                visible,
            }
        }
        fn snapshot(&self, at_ms: u64, slow_lag: i64) -> Snapshot {
            let mut s = Snapshot {
                at_ms,
                state: "Stable".into(),
                assignments_visible: self.visible,
                ..Snapshot::default()
            };
            for (m, parts) in &self.assignment {
                let tps: Vec<(&str, i32)> = parts.iter().map(|p| ("t", *p)).collect();
                let mut info = member(m, if self.visible { &tps } else { &[] });
                info.generation = self.generation;
                s.members.push(info);
                for p in parts {
                    let end = 1_000_000 + at_ms as i64;
                    let lag = if *m == "b" { slow_lag } else { 10 };
                    s.log_end.insert(("t".into(), *p), end);
                    s.committed.insert(("t".into(), *p), end - lag);
                }
            }
            s
        }
        fn identity(&self, m: &str) -> AppIdentity {
            AppIdentity {
                group: "g".into(),
                member_id: m.into(),
                instance_id: None,
                generation: self.generation,
                partitions: self
                    .assignment
                    .iter()
                    .find(|(id, _)| *id == m)
                    .map(|(_, ps)| ps.iter().map(|p| ("t".to_string(), *p)).collect())
                    .unwrap_or_default(),
            }
        }
    }

    /// Three agents over one simulated group; returns (interval, member) of every action.
    fn simulate(visible: bool, intervals: u64, mode: &str) -> Vec<(u64, String, Action)> {
        simulate_with(visible, intervals, &cfg(mode))
    }

    fn simulate_with(visible: bool, intervals: u64, config: &Config) -> Vec<(u64, String, Action)> {
        let mut sim = Sim::new(visible);
        let mut agents: Vec<(&str, Decider)> = ["a", "b", "c"]
            .into_iter()
            .map(|m| (m, Decider::new(config)))
            .collect();
        let mut actions = Vec::new();
        for i in 0..intervals {
            let now = i * 5_000;
            // Lag of b: a spike at 1-2, calm, then sustained from 5 on.
            let slow = match i {
                1 | 2 => 50_000,
                5.. => 40_000,
                _ => 10,
            };
            for (m, d) in agents.iter_mut() {
                let id = sim.identity(m);
                let dec = d.step(now, sim.snapshot(now, slow), Some(&id));
                if let Some(a) = dec.action {
                    d.acted(now);
                    actions.push((i, m.to_string(), a));
                }
            }
            // Whoever acted causes a rebalance: partitions move, the generation bumps.
            if actions.last().is_some_and(|(at, _, _)| *at == i) {
                sim.generation += 1;
                sim.assignment = vec![
                    ("a", vec![0, 1, 2, 3]),
                    ("b", vec![4, 5]),
                    ("c", vec![6, 7, 8]),
                ];
            }
        }
        actions
    }

    #[test]
    fn exactly_one_agent_acts_on_a_sustained_outlier_then_everyone_cools_down() {
        for visible in [true, false] {
            let actions = simulate(visible, 40, "rejoin");
            // Spike at 1-2 never trips; sustained from 5: 3 intervals → acts at 7.
            assert_eq!(actions.len(), 3, "visible={visible}: {actions:?}");
            assert_eq!(actions[0].0, 7, "visible={visible}: {actions:?}");
            assert!(actions.iter().all(|(_, m, _)| m == "b"));
            assert!(matches!(actions[0].2, Action::Rejoin { .. }));
            // Cooldown 60 s = 12 intervals after the observed rebalance, then sustain again.
            assert!(
                actions.windows(2).all(|w| w[1].0 - w[0].0 >= 12),
                "{actions:?}"
            );
        }
    }

    #[test]
    fn when_the_outliers_agent_has_spent_its_budget_a_deputy_rejoins_a_cooldown_later() {
        let budget_one = [("LAGBALANCE_BUDGET_PER_HOUR", "1")];
        let actions = simulate_with(true, 50, &cfg_with("rejoin", &budget_one));
        let who: Vec<(u64, &str)> = actions.iter().map(|(i, m, _)| (*i, m.as_str())).collect();
        // b acts at 7 and spends its budget. The rebalance observed at 8 starts the 12-interval
        // cooldown; from 20 on b is a sustained outlier with nothing holding the group, but its
        // agent is out of budget. At its 12th such chance (31) the turn passes to c, the next
        // member after b; c's rebalance starts another cooldown, and nothing else happens in
        // the run.
        assert_eq!(who, [(7, "b"), (31, "c")], "{actions:?}");
        match &actions[1].2 {
            Action::Rejoin { reason } => assert!(
                reason.starts_with("deputy for b: its lag 80000") && reason.contains("12 chances"),
                "{reason}"
            ),
            other => panic!("a deputy rejoins: {other:?}"),
        }
        // Leaving would hand the deputy's own partitions to the group: no deputy in leave mode.
        let actions = simulate_with(true, 50, &cfg_with("leave", &budget_one));
        assert_eq!(actions.len(), 1, "{actions:?}");
        // Without assignments in view an agent sees only its own member: no deputy either.
        let actions = simulate_with(false, 50, &cfg_with("rejoin", &budget_one));
        assert_eq!(actions.len(), 1, "{actions:?}");
    }

    #[test]
    fn leave_mode_and_dry_run() {
        let actions = simulate(true, 10, "leave");
        assert_eq!(actions.len(), 1);
        assert!(matches!(
            actions[0].2,
            Action::Leave {
                cooldown_ms: 30_000,
                ..
            }
        ));
        let mut c = cfg("rejoin");
        c.dry_run = true;
        let sim = Sim::new(true);
        let mut d = Decider::new(&c);
        let mut dry = 0;
        for i in 0..10 {
            let dec = d.step(
                i * 5000,
                sim.snapshot(i * 5000, 40_000),
                Some(&sim.identity("b")),
            );
            if let Some(a) = dec.action {
                assert!(matches!(a, Action::DryRun { .. }));
                dry += 1;
            }
        }
        assert_eq!(dry, 1, "the dry run is accounted too (cooldown)");
    }

    #[test]
    fn without_the_app_nobody_acts() {
        let sim = Sim::new(true);
        let mut d = Decider::new(&cfg("rejoin"));
        for i in 0..10 {
            let dec = d.step(i * 5000, sim.snapshot(i * 5000, 40_000), None);
            assert!(dec.action.is_none());
            assert_eq!(dec.scores.iter().filter(|s| s.outlier).count(), 1);
        }
        // An identity of another group is ignored.
        let mut other = sim.identity("b");
        other.group = "other".into();
        let mut d = Decider::new(&cfg("rejoin"));
        for i in 0..10 {
            assert!(d
                .step(i * 5000, sim.snapshot(i * 5000, 40_000), Some(&other))
                .action
                .is_none());
        }
    }
}
