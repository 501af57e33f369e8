//! Single-actor election. Pure and order-independent.
//!
//! Every agent of the group polls the same broker state, so every agent can compute the same
//! scores. Among the members that are outliers *in this view*, the one with the largest lag
//! acts; ties go to the smallest member id. Lags are integers and the comparison is total, so
//! the answer does not depend on the order members are listed in or on float rounding: all
//! agents agree without talking. An agent acts only if the winner is its own member *and* its
//! own streak is sustained (streaks are local; the election is global).
//!
//! Agents poll at slightly different instants, so for one interval around a change two agents
//! may see different views. That is what the post-rebalance cooldown in [`crate::storm`] covers:
//! the first action causes a rebalance, every agent observes it and stands down.

use crate::outlier::Score;

/// The member that may act in this view, if any.
pub fn elect(scores: &[Score]) -> Option<&Score> {
    scores.iter().filter(|s| s.outlier).min_by(|a, b| {
        b.lag
            .cmp(&a.lag)
            .then_with(|| a.member_id.cmp(&b.member_id))
    })
}

/// Whether `me` is the elected member.
pub fn is_elected(scores: &[Score], me: &str) -> bool {
    elect(scores).is_some_and(|s| s.member_id == me)
}

/// Who stands in for the elected member `winner` once its agent has let `overdue` polls pass in
/// which it could have acted (sustained outlier, group neither rebalancing nor cooling down)
/// and no rebalance followed: its budget is spent, its agent is down or its app refused. The
/// other members take turns of `turn` polls each, in id order starting after the winner, round
/// the circle again if need be. Every agent counts the same polls on the same views, so at most
/// one agent holds the turn; the first deputy's rebalance resets everyone's count.
pub fn deputy<'a>(scores: &'a [Score], winner: &str, overdue: u32, turn: u32) -> Option<&'a str> {
    let turn = turn.max(1);
    let mut others: Vec<&str> = scores
        .iter()
        .map(|s| s.member_id.as_str())
        .filter(|m| *m != winner)
        .collect();
    if overdue < turn || others.is_empty() {
        return None;
    }
    others.sort_unstable();
    let after_winner = others.partition_point(|m| *m < winner);
    let k = (overdue / turn - 1) as usize;
    Some(others[(after_winner + k) % others.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outlier::{score, OutlierSettings};
    use crate::view::GroupLagView;

    /// The outlier tests' group view, members sorted by id as DescribeGroups lists them.
    fn view(lags: &[(&str, i64)]) -> GroupLagView {
        let mut v = crate::outlier::tests::view_with(lags);
        v.members
            .sort_by(|a, b| a.info.member_id.cmp(&b.info.member_id));
        v
    }

    fn shuffled<T: Clone>(v: &[T], seed: u64) -> Vec<T> {
        let mut v = v.to_vec();
        lagbalance::assign::rng::Rng::new(seed).shuffle(&mut v);
        v
    }

    #[test]
    fn picks_exactly_one_the_worst() {
        let lags = [
            ("a", 100),
            ("b", 20_000),
            ("c", 30_000),
            ("d", 120),
            ("e", 90),
            ("f", 110),
        ];
        let sc = score(&view(&lags), &OutlierSettings::default());
        assert!(sc.iter().filter(|s| s.outlier).count() >= 2, "{sc:?}");
        assert_eq!(elect(&sc).unwrap().member_id, "c");
        let winners = lags.iter().filter(|(id, _)| is_elected(&sc, id)).count();
        assert_eq!(winners, 1);
    }

    #[test]
    fn every_agent_agrees_whatever_order_it_lists_members_in() {
        let lags = [
            ("m-7", 100),
            ("m-3", 45_000),
            ("m-1", 45_000), // tie on lag: the smaller id wins
            ("m-9", 130),
            ("m-4", 80),
            ("m-5", 150),
            ("m-2", 100),
        ];
        let settings = OutlierSettings::default();
        let mut decisions = Vec::new();
        for agent in 0..lags.len() as u64 {
            // Each agent builds its view from a differently ordered DescribeGroups answer and
            // scores without sorting first.
            let order = shuffled(&lags, agent * 7919 + 1);
            let mut v = view(&order);
            v.members = shuffled(&v.members, agent + 3);
            let sc = score(&v, &settings);
            let me = order[0].0;
            decisions.push((
                elect(&sc).map(|s| s.member_id.clone()),
                me,
                is_elected(&sc, me),
            ));
        }
        assert!(
            decisions.iter().all(|d| d.0.as_deref() == Some("m-1")),
            "{decisions:?}"
        );
        // Across agents, at most one (the one whose member is m-1) would act.
        let acting: Vec<_> = decisions.iter().filter(|d| d.2).map(|d| d.1).collect();
        assert!(acting.iter().all(|m| *m == "m-1"), "{acting:?}");
    }

    #[test]
    fn deputies_take_turns_after_the_winner_in_id_order() {
        let sc = score(
            &view(&[("a", 100), ("b", 110), ("c", 40_000), ("d", 90), ("e", 120)]),
            &OutlierSettings::default(),
        );
        assert_eq!(elect(&sc).unwrap().member_id, "c");
        let turns: Vec<Option<&str>> = (0..12).map(|o| deputy(&sc, "c", o, 2)).collect();
        assert_eq!(
            turns,
            [
                None,
                None,
                Some("d"),
                Some("d"),
                Some("e"),
                Some("e"),
                Some("a"),
                Some("a"),
                Some("b"),
                Some("b"),
                Some("d"),
                Some("d")
            ]
        );
        // Whatever order the agents list members in, they name the same deputy.
        for seed in 0..5 {
            let shuffled_scores = shuffled(&sc, seed);
            assert_eq!(deputy(&shuffled_scores, "c", 5, 2), Some("e"));
        }
        // Alone in the group: nobody to stand in.
        let alone = score(&view(&[("c", 40_000)]), &OutlierSettings::default());
        assert_eq!(deputy(&alone, "c", 100, 2), None);
    }

    #[test]
    fn nobody_acts_without_an_outlier() {
        let sc = score(
            &view(&[("a", 5000), ("b", 5100), ("c", 4900)]),
            &OutlierSettings::default(),
        );
        assert!(elect(&sc).is_none());
        assert!(elect(&[]).is_none());
    }
}
