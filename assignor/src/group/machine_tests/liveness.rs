//! Liveness: whatever the leader withholds reaches a live member within a bound.

use super::*;

/// `docs/group-protocol.md` rule 15 with the tests' settings (session 10 s, heartbeat 3 s):
/// a partition without a confirmed holder reaches a live member within one session timeout
/// plus a round (the leader notices within a heartbeat interval; rounds take no simulated time
/// here) …
const LIVENESS_BOUND_MS: u64 = 10_000 + 3_000 + 500;

/// … or, if the member it was handed to never takes it up while it stays in the group, within
/// two session timeouts plus two rounds.
const HANDOUT_BOUND_MS: u64 = 2 * 10_000 + 2 * 3_000 + 500;

/// Run `sim` for `ms` and check that no partition went without a live holder for longer than
/// [`LIVENESS_BOUND_MS`] meanwhile, and that every partition ends up held exactly once.
#[track_caller]
fn run_checking_liveness(sim: &mut Sim, ms: u64) {
    run_checking_liveness_within(sim, ms, LIVENESS_BOUND_MS);
}

#[track_caller]
fn run_checking_liveness_within(sim: &mut Sim, ms: u64, bound_ms: u64) {
    sim.advance(ms);
    if std::env::var("DUMP").is_ok() {
        sim.dump();
    }
    let (worst, which) = sim.worst_unowned.clone();
    assert!(
        worst <= bound_ms,
        "{which:?} had no holder for {worst} ms (bound {bound_ms} ms); held: {:?}",
        sim.nodes.iter().map(|n| n.app.clone()).collect::<Vec<_>>()
    );
    sim.assert_all_assigned_once();
}

/// The reported stall, narrowed: our worker leads a cooperative-sticky group on a broker
/// without a join barrier, and a kafka-python consumer joins. kafka-python's cooperative-sticky
/// sends subscription v1 — owned partitions, no generation — so the leader reads generation
/// −1 from it at every join. The rule for a new leader without history
/// (`withhold_unclaimed_if_history_unknown`: "a member whose claim predates my first plan may
/// hold what an earlier leader gave it") took that −1 for an old claim, every round, for good:
/// the worker revoked half its partitions and nobody ever got them.
#[test]
fn a_peer_whose_claim_has_no_generation_gets_its_share() {
    let mut sim = Sim::new(false, &[("t", 6)]);
    let worker = sim.join(config(), sticky(), &["t"]);
    sim.settle(30_000);
    assert_eq!(sim.owned(worker).len(), 6);
    sim.reset_unowned();
    let py = sim.join_as(Dialect::KafkaPython, config(), sticky(), &["t"]);
    run_checking_liveness(&mut sim, 60_000);
    assert_eq!(sim.owned(worker).len(), 3, "{:?}", sim.owned(worker));
    assert_eq!(sim.owned(py).len(), 3, "{:?}", sim.owned(py));
}

/// The reported group: our worker leading, a librdkafka member (subscription v3 with its
/// generation — what our machine writes too) and a kafka-python member (v1), 12 partitions.
#[test]
fn the_reported_mixed_group_hands_every_partition_out() {
    for barrier in [false, true] {
        let mut sim = Sim::new(barrier, &[("t", 12)]);
        let worker = sim.join(config(), sticky(), &["t"]);
        sim.settle(30_000);
        sim.reset_unowned();
        let rdkafka = sim.join(config(), sticky(), &["t"]);
        let py = sim.join_as(Dialect::KafkaPython, config(), sticky(), &["t"]);
        run_checking_liveness(&mut sim, 90_000);
        for i in [worker, rdkafka, py] {
            assert_eq!(sim.owned(i).len(), 4, "barrier {barrier}, node {i}");
        }
    }
}

/// Cooperative moves away from a member whose claims carry no generation: it must not be
/// handed back what it has just revoked, round after round (the leader's memory keeps what it
/// gave a member until the member's claim is at least that recent — never, for a claim at −1).
#[test]
fn partitions_move_away_from_a_peer_whose_claim_has_no_generation() {
    let mut sim = Sim::new(false, &[("t", 6)]);
    let worker = sim.join(config(), sticky(), &["t"]);
    sim.settle(30_000);
    let py = sim.join_as(Dialect::KafkaPython, config(), sticky(), &["t"]);
    sim.advance(60_000);
    sim.assert_all_assigned_once();
    sim.reset_unowned();
    let third = sim.join(config(), sticky(), &["t"]);
    run_checking_liveness(&mut sim, 60_000);
    for i in [worker, py, third] {
        assert_eq!(sim.owned(i).len(), 2, "node {i}: {:?}", sim.owned(i));
    }
    // …and the group is quiet again: no follow-up rounds for ever.
    let generation = sim.coord.generation;
    sim.advance(60_000);
    assert_eq!(
        sim.coord.generation, generation,
        "the group keeps rebalancing"
    );
}

/// A member that claims partitions it was never given (a bug, or hostile bytes): here every
/// partition of the topic, at a generation above everyone's, so by Kafka's rule it owns them
/// all. The others, not given what they held, revoke it; the plan gives the liar only its
/// share, and the rest — "owned" by a member that will never revoke what it does not hold —
/// would wait for that revocation for good. A claim that has stood for a session timeout
/// while our plans never gave the partition to its member is ignored (and stays ignored while
/// the member sends the same bytes), so those partitions reach the honest members.
#[test]
fn claims_a_member_was_never_given_cannot_keep_partitions_from_the_group() {
    for (barrier, generation) in [(false, Some(1_000)), (false, None), (true, Some(1_000))] {
        let mut sim = Sim::new(barrier, &[("t", 6)]);
        let a = sim.join(config(), sticky(), &["t"]);
        sim.settle(30_000);
        let b = sim.join(config(), sticky(), &["t"]);
        sim.settle(60_000);
        sim.reset_unowned();
        let liar = Dialect::Liar {
            extra: tps("t", 0..6),
            generation,
        };
        let z = sim.join_as(liar, config(), sticky(), &["t"]);
        run_checking_liveness(&mut sim, 90_000);
        for i in [a, b, z] {
            assert_eq!(
                sim.owned(i).len(),
                2,
                "barrier {barrier}, liar at {generation:?}: node {i} holds {:?}",
                sim.owned(i)
            );
        }
        // …and it stays that way: the ignored claims do not come back every other round.
        sim.reset_unowned();
        run_checking_liveness(&mut sim, 60_000);
        let generation_now = sim.coord.generation;
        sim.advance(60_000);
        assert_eq!(
            sim.coord.generation, generation_now,
            "the group keeps rebalancing"
        );
    }
}

/// A member joins and dies before its SyncGroup completes: it never learns what it was
/// given, never claims it, and — on a broker without a join barrier — stays in the JoinGroup
/// answers until its session expires. What it was handed reaches a live member within the
/// bound.
#[test]
fn a_member_that_joins_and_never_syncs_holds_nothing_up_for_long() {
    for barrier in [false, true] {
        let mut sim = sticky_group(barrier, 2, 6);
        sim.reset_unowned();
        let x = sim.add(config(), sticky());
        sim.nodes[x].swallow_next.push(Api::Sync);
        sim.input(x, Input::Subscribe(vec!["t".into()]));
        if barrier {
            // Kafka answers its JoinGroup once everyone rejoined.
            while sim.sends_of(x, 0, Api::Sync).is_empty() {
                sim.advance(100);
            }
        }
        assert_eq!(sim.sends_of(x, 0, Api::Sync).len(), 1, "joined, sync sent");
        sim.kill(x);
        run_checking_liveness(&mut sim, 90_000);
        assert_eq!(sim.owned(0).len() + sim.owned(1).len(), 6);
    }
}

/// The same, but the member stays alive and heartbeating while its SyncGroup never completes
/// (a hung request): a barrier-less coordinator keeps it in every answer for good. Partitions
/// the plans hand it are given to live members once it has not confirmed them for the bound,
/// and it gets nothing new until it rejoins with other bytes.
#[test]
fn a_member_whose_sync_never_completes_gets_nothing_for_good() {
    let mut sim = sticky_group(false, 2, 6);
    sim.reset_unowned();
    let x = sim.add(config(), sticky());
    sim.nodes[x].swallow_next.push(Api::Sync);
    sim.input(x, Input::Subscribe(vec!["t".into()]));
    assert_eq!(sim.nodes[x].m.phase(), Phase::Syncing);
    run_checking_liveness_within(&mut sim, 120_000, HANDOUT_BOUND_MS);
    assert!(sim.owned(x).is_empty());
    assert_eq!(sim.owned(0).len() + sim.owned(1).len(), 6);
    assert!(
        sim.coord.members.contains_key(&sim.member_id(x)),
        "still in the group"
    );
    let generation = sim.coord.generation;
    sim.reset_unowned();
    run_checking_liveness(&mut sim, 60_000);
    assert_eq!(
        sim.coord.generation, generation,
        "the group keeps rebalancing"
    );
    assert_eq!(sim.worst_unowned.0, 0);
}

/// kafka-python with its default eager assignors in a `range` group led by our worker: its
/// subscription (v0) carries neither owned partitions nor a generation, so the leader's memory
/// is all it knows of what that member holds. An eager member revokes everything before it
/// rejoins; the memory must not keep what it had for good, or a later member never gets it.
#[test]
fn an_eager_peer_without_owned_partitions_lets_partitions_move_on() {
    for barrier in [true, false] {
        let mut sim = Sim::new(barrier, &[("t", 6)]);
        let worker = sim.join(config(), range(), &["t"]);
        sim.settle(30_000);
        let py = sim.join_as(Dialect::KafkaPythonEager, config(), range(), &["t"]);
        run_checking_liveness(&mut sim, 60_000);
        assert_eq!(sim.owned(py).len(), 3, "barrier {barrier}");
        sim.reset_unowned();
        let third = sim.join(config(), range(), &["t"]);
        run_checking_liveness(&mut sim, 60_000);
        for i in [worker, py, third] {
            assert_eq!(
                sim.owned(i).len(),
                2,
                "barrier {barrier}, node {i}: {:?}",
                sim.owned(i)
            );
        }
        let generation = sim.coord.generation;
        sim.advance(60_000);
        assert_eq!(
            sim.coord.generation, generation,
            "the group keeps rebalancing"
        );
    }
}

/// A live member told to give a partition up cannot do so before it syncs the plan that says
/// so, and a SyncGroup can take long: a broker holds it until the leader's plan arrives, and a
/// busy barrier-less group fails it with REBALANCE_IN_PROGRESS again and again (chaos suite
/// on tansu: a forced rebalance took 10.4 s). All that time the member keeps its partitions,
/// heartbeats, and claims them; the leader must not hand them on (the chaos suite saw one
/// handed to another member while its old owner consumed it for 5.4 s more).
#[test]
fn a_member_whose_sync_hangs_keeps_what_it_claims() {
    for barrier in [false, true] {
        let mut sim = sticky_group(barrier, 3, 6);
        // Both followers' next SyncGroups hang, so whichever the plan takes from cannot
        // revoke.
        let followers = [1, 2];
        let held: Vec<BTreeSet<NamedPartition>> = followers.iter().map(|&f| sim.owned(f)).collect();
        let marks: Vec<usize> = followers.iter().map(|&f| sim.mark(f)).collect();
        for f in followers {
            sim.nodes[f].swallow_next.push(Api::Sync);
        }
        sim.join(config(), sticky(), &["t"]);
        let deadline = sim.now + 30_000;
        while followers
            .iter()
            .zip(&marks)
            .any(|(&f, &mark)| sim.sends_of(f, mark, Api::Sync).is_empty())
        {
            assert!(
                sim.now < deadline,
                "barrier {barrier}: a follower never synced"
            );
            sim.advance(100);
        }
        // Their SyncGroups hang for three session timeouts while others join (each join a
        // new plan); then the requests time out.
        for _ in 0..3 {
            sim.advance(10_000);
            sim.join(config(), sticky(), &["t"]);
        }
        if std::env::var("DUMP").is_ok() {
            sim.dump();
        }
        for ((&f, &mark), held) in followers.iter().zip(&marks).zip(&held) {
            if !barrier {
                // (Kafka expels a member whose SyncGroup does not arrive within the rebalance
                // timeout; it loses its partitions at its next heartbeat.)
                assert_eq!(&sim.owned(f), held, "node {f} still holds its partitions");
            }
            let id = sim.nodes[f].log[mark..]
                .iter()
                .find_map(|(_, o)| match o {
                    Output::Send {
                        id,
                        request: Request::Sync { .. },
                    } => Some(*id),
                    _ => None,
                })
                .unwrap();
            let reason = "request timed out".to_string();
            sim.input(f, Input::RequestFailed { id, reason });
        }
        sim.settle(60_000);
        sim.assert_all_assigned_once();
    }
}
