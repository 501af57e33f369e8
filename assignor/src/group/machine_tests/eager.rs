//! The eager protocol: a member revokes everything before each join, and its claim still
//! carries the generation it last held partitions in.

use super::*;

#[test]
fn eager_range_revokes_everything_before_each_join() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.join(config(), range(), &["t"]);
    sim.settle(10_000);
    assert_eq!(sim.owned(a), set(tps("t", 0..4)));
    let ma = sim.mark(a);
    let b = sim.join(config(), range(), &["t"]);
    sim.settle(60_000);
    let ev: Vec<Output> = sim
        .events_since(a, ma)
        .into_iter()
        .filter(is_callback)
        .collect();
    // Everything revoked first; then (after the new member's first round, in which the leader
    // hands out nothing a member it has no history of might hold) A ends with half.
    assert_eq!(
        ev[0],
        Output::Revoke {
            partitions: tps("t", 0..4),
            commit: true
        }
    );
    let last_assign = ev
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Assign { partitions, .. } if !partitions.is_empty() => Some(partitions.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(last_assign, tps("t", 0..2));
    let join = &sim.sends_of(a, ma, Api::Join)[0].1;
    assert_eq!(
        join_subscription(join, 0).owned,
        vec![],
        "nothing owned when joining"
    );
    assert_eq!(sim.owned(b), set(tps("t", 2..4)));
    // And again on the next rebalance: everything revoked, even what it gets back.
    let ma = sim.mark(a);
    sim.input(b, Input::RequestRejoin("again".into()));
    sim.settle(60_000);
    let ev: Vec<Output> = sim
        .events_since(a, ma)
        .into_iter()
        .filter(is_callback)
        .collect();
    assert_eq!(
        ev,
        vec![
            Output::Revoke {
                partitions: tps("t", 0..2),
                commit: true
            },
            Output::Assign {
                partitions: tps("t", 0..2),
                generation: sim.coord.generation
            }
        ]
    );
}

/// An eager member revokes everything before each rejoin, so its owned set is empty every time
/// it joins — but its claim must still carry the generation it last held partitions in. It
/// used to repeat an older empty claim byte for byte (rule 9), and a leader without a join
/// barrier took it for a member held back since then and kept its last partitions with it,
/// round after round (seen with `range` on tansu: one member never got a partition).
#[test]
fn an_eager_members_claim_is_never_older_than_its_last_assignment() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let _a = sim.join(config(), range(), &["t"]);
    sim.settle(60_000);
    let b = sim.join(config(), range(), &["t"]);
    sim.settle(60_000);
    let c = sim.join(config(), range(), &["t"]);
    sim.settle(60_000);
    let held_at = |sim: &Sim, mark: usize| {
        sim.events_since(b, mark)
            .into_iter()
            .filter_map(|o| match o {
                Output::Assign {
                    partitions,
                    generation,
                } if !partitions.is_empty() => Some(generation),
                _ => None,
            })
            .max()
    };
    let last_held = held_at(&sim, 0).expect("b was given partitions");
    let mark = sim.mark(b);
    sim.input(c, Input::RequestRejoin("again".into()));
    sim.settle(60_000);
    let joins = sim.sends_of(b, mark, Api::Join);
    assert!(!joins.is_empty(), "b rejoined for c's rebalance");
    let claim = join_subscription(&joins[0].1, 0);
    assert!(claim.owned.is_empty(), "eager: {claim:?}");
    assert!(
        claim.generation >= last_held,
        "claim of generation {} after holding partitions at {last_held}",
        claim.generation
    );
    sim.assert_all_assigned_once();
}
