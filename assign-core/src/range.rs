//! Kafka's `range` assignor, run through the cooperative layer.
//!
//! Per topic, the subscribers are ordered as Kafka orders them (static members first by
//! `group.instance.id`, then the rest by member id) and each gets `n / m` consecutive
//! partitions, the first `n % m` one more. Kafka runs it eagerly (members revoke everything
//! before rejoining, so nothing is owned); here the same target goes through
//! [`withhold_transfers`](crate::cooperative::withhold_transfers) so it is also safe with members that keep their partitions.

use std::cmp::Ordering;

use crate::cooperative::{sanitized_topics, EagerAssignor};
use crate::model::{GroupView, MemberView, Plan, Tp};

/// Protocol name announced in JoinGroup.
pub const RANGE: &str = "range";

/// Kafka's range assignor.
#[derive(Clone, Debug, Default)]
pub struct RangeAssignor;

impl EagerAssignor for RangeAssignor {
    const NAME: &'static str = RANGE;

    fn target(&self, view: &GroupView) -> Plan {
        range_target(view)
    }
}

/// Kafka's member order for range (`MemberInfo.compareTo`): static members first, by instance
/// id; then dynamic members by member id. The index breaks ties so hostile duplicate ids still
/// give a total, deterministic order.
fn kafka_order(a: (usize, &MemberView), b: (usize, &MemberView)) -> Ordering {
    let (ia, ma) = a;
    let (ib, mb) = b;
    let by_instance = match (&ma.instance_id, &mb.instance_id) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => ma.member_id.cmp(&mb.member_id),
    };
    by_instance.then(ia.cmp(&ib))
}

/// The range target (every partition of every subscribed topic assigned once), before the
/// cooperative adjustment.
pub fn range_target(view: &GroupView) -> Plan {
    let subs = sanitized_topics(view);
    let mut order: Vec<usize> = (0..view.members.len()).collect();
    order.sort_by(|&a, &b| kafka_order((a, &view.members[a]), (b, &view.members[b])));

    // Subscribers per topic, already in Kafka order because we walk members in that order.
    let mut subscribers: Vec<Vec<u32>> = vec![Vec::new(); view.topics.len()];
    for &m in &order {
        for &t in &subs[m] {
            subscribers[t as usize].push(m as u32);
        }
    }

    let mut assignments: Vec<Vec<Tp>> = vec![Vec::new(); view.members.len()];
    for (t, (topic, subs)) in view.topics.iter().zip(&subscribers).enumerate() {
        if subs.is_empty() {
            continue;
        }
        let n = topic.partitions.max(0) as usize;
        let (base, extra) = (n / subs.len(), n % subs.len());
        let mut next = 0usize;
        for (i, &m) in subs.iter().enumerate() {
            let len = base + usize::from(i < extra);
            let list = &mut assignments[m as usize];
            // `next + len <= n <= i32::MAX`, so the casts cannot truncate.
            list.extend((next..next + len).map(|p| Tp::new(t as u32, p as i32)));
            next += len;
        }
    }
    Plan {
        user_data: vec![None; assignments.len()],
        assignments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Assignor;
    use crate::testutil::{member, view};

    fn parts(plan: &Plan, m: usize) -> Vec<(u32, i32)> {
        plan.assignments[m]
            .iter()
            .map(|tp| (tp.topic, tp.partition))
            .collect()
    }

    #[test]
    fn splits_each_topic_into_consecutive_ranges_extra_first() {
        let v = view(
            1,
            &[("a", 7), ("b", 2)],
            vec![
                member("m1", &[0, 1], &[], -1),
                member("m2", &[0, 1], &[], -1),
                member("m3", &[0], &[], -1),
            ],
        );
        let plan = RangeAssignor.assign(&v, None).unwrap();
        assert_eq!(parts(&plan, 0), vec![(0, 0), (0, 1), (0, 2), (1, 0)]);
        assert_eq!(parts(&plan, 1), vec![(0, 3), (0, 4), (1, 1)]);
        assert_eq!(parts(&plan, 2), vec![(0, 5), (0, 6)]);
        assert!(!RangeAssignor.cooperative());
        assert_eq!(RangeAssignor.name(), "range");
    }

    #[test]
    fn orders_by_member_id_not_by_position_and_static_members_first() {
        // Hostile: members not sorted by id. "b" has an instance id, so it comes first.
        let mut b = member("b", &[0], &[], -1);
        b.instance_id = Some("pod-1".into());
        let v = view(
            1,
            &[("a", 3)],
            vec![member("z", &[0], &[], -1), member("c", &[0], &[], -1), b],
        );
        let plan = range_target(&v);
        assert_eq!(parts(&plan, 2), vec![(0, 0)]);
        assert_eq!(parts(&plan, 1), vec![(0, 1)]);
        assert_eq!(parts(&plan, 0), vec![(0, 2)]);
    }

    #[test]
    fn withholds_partitions_still_owned_elsewhere() {
        // m2 owns p0 but range gives p0 to m1: withheld this round.
        let v = view(
            3,
            &[("a", 2)],
            vec![member("m1", &[0], &[], 2), member("m2", &[0], &[(0, 0)], 2)],
        );
        let plan = RangeAssignor.assign(&v, None).unwrap();
        assert_eq!(parts(&plan, 0), vec![]);
        assert_eq!(parts(&plan, 1), vec![(0, 1)]);
    }

    #[test]
    fn hostile_subscriptions_do_not_panic() {
        let v = view(
            1,
            &[("a", 2)],
            vec![
                member("m1", &[7, 0, 0], &[(0, 5), (3, 1)], -1),
                member("m2", &[], &[], -1),
            ],
        );
        let plan = RangeAssignor.assign(&v, None).unwrap();
        assert_eq!(parts(&plan, 0), vec![(0, 0), (0, 1)]);
        assert_eq!(parts(&plan, 1), vec![]);
        let empty = view(1, &[("a", 2)], vec![]);
        assert!(RangeAssignor
            .assign(&empty, None)
            .unwrap()
            .assignments
            .is_empty());
    }
}
