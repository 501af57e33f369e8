//! Randomised properties of the assignors and the cooperative layer.
//!
//! A seeded PRNG drives every case, so a failure message names its seed and the case
//! reproduces exactly. Sizes:
//! 1..30 members, 1..5 topics, 1..200 partitions per topic, random subscriptions, random prior
//! ownership with conflicts and random generations.

use lagbalance_assign::cooperative::{resolve_owners, sticky_hints, to_issued, validate};
use lagbalance_assign::range::range_target;
use lagbalance_assign::rng::Rng;
use lagbalance_assign::sticky::{sticky_target, sticky_target_general};
use lagbalance_assign::{
    Assignor, CooperativeStickyAssignor, GroupView, IssuedPlan, MemberView, Plan, RangeAssignor,
    TopicInfo, Tp,
};

/// Shape draws on the workspace's seeded stream.
trait Draw {
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64;
    fn chance(&mut self, percent: u64) -> bool;
}

impl Draw for Rng {
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Cases per property; `ASSIGN_PROP_CASES` raises it for a longer soak.
fn cases() -> u64 {
    std::env::var("ASSIGN_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn seeds(salt: u64) -> impl Iterator<Item = u64> {
    (0..cases()).map(move |i| i.wrapping_mul(0x1000_0000_01B3) ^ salt)
}

/// Random group. `equal`: everyone subscribes to the same topics.
fn random_view(rng: &mut Rng, equal: bool) -> GroupView {
    let nt = rng.range(1, 5) as usize;
    let topics: Vec<TopicInfo> = (0..nt)
        .map(|t| TopicInfo {
            name: format!("t{t}"),
            partitions: rng.range(1, 200) as i32,
        })
        .collect();
    let nm = rng.range(1, 30) as usize;
    let random_subset = |rng: &mut Rng| -> Vec<u32> {
        let mut s: Vec<u32> = (0..nt as u32).filter(|_| rng.chance(50)).collect();
        if s.is_empty() {
            s.push(rng.range(0, nt as u64 - 1) as u32);
        }
        s
    };
    let shared = random_subset(rng);
    let mut members: Vec<MemberView> = (0..nm)
        .map(|i| MemberView {
            member_id: format!("m{i:03}"),
            topics: if equal {
                shared.clone()
            } else {
                random_subset(rng)
            },
            generation: if rng.chance(20) {
                -1
            } else {
                rng.range(1, 6) as i32
            },
            ..MemberView::default()
        })
        .collect();
    // Prior ownership: each partition claimed by 0, 1 or 2 random members (conflicts), and
    // sometimes by a member not subscribed to its topic (must be ignored).
    if rng.chance(80) {
        for (t, topic) in topics.iter().enumerate() {
            for p in 0..topic.partitions {
                let claimants = match rng.range(0, 9) {
                    0..=2 => 0,
                    3..=8 => 1,
                    _ => 2,
                };
                for _ in 0..claimants {
                    let m = rng.range(0, nm as u64 - 1) as usize;
                    members[m].owned.push(Tp::new(t as u32, p));
                }
            }
        }
        for m in &mut members {
            m.owned.sort();
            m.owned.dedup();
        }
    }
    GroupView {
        generation: 7,
        topics,
        members,
        stats: None,
        now_ms: 0,
    }
}

fn offsets(view: &GroupView) -> Vec<usize> {
    view.topic_offsets()
}

/// Per flat partition, which members hold it in `plan`.
fn holders(view: &GroupView, plan: &Plan) -> Vec<Vec<usize>> {
    let off = offsets(view);
    let mut h = vec![Vec::new(); *off.last().unwrap()];
    for (m, list) in plan.assignments.iter().enumerate() {
        for &tp in list {
            let p = view.flat_index(&off, tp).expect("plan entry out of range");
            h[p].push(m);
        }
    }
    h
}

fn subscribes(view: &GroupView, m: usize, topic: u32) -> bool {
    view.members[m].topics.contains(&topic)
}

/// Every partition of a subscribed topic exactly once, to a subscriber; nothing else.
fn assert_complete(view: &GroupView, target: &Plan, what: &str) {
    assert_eq!(target.assignments.len(), view.members.len(), "{what}");
    let off = offsets(view);
    let h = holders(view, target);
    for (t, topic) in view.topics.iter().enumerate() {
        let subscribed = (0..view.members.len()).any(|m| subscribes(view, m, t as u32));
        for p in 0..topic.partitions {
            let who = &h[off[t] + p as usize];
            if subscribed {
                assert_eq!(who.len(), 1, "{what}: t{t}p{p} held by {who:?}");
                assert!(subscribes(view, who[0], t as u32), "{what}: t{t}p{p}");
            } else {
                assert!(who.is_empty(), "{what}: unsubscribed t{t}p{p} assigned");
            }
        }
    }
}

fn counts(plan: &Plan) -> Vec<usize> {
    plan.assignments.iter().map(Vec::len).collect()
}

/// No member can reach (through topics it holds and others subscribe to) a member holding two
/// or more fewer partitions: the optimality condition for balance under any subscriptions.
fn assert_optimally_balanced(view: &GroupView, target: &Plan, what: &str) {
    let n = view.members.len();
    let c = counts(target);
    for u in 0..n {
        let mut seen = vec![false; n];
        seen[u] = true;
        let mut stack = vec![u];
        while let Some(a) = stack.pop() {
            assert!(
                c[a] + 1 >= c[u],
                "{what}: member {u} ({}) reaches member {a} ({})",
                c[u],
                c[a]
            );
            let mut held: Vec<u32> = target.assignments[a].iter().map(|tp| tp.topic).collect();
            held.dedup(); // lists are sorted by topic
            for (b, seen_b) in seen.iter_mut().enumerate() {
                if !*seen_b && held.iter().any(|&t| subscribes(view, b, t)) {
                    *seen_b = true;
                    stack.push(b);
                }
            }
        }
    }
}

fn target_of(view: &GroupView, prev: Option<&IssuedPlan>) -> (Vec<Option<u32>>, Plan) {
    let owners = resolve_owners(view, prev);
    let target = sticky_target(view, &owners, &sticky_hints(view));
    (owners, target)
}

#[test]
fn target_is_complete_and_plan_is_valid() {
    for seed in seeds(1) {
        let mut rng = Rng::new(seed);
        let equal = rng.chance(50);
        let view = random_view(&mut rng, equal);
        let what = format!("seed {seed}");
        let (owners, target) = target_of(&view, None);
        assert_complete(&view, &target, &what);
        let plan = CooperativeStickyAssignor.assign(&view, None).expect(&what);
        assert_eq!(validate(&view, &owners, &plan), Ok(()), "{what}");
        // The plan is the target minus exactly the transfers from a current owner.
        let off = offsets(&view);
        for (m, list) in target.assignments.iter().enumerate() {
            for tp in list {
                let p = view.flat_index(&off, *tp).unwrap();
                let moves = owners[p].is_some_and(|o| o as usize != m);
                assert_eq!(plan.assignments[m].contains(tp), !moves, "{what}: {tp:?}");
            }
        }
        assert_optimally_balanced(&view, &target, &what);

        let range = range_target(&view);
        assert_complete(&view, &range, &format!("range {what}"));
        let plan = RangeAssignor.assign(&view, None).expect(&what);
        assert_eq!(validate(&view, &owners, &plan), Ok(()), "range {what}");
    }
}

#[test]
fn equal_subscriptions_balance_within_one_on_both_paths() {
    for seed in seeds(2) {
        let mut rng = Rng::new(seed);
        let view = random_view(&mut rng, true);
        let what = format!("seed {seed}");
        let owners = resolve_owners(&view, None);
        let hints = sticky_hints(&view);
        let fast = sticky_target(&view, &owners, &hints);
        let c = counts(&fast);
        assert!(
            c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
            "{what}: {c:?}"
        );
        let general = sticky_target_general(&view, &owners, &hints);
        assert_complete(&view, &general, &format!("general {what}"));
        let (mut a, mut b) = (c, counts(&general));
        a.sort();
        b.sort();
        assert_eq!(a, b, "{what}: fast and general disagree on balance");
    }
}

/// One member's real state in a simulated group.
#[derive(Clone)]
struct Sim {
    id: String,
    topics: Vec<u32>,
    owned: Vec<Tp>,
    generation: i32,
}

fn sim_from(view: &GroupView) -> Vec<Sim> {
    view.members
        .iter()
        .map(|m| Sim {
            id: m.member_id.clone(),
            topics: m.topics.clone(),
            // A member revokes partitions of topics it no longer subscribes to before it
            // joins (docs/design.md §2.2), so those are not really owned.
            owned: m
                .owned
                .iter()
                .copied()
                .filter(|tp| m.topics.contains(&tp.topic))
                .collect(),
            generation: m.generation,
        })
        .collect()
}

fn view_of(base: &GroupView, sims: &[Sim], generation: i32) -> GroupView {
    GroupView {
        generation,
        topics: base.topics.clone(),
        members: sims
            .iter()
            .map(|s| MemberView {
                member_id: s.id.clone(),
                topics: s.topics.clone(),
                owned: s.owned.clone(),
                generation: s.generation,
                ..MemberView::default()
            })
            .collect(),
        stats: None,
        now_ms: 0,
    }
}

/// Partitions whose top-generation claim is tied between members: KIP-429 treats them as
/// unowned, so the leader cannot protect them (both claimants are already consuming).
fn contested(view: &GroupView) -> Vec<bool> {
    let off = offsets(view);
    let total = *off.last().unwrap();
    let mut best: Vec<(i32, usize)> = vec![(i32::MIN, 0); total];
    for member in &view.members {
        for &tp in &member.owned {
            if !member.topics.contains(&tp.topic) {
                continue;
            }
            if let Some(p) = view.flat_index(&off, tp) {
                let g = member.generation;
                if g > best[p].0 {
                    best[p] = (g, 1);
                } else if g == best[p].0 {
                    best[p].1 += 1;
                }
            }
        }
    }
    best.into_iter().map(|(_, n)| n > 1).collect()
}

/// Apply a plan the way members do: owned := assigned (revoked ones given up, added ones
/// taken). Asserts no partition is added to a member while another member really owns it.
/// Returns whether anyone revoked (and so rejoins) or anything was withheld.
fn apply_round(
    view: &GroupView,
    sims: &mut [Sim],
    plan: &Plan,
    exempt: &[bool],
    what: &str,
) -> bool {
    let off = offsets(view);
    let total = *off.last().unwrap();
    let mut truth: Vec<Vec<usize>> = vec![Vec::new(); total];
    for (m, s) in sims.iter().enumerate() {
        for &tp in &s.owned {
            if let Some(p) = view.flat_index(&off, tp) {
                truth[p].push(m);
            }
        }
    }
    let mut changed = false;
    for (m, list) in plan.assignments.iter().enumerate() {
        for &tp in list {
            let p = view.flat_index(&off, tp).unwrap();
            if !sims[m].owned.contains(&tp) && !exempt[p] {
                assert!(
                    truth[p].iter().all(|&o| o == m),
                    "{what}: {tp:?} added to {m} while {:?} own it",
                    truth[p]
                );
            }
        }
        let mut next = list.clone();
        next.sort();
        if next.iter().any(|tp| !sims[m].owned.contains(tp))
            || sims[m].owned.iter().any(|tp| !next.contains(tp))
        {
            changed = true;
        }
        sims[m].owned = next;
        sims[m].generation = view.generation;
    }
    changed
}

/// Run rounds until a plan assigns every subscribed partition; return how many rebalances
/// that took. Every round is checked for validity and ownership safety.
fn converge(base: &GroupView, sims: &mut [Sim], mut generation: i32, what: &str) -> usize {
    let mut prev: Option<IssuedPlan> = None;
    for round in 1..=8 {
        let view = view_of(base, sims, generation);
        let exempt = if round == 1 {
            contested(&view)
        } else {
            vec![false; *offsets(&view).last().unwrap()]
        };
        let (_, target) = target_of(&view, prev.as_ref());
        let plan = CooperativeStickyAssignor
            .assign(&view, prev.as_ref())
            .expect(what);
        apply_round(
            &view,
            sims,
            &plan,
            &exempt,
            &format!("{what} round {round}"),
        );
        prev = Some(to_issued(&view, &plan));
        if plan == target {
            assert_optimally_balanced(&view, &plan, what);
            return round;
        }
        generation += 1;
    }
    panic!("{what}: no convergence in 8 rounds");
}

#[test]
fn cooperative_rounds_converge_within_four_rebalances_and_never_double_assign() {
    let mut worst = 0;
    for seed in seeds(3) {
        let mut rng = Rng::new(seed);
        let equal = rng.chance(50);
        let view = random_view(&mut rng, equal);
        let what = format!("seed {seed} equal={equal}");
        let mut sims = sim_from(&view);
        let rounds = converge(&view, &mut sims, view.generation, &what);
        assert!(rounds <= 4, "{what}: {rounds} rebalances");
        worst = worst.max(rounds);

        // Once converged, another rebalance changes nothing (stability).
        let g = view.generation + 10;
        let again = view_of(&view, &sims, g);
        let plan = CooperativeStickyAssignor.assign(&again, None).unwrap();
        let before: Vec<Vec<Tp>> = sims.iter().map(|s| s.owned.clone()).collect();
        assert_eq!(plan.assignments, before, "{what}: converged state moved");
    }
    // Two rebalances are the cooperative minimum when anything moves; we should see it.
    assert!(worst >= 2);
}

/// Lower bound on partitions that must leave their current owners (equal subscriptions):
/// everyone ends at `base` or `base + 1`, with at most `extra` at `base + 1`.
fn must_move(owned_counts: &[usize], members: usize, n: usize) -> usize {
    let base = n / members;
    let extra = n % members;
    let over: usize = owned_counts.iter().map(|&c| c.saturating_sub(base)).sum();
    let can_keep_extra = owned_counts
        .iter()
        .filter(|&&c| c > base)
        .count()
        .min(extra);
    over - can_keep_extra
}

#[test]
fn join_and_leave_move_only_what_balance_requires() {
    for seed in seeds(4) {
        let mut rng = Rng::new(seed);
        let mut view = random_view(&mut rng, true);
        for m in &mut view.members {
            m.owned.clear();
        }
        let what = format!("seed {seed}");
        let mut sims = sim_from(&view);
        converge(&view, &mut sims, 1, &what);
        let n: usize = sims.iter().map(|s| s.owned.len()).sum();

        let leave = rng.chance(50) && sims.len() > 1;
        if leave {
            let gone = rng.range(0, sims.len() as u64 - 1) as usize;
            sims.remove(gone);
        } else {
            let topics = sims[0].topics.clone();
            sims.push(Sim {
                id: "zz-new".into(),
                topics,
                owned: Vec::new(),
                generation: -1,
            });
        }
        let next = view_of(&view, &sims, 50);
        let (owners, target) = target_of(&next, None);
        let off = offsets(&next);
        let moved = (0..sims.len())
            .flat_map(|m| target.assignments[m].iter().map(move |tp| (m, *tp)))
            .filter(|&(m, tp)| {
                let p = next.flat_index(&off, tp).unwrap();
                owners[p].is_some_and(|o| o as usize != m)
            })
            .count();
        let owned: Vec<usize> = sims.iter().map(|s| s.owned.len()).collect();
        assert_eq!(
            moved,
            must_move(&owned, sims.len(), n),
            "{what} leave={leave}: {owned:?}"
        );
    }
}

#[test]
fn stale_metadata_never_double_assigns() {
    // Brokers without a join barrier may replay a member's metadata from before its last
    // SyncGroup. The leader's memory must keep every round safe against what members really own.
    for seed in seeds(5) {
        let mut rng = Rng::new(seed);
        let equal = rng.chance(50);
        let base = random_view(&mut rng, equal);
        let what = format!("seed {seed}");
        let mut sims = sim_from(&base);
        for m in &mut sims {
            m.owned.clear();
            m.generation = -1; // a fresh group: nobody can be ahead of the group generation
        }
        let mut reported = sims.clone();
        let mut prev: Option<IssuedPlan> = None;
        for (round, generation) in (0..10).zip(1..) {
            // Churn: a member sometimes leaves or a new one joins.
            if rng.chance(30) && sims.len() > 1 {
                let gone = rng.range(0, sims.len() as u64 - 1) as usize;
                sims.remove(gone);
                reported.remove(gone);
            } else if rng.chance(30) {
                let s = Sim {
                    id: format!("n{round:02}"),
                    topics: sims[0].topics.clone(),
                    owned: Vec::new(),
                    generation: -1,
                };
                sims.push(s.clone());
                reported.push(s);
            }
            // Each member's metadata is fresh, or (40 %) the stale copy from an earlier round.
            let shown: Vec<Sim> = sims
                .iter()
                .zip(&reported)
                .map(|(real, old)| {
                    if rng.chance(40) {
                        old.clone()
                    } else {
                        real.clone()
                    }
                })
                .collect();
            let view = view_of(&base, &shown, generation);
            let plan = CooperativeStickyAssignor
                .assign(&view, prev.as_ref())
                .expect(&what);
            reported = sims.clone();
            let exempt = vec![false; *offsets(&view).last().unwrap()];
            apply_round(
                &view,
                &mut sims,
                &plan,
                &exempt,
                &format!("{what} round {round}"),
            );
            prev = Some(to_issued(&view, &plan));
        }
    }
}

#[test]
fn hostile_input_never_panics_and_good_members_still_get_partitions() {
    for seed in seeds(6) {
        let mut rng = Rng::new(seed);
        let equal = rng.chance(50);
        let mut view = random_view(&mut rng, equal);
        let what = format!("seed {seed}");
        // Poison a random member: unknown topics, out-of-range and negative partitions,
        // duplicates, unsorted lists, absurd generations.
        let victim = rng.range(0, view.members.len() as u64 - 1) as usize;
        let m = &mut view.members[victim];
        m.topics.extend([99, 7, u32::MAX, 0, 0]);
        m.owned.extend([
            Tp::new(0, -1),
            Tp::new(0, i32::MAX),
            Tp::new(u32::MAX, 0),
            Tp::new(42, 3),
            Tp::new(0, 0),
            Tp::new(0, 0),
        ]);
        m.owned.reverse();
        m.generation = if rng.chance(50) { i32::MAX } else { i32::MIN };
        let prev = IssuedPlan {
            since: Vec::new(),
            generation: 9,
            assignments: vec![
                (view.members[0].member_id.clone(), vec![("t0".into(), -5)]),
                ("ghost".into(), vec![("nope".into(), 0), ("t0".into(), 0)]),
            ],
        };
        for assignor in [
            &mut CooperativeStickyAssignor as &mut dyn Assignor,
            &mut RangeAssignor,
        ] {
            let plan = assignor.assign(&view, Some(&prev)).expect(&what);
            let owners = resolve_owners(&view, Some(&prev));
            assert_eq!(validate(&view, &owners, &plan), Ok(()), "{what}");
        }
        // Other members still get the full, balanced target.
        let (_, target) = target_of(&view, Some(&prev));
        assert_complete(&view, &target, &what);
    }

    // Empty group, empty topics, zero- and negative-partition topics.
    let mut empty = GroupView::default();
    for assignor in [
        &mut CooperativeStickyAssignor as &mut dyn Assignor,
        &mut RangeAssignor,
    ] {
        assert!(assignor
            .assign(&empty, None)
            .unwrap()
            .assignments
            .is_empty());
    }
    empty.topics = vec![
        TopicInfo {
            name: "a".into(),
            partitions: -3,
        },
        TopicInfo {
            name: "b".into(),
            partitions: 0,
        },
    ];
    empty.members = vec![MemberView {
        member_id: "m".into(),
        topics: vec![0, 1],
        owned: vec![Tp::new(0, 0)],
        ..MemberView::default()
    }];
    let plan = CooperativeStickyAssignor.assign(&empty, None).unwrap();
    assert_eq!(plan.assignments, vec![Vec::<Tp>::new()]);
}
