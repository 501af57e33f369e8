//! Subscription changes and rejoin requests, and what the subscription of a rejoining member
//! carries: fresh bytes when something of ours changed, the same bytes otherwise.

use super::*;

#[test]
fn unsubscribing_a_topic_revokes_only_its_partitions_before_joining() {
    let mut sim = Sim::new(true, &[("t", 2), ("u", 2)]);
    let a = sim.join(config(), sticky(), &["t", "u"]);
    sim.settle(10_000);
    let mut all = tps("t", 0..2);
    all.extend(tps("u", 0..2));
    assert_eq!(sim.owned(a), set(all));
    let mark = sim.mark(a);
    sim.input(a, Input::Subscribe(vec!["t".into()]));
    let log = &sim.nodes[a].log[mark..];
    let revoke = log
        .iter()
        .position(|(_, o)| matches!(o, Output::Revoke { .. }))
        .unwrap();
    let join = log
        .iter()
        .position(|(_, o)| {
            matches!(
                o,
                Output::Send {
                    request: Request::Join { .. },
                    ..
                }
            )
        })
        .unwrap();
    assert!(revoke < join, "revoked before the JoinGroup");
    assert_eq!(
        sim.events_since(a, mark),
        vec![
            Output::Revoke {
                partitions: tps("u", 0..2),
                commit: true
            },
            Output::LeaderInputsNeeded {
                id: match &log[join + 1].1 {
                    Output::LeaderInputsNeeded { id, .. } => *id,
                    o => panic!("{o:?}"),
                },
                topics: vec!["t".into()]
            },
            Output::Assign {
                partitions: vec![],
                generation: 2
            }
        ]
    );
    let s = join_subscription(&sim.sends_of(a, mark, Api::Join)[0].1, 0);
    assert_eq!((s.topics, s.owned), (vec!["t".to_string()], tps("t", 0..2)));
    assert_eq!(sim.owned(a), set(tps("t", 0..2)));
}

#[test]
fn subscription_change_while_stable_rejoins() {
    let mut sim = Sim::new(true, &[("t", 2), ("u", 2)]);
    let a = sim.join(config(), sticky(), &["t"]);
    sim.settle(10_000);
    let mark = sim.mark(a);
    sim.input(a, Input::Subscribe(vec!["t".into(), "u".into()]));
    let joins = sim.sends_of(a, mark, Api::Join);
    assert!(
        matches!(&joins[0].1, Request::Join { reason, .. } if reason == "subscription changed")
    );
    assert_eq!(join_subscription(&joins[0].1, 0).topics, vec!["t", "u"]);
    assert_eq!(
        sim.events_since(a, mark)
            .into_iter()
            .filter(is_callback)
            .collect::<Vec<_>>(),
        vec![Output::Assign {
            partitions: tps("u", 0..2),
            generation: 2
        }]
    );
}

/// Two members offering lagbalance (then cooperative-sticky), settled on a 4-partition topic.
fn settled_lagbalance_pair() -> (Sim, usize, usize) {
    settled_lagbalance_pair_with(config())
}

/// [`settled_lagbalance_pair`], both members configured as `cfg`.
fn settled_lagbalance_pair_with(cfg: MemberConfig) -> (Sim, usize, usize) {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.join(cfg.clone(), lagbalance_then_sticky(), &["t"]);
    let b = sim.join(cfg, lagbalance_then_sticky(), &["t"]);
    sim.settle(60_000);
    (sim, a, b)
}

/// A sample of a member that cannot keep up: backlogged, its core fully busy, processing
/// `rate` records/s, taken at `at`.
fn backlogged(rate: f64, at: u64) -> MemberStats {
    MemberStats {
        processed_rate: rate,
        backlogged: true,
        busy_fraction: Some(1.0),
        measured_at_ms: at,
        ..MemberStats::default()
    }
}

#[test]
fn request_rejoin_sends_fresh_user_data() {
    let (mut sim, a, b) = settled_lagbalance_pair();
    let user_data = |sim: &Sim, i: usize| {
        let joins = sim.sends_of(i, 0, Api::Join);
        let ud = join_subscription(&joins.last().unwrap().1, 0)
            .user_data
            .unwrap();
        MemberUserData::decode(&ud).unwrap()
    };
    let before = user_data(&sim, b);
    let gen = sim.coord.generation;
    // Keeping up, so the news alone starts no round (a backlogged member's would).
    let stats = MemberStats {
        processed_rate: 1234.0,
        busy_fraction: Some(0.5),
        measured_at_ms: sim.now,
        ..MemberStats::default()
    };
    let mark = sim.mark(b);
    sim.input(b, Input::Stats(stats));
    assert!(sim.sends_of(b, mark, Api::Join).is_empty());
    sim.input(b, Input::RequestRejoin("capacity changed".into()));
    let joins = sim.sends_of(b, mark, Api::Join);
    assert!(matches!(&joins[0].1, Request::Join { reason, .. } if reason == "capacity changed"));
    let after = user_data(&sim, b);
    assert_eq!(after.observed_rate, 1234.0);
    assert_eq!(after.capacity, Some(2468.0));
    assert!(after.seq > before.seq);
    // The follower's metadata changed, so the coordinator really rebalances (it answers a
    // follower rejoining with identical metadata with the current generation, no new plan).
    sim.settle(60_000);
    assert!(sim.coord.generation > gen);
    assert!(sim.nodes[a].m.is_leader());
}

#[test]
fn stale_responses_are_ignored() {
    let mut solo = Solo::new(config(), sticky());
    let out = solo.input(Input::Subscribe(vec!["t".into()]));
    let (find, _) = only_send(&out, Api::Find);
    let coordinator = Response::Coordinator {
        node_id: 1,
        addr: "c".into(),
    };
    assert!(solo.respond(find + 100, coordinator.clone()).is_empty());
    assert_eq!(solo.m.phase(), Phase::Discovering);
    let out = solo.respond(find, coordinator.clone());
    let (join1, _) = only_send(&out, Api::Join);
    // The JoinGroup fails in transport: rediscover, join again with a new request id.
    let out = solo.input(Input::RequestFailed {
        id: join1,
        reason: "eof".into(),
    });
    assert!(out.is_empty());
    solo.now = 100;
    let out = solo.input(Input::Tick);
    let (find2, _) = only_send(&out, Api::Find);
    let out = solo.respond(find2, coordinator);
    let (join2, _) = only_send(&out, Api::Join);
    assert_ne!(join1, join2);
    let ok = |gen| {
        Response::Join(JoinAnswer {
            error: BrokerCode::NONE,
            generation: gen,
            protocol: Some("cooperative-sticky".into()),
            leader: "l".into(),
            member_id: "m1".into(),
            members: vec![],
        })
    };
    // A late answer to the abandoned JoinGroup changes nothing.
    assert!(solo.respond(join1, ok(7)).is_empty());
    assert_eq!((solo.m.phase(), solo.m.generation()), (Phase::Joining, -1));
    let out = solo.respond(join2, ok(8));
    let (sync, _) = only_send(&out, Api::Sync);
    // A stale heartbeat id and a stale Sync id are ignored too.
    let bad = Response::Heartbeat {
        error: code(ResponseError::IllegalGeneration),
    };
    assert!(solo.respond(sync + 50, bad).is_empty());
    let assignment = assignment_blob(&tps("t", 0..1));
    let stale = Response::Sync {
        error: BrokerCode::NONE,
        assignment: assignment.clone(),
    };
    assert!(solo.respond(sync + 51, stale).is_empty());
    assert_eq!((solo.m.phase(), solo.m.generation()), (Phase::Syncing, 8));
    let out = solo.respond(
        sync,
        Response::Sync {
            error: BrokerCode::NONE,
            assignment,
        },
    );
    assert_eq!(
        out,
        vec![Output::Assign {
            partitions: tps("t", 0..1),
            generation: 8
        }]
    );
}

/// tansu bumps the generation for every changed subscription; the claim's generation alone
/// changing kept a quiet group rebalancing for ever. Someone else's rebalance with nothing of
/// ours changed → the same bytes as our last JoinGroup; a changed owned set → fresh ones.
#[test]
fn a_rejoin_for_someone_elses_rebalance_repeats_our_last_subscription() {
    let mut s = Solo::new(config(), sticky());
    s.stable_follower(&tps("t", 0..2));
    // Our owned set changed since our first join (we got t0, t1): fresh claim.
    let (join, j1) = s.foreign_rebalance_at(s.now + 3_000);
    assert_eq!(join_subscription(&j1, 0).generation, 1);
    s.complete_round(join, 2, &tps("t", 0..2));
    // Generation 2 synced with the same partitions: the next foreign rebalance repeats j1
    // byte for byte (the claim stays at generation 1).
    let (join, j2) = s.foreign_rebalance_at(s.now + 3_000);
    let (Request::Join { protocols: p1, .. }, Request::Join { protocols: p2, .. }) = (&j1, &j2)
    else {
        unreachable!()
    };
    assert_eq!(p1, p2);
    // This time we lose t1: the set changed, so the rejoin after revoking claims afresh.
    let out = s.complete_round(join, 3, &tps("t", 0..1));
    let (_, j3) = only_send(&out, Api::Join);
    let sub = join_subscription(&j3, 0);
    assert_eq!(sub.owned, tps("t", 0..1));
    assert_eq!(sub.generation, 3);
}

#[test]
fn a_claim_from_before_our_first_sync_is_never_repeated() {
    // Nothing owned before or after the first sync, yet the claim must say we synced: a leader
    // that sees a claim from before any sync withholds as if it knew nothing of us.
    let mut s = Solo::new(config(), sticky());
    s.stable_follower(&[]);
    s.now += 3_000;
    let out = s.input(Input::Tick);
    let (beat, _) = only_send(&out, Api::Heartbeat);
    let out = s.respond(
        beat,
        Response::Heartbeat {
            error: code(ResponseError::RebalanceInProgress),
        },
    );
    let (_, join) = only_send(&out, Api::Join);
    let sub = join_subscription(&join, 0);
    assert_eq!(sub.generation, 1);
    assert!(sub.owned.is_empty());
}

/// Capacity news reaches the leader at the next rebalance: user data older than
/// `USER_DATA_MAX_AGE_MS` is recomputed at a join and sent if the assignor says it matters
/// (lagbalance: a capacity appeared, vanished or moved by more than 20 %). Members that had
/// just joined when the group formed otherwise kept announcing "capacity unknown" for 30 s,
/// and the leader, giving unknown members the median of the known, spread a 2:2:1 group
/// evenly (the end-to-end benchmark's 1.00×).
#[test]
fn capacity_learnt_after_joining_is_sent_at_the_next_rebalance() {
    let mut s = Solo::new(config(), lagbalance_then_sticky());
    s.stable_follower(&tps("t", 0..2));
    let capacity_in = |req: &Request| {
        let sub = join_subscription(req, 0);
        sub.user_data
            .and_then(|b| MemberUserData::decode(&b).ok())
            .and_then(|d| d.capacity)
    };
    // Measured after the first join: busy half the time at 100 records/s.
    let stats = |at: u64| MemberStats {
        processed_rate: 100.0,
        busy_fraction: Some(0.5),
        measured_at_ms: at,
        ..MemberStats::default()
    };
    s.input(Input::Stats(stats(2_000)));
    // 3 s after the first join the user data is still fresh: no capacity yet.
    let (join, j1) = s.foreign_rebalance_at(3_000);
    assert_eq!(capacity_in(&j1), None);
    s.complete_round(join, 2, &tps("t", 0..2));
    // Past the age limit, the next rebalance carries the capacity.
    s.input(Input::Stats(stats(5_500)));
    let (_, j2) = s.foreign_rebalance_at(6_000);
    let capacity = capacity_in(&j2).expect("capacity sent");
    assert!((capacity - 200.0).abs() < 1.0, "{capacity}");
}

/// tansu expels a member whose session lapsed in a formed group without a new generation; only
/// the member whose heartbeat found it is told (REBALANCE_IN_PROGRESS), and its repeated
/// JoinGroup keeps the generation, so the leader never re-plans (chaos suite: a SIGSTOPped
/// member's partitions unowned for 77 s). A follower whose repeated JoinGroup comes back in the
/// generation it had rejoins once more, with fresh user data, after syncing.
#[test]
fn a_repeated_join_answered_in_the_same_generation_rejoins_with_fresh_bytes() {
    let run = |answer_generation: i32| -> (Request, Vec<Output>) {
        let mut s = Solo::new(config(), lagbalance_then_sticky());
        s.stable_follower(&tps("t", 0..2));
        let (join, _) = s.foreign_rebalance_at(3_000);
        s.complete_round(join, 2, &tps("t", 0..2));
        // Someone else's "rebalance" again, nothing of ours changed: the same bytes.
        let (join, echoed) = s.foreign_rebalance_at(7_000);
        let out = s.respond(join, follower_join_ok(answer_generation));
        let (sync, _) = send_among(&out, Api::Sync);
        let out = s.respond(
            sync,
            Response::Sync {
                error: BrokerCode::NONE,
                assignment: assignment_blob(&tps("t", 0..2)),
            },
        );
        let mut after = out.clone();
        if out.iter().any(is_callback) {
            after.extend(s.input(Input::CallbacksDone));
        }
        (echoed, after)
    };
    let (echoed, after) = run(2);
    let (_, again) = send_among(&after, Api::Join);
    let (Request::Join { protocols: p1, .. }, Request::Join { protocols: p2, .. }) =
        (&echoed, &again)
    else {
        unreachable!()
    };
    assert_ne!(p1, p2, "fresh bytes, so the coordinator starts a rebalance");
    // A repeated JoinGroup answered in a new generation was an ordinary rebalance: settle.
    let (_, after) = run(3);
    assert!(
        !after.iter().any(|o| matches!(
            o,
            Output::Send {
                request: Request::Join { .. },
                ..
            }
        )),
        "{after:?}"
    );
}

/// A member that falls behind tells the group at once: its first backlogged sample with a
/// capacity estimate the leader has not seen starts a round with the news, and a second
/// within `CAPACITY_REJOIN_MIN_INTERVAL_MS` does not, however different.
#[test]
fn a_backlogged_member_with_capacity_news_rejoins_at_once_and_not_again_soon() {
    let (mut sim, _, b) = settled_lagbalance_pair();
    let gen = sim.coord.generation;
    let mark = sim.mark(b);
    sim.input(b, Input::Stats(backlogged(250.0, sim.now)));
    let joins = sim.sends_of(b, mark, Api::Join);
    assert!(
        matches!(&joins[0].1, Request::Join { reason, .. } if reason.contains("saturated")),
        "{joins:?}"
    );
    let sub = join_subscription(&joins[0].1, 0);
    let sent = MemberUserData::decode(&sub.user_data.unwrap()).unwrap();
    assert_eq!(sent.capacity, Some(250.0));
    sim.settle(10_000);
    assert!(sim.coord.generation > gen);

    // Halved again 10 s later: news, but too soon for another round of our own.
    let mark = sim.mark(b);
    sim.input(b, Input::Stats(backlogged(100.0, sim.now)));
    assert!(sim.sends_of(b, mark, Api::Join).is_empty());
    // Past the interval the same kind of news starts a round again.
    sim.advance(CAPACITY_REJOIN_MIN_INTERVAL_MS);
    let mark = sim.mark(b);
    sim.input(b, Input::Stats(backlogged(40.0, sim.now)));
    assert_eq!(sim.sends_of(b, mark, Api::Join).len(), 1);
}

/// A member keeping up never starts a round for its capacity, however much the estimate
/// moved: moving work to it helps nobody. One busy nearly all the time does, backlogged or not.
#[test]
fn only_a_saturated_member_rejoins_for_capacity_news() {
    let (mut sim, _, b) = settled_lagbalance_pair();
    let mark = sim.mark(b);
    sim.input(
        b,
        Input::Stats(MemberStats {
            processed_rate: 100.0,
            busy_fraction: Some(0.5),
            measured_at_ms: sim.now,
            ..MemberStats::default()
        }),
    );
    assert!(sim.sends_of(b, mark, Api::Join).is_empty());
    assert_eq!(sim.nodes[b].m.phase(), Phase::Stable);
    let mark = sim.mark(b);
    sim.input(
        b,
        Input::Stats(MemberStats {
            processed_rate: 100.0,
            busy_fraction: Some(0.95),
            measured_at_ms: sim.now + 5_000,
            ..MemberStats::default()
        }),
    );
    assert_eq!(sim.sends_of(b, mark, Api::Join).len(), 1);
}

/// `lagbalance.capacity.rejoin = false`: the member leaves capacity-driven rounds to its agent
/// and to rounds others start, however saturated it is.
#[test]
fn capacity_news_starts_no_round_when_switched_off() {
    let (mut sim, _, b) = settled_lagbalance_pair_with(MemberConfig {
        capacity_rejoin: false,
        ..config()
    });
    let mark = sim.mark(b);
    sim.input(b, Input::Stats(backlogged(250.0, sim.now)));
    assert!(sim.sends_of(b, mark, Api::Join).is_empty());
}
