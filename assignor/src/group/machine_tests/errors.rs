//! Error answers and failed requests: which rejoin, which rediscover the coordinator after
//! a backoff, and which stop the member for good (fatal).

use super::*;

#[test]
fn a_protocol_this_member_does_not_offer_is_fatal() {
    let mut solo = Solo::new(config(), sticky());
    let out = solo.subscribe_and_find();
    let (join, _) = only_send(&out, Api::Join);
    let out = solo.respond(
        join,
        Response::Join(JoinAnswer {
            error: BrokerCode::NONE,
            generation: 1,
            protocol: Some("range".into()),
            leader: "m1".into(),
            member_id: "m1".into(),
            members: vec![],
        }),
    );
    assert!(matches!(out.as_slice(), [Output::Fatal(_)]), "{out:?}");
    assert_eq!(solo.m.phase(), Phase::Closed);
}

#[test]
fn coordinator_lookups_back_off_exponentially_up_to_the_maximum() {
    // A coordinator that FindCoordinator keeps naming but that does not answer (a dead broker
    // the cluster has not fenced yet): 100, 200, 400, 800, then 1 000 ms between lookups.
    let mut solo = Solo::new(config(), sticky());
    let out = solo.input(Input::Subscribe(vec!["t".into()]));
    let (mut find, _) = only_send(&out, Api::Find);
    let mut asked_at = solo.now;
    let mut gaps = Vec::new();
    while gaps.len() < 6 {
        let mut out = solo.input(Input::RequestFailed {
            id: find,
            reason: "connection refused".into(),
        });
        while sends(&out, Api::Find).is_empty() {
            solo.now += 10;
            out = solo.input(Input::Tick);
        }
        gaps.push(solo.now - asked_at);
        asked_at = solo.now;
        find = sends(&out, Api::Find)[0].0;
    }
    assert_eq!(gaps, [100, 200, 400, 800, 1_000, 1_000]);
}

#[test]
fn a_group_whose_broker_assigns_is_fatal() {
    // Kafka 4 answers a classic member of a KIP-848 group with no leader (seen on 4.1.1).
    let mut solo = Solo::new(config(), sticky());
    let out = solo.subscribe_and_find();
    let (join, _) = only_send(&out, Api::Join);
    let out = solo.respond(
        join,
        Response::Join(JoinAnswer {
            error: BrokerCode::NONE,
            generation: 2,
            protocol: Some("cooperative-sticky".into()),
            leader: String::new(),
            member_id: "m1".into(),
            members: vec![],
        }),
    );
    let [Output::Fatal(why)] = out.as_slice() else {
        panic!("{out:?}")
    };
    let why = why.to_string();
    assert!(why.contains("KIP-848"), "{why}");
    assert!(why.contains("cooperative-sticky"), "{why}");
    assert_eq!(solo.m.phase(), Phase::Closed);
}

/// The application tells a KIP-848 group from other failures by the variant, not the text:
/// the machine reports it as `GroupFatal::Kip848Group` and the consumer returns it as
/// `Error::Group` — not a refusal, and not worth retrying.
#[test]
fn a_kip848_group_is_reported_as_its_own_variant() {
    let mut solo = Solo::new(config(), sticky());
    let out = solo.subscribe_and_find();
    let (join, _) = only_send(&out, Api::Join);
    let out = solo.respond(
        join,
        Response::Join(JoinAnswer {
            error: BrokerCode::NONE,
            generation: 2,
            protocol: Some("cooperative-sticky".into()),
            leader: String::new(),
            member_id: "m1".into(),
            members: vec![],
        }),
    );
    let [Output::Fatal(fatal @ GroupFatal::Kip848Group { group, assignors })] = out.as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(group, "g");
    assert_eq!(assignors, &["cooperative-sticky"]);
    let e = crate::Error::Group(fatal.clone());
    assert!(matches!(
        &e,
        crate::Error::Group(GroupFatal::Kip848Group { .. })
    ));
    assert!(!e.is_refusal() && !e.is_retriable());
    assert!(
        e.to_string()
            .starts_with("consumer group failure: group g is a KIP-848 consumer-protocol group"),
        "{e}"
    );
}

#[test]
fn rebalance_in_progress_on_join_and_sync_rejoins_without_reset() {
    for api in [Api::Join, Api::Sync] {
        let mut sim = solo_sim();
        let id = sim.member_id(0);
        sim.nodes[0]
            .fail_next
            .push((api, code(ResponseError::RebalanceInProgress)));
        let mark = sim.mark(0);
        sim.input(0, Input::RequestRejoin("test".into()));
        let joins = sim.sends_of(0, mark, Api::Join);
        assert!(joins.len() >= 2, "{api:?}: {joins:?}");
        // The subscription reports the generation the owned partitions came from (KIP-792),
        // which only a successful SyncGroup changes: 1 after a failed Join and after a failed
        // Sync alike, so the rejoin repeats the same claim. No reset, same id, same claims.
        let generations = [1, 1];
        for ((t, j), g) in joins.iter().zip(generations) {
            assert_eq!(*t, sim.now, "at once, no backoff");
            assert_eq!(join_member_id(j), id);
            let s = join_subscription(j, 0);
            assert_eq!(
                (s.generation, s.owned),
                (g, tps("t", 0..4)),
                "{api:?}: no reset"
            );
        }
        assert!(
            !sim.events_since(0, mark)
                .iter()
                .any(|o| matches!(o, Output::Lost { .. } | Output::Revoke { .. })),
            "{api:?}"
        );
        assert_eq!(sim.owned(0), set(tps("t", 0..4)));
        sim.settle(30_000);
    }
}

#[test]
fn rebalance_in_progress_on_heartbeat_rejoins_only_when_stable() {
    // Stable: rejoin.
    let mut solo = Solo::new(config(), sticky());
    solo.stable_follower(&tps("t", 0..2));
    solo.now = 3_000;
    let out = solo.input(Input::Tick);
    let (hb, _) = only_send(&out, Api::Heartbeat);
    let out = solo.respond(
        hb,
        Response::Heartbeat {
            error: code(ResponseError::RebalanceInProgress),
        },
    );
    let (_, join) = only_send(&out, Api::Join);
    assert_eq!(join_member_id(&join), "m1");
    assert_eq!(join_subscription(&join, 0).owned, tps("t", 0..2));

    // Mid-rebalance (waiting for the Sync answer): ignore, no second JoinGroup.
    let mut solo = Solo::new(config(), sticky());
    let out = solo.subscribe_and_find();
    let (join, _) = only_send(&out, Api::Join);
    let out = solo.respond(
        join,
        Response::Join(JoinAnswer {
            error: BrokerCode::NONE,
            generation: 1,
            protocol: Some("cooperative-sticky".into()),
            leader: "l".into(),
            member_id: "m1".into(),
            members: vec![],
        }),
    );
    let (sync, _) = only_send(&out, Api::Sync);
    solo.now = 3_000;
    let out = solo.input(Input::Tick);
    let (hb, _) = only_send(&out, Api::Heartbeat);
    let out = solo.respond(
        hb,
        Response::Heartbeat {
            error: code(ResponseError::RebalanceInProgress),
        },
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(solo.m.phase(), Phase::Syncing);
    let out = solo.respond(
        sync,
        Response::Sync {
            error: BrokerCode::NONE,
            assignment: assignment_blob(&tps("t", 0..1)),
        },
    );
    assert_eq!(
        out,
        vec![Output::Assign {
            partitions: tps("t", 0..1),
            generation: 1
        }]
    );
    assert!(solo.input(Input::CallbacksDone).is_empty());
    assert_eq!(solo.m.phase(), Phase::Stable);
}

#[test]
fn coordinator_errors_rediscover_after_the_backoff() {
    let errors = [
        ResponseError::NotCoordinator,
        ResponseError::CoordinatorNotAvailable,
        ResponseError::CoordinatorLoadInProgress,
    ];
    for e in errors {
        for api in [Api::Join, Api::Sync, Api::Heartbeat] {
            let mut sim = solo_sim();
            let id = sim.member_id(0);
            sim.nodes[0].fail_next.push((api, code(e)));
            let mark = sim.mark(0);
            if api == Api::Heartbeat {
                sim.advance(3_000);
            } else {
                sim.input(0, Input::RequestRejoin("test".into()));
            }
            let failed_at = sim.sends_of(0, mark, api)[0].0;
            sim.advance(1_000);
            let finds = sim.sends_of(0, mark, Api::Find);
            assert_eq!(finds.len(), 1, "{e:?} on {api:?}");
            assert_eq!(
                finds[0].0,
                failed_at + 100,
                "{e:?} on {api:?}: not before retry_backoff_ms"
            );
            let after: Vec<(u64, Request)> = sim
                .sends_since(0, mark)
                .into_iter()
                .filter(|(t, _)| *t >= failed_at + 100)
                .collect();
            // Then carry on where it was: a stable member heartbeats at once, a joining one
            // joins again — same member id, nothing lost.
            let expect = if api == Api::Heartbeat {
                Api::Heartbeat
            } else {
                Api::Join
            };
            assert_eq!(api_of(&after[1].1), expect, "{e:?} on {api:?}: {after:?}");
            assert_eq!(after[1].0, failed_at + 100);
            assert_eq!(sim.member_id(0), id);
            assert!(!sim
                .events_since(0, mark)
                .iter()
                .any(|o| matches!(o, Output::Lost { .. } | Output::Revoke { .. })));
            sim.settle(30_000);
            assert_eq!(sim.owned(0), set(tps("t", 0..4)));
        }
    }
    // FindCoordinator failing is retried after the backoff too.
    let mut sim = Sim::new(true, &[("t", 1)]);
    let a = sim.add(config(), sticky());
    sim.nodes[a]
        .fail_next
        .push((Api::Find, code(ResponseError::CoordinatorNotAvailable)));
    sim.input(a, Input::Subscribe(vec!["t".into()]));
    sim.advance(1_000);
    let finds: Vec<u64> = sim
        .sends_of(a, 0, Api::Find)
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(finds, vec![0, 100]);
    assert_eq!(sim.owned(a), set(tps("t", 0..1)));
}

#[test]
fn transport_failures_rediscover_without_losing_partitions() {
    for api in [Api::Join, Api::Sync, Api::Heartbeat] {
        let mut sim = solo_sim();
        sim.nodes[0].drop_next.push(api);
        let mark = sim.mark(0);
        if api == Api::Heartbeat {
            sim.advance(3_000);
        } else {
            sim.input(0, Input::RequestRejoin("test".into()));
        }
        let failed_at = sim.sends_of(0, mark, api)[0].0;
        sim.settle(30_000);
        let finds = sim.sends_of(0, mark, Api::Find);
        assert_eq!(finds[0].0, failed_at + 100, "{api:?}");
        assert!(!sim
            .events_since(0, mark)
            .iter()
            .any(|o| matches!(o, Output::Lost { .. } | Output::Revoke { .. })));
        assert_eq!(sim.owned(0), set(tps("t", 0..4)), "{api:?}");
    }
}

/// A refusal (bad credentials, certificate, missing ACL) stops the member with the reason
/// instead of rediscovering and retrying for ever; so does a FindCoordinator answered
/// GROUP_AUTHORIZATION_FAILED.
#[test]
fn refusals_are_fatal_not_retried() {
    let mut solo = Solo::new(config(), sticky());
    let out = solo.input(Input::Subscribe(vec!["t".into()]));
    let (find, _) = only_send(&out, Api::Find);
    let out = solo.input(Input::RequestRefused {
        id: find,
        kind: RefusalKind::Authentication,
        reason: "SASL PLAIN authentication failed: bad password".into(),
    });
    assert!(
        matches!(out.as_slice(), [Output::Fatal(why)] if why.to_string().contains("SASL PLAIN")
            && why.refusal_kind() == Some(RefusalKind::Authentication)),
        "{out:?}"
    );
    solo.now = 60_000;
    assert!(
        solo.input(Input::Tick).is_empty(),
        "silent after the refusal"
    );

    let mut solo = Solo::new(config(), sticky());
    let out = solo.input(Input::Subscribe(vec!["t".into()]));
    let (find, _) = only_send(&out, Api::Find);
    let out = solo.respond(
        find,
        Response::CoordinatorError {
            error: code(ResponseError::GroupAuthorizationFailed),
        },
    );
    assert!(
        matches!(out.as_slice(), [Output::Fatal(why)]
            if why.to_string().contains("GroupAuthorizationFailed")
                && why.to_string().contains("Read ACL")),
        "{out:?}"
    );
    solo.now = 60_000;
    assert!(solo.input(Input::Tick).is_empty());
}
