//! Close and voluntary leave.

use super::*;

#[test]
fn close_revokes_with_commit_then_leaves_then_closes() {
    let mut sim = sticky_group(true, 2, 4);
    let (a, b) = (0, 1);
    let id = sim.member_id(a);
    let mark = sim.mark(a);
    sim.nodes[a].hold_callbacks = true;
    sim.input(a, Input::Close);
    // LeaveGroup only after the revocation (and its commit) ran.
    assert!(sim.sends_since(a, mark).is_empty());
    sim.release_callbacks(a);
    assert_eq!(
        sim.sends_since(a, mark),
        vec![(
            sim.now,
            Request::Leave {
                member_id: id,
                instance_id: None,
                reason: "consumer closed".into()
            }
        )]
    );
    assert_eq!(
        sim.events_since(a, mark),
        vec![
            Output::Revoke {
                partitions: tps("t", 0..2),
                commit: true
            },
            Output::Closed
        ]
    );
    assert_eq!(sim.nodes[a].commits.last(), Some(&tps("t", 0..2)));
    assert_eq!(sim.nodes[a].m.phase(), Phase::Closed);
    sim.settle(30_000);
    assert_eq!(sim.owned(b), set(tps("t", 0..4)));
}

#[test]
fn leave_and_rejoin_waits_for_the_cooldown() {
    let mut sim = sticky_group(true, 2, 4);
    let (a, b) = (0, 1);
    let t0 = sim.now;
    let mark = sim.mark(a);
    sim.input(
        a,
        Input::LeaveAndRejoin {
            cooldown_ms: 5_000,
            reason: "lagging".into(),
        },
    );
    let sends = sim.sends_since(a, mark);
    assert!(matches!(&sends[0].1, Request::Leave { reason, .. } if reason == "lagging"));
    assert_eq!(
        sim.events_since(a, mark)[0],
        Output::Revoke {
            partitions: tps("t", 0..2),
            commit: true
        }
    );
    sim.advance(4_999);
    assert!(
        sim.sends_of(a, mark, Api::Join).is_empty(),
        "no join during the cooldown"
    );
    assert_eq!(
        sim.owned(b),
        set(tps("t", 0..4)),
        "the other member took over"
    );
    sim.advance(1);
    let joins = sim.sends_of(a, mark, Api::Join);
    assert_eq!(joins[0].0, t0 + 5_000);
    assert_eq!(
        join_member_id(&joins[0].1),
        "",
        "a new member after LeaveGroup"
    );
    sim.settle(60_000);
    assert_eq!(sim.owned(a).len(), 2);
    assert_eq!(sim.owned(b).len(), 2);
}
