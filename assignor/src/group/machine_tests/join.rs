//! Join flow: the member id a JoinGroup hands out, the protocols a member offers and in
//! which order, and the coordinator's choice among them.

use super::*;

#[test]
fn join_flow_adopts_member_id_and_rejoins_at_once() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.join(config(), sticky(), &["t"]);
    let sends: Vec<Request> = sim
        .sends_since(a, 0)
        .into_iter()
        .map(|(t, r)| {
            assert_eq!(t, 0, "no backoff anywhere in a clean join");
            r
        })
        .collect();
    assert_eq!(sends.len(), 4, "{sends:?}");
    assert_eq!(sends[0], Request::FindCoordinator);
    // KIP-394: the first JoinGroup has no id; the coordinator hands one out with
    // MEMBER_ID_REQUIRED and the member joins again with it straight away.
    assert_eq!(join_member_id(&sends[1]), "");
    assert_eq!(join_member_id(&sends[2]), "member-001");
    let Request::Join {
        session_timeout_ms,
        rebalance_timeout_ms,
        instance_id,
        ..
    } = &sends[2]
    else {
        unreachable!()
    };
    assert_eq!(
        (*session_timeout_ms, *rebalance_timeout_ms),
        (10_000, 30_000)
    );
    assert_eq!(instance_id, &None);
    assert!(matches!(
        &sim.responses[1].2,
        Response::Join(JoinAnswer { error, member_id, .. })
            if *error == code(ResponseError::MemberIdRequired) && member_id == "member-001"
    ));
    // Alone, it leads: metadata for the subscribed topics, then a Sync with the plan.
    let Request::Sync {
        generation,
        member_id,
        protocol,
        ..
    } = &sends[3]
    else {
        panic!("{:?}", sends[3])
    };
    assert_eq!(
        (*generation, member_id.as_str(), protocol.as_str()),
        (1, "member-001", "cooperative-sticky")
    );
    assert_eq!(
        sync_assignments(&sends[3]),
        BTreeMap::from([("member-001".to_string(), tps("t", 0..4))])
    );
    let ev = sim.events_since(a, 0);
    assert!(matches!(&ev[0], Output::LeaderInputsNeeded { topics, .. } if topics == &["t"]));
    assert_eq!(
        ev[1..],
        vec![Output::Assign {
            partitions: tps("t", 0..4),
            generation: 1
        }]
    );
    assert_eq!(sim.nodes[a].m.phase(), Phase::Stable);
    assert!(sim.nodes[a].m.is_leader());
}

#[test]
fn join_lists_protocols_in_preference_order_with_owned_partitions_and_generation() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let mut cfg = config();
    cfg.rack = Some("rack-a".into());
    let a = sim.join(cfg, lagbalance_then_sticky(), &["t"]);
    sim.settle(10_000);
    assert_eq!(sim.nodes[a].m.protocol(), Some("lagbalance"));
    let mark = sim.mark(a);
    sim.input(a, Input::RequestRejoin("check the subscription".into()));
    let joins = sim.sends_of(a, mark, Api::Join);
    let (_, join) = &joins[0];
    let Request::Join {
        protocols, reason, ..
    } = join
    else {
        unreachable!()
    };
    assert_eq!(reason, "check the subscription");
    let names: Vec<&str> = protocols.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["lagbalance", "cooperative-sticky"]);
    for (i, (_, blob)) in protocols.iter().enumerate() {
        // Subscription v3 on the wire.
        assert_eq!(&blob[..2], &[0, 3]);
        let s = join_subscription(join, i);
        assert_eq!(s.topics, vec!["t"]);
        assert_eq!(
            s.owned,
            tps("t", 0..4),
            "every JoinGroup carries the owned partitions"
        );
        assert_eq!(s.generation, 1, "and the generation they belong to");
        assert_eq!(s.rack.as_deref(), Some("rack-a"));
    }
    // Only lagbalance has user data.
    assert!(join_subscription(join, 0).user_data.is_some());
    assert_eq!(join_subscription(join, 1).user_data, None);
}

#[test]
fn coordinator_picks_the_protocol_everyone_supports_with_most_votes() {
    // Rolling upgrade: two of ours prefer lagbalance, one old member only knows
    // cooperative-sticky, so the group runs cooperative-sticky until it leaves.
    let mut sim = Sim::new(true, &[("t", 6)]);
    let a = sim.join(config(), lagbalance_then_sticky(), &["t"]);
    let b = sim.join(config(), lagbalance_then_sticky(), &["t"]);
    let old = sim.join(config(), sticky(), &["t"]);
    sim.settle(60_000);
    for i in [a, b, old] {
        assert_eq!(sim.nodes[i].m.protocol(), Some("cooperative-sticky"));
    }
    let mark = sim.mark(a);
    sim.input(old, Input::Close);
    sim.settle(60_000);
    assert_eq!(sim.nodes[a].m.protocol(), Some("lagbalance"));
    assert_eq!(sim.nodes[b].m.protocol(), Some("lagbalance"));
    // The leader syncs with the protocol the coordinator chose.
    let syncs = sim.sends_of(a, mark, Api::Sync);
    assert!(
        matches!(&syncs.last().unwrap().1, Request::Sync { protocol, .. } if protocol == "lagbalance")
    );
    sim.assert_all_assigned_once();
}
