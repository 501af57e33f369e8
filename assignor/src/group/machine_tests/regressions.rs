//! Regressions for fixes in machine.rs: each test pins one rule a fix established.

use super::*;

#[test]
fn slow_close_callbacks_keep_heartbeating_then_leave() {
    let mut sim = sticky_group(true, 2, 4);
    let (a, b) = (0, 1);
    let mark = sim.mark(a);
    sim.nodes[a].hold_callbacks = true;
    sim.input(a, Input::Close);
    sim.advance(25_000);
    // Still a member while the revoke-and-commit runs: heartbeats keep it in the group and
    // nobody else gets its partitions yet.
    assert!(sim.sends_of(a, mark, Api::Heartbeat).len() >= 8);
    assert!(sim.sends_of(a, mark, Api::Leave).is_empty());
    assert_eq!(sim.owned(b), set(tps("t", 2..4)));
    sim.release_callbacks(a);
    assert_eq!(sim.sends_of(a, mark, Api::Leave).len(), 1);
    assert_eq!(sim.events_since(a, mark).last(), Some(&Output::Closed));
    sim.settle(30_000);
    assert_eq!(sim.owned(b), set(tps("t", 0..4)));
}

#[test]
fn a_commit_error_for_a_generation_already_left_keeps_the_current_one() {
    // Seen on Kafka 4.1.1 (integration/tests/failover.rs): an auto-commit sent in generation 1
    // reached the coordinator after the join round of generation 2 had completed, and its
    // ILLEGAL_GENERATION arrived while the member synced generation 2. The member dropped that
    // generation, lost every partition without a commit and rejoined; the group rebalanced
    // once more.
    let illegal = code(ResponseError::IllegalGeneration);
    let callbacks = |out: Vec<Output>| out.into_iter().filter(is_callback).collect::<Vec<_>>();
    let mut solo = Solo::new(config(), sticky());
    solo.stable_follower(&tps("t", 0..2));
    let (join, _) = solo.foreign_rebalance_at(3_000);
    let out = solo.respond(join, follower_join_ok(2));
    let (sync, _) = send_among(&out, Api::Sync);
    solo.answer_heartbeats(&out);
    let out = solo.input(Input::CommitFailed {
        error: illegal,
        generation: 1,
    });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!((solo.m.phase(), solo.m.generation()), (Phase::Syncing, 2));
    let out = solo.respond(
        sync,
        Response::Sync {
            error: BrokerCode::NONE,
            assignment: assignment_blob(&tps("t", 0..2)),
        },
    );
    assert_eq!(
        callbacks(out),
        vec![Output::Assign {
            partitions: vec![],
            generation: 2
        }]
    );
    assert!(solo.input(Input::CallbacksDone).is_empty());
    // Stable in generation 2: a late answer about generation 1 changes nothing either.
    let out = solo.input(Input::CommitFailed {
        error: illegal,
        generation: 1,
    });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!((solo.m.phase(), solo.m.generation()), (Phase::Stable, 2));
    // The same error for the generation we are in still means we are out of it.
    let out = solo.input(Input::CommitFailed {
        error: illegal,
        generation: 2,
    });
    assert_eq!(
        callbacks(out),
        vec![Output::Lost {
            partitions: tps("t", 0..2)
        }]
    );
    assert_eq!(solo.m.generation(), -1);
}

#[test]
fn commit_failure_while_leaving_still_leaves() {
    // The commit in the close-time revocation fails because the group moved on. Before the
    // fix the member went back to NeedJoin and rejoined instead of closing.
    let cases = [
        // Generation gone, member id kept: LeaveGroup is still sent.
        (ResponseError::IllegalGeneration, true),
        // Member id gone: nothing to leave, close at once.
        (ResponseError::UnknownMemberId, false),
        // A rebalance does not stop a close.
        (ResponseError::RebalanceInProgress, true),
    ];
    for (e, leave) in cases {
        let mut sim = sticky_group(true, 2, 4);
        let a = 0;
        let mark = sim.mark(a);
        sim.nodes[a].commit_errors.push_back(code(e));
        sim.input(a, Input::Close);
        sim.advance(60_000);
        assert_eq!(sim.nodes[a].m.phase(), Phase::Closed, "{e:?}");
        assert_eq!(
            sim.sends_of(a, mark, Api::Leave).len(),
            leave as usize,
            "{e:?}"
        );
        assert!(sim.sends_of(a, mark, Api::Join).is_empty(), "{e:?}");
        assert_eq!(
            sim.events_since(a, mark).last(),
            Some(&Output::Closed),
            "{e:?}"
        );
        assert_eq!(sim.owned(1), set(tps("t", 0..4)), "{e:?}");
    }
    // Voluntary leave: the rejoin still waits for the cooldown.
    let mut sim = sticky_group(true, 2, 4);
    let t0 = sim.now;
    let mark = sim.mark(0);
    sim.nodes[0]
        .commit_errors
        .push_back(code(ResponseError::IllegalGeneration));
    let (cooldown_ms, reason) = (5_000, "lagging".to_string());
    sim.input(
        0,
        Input::LeaveAndRejoin {
            cooldown_ms,
            reason,
        },
    );
    assert_eq!(sim.sends_of(0, mark, Api::Leave).len(), 1);
    sim.advance(10_000);
    assert_eq!(sim.sends_of(0, mark, Api::Join)[0].0, t0 + 5_000);
}

#[test]
fn late_answers_after_close_fatal_or_leave_start_nothing() {
    let not_coordinator = || Response::Heartbeat {
        error: code(ResponseError::NotCoordinator),
    };
    // Fatal while a heartbeat is in flight.
    let mut solo = Solo::new(config(), sticky());
    solo.stable_follower(&tps("t", 0..2));
    solo.now = 3_000;
    let (hb, _) = only_send(&solo.input(Input::Tick), Api::Heartbeat);
    let out = solo.input(Input::RequestRejoin("test".into()));
    let (join, _) = only_send(&out, Api::Join);
    let fenced = join_error(code(ResponseError::FencedInstanceId), "");
    let out = solo.respond(join, fenced);
    assert!(matches!(out.last(), Some(Output::Fatal(_))), "{out:?}");
    assert!(solo.respond(hb, not_coordinator()).is_empty());
    let failed = Input::RequestFailed {
        id: hb,
        reason: "eof".into(),
    };
    assert!(solo.input(failed).is_empty());
    solo.now = 60_000;
    assert!(solo.input(Input::Tick).is_empty());
    assert_eq!(solo.m.phase(), Phase::Closed);

    // Closed after a LeaveGroup, with a heartbeat sent while the close callbacks ran.
    for rejoin in [false, true] {
        let mut solo = Solo::new(config(), sticky());
        solo.stable_follower(&tps("t", 0..2));
        // Before the first heartbeat after the sync (a quarter interval).
        solo.now = 500;
        let input = if rejoin {
            Input::LeaveAndRejoin {
                cooldown_ms: 50_000,
                reason: "test".into(),
            }
        } else {
            Input::Close
        };
        let out = solo.input(input);
        assert!(matches!(out.as_slice(), [Output::Revoke { .. }]), "{out:?}");
        solo.now = 3_000;
        let (hb, _) = only_send(&solo.input(Input::Tick), Api::Heartbeat);
        let (leave, _) = only_send(&solo.input(Input::CallbacksDone), Api::Leave);
        let out = solo.respond(
            leave,
            Response::Leave {
                error: BrokerCode::NONE,
            },
        );
        assert_eq!(out, if rejoin { vec![] } else { vec![Output::Closed] });
        assert!(
            solo.respond(hb, not_coordinator()).is_empty(),
            "rejoin={rejoin}"
        );
        solo.now = 10_000;
        assert!(
            solo.input(Input::Tick).is_empty(),
            "rejoin={rejoin}: nothing before the cooldown"
        );
        if rejoin {
            // The cooldown counts from the end of the LeaveGroup (t = 3 000).
            solo.now = 52_999;
            assert!(solo.input(Input::Tick).is_empty());
            solo.now = 53_000;
            let out = solo.input(Input::Tick);
            let (_, join) = only_send(&out, Api::Join);
            assert_eq!(join_member_id(&join), "");
        }
    }
}

#[test]
fn commit_errors_during_a_revocation() {
    // (error, partitions kept lost?, rediscovers?, new member id?)
    let cases = [
        (ResponseError::NotCoordinator, false, true, false),
        (ResponseError::CoordinatorLoadInProgress, false, true, false),
        (ResponseError::UnknownMemberId, true, false, true),
        (ResponseError::RebalanceInProgress, false, false, false),
    ];
    for (e, lost, rediscovers, new_id) in cases {
        let mut sim = solo_sim();
        let a = 0;
        let old = sim.member_id(a);
        sim.nodes[a].commit_errors.push_back(code(e));
        let mark = sim.mark(a);
        let b = sim.join(config(), sticky(), &["t"]);
        sim.settle(120_000);
        let (revoked_at, _) = sim.nodes[a].log[mark..]
            .iter()
            .find(|(_, o)| matches!(o, Output::Revoke { .. }))
            .cloned()
            .unwrap();
        let ev: Vec<Output> = sim
            .events_since(a, mark)
            .into_iter()
            .filter(is_callback)
            .collect();
        assert_eq!(
            ev.contains(&Output::Lost {
                partitions: tps("t", 0..2)
            }),
            lost,
            "{e:?}: {ev:?}"
        );
        let finds = sim.sends_of(a, mark, Api::Find);
        assert_eq!(!finds.is_empty(), rediscovers, "{e:?}");
        if rediscovers {
            assert_eq!(finds[0].0, revoked_at + 100, "{e:?}: after the backoff");
        }
        assert_eq!(sim.member_id(a) != old, new_id, "{e:?}");
        assert_eq!(sim.owned(a).len() + sim.owned(b).len(), 4, "{e:?}");
        sim.assert_all_assigned_once();
    }
}

#[test]
fn a_stuck_revocation_callback_is_bounded_by_max_poll_interval() {
    // A keeps heartbeating while its callbacks run (fix 1), so only max.poll.interval.ms can
    // free the group from a callback that never returns — as in Java, where callbacks run
    // inside poll(). The stuck process still holds its partitions when they move on: that is
    // the contract of max.poll.interval.ms, so the audit is off here.
    let mut sim = sticky_group(true, 1, 4);
    sim.audit = false;
    let a = 0;
    let id = sim.member_id(a);
    sim.nodes[a].hold_callbacks = true;
    let mark = sim.mark(a);
    let b = sim.join(config(), sticky(), &["t"]);
    // The revocation arrives at A's next heartbeat; from then on A's app is stuck.
    while sim.nodes[a].callbacks.is_empty() {
        sim.advance(100);
    }
    sim.nodes[a].auto_poll = false;
    let stuck_at = sim.now;
    sim.advance(29_999);
    assert!(sim.sends_of(a, mark, Api::Leave).is_empty());
    assert_eq!(
        sim.owned(b),
        BTreeSet::new(),
        "withheld while A is inside max.poll.interval.ms"
    );
    sim.advance(1);
    assert_eq!(
        sim.sends_of(a, mark, Api::Leave),
        vec![(
            stuck_at + 30_000,
            Request::Leave {
                member_id: id,
                instance_id: None,
                reason: "consumer poll timeout has expired".into()
            }
        )]
    );
    sim.advance(30_000);
    assert_eq!(sim.owned(b), set(tps("t", 0..4)));
    assert_eq!(
        sim.nodes[a].m.phase(),
        Phase::Idle,
        "waits for the next poll"
    );
    // What A kept was reported lost when the poll timer fired (it left the group then); the
    // callback finally returns, the app polls and A rejoins as a new member.
    assert!(
        sim.events_since(a, mark).iter().any(|o| *o
            == Output::Lost {
                partitions: tps("t", 0..2)
            }),
        "lost at the poll timeout"
    );
    let mark = sim.mark(a);
    sim.release_callbacks(a);
    sim.nodes[a].auto_poll = true;
    sim.input(a, Input::Polled);
    assert_eq!(join_member_id(&sim.sends_of(a, mark, Api::Join)[0].1), "");
    sim.settle(120_000);
    assert_eq!(sim.owned(a).len() + sim.owned(b).len(), 4);
    sim.assert_all_assigned_once();
}
