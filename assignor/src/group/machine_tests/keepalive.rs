//! Keepalive while a JoinGroup is held: a member with an id keeps heartbeating, because
//! tansu 0.6.0 refreshes sessions on heartbeats only.

use super::*;

/// A stable follower owning t0..t2 that asked to rejoin; its JoinGroup is in flight.
/// Returns the Join's id.
fn follower_joining(s: &mut Solo) -> u64 {
    s.stable_follower(&tps("t", 0..3));
    let out = s.input(Input::RequestRejoin("test".into()));
    let joins = sends(&out, Api::Join);
    assert_eq!(joins.len(), 1, "{out:?}");
    assert_eq!(s.m.phase(), Phase::Joining);
    joins[0].0
}

/// Advance `ms` in 500 ms ticks, answering every heartbeat with `error`; returns every output.
fn tick_answering_heartbeats(s: &mut Solo, ms: u64, error: BrokerCode) -> Vec<Output> {
    let mut all = Vec::new();
    let end = s.now + ms;
    while s.now < end {
        s.now += 500;
        let out = s.input(Input::Tick);
        for (id, _) in sends(&out, Api::Heartbeat) {
            all.extend(s.respond(id, Response::Heartbeat { error }));
        }
        all.extend(out);
    }
    all
}

#[test]
fn a_member_holding_partitions_heartbeats_while_its_join_is_held() {
    let mut s = Solo::new(config(), sticky());
    let join = follower_joining(&mut s);
    let start = s.now;
    // The coordinator holds the JoinGroup for two session timeouts, answering heartbeats with
    // REBALANCE_IN_PROGRESS (alive, rebalancing).
    let mut beats = Vec::new();
    while s.now < start + 20_000 {
        // The driver only ticks when the machine asks: it must ask for each keepalive.
        let wake = s.m.next_timer().expect("a timer while joining");
        assert!(wake <= s.now + 3_000, "next tick at {wake}, now {}", s.now);
        s.now += 500;
        let out = s.input(Input::Tick);
        for (id, req) in sends(&out, Api::Heartbeat) {
            beats.push((s.now, req));
            let more = s.respond(
                id,
                Response::Heartbeat {
                    error: code(ResponseError::RebalanceInProgress),
                },
            );
            assert!(more.iter().all(|o| !is_callback(o)), "{more:?}");
        }
        assert!(out.iter().all(|o| !is_callback(o)), "{out:?}");
        assert!(
            sends(&out, Api::Join).is_empty(),
            "the held join is not resent"
        );
    }
    // One heartbeat per interval, with the generation the owned partitions came from.
    assert!(beats.len() >= 6, "{beats:?}");
    for pair in beats.windows(2) {
        assert!(pair[1].0 - pair[0].0 <= 3_500, "{beats:?}");
    }
    assert!(beats.iter().all(|(_, r)| matches!(
        r,
        Request::Heartbeat { generation: 1, member_id, .. } if member_id == "m1"
    )));
    // Our contact stayed fresh: nothing was given up, and the join completes normally.
    assert_eq!(s.m.owned(), &set(tps("t", 0..3)));
    let out = s.respond(join, follower_join_ok(2));
    assert_eq!(sends(&out, Api::Sync).len(), 1, "{out:?}");
}

#[test]
fn only_a_member_with_an_id_keeps_alive_while_joining() {
    // Without partitions too: an expelled member costs the group another round.
    let mut s = Solo::new(config(), sticky());
    s.stable_follower(&[]);
    let out = s.input(Input::RequestRejoin("test".into()));
    assert_eq!(sends(&out, Api::Join).len(), 1);
    let mut beats = 0;
    for _ in 0..20 {
        s.now += 500;
        let out = s.input(Input::Tick);
        for (id, _) in sends(&out, Api::Heartbeat) {
            beats += 1;
            s.respond(
                id,
                Response::Heartbeat {
                    error: BrokerCode::NONE,
                },
            );
        }
    }
    assert!(beats >= 3, "{beats}");
    // A first join has no member id to heartbeat with.
    let mut s = Solo::new(config(), sticky());
    let out = s.input(Input::Subscribe(vec!["t".into()]));
    let (find, _) = only_send(&out, Api::Find);
    let out = s.respond(
        find,
        Response::Coordinator {
            node_id: 1,
            addr: "c".into(),
        },
    );
    only_send(&out, Api::Join);
    let out = tick_answering_heartbeats(&mut s, 10_000, BrokerCode::NONE);
    assert!(sends(&out, Api::Heartbeat).is_empty(), "{out:?}");
}

#[test]
fn a_leader_running_rounds_back_to_back_keeps_its_heartbeat_cadence() {
    // Each round's answers used to push the next heartbeat out by an interval; a leader whose
    // rounds came faster than that never heartbeat, and tansu (which counts only heartbeats)
    // expelled it.
    let mut s = Solo::new(config(), sticky());
    s.stable_follower(&tps("t", 0..2));
    let mut beats = Vec::new();
    let mut generation = 1;
    while s.now < 20_000 {
        s.now += 500;
        let mut out = s.input(Input::Tick);
        if s.now % 2_000 == 0 && s.m.phase() == Phase::Stable {
            out.extend(s.input(Input::RequestRejoin("round".into())));
        }
        while let Some(o) = out.pop() {
            let Output::Send { id, request } = o else {
                if is_callback(&o) {
                    out.extend(s.input(Input::CallbacksDone));
                }
                continue;
            };
            match request {
                Request::Heartbeat { .. } => {
                    beats.push(s.now);
                    out.extend(s.respond(
                        id,
                        Response::Heartbeat {
                            error: BrokerCode::NONE,
                        },
                    ));
                }
                Request::Join { .. } => {
                    generation += 1;
                    out.extend(s.respond(id, follower_join_ok(generation)));
                }
                Request::Sync { .. } => out.extend(s.respond(
                    id,
                    Response::Sync {
                        error: BrokerCode::NONE,
                        assignment: assignment_blob(&tps("t", 0..2)),
                    },
                )),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(generation >= 8, "rounds ran: {generation}");
    assert!(beats.len() >= 6, "{beats:?}");
    for pair in beats.windows(2) {
        assert!(pair[1] - pair[0] <= 3_500, "{beats:?}");
    }
}

#[test]
fn keepalive_errors_other_than_unknown_member_leave_the_join_alone() {
    for error in [
        ResponseError::IllegalGeneration,
        ResponseError::NotCoordinator,
        ResponseError::CoordinatorLoadInProgress,
    ] {
        let mut s = Solo::new(config(), sticky());
        let join = follower_joining(&mut s);
        let out = tick_answering_heartbeats(&mut s, 4_000, code(error));
        // The join is neither cancelled nor resent, the generation is kept, nothing is lost.
        assert!(sends(&out, Api::Join).is_empty(), "{error:?}: {out:?}");
        assert!(sends(&out, Api::Find).is_empty(), "{error:?}: {out:?}");
        assert!(out.iter().all(|o| !is_callback(o)), "{error:?}: {out:?}");
        assert_eq!(s.m.phase(), Phase::Joining, "{error:?}");
        assert_eq!(s.m.generation(), 1, "{error:?}");
        let out = s.respond(join, follower_join_ok(2));
        assert_eq!(sends(&out, Api::Sync).len(), 1, "{error:?}: {out:?}");
    }
}

#[test]
fn a_keepalive_answered_unknown_member_loses_the_partitions_before_the_join_returns() {
    let mut s = Solo::new(config(), sticky());
    let join = follower_joining(&mut s);
    let out = tick_answering_heartbeats(&mut s, 4_000, code(ResponseError::UnknownMemberId));
    let callbacks: Vec<&Output> = out.iter().filter(|o| is_callback(o)).collect();
    assert_eq!(
        callbacks,
        vec![&Output::Lost {
            partitions: tps("t", 0..3)
        }]
    );
    assert!(s.m.owned().is_empty());
    assert!(s.input(Input::CallbacksDone).is_empty());
    // tansu lets the forgotten member back in under the same id as a newcomer; the plan it
    // gets no longer includes what it lost, and there is nothing to revoke.
    let out = s.respond(join, follower_join_ok(3));
    let (sync, _) = only_send(&out, Api::Sync);
    let out = s.respond(
        sync,
        Response::Sync {
            error: BrokerCode::NONE,
            assignment: assignment_blob(&tps("t", 5..6)),
        },
    );
    assert_eq!(
        out,
        vec![Output::Assign {
            partitions: tps("t", 5..6),
            generation: 3
        }]
    );
}

#[test]
fn a_heartbeat_answer_for_a_generation_we_left_does_not_fence_the_new_one() {
    let mut s = Solo::new(config(), sticky());
    s.stable_follower(&tps("t", 0..3));
    // A heartbeat of generation 1 goes out and is still unanswered when we rejoin.
    s.now += 3_000;
    let out = s.input(Input::Tick);
    let (beat, _) = only_send(&out, Api::Heartbeat);
    let out = s.input(Input::RequestRejoin("test".into()));
    let (join, _) = only_send(&out, Api::Join);
    let out = s.respond(join, follower_join_ok(2));
    let (sync, _) = only_send(&out, Api::Sync);
    // Its late ILLEGAL_GENERATION is about generation 1: no reset, no rejoin — only the
    // heartbeat a member holding partitions sends at once in its new generation.
    let out = s.respond(
        beat,
        Response::Heartbeat {
            error: code(ResponseError::IllegalGeneration),
        },
    );
    let (_, request) = only_send(&out, Api::Heartbeat);
    assert!(
        matches!(request, Request::Heartbeat { generation: 2, .. }),
        "{request:?}"
    );
    assert_eq!(s.m.generation(), 2);
    let out = s.respond(
        sync,
        Response::Sync {
            error: BrokerCode::NONE,
            assignment: assignment_blob(&tps("t", 0..3)),
        },
    );
    assert_eq!(
        out,
        vec![Output::Assign {
            partitions: vec![],
            generation: 2
        }]
    );
    assert!(s.input(Input::CallbacksDone).is_empty());
    assert_eq!(s.m.phase(), Phase::Stable);
}
