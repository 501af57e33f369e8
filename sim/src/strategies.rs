//! The strategies compared. `range`, `cooperative-sticky` and `lagbalance` are the real
//! assignors from `lagbalance-assign`, unchanged; `round-robin` and `lag-only` are baselines
//! written here, eager like `range` and run through the same cooperative layer
//! ([`EagerAssignor`]).

use lagbalance_assign::cooperative::EagerAssignor;
use lagbalance_assign::lagbalance::{LagBalanceAssignor, LagBalanceSettings};
use lagbalance_assign::model::{Assignor, GroupView, Plan, Tp};
use lagbalance_assign::{CooperativeStickyAssignor, RangeAssignor};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    Range,
    RoundRobin,
    CooperativeSticky,
    LagOnly,
    LagBalance,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::Range,
        Strategy::RoundRobin,
        Strategy::CooperativeSticky,
        Strategy::LagOnly,
        Strategy::LagBalance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Range => "range",
            Strategy::RoundRobin => "round-robin",
            Strategy::CooperativeSticky => "cooperative-sticky",
            Strategy::LagOnly => "lag-only",
            Strategy::LagBalance => "lagbalance",
        }
    }

    /// A fresh assignor instance, as each member process would have.
    pub fn make(self, settings: &LagBalanceSettings) -> Box<dyn Assignor> {
        match self {
            Strategy::Range => Box::new(RangeAssignor),
            Strategy::RoundRobin => Box::new(RoundRobinAssignor),
            Strategy::CooperativeSticky => Box::new(CooperativeStickyAssignor),
            Strategy::LagOnly => Box::new(LagOnlyAssignor),
            Strategy::LagBalance => Box::new(LagBalanceAssignor::new(settings.clone())),
        }
    }
}

/// Members that subscribe to `topic`, in view order (sorted by member id).
fn subscribers(view: &GroupView, topic: u32) -> Vec<usize> {
    (0..view.members.len())
        .filter(|&m| view.members[m].topics.contains(&topic))
        .collect()
}

/// One empty assignment list (and no user data) per member.
fn empty_plan(members: usize) -> Plan {
    Plan {
        assignments: vec![Vec::new(); members],
        user_data: vec![None; members],
    }
}

/// Kafka's `RoundRobinAssignor` (eager): all partitions sorted by (topic, partition), dealt to
/// subscribed members in member-id order.
#[derive(Debug, Default)]
pub struct RoundRobinAssignor;

impl EagerAssignor for RoundRobinAssignor {
    const NAME: &'static str = "roundrobin";

    fn target(&self, view: &GroupView) -> Plan {
        let m = view.members.len();
        let mut plan = empty_plan(m);
        if m == 0 {
            return plan;
        }
        let mut next = 0usize;
        for (t, topic) in view.topics.iter().enumerate() {
            let subs = subscribers(view, t as u32);
            if subs.is_empty() {
                continue;
            }
            for p in 0..topic.partitions {
                // Advance the global cursor to the next member subscribed to this topic.
                while !subs.contains(&(next % m)) {
                    next += 1;
                }
                plan.assignments[next % m].push(Tp::new(t as u32, p));
                next += 1;
            }
        }
        plan
    }
}

/// Baseline `lag-only` (eager): equal partition counts, partitions sorted by lag (largest first)
/// and dealt in a snake order so each member gets a similar mix of lagging partitions. It sees
/// lag but not rates or capacities.
#[derive(Debug, Default)]
pub struct LagOnlyAssignor;

impl EagerAssignor for LagOnlyAssignor {
    const NAME: &'static str = "lag-only";

    fn target(&self, view: &GroupView) -> Plan {
        let mut plan = empty_plan(view.members.len());
        let offsets = view.topic_offsets();
        for (t, topic) in view.topics.iter().enumerate() {
            let subs = subscribers(view, t as u32);
            if subs.is_empty() {
                continue;
            }
            let lag = |p: i32| {
                view.stats
                    .as_ref()
                    .and_then(|s| s.lag.get(offsets[t] + p as usize).copied())
                    .filter(|l| l.is_finite())
                    .unwrap_or(0.0)
            };
            let mut parts: Vec<i32> = (0..topic.partitions).collect();
            parts.sort_by(|&a, &b| lag(b).total_cmp(&lag(a)).then(a.cmp(&b)));
            let k = subs.len();
            for (i, p) in parts.into_iter().enumerate() {
                let round = i / k;
                let j = if round % 2 == 0 { i % k } else { k - 1 - i % k };
                plan.assignments[subs[j]].push(Tp::new(t as u32, p));
            }
        }
        for list in &mut plan.assignments {
            list.sort();
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lagbalance_assign::model::{MemberView, PartitionStats, TopicInfo};

    fn view(members: usize, topics: &[(&str, i32)], lag: Option<Vec<f64>>) -> GroupView {
        GroupView {
            generation: 1,
            topics: topics
                .iter()
                .map(|&(n, p)| TopicInfo {
                    name: n.into(),
                    partitions: p,
                })
                .collect(),
            members: (0..members)
                .map(|i| MemberView {
                    member_id: format!("m{i}"),
                    topics: (0..topics.len() as u32).collect(),
                    generation: -1,
                    ..MemberView::default()
                })
                .collect(),
            stats: lag.map(|lag| PartitionStats {
                rate: vec![1.0; lag.len()],
                lag,
            }),
            now_ms: 0,
        }
    }

    #[test]
    fn round_robin_deals_in_order() {
        let v = view(3, &[("a", 4), ("b", 3)], None);
        let plan = RoundRobinAssignor.assign(&v, None).unwrap();
        let names: Vec<Vec<(u32, i32)>> = plan
            .assignments
            .iter()
            .map(|l| l.iter().map(|tp| (tp.topic, tp.partition)).collect())
            .collect();
        assert_eq!(
            names,
            vec![
                vec![(0, 0), (0, 3), (1, 2)],
                vec![(0, 1), (1, 0)],
                vec![(0, 2), (1, 1)]
            ]
        );
    }

    #[test]
    fn lag_only_gives_equal_counts_and_spreads_the_laggiest() {
        let v = view(2, &[("a", 6)], Some(vec![100.0, 90.0, 0.0, 0.0, 5.0, 6.0]));
        let plan = LagOnlyAssignor.assign(&v, None).unwrap();
        assert_eq!(plan.assignments[0].len(), 3);
        assert_eq!(plan.assignments[1].len(), 3);
        let has = |m: usize, p: i32| plan.assignments[m].contains(&Tp::new(0, p));
        assert!(
            has(0, 0) && has(1, 1),
            "the two laggiest go to different members"
        );
    }
}
