//! Static membership (KIP-345): the instance id, when a static member leaves and when it
//! does not, and fencing by a newer instance.

use super::*;

#[test]
fn poll_timeout_of_a_static_member_sends_no_leave() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.add(static_config("pod-a"), sticky());
    sim.nodes[a].auto_poll = false;
    sim.input(a, Input::Subscribe(vec!["t".into()]));
    let mark = sim.mark(a);
    sim.advance(40_000);
    assert!(sim.sends_of(a, mark, Api::Leave).is_empty());
    assert_eq!(sim.nodes[a].m.phase(), Phase::Idle);
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
    assert!(
        matches!(&joins[0].1, Request::Join { member_id, instance_id, .. }
        if member_id.is_empty() && instance_id.as_deref() == Some("pod-a"))
    );
}

#[test]
fn static_member_sends_its_instance_id_and_no_leave_on_close() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.join(static_config("pod-a"), sticky(), &["t"]);
    sim.advance(3_000);
    let sends = sim.sends_since(a, 0);
    let mut seen = BTreeSet::new();
    for (_, r) in &sends {
        let inst = match r {
            Request::Join { instance_id, .. }
            | Request::Sync { instance_id, .. }
            | Request::Heartbeat { instance_id, .. } => instance_id,
            _ => continue,
        };
        assert_eq!(inst.as_deref(), Some("pod-a"), "{r:?}");
        seen.insert(format!("{:?}", api_of(r)));
    }
    assert_eq!(seen.len(), 3, "Join, Sync and Heartbeat all seen: {seen:?}");
    // A static member joins without MEMBER_ID_REQUIRED.
    assert_eq!(sim.sends_of(a, 0, Api::Join).len(), 1);
    let mark = sim.mark(a);
    sim.input(a, Input::Close);
    assert!(sim.sends_of(a, mark, Api::Leave).is_empty());
    assert_eq!(
        sim.events_since(a, mark),
        vec![
            Output::Revoke {
                partitions: tps("t", 0..4),
                commit: true
            },
            Output::Closed
        ]
    );
}

#[test]
fn static_member_sends_leave_on_leave_and_rejoin() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.join(static_config("pod-a"), sticky(), &["t"]);
    let id = sim.member_id(a);
    let mark = sim.mark(a);
    sim.input(
        a,
        Input::LeaveAndRejoin {
            cooldown_ms: 1_000,
            reason: "lagging".into(),
        },
    );
    assert_eq!(
        sim.sends_of(a, mark, Api::Leave),
        vec![(
            0,
            Request::Leave {
                member_id: id,
                instance_id: Some("pod-a".into()),
                reason: "lagging".into()
            }
        )]
    );
    // The leader holds what the departed identity may hold for one session timeout.
    sim.settle(60_000);
    assert_eq!(sim.owned(a), set(tps("t", 0..4)));
}

#[test]
fn fenced_instance_id_is_fatal() {
    for api in [Api::Join, Api::Sync, Api::Heartbeat] {
        let mut sim = Sim::new(true, &[("t", 4)]);
        let a = sim.join(static_config("pod-a"), sticky(), &["t"]);
        sim.nodes[a]
            .fail_next
            .push((api, code(ResponseError::FencedInstanceId)));
        let mark = sim.mark(a);
        if api == Api::Heartbeat {
            sim.advance(3_000);
        } else {
            sim.input(a, Input::RequestRejoin("test".into()));
        }
        let ev: Vec<Output> = sim
            .events_since(a, mark)
            .into_iter()
            .filter(|o| is_callback(o) || matches!(o, Output::Fatal(_)))
            .collect();
        assert_eq!(ev.len(), 2, "{api:?}: {ev:?}");
        assert!(
            matches!(ev.last(), Some(Output::Fatal(_))),
            "{api:?}: {ev:?}"
        );
        assert_eq!(
            ev[0],
            Output::Lost {
                partitions: tps("t", 0..4)
            },
            "{api:?}"
        );
        assert_eq!(sim.nodes[a].m.phase(), Phase::Closed);
        let n = sim.mark(a);
        sim.advance(60_000);
        assert!(
            sim.sends_since(a, n).is_empty(),
            "{api:?}: silent after Fatal"
        );
    }

    // The real thing: a second process starts with the same group.instance.id. KIP-345 hands
    // it the identity at once; the old one is fenced at its next heartbeat. (The overlap until
    // then is by design of KIP-345, so the audit is off here.)
    let mut sim = Sim::new(true, &[("t", 4)]);
    sim.audit = false;
    let old = sim.join(static_config("pod-a"), sticky(), &["t"]);
    let mark = sim.mark(old);
    let new = sim.join(static_config("pod-a"), sticky(), &["t"]);
    sim.advance(3_000);
    let ev = sim.events_since(old, mark);
    assert_eq!(
        ev,
        vec![
            Output::Lost {
                partitions: tps("t", 0..4)
            },
            Output::Fatal(GroupFatal::FencedInstanceId {
                group: "g".into(),
                request: FencedIn::Heartbeat
            })
        ]
    );
    assert_eq!(sim.owned(new), set(tps("t", 0..4)));
}
