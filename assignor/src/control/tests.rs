//! The control channel end to end: the agent's client (or raw bytes) against the consumer's
//! listener.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::server::token_matches;
use super::*;
use crate::assign::model::MemberStats;

const T: Duration = Duration::from_secs(5);

struct Raw {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        Raw {
            reader: BufReader::new(r),
            writer: w,
        }
    }
    /// Send raw bytes, read one reply line (`None` on EOF).
    async fn send(&mut self, bytes: &[u8]) -> Option<Reply> {
        self.writer.write_all(bytes).await.unwrap();
        self.read().await
    }
    async fn read(&mut self) -> Option<Reply> {
        let mut line = String::new();
        let n = tokio::time::timeout(T, self.reader.read_line(&mut line))
            .await
            .expect("reply within deadline")
            .unwrap_or(0);
        (n > 0).then(|| serde_json::from_str(&line).expect("reply is JSON"))
    }
}

fn ident() -> AppIdentity {
    AppIdentity {
        group: "g".into(),
        member_id: "m-1".into(),
        instance_id: Some("pod-0".into()),
        generation: 4,
        partitions: vec![("t".into(), 0)],
    }
}

#[tokio::test]
async fn commands_flow_and_identity_is_answered() {
    let mut cfg = ControlConfig::loopback(0);
    cfg.min_membership_interval = Duration::ZERO;
    let (handle, mut rx) = serve(cfg).await.unwrap();
    let mut c = ControlClient::connect(handle.local_addr(), None, T)
        .await
        .unwrap();
    let r = c.request(Op::Hello, T).await.unwrap();
    assert!(r.ok);
    assert_eq!(
        r.identity, None,
        "no identity before the consumer publishes one"
    );
    handle.set_identity(Some(ident()));
    let r = c
        .request(
            Op::Leave {
                cooldown_ms: 1500,
                reason: "slow".into(),
            },
            T,
        )
        .await
        .unwrap();
    assert!(r.ok);
    assert_eq!(r.identity, Some(ident()));
    assert_eq!(
        rx.recv().await,
        Some(ControlCommand::Leave {
            cooldown: Duration::from_millis(1500),
            reason: "slow".into()
        })
    );
    c.request(Op::Rejoin { reason: "x".into() }, T)
        .await
        .unwrap();
    assert_eq!(
        rx.recv().await,
        Some(ControlCommand::Rejoin { reason: "x".into() })
    );
    c.request(
        Op::Capacity(CapacitySample {
            cpu_used_cores: Some(f64::NAN),
            cpu_limit_cores: Some(2.0),
            measured_at_ms: 9,
        }),
        T,
    )
    .await
    .unwrap();
    let Some(ControlCommand::Capacity(s)) = rx.recv().await else {
        panic!("expected capacity")
    };
    assert_eq!(s.cpu_used_cores, None, "NaN sanitised away");
    let mut stats = MemberStats::default();
    s.apply_to(&mut stats);
    assert_eq!(stats.cpu_limit_cores, Some(2.0));
}

#[tokio::test]
async fn bad_json_gets_an_error_and_the_connection_stays() {
    let (handle, mut rx) = serve(ControlConfig::loopback(0)).await.unwrap();
    let mut raw = Raw::connect(handle.local_addr()).await;
    for bad in [
        &b"not json\n"[..],
        b"{\"op\":\"explode\"}\n",
        b"{\"op\":\"leave\",\"cooldown_ms\":-5}\n",
        b"\xff\xfe\n",
        b"[1,2,3]\n",
    ] {
        let r = raw.send(bad).await.expect("a reply, not a closed socket");
        assert!(!r.ok, "{bad:?}");
        assert!(r.error.unwrap().starts_with("bad request"));
    }
    // Same connection still works.
    let r = raw
        .send(b"{\"op\":\"rejoin\",\"reason\":\"after garbage\"}\r\n")
        .await
        .unwrap();
    assert!(r.ok);
    assert_eq!(
        rx.recv().await,
        Some(ControlCommand::Rejoin {
            reason: "after garbage".into()
        })
    );
}

#[tokio::test]
async fn wrong_token_is_refused_and_closed() {
    let (handle, mut rx) = serve(ControlConfig::loopback(0).with_token("s3cret"))
        .await
        .unwrap();
    handle.set_identity(Some(ident()));
    let mut raw = Raw::connect(handle.local_addr()).await;
    let r = raw
        .send(b"{\"op\":\"rejoin\",\"token\":\"guess\"}\n")
        .await
        .unwrap();
    assert!(!r.ok);
    assert_eq!(r.error.as_deref(), Some("unauthorized"));
    assert_eq!(r.identity, None, "nothing leaks to an unauthorised peer");
    assert_eq!(raw.read().await, None, "connection closed");
    // Missing token: same.
    let mut raw = Raw::connect(handle.local_addr()).await;
    let r = raw.send(b"{\"op\":\"hello\"}\n").await.unwrap();
    assert_eq!(r.error.as_deref(), Some("unauthorized"));
    assert!(rx.try_recv().is_err(), "no command from refused peers");
    // Right token works.
    let mut c = ControlClient::connect(handle.local_addr(), Some("s3cret".into()), T)
        .await
        .unwrap();
    let r = c.request(Op::Hello, T).await.unwrap();
    assert!(r.ok);
    assert_eq!(r.identity, Some(ident()));
}

#[tokio::test]
async fn the_default_listener_is_loopback_only() {
    let cfg = ControlConfig::loopback(0);
    assert!(!cfg.allow_non_loopback);
    assert!(cfg.token.is_none());
    let (h, _rx) = serve(cfg).await.unwrap();
    assert_eq!(h.local_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[tokio::test]
async fn non_loopback_bind_is_refused() {
    let mut cfg = ControlConfig::loopback(0);
    cfg.bind = "0.0.0.0:0".parse().unwrap();
    assert!(matches!(
        serve(cfg.clone()).await,
        Err(ControlError::NonLoopback(_))
    ));
    cfg.allow_non_loopback = true;
    assert!(matches!(
        serve(cfg.clone()).await,
        Err(ControlError::TokenRequired)
    ));
    cfg.token = Some("t".into());
    let (h, _rx) = serve(cfg).await.expect("explicitly allowed with a token");
    assert!(h.local_addr().ip().is_unspecified());
    // The agent side refuses to dial a non-loopback address too.
    assert!(matches!(
        ControlClient::connect("10.0.0.1:9".parse().unwrap(), None, T).await,
        Err(ControlError::NonLoopback(_))
    ));
}

#[tokio::test]
async fn long_lines_close_busy_queue_answers_and_cooldown_is_clamped() {
    let mut cfg = ControlConfig::loopback(0);
    cfg.max_line = 64;
    cfg.queue = 1;
    cfg.max_cooldown = Duration::from_secs(10);
    cfg.min_membership_interval = Duration::ZERO;
    let (handle, mut rx) = serve(cfg).await.unwrap();
    let mut raw = Raw::connect(handle.local_addr()).await;
    let r = raw
        .send(b"{\"op\":\"leave\",\"cooldown_ms\":99999999}\n")
        .await
        .unwrap();
    assert!(r.ok);
    let r = raw.send(b"{\"op\":\"rejoin\"}\n").await.unwrap();
    assert_eq!(r.error.as_deref(), Some("busy: command queue full"));
    assert_eq!(
        rx.recv().await,
        Some(ControlCommand::Leave {
            cooldown: Duration::from_secs(10),
            reason: String::new()
        })
    );
    let mut long = vec![b'x'; 200];
    long.push(b'\n');
    let r = raw.send(&long).await.unwrap();
    assert!(r.error.unwrap().contains("longer than"));
    assert_eq!(raw.read().await, None);
}

#[test]
fn config_from_variables() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    assert!(ControlConfig::from_vars(vars(&[])).unwrap().is_none());
    let cfg = ControlConfig::from_vars(vars(&[(ENV_CONTROL_ADDR, "127.0.0.1:0")]))
        .unwrap()
        .unwrap();
    assert_eq!(cfg.min_membership_interval, Duration::from_secs(10));
    assert_eq!(cfg.idle_timeout, Duration::from_secs(60));
    let cfg = ControlConfig::from_vars(vars(&[
        (ENV_CONTROL_ADDR, "127.0.0.1:9470"),
        (ENV_CONTROL_TOKEN, "t"),
        (ENV_CONTROL_MIN_INTERVAL_MS, "0"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(cfg.min_membership_interval, Duration::ZERO);
    assert_eq!(cfg.token.as_deref(), Some("t"));
    let e = ControlConfig::from_vars(vars(&[
        (ENV_CONTROL_ADDR, "127.0.0.1:9470"),
        (ENV_CONTROL_MIN_INTERVAL_MS, "soon"),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains(ENV_CONTROL_MIN_INTERVAL_MS), "{e}");
}

#[test]
fn token_comparison_is_exact() {
    assert!(token_matches("s3cret", Some("s3cret")));
    for wrong in [
        "",
        "s",
        "s3cre",
        "s3cret ",
        "s3cres",
        "S3cret",
        "s3cret-and-more",
        "x",
    ] {
        assert!(!token_matches("s3cret", Some(wrong)), "{wrong:?}");
    }
    assert!(
        !token_matches("s3cret", None),
        "a missing token never matches"
    );
    assert!(!token_matches("", None));
    assert!(token_matches("", Some("")));
    // Non-ASCII and long tokens compare like any other bytes.
    let long = "ü".repeat(10_000);
    assert!(token_matches(&long, Some(&long)));
    assert!(!token_matches(&long, Some(&long[..long.len() - 2])));
}

#[tokio::test]
async fn idle_connections_are_closed_and_free_their_slots() {
    let mut cfg = ControlConfig::loopback(0);
    cfg.max_connections = 2;
    cfg.idle_timeout = Duration::from_millis(400);
    let (handle, _rx) = serve(cfg).await.unwrap();
    let addr = handle.local_addr();
    let opened = tokio::time::Instant::now();
    // One silent peer, one that trickles half a request and stops.
    let mut silent = Raw::connect(addr).await;
    let mut trickle = Raw::connect(addr).await;
    trickle.writer.write_all(b"{\"op\":").await.unwrap();
    // Both slots are taken: a third peer is turned away.
    let mut third = Raw::connect(addr).await;
    let r = third.read().await.expect("a refusal");
    assert_eq!(r.error.as_deref(), Some("too many connections"));
    // The idle ones are closed with a reply naming the reason…
    for raw in [&mut silent, &mut trickle] {
        let r = raw.read().await.expect("an idle notice before the close");
        assert!(r.error.unwrap().contains("idle_timeout"));
        assert_eq!(raw.read().await, None, "closed");
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(400),
        "closed early"
    );
    // …and the agent gets in again.
    let mut c = ControlClient::connect(addr, None, T).await.unwrap();
    assert!(c.request(Op::Hello, T).await.unwrap().ok);
    // A peer that keeps talking is not idle, however long it stays.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1000) {
        assert!(c.request(Op::Hello, T).await.unwrap().ok);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn leave_and_rejoin_are_rate_limited_by_the_consumer() {
    let mut cfg = ControlConfig::loopback(0);
    cfg.min_membership_interval = Duration::from_millis(500);
    let (handle, mut rx) = serve(cfg).await.unwrap();
    handle.set_identity(Some(ident()));
    let mut a = ControlClient::connect(handle.local_addr(), None, T)
        .await
        .unwrap();
    let mut b = ControlClient::connect(handle.local_addr(), None, T)
        .await
        .unwrap();
    let accepted = tokio::time::Instant::now();
    assert!(
        a.request(Op::Rejoin { reason: "1".into() }, T)
            .await
            .unwrap()
            .ok
    );
    // From any connection, leave or rejoin: refused with the limit named.
    for (c, op) in [
        (&mut a, Op::Rejoin { reason: "2".into() }),
        (
            &mut b,
            Op::Leave {
                cooldown_ms: 1,
                reason: "3".into(),
            },
        ),
    ] {
        let r = c.request(op, T).await.unwrap();
        assert!(!r.ok);
        let e = r.error.unwrap();
        assert!(e.contains("rate limited") && e.contains("500ms"), "{e}");
        assert!(e.contains("min_membership_interval"), "{e}");
        assert_eq!(r.identity, Some(ident()), "the peer is authorised");
    }
    // Other requests are not limited.
    assert!(b.request(Op::Hello, T).await.unwrap().ok);
    assert!(
        b.request(Op::Capacity(CapacitySample::default()), T)
            .await
            .unwrap()
            .ok
    );
    // Accepted again once the interval has passed (and not before).
    loop {
        let r = b
            .request(Op::Rejoin { reason: "4".into() }, T)
            .await
            .unwrap();
        if r.ok {
            break;
        }
        assert!(accepted.elapsed() < T, "never accepted again: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted.elapsed() >= Duration::from_millis(500));
    let mut got = Vec::new();
    while let Ok(cmd) = rx.try_recv() {
        got.push(cmd);
    }
    let membership: Vec<_> = got
        .into_iter()
        .filter(|c| !matches!(c, ControlCommand::Capacity(_)))
        .collect();
    assert_eq!(
        membership,
        vec![
            ControlCommand::Rejoin { reason: "1".into() },
            ControlCommand::Rejoin { reason: "4".into() }
        ]
    );
}

#[tokio::test]
async fn fail_open_when_the_consumer_dropped_its_receiver() {
    let (handle, rx) = serve(ControlConfig::loopback(0)).await.unwrap();
    drop(rx);
    let mut c = ControlClient::connect(handle.local_addr(), None, T)
        .await
        .unwrap();
    let r = c
        .request(Op::Rejoin { reason: "r".into() }, T)
        .await
        .unwrap();
    assert!(!r.ok);
    // And an agent dialling a port nobody listens on gets an error, not a hang.
    let addr = handle.local_addr();
    drop(handle);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match ControlClient::connect(addr, None, T).await {
            Err(ControlError::Io { .. }) => break,
            Ok(mut c) => {
                // Listener task is being aborted; an accepted-but-dead connection must
                // end in an error too.
                if c.request(Op::Hello, Duration::from_millis(200))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener never stopped"
        );
        tokio::task::yield_now().await;
    }
}
