//! The connection against a scripted loopback peer that sends canned bytes: bad frames, silence,
//! version fallback, out-of-order answers.

use std::time::Duration;

use kafka_protocol::messages::{ApiKey, MetadataRequest};
use lagbalance::wire::{Connection, ConnectionConfig};
use lagbalance::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Api key, version and correlation id of one request read off the socket.
async fn read_request(s: &mut TcpStream) -> Option<(i16, i16, i32)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some((
        i16::from_be_bytes([body[0], body[1]]),
        i16::from_be_bytes([body[2], body[3]]),
        i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
    ))
}

fn frame(correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&correlation.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// ApiVersions v0 body announcing ApiVersions 0..3 and Metadata 1..1.
const VERSIONS_V0: &[u8] = &[0, 0, 0, 0, 0, 2, 0, 18, 0, 0, 0, 3, 0, 3, 0, 1, 0, 1];

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn config(timeout_ms: u64) -> ConnectionConfig {
    ConnectionConfig {
        request_timeout: Duration::from_millis(timeout_ms),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

#[tokio::test]
async fn oversized_length_prefix_fails_the_connection_clearly() {
    let (l, addr) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_request(&mut s).await;
        s.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 0]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let err = Connection::connect(&addr, config(10_000))
        .await
        .err()
        .expect("must fail");
    assert!(matches!(err, Error::FrameTooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn peer_closing_inside_a_frame_is_reported() {
    let (l, addr) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let (_, _, corr) = read_request(&mut s).await.unwrap();
        let full = frame(corr, VERSIONS_V0);
        s.write_all(&full[..full.len() - 3]).await.unwrap();
        // Dropping the socket closes it three bytes short.
    });
    let err = Connection::connect(&addr, config(10_000))
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("inside a frame"), "{err}");
}

#[tokio::test]
async fn silent_peer_times_out_at_the_request_timeout() {
    let (l, addr) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let started = std::time::Instant::now();
    let err = Connection::connect(&addr, config(300))
        .await
        .err()
        .expect("must fail");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
}

#[tokio::test]
async fn falls_back_to_v0_and_matches_out_of_order_answers() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let (key, v, corr) = read_request(&mut s).await.unwrap();
        assert_eq!((key, v), (18, 3), "first ApiVersions at v3");
        // Answer like librdkafka's mock: error 35 and an unparsable rest.
        s.write_all(&frame(corr, &[0, 35, 0xff])).await.unwrap();
        let (key, v, corr) = read_request(&mut s).await.unwrap();
        assert_eq!((key, v), (18, 0), "retried at v0");
        s.write_all(&frame(corr, VERSIONS_V0)).await.unwrap();
        // Two Metadata requests: answer the second first. Each answer carries the request's
        // correlation id as its controller id so the test can tell them apart.
        let (_, _, first) = read_request(&mut s).await.unwrap();
        let (_, _, second) = read_request(&mut s).await.unwrap();
        for corr in [second, first] {
            let mut body = vec![0, 0, 0, 0];
            body.extend_from_slice(&corr.to_be_bytes());
            body.extend_from_slice(&[0, 0, 0, 0]);
            s.write_all(&frame(corr, &body)).await.unwrap();
        }
        (first, second)
    });
    let conn = Connection::connect(&addr, config(5_000)).await.unwrap();
    assert_eq!(conn.version(ApiKey::Metadata).unwrap(), 1);
    let req = MetadataRequest::default();
    let (a, b) = tokio::join!(conn.send(&req, 1), conn.send(&req, 1));
    let (first, second) = server.await.unwrap();
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.controller_id.0, first);
    assert_eq!(b.controller_id.0, second);
}

#[tokio::test]
async fn requests_after_the_peer_left_fail_fast() {
    let (l, addr) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let (_, _, corr) = read_request(&mut s).await.unwrap();
        s.write_all(&frame(corr, &[0, 35])).await.unwrap();
        let (_, _, corr) = read_request(&mut s).await.unwrap();
        s.write_all(&frame(corr, VERSIONS_V0)).await.unwrap();
        // then hang up
    });
    let conn = Connection::connect(&addr, config(5_000)).await.unwrap();
    // The hang-up may be seen before or after this request is queued: either way the
    // request fails (well inside the 5 s request timeout), it does not hang.
    let started = std::time::Instant::now();
    let err = conn
        .send(&MetadataRequest::default(), 1)
        .await
        .expect_err("a peer that hung up cannot answer");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_retriable(), "{err:?}");
    assert!(conn.is_closed());
}
