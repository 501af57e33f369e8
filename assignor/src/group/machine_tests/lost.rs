//! Lost partitions: fencing errors (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID) and session or
//! poll timeouts give the partitions up as lost, not revoked.

use super::*;

#[test]
fn illegal_generation_on_sync_keeps_member_id_and_loses_partitions_at_next_join() {
    let mut sim = solo_sim();
    let id = sim.member_id(0);
    sim.nodes[0]
        .fail_next
        .push((Api::Sync, code(ResponseError::IllegalGeneration)));
    let mark = sim.mark(0);
    sim.input(0, Input::RequestRejoin("test".into()));
    sim.settle(60_000);
    let joins = sim.sends_of(0, mark, Api::Join);
    assert_eq!(joins.len(), 2);
    let s = join_subscription(&joins[1].1, 0);
    assert_eq!(join_member_id(&joins[1].1), id, "member id kept");
    assert_eq!(
        (s.generation, s.owned),
        (-1, vec![]),
        "generation reset, nothing owned"
    );
    assert_eq!(
        sim.events_since(0, mark)
            .into_iter()
            .filter(is_callback)
            .collect::<Vec<_>>(),
        vec![
            Output::Lost {
                partitions: tps("t", 0..4)
            },
            Output::Assign {
                partitions: tps("t", 0..4),
                generation: 3
            }
        ]
    );
    assert!(
        sim.nodes[0].commits.is_empty(),
        "lost partitions are not committed"
    );
}

#[test]
fn illegal_generation_on_heartbeat_loses_partitions_at_next_join() {
    let mut sim = solo_sim();
    let id = sim.member_id(0);
    sim.nodes[0]
        .fail_next
        .push((Api::Heartbeat, code(ResponseError::IllegalGeneration)));
    let mark = sim.mark(0);
    sim.advance(3_000);
    let joins = sim.sends_of(0, mark, Api::Join);
    assert_eq!(join_member_id(&joins[0].1), id);
    assert_eq!(join_subscription(&joins[0].1, 0).generation, -1);
    let ev: Vec<Output> = sim
        .events_since(0, mark)
        .into_iter()
        .filter(is_callback)
        .collect();
    assert_eq!(
        ev[0],
        Output::Lost {
            partitions: tps("t", 0..4)
        }
    );
    sim.settle(30_000);
    assert_eq!(sim.owned(0), set(tps("t", 0..4)));
    assert!(sim.nodes[0].commits.is_empty());
}

#[test]
fn illegal_generation_on_commit_loses_the_rest_at_next_join() {
    let mut sim = solo_sim();
    let a = 0;
    sim.nodes[a]
        .commit_errors
        .push_back(code(ResponseError::IllegalGeneration));
    let ma = sim.mark(a);
    let b = sim.join(config(), sticky(), &["t"]);
    sim.settle(60_000);
    let ev: Vec<Output> = sim
        .events_since(a, ma)
        .into_iter()
        .filter(is_callback)
        .collect();
    // The revocation's commit failed: the generation is gone, so what A kept is lost (no
    // commit) before it rejoins, with the member id kept.
    assert_eq!(
        ev[..3],
        [
            Output::Revoke {
                partitions: tps("t", 2..4),
                commit: true
            },
            Output::Assign {
                partitions: vec![],
                generation: 2
            },
            Output::Lost {
                partitions: tps("t", 0..2)
            },
        ]
    );
    let joins = sim.sends_of(a, ma, Api::Join);
    let after = joins
        .iter()
        .find(|(_, r)| join_subscription(r, 0).generation == -1)
        .expect("a join with the generation reset");
    assert_eq!(join_member_id(&after.1), sim.member_id(a));
    // Only what A revoked was committed. (A, whose claim was reset, is the remembered owner of
    // t2/t3 for one round, gets them back and revokes them again: one wasted, safe round.)
    assert_eq!(sim.nodes[a].commits[0], tps("t", 2..4));
    assert!(sim.nodes[a].commits.iter().all(|c| *c == tps("t", 2..4)));
    assert_eq!(sim.owned(a).len() + sim.owned(b).len(), 4);
    sim.assert_all_assigned_once();
}

#[test]
fn unknown_member_id_on_join_resets_the_id_and_rejoins() {
    let mut sim = solo_sim();
    let old = sim.member_id(0);
    sim.nodes[0]
        .fail_next
        .push((Api::Join, code(ResponseError::UnknownMemberId)));
    let mark = sim.mark(0);
    sim.input(0, Input::RequestRejoin("test".into()));
    let joins = sim.sends_of(0, mark, Api::Join);
    assert_eq!(join_member_id(&joins[0].1), old);
    // Rejoined at once, without an id (so via MEMBER_ID_REQUIRED), partitions lost first.
    assert_eq!(joins[1].0, joins[0].0);
    assert_eq!(join_member_id(&joins[1].1), "");
    assert_eq!(
        sim.events_since(0, mark)[0],
        Output::Lost {
            partitions: tps("t", 0..4)
        }
    );
    sim.settle(60_000);
    assert_ne!(sim.member_id(0), old);
    assert_eq!(sim.owned(0), set(tps("t", 0..4)));
}

#[test]
fn unknown_member_id_on_sync_and_heartbeat_loses_partitions() {
    for api in [Api::Sync, Api::Heartbeat] {
        let mut sim = solo_sim();
        let old = sim.member_id(0);
        let mark = sim.mark(0);
        if api == Api::Sync {
            sim.nodes[0]
                .fail_next
                .push((api, code(ResponseError::UnknownMemberId)));
            sim.input(0, Input::RequestRejoin("test".into()));
        } else {
            // The coordinator really forgot us (session expired on its side).
            let replies = sim.coord.expel(sim.now, &old);
            sim.deliver(replies);
            sim.advance(3_000);
        }
        let ev: Vec<Output> = sim
            .events_since(0, mark)
            .into_iter()
            .filter(is_callback)
            .collect();
        assert_eq!(
            ev[0],
            Output::Lost {
                partitions: tps("t", 0..4)
            },
            "{api:?}"
        );
        let joins = sim.sends_of(0, mark, Api::Join);
        let last = &joins.last().unwrap().1;
        assert_eq!(join_subscription(last, 0).owned, vec![], "{api:?}");
        assert!(
            joins.iter().any(|(_, r)| join_member_id(r).is_empty()),
            "{api:?}"
        );
        sim.settle(60_000);
        assert_ne!(sim.member_id(0), old);
        assert_eq!(sim.owned(0), set(tps("t", 0..4)));
        assert!(sim.nodes[0].commits.is_empty());
    }
}

#[test]
fn a_join_in_flight_keeps_the_partitions_past_the_session_deadline() {
    // The coordinator does not expire a member whose JoinGroup it holds, so neither do we:
    // a cooperative member keeps consuming while the group rebalances, however long it takes.
    let mut sim = solo_sim();
    let mark = sim.mark(0);
    assert!(sim.nodes[0].m.owned_valid_until().is_some());
    sim.nodes[0].swallow_next.push(Api::Join);
    sim.input(0, Input::RequestRejoin("test".into()));
    sim.advance(1);
    assert_eq!(sim.sends_of(0, mark, Api::Join).len(), 1);
    // Ours only while this process keeps running to read the answer: one heartbeat interval
    // past the last step, however long the coordinator holds the join.
    assert_eq!(sim.nodes[0].m.owned_valid_until(), Some(sim.now + 3_000));
    sim.advance(9_000);
    assert_eq!(
        sim.owned(0),
        set(tps("t", 0..4)),
        "still ours: the join holds the session"
    );
    assert_eq!(sim.nodes[0].m.owned_valid_until(), Some(sim.now + 3_000));
}

#[test]
fn a_process_paused_past_the_join_window_wakes_without_its_partitions() {
    // The join-in-flight window rolls forward only while the process runs: one that was
    // paused (SIGSTOP) past it may have been dropped by the coordinator meanwhile, so its
    // first step on waking gives the partitions up before any record can be handed out.
    let mut sim = solo_sim();
    let mark = sim.mark(0);
    sim.nodes[0].swallow_next.push(Api::Join);
    sim.input(0, Input::RequestRejoin("test".into()));
    sim.advance(1);
    assert_eq!(sim.sends_of(0, mark, Api::Join).len(), 1);
    let until = sim.nodes[0].m.owned_valid_until().expect("owned");
    // A timer that fires late, within one more heartbeat interval, is not a pause.
    sim.nodes[0].m.handle(until + 3_000, Input::Tick);
    assert!(
        sim.nodes[0].m.owned_valid_until().is_some(),
        "a late timer keeps them"
    );
    // Twenty seconds with no step at all.
    let until = sim.nodes[0].m.owned_valid_until().expect("owned");
    sim.nodes[0].m.handle(until + 20_000, Input::Tick);
    assert_eq!(
        sim.nodes[0].m.owned_valid_until(),
        None,
        "nothing owned on waking"
    );
}

#[test]
fn session_timeout_without_a_successful_heartbeat_gives_up_the_partitions() {
    // session 10 s, heartbeat 3 s. The coordinator may expel us 10 s after it last heard from
    // us; we stop one heartbeat interval earlier (librdkafka does the same; Java waits for a
    // fencing error, and a member expelled while still consuming breaks the one-owner rule).
    let mut sim = solo_sim();
    let old = sim.member_id(0);
    let start = sim.now; // the join's success: the coordinator heard from us then
    let mark = sim.mark(0);
    // The next heartbeat vanishes (neither answered nor seen by the coordinator).
    sim.nodes[0].swallow_next.push(Api::Heartbeat);
    sim.advance(3_000);
    assert_eq!(sim.sends_of(0, mark, Api::Heartbeat).len(), 1);
    sim.advance(3_999);
    assert_eq!(
        sim.owned(0),
        set(tps("t", 0..4)),
        "still ours before the deadline"
    );
    assert_eq!(
        sim.nodes[0].m.owned_valid_until(),
        Some(start + 7_000),
        "the consumer hands out no record past the same deadline"
    );
    assert_eq!(
        sim.nodes[0].m.coordinator(),
        Some(&(1, "127.0.0.1:9092".into()))
    );
    sim.advance(1);
    assert_eq!(sim.now, start + 7_000);
    assert_eq!(
        sim.nodes[0].m.coordinator(),
        None,
        "coordinator marked unknown"
    );
    let ev: Vec<Output> = sim
        .events_since(0, mark)
        .into_iter()
        .filter(is_callback)
        .collect();
    assert_eq!(
        ev,
        vec![Output::Lost {
            partitions: tps("t", 0..4)
        }],
        "lost, not revoked: no commit"
    );
    assert!(sim.nodes[0].commits.is_empty());
    assert_eq!(sim.nodes[0].m.owned_valid_until(), None, "nothing owned");
    assert!(
        sim.sends_of(0, mark, Api::Find).is_empty(),
        "not before the backoff"
    );
    sim.advance(100);
    assert_eq!(sim.sends_of(0, mark, Api::Find)[0].0, start + 7_100);
    // It rejoins with the generation reset and gets its partitions back.
    sim.settle(60_000);
    let joins = sim.sends_of(0, mark, Api::Join);
    assert_eq!(join_subscription(&joins[0].1, 0).generation, -1);
    assert!(join_subscription(&joins[0].1, 0).owned.is_empty());
    assert_eq!(sim.owned(0), set(tps("t", 0..4)));
    let _ = old;
}

#[test]
fn poll_timeout_leaves_and_rejoins_on_the_next_poll_with_partitions_lost() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.add(config(), sticky());
    sim.nodes[a].auto_poll = false;
    sim.input(a, Input::Subscribe(vec!["t".into()]));
    let id = sim.member_id(a);
    let mark = sim.mark(a);
    sim.advance(29_999);
    assert!(sim.sends_of(a, mark, Api::Leave).is_empty());
    sim.advance(1);
    assert_eq!(
        sim.sends_of(a, mark, Api::Leave),
        vec![(
            30_000,
            Request::Leave {
                member_id: id.clone(),
                instance_id: None,
                reason: "consumer poll timeout has expired".into()
            }
        )]
    );
    assert_eq!(sim.nodes[a].m.phase(), Phase::Idle);
    assert_eq!(sim.nodes[a].m.member_id(), "");
    // We are out of the group, so the partitions are lost — not revoked, no commit — at once
    // (the driver runs that callback before it fetches again). No rejoin until the
    // application polls again.
    sim.advance(60_000);
    assert!(sim.sends_of(a, mark, Api::Join).is_empty());
    assert_eq!(sim.owned(a), BTreeSet::new());
    sim.input(a, Input::Polled);
    let ev: Vec<Output> = sim
        .events_since(a, mark)
        .into_iter()
        .filter(is_callback)
        .collect();
    assert_eq!(
        ev[0],
        Output::Lost {
            partitions: tps("t", 0..4)
        }
    );
    let joins = sim.sends_of(a, mark, Api::Join);
    assert_eq!(join_member_id(&joins[0].1), "");
    assert_eq!(joins[0].0, 90_000);
    // Its old member id left the group while the leader's memory said it held them: they wait
    // one session timeout before anyone (here, its new self) gets them.
    sim.settle(60_000);
    assert_eq!(
        sim.owned(a),
        set(tps("t", 0..4)),
        "rejoined and got them back"
    );
    assert!(sim.nodes[a].commits.is_empty());
}
