//! Helpers the TLS/SASL tests share (`tests/security.rs` against tansu behind a loopback
//! terminator and gate, `tests/security_kafka.rs` against Kafka's own listeners): a client
//! configuration from Kafka properties, a single connection, and a produce + fetch round trip.

use std::path::Path;
use std::time::{Duration, Instant};

use lagbalance::producer::{Producer, ProducerConfig};
use lagbalance::records::ProducerRecord;
use lagbalance::wire::Connection;
use lagbalance::{Client, ClientConfig};

use crate::{readback, unique};

/// How long a round trip or a connection attempt may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A client configuration for `bootstrap` with short timeouts and the given security
/// properties (each must be one [`ClientConfig::set`] knows).
pub fn client_config(bootstrap: &str, props: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new(bootstrap);
    c.connection.connect_timeout = Duration::from_secs(5);
    c.connection.request_timeout = Duration::from_secs(10);
    c.operation_timeout = Duration::from_secs(30);
    for (k, v) in props {
        assert!(c.set(k, v).unwrap(), "{k} is a security property");
    }
    c
}

/// A path as the `&str` a property value needs.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// One connection to `addr` (TLS handshake and SASL login included), within [`DEADLINE`].
pub async fn connect(addr: &str, props: &[(&str, &str)]) -> lagbalance::Result<Connection> {
    let config = client_config(addr, props).connection;
    tokio::time::timeout(DEADLINE, Connection::connect(addr, config))
        .await
        .expect("connect finished within the deadline")
}

/// Create a topic, produce `n` records and fetch them back, all through `client`. Returns the
/// topic.
pub async fn produce_fetch_round_trip(client: &Client, n: usize) -> String {
    let topic = unique("secure");
    client
        .create_topic(&topic, 1, 1)
        .await
        .expect("create topic");
    produce(client, &topic, n).await;
    let mut fetcher = readback::from_earliest(client, Duration::from_millis(200));
    fetcher.assign(&topic, 0, None);
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < n {
        assert!(Instant::now() < deadline, "fetched {} of {n}", got.len());
        for r in fetcher.fetch().await.expect("fetch") {
            got.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    assert_eq!(got, want);
    topic
}

/// Produce records `v0`…`v{n-1}` (keys `k0`…) to `topic` and wait until all are delivered.
pub async fn produce(client: &Client, topic: &str, n: usize) {
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..n {
        let record = ProducerRecord::new(topic)
            .key(format!("k{i}"))
            .value(format!("v{i}"));
        deliveries.push(producer.send(record).await.expect("queued"));
    }
    producer.flush().await.expect("flush");
    for d in deliveries {
        d.await.expect("delivered");
    }
}
