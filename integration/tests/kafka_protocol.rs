//! What a Kafka 4.x broker changed for classic-protocol clients, checked against the real
//! brokers: no request at a version Kafka 4.0 removed (KIP-896), and a group that already runs
//! KIP-848's broker-side protocol (`group.protocol=consumer`) is refused with a clear error
//! instead of a silent fallback to the broker's assignment.

use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use lagbalance::wire::versions::{client_range, KAFKA_4_REMOVED};
use lagbalance::wire::{Connection, ConnectionConfig};
use lagbalance::{Client, ClientConfig, Consumer, ConsumerConfig};
use lagbalance_integration::audit::Line;
use lagbalance_integration::broker::BrokerKind;
use lagbalance_integration::peers::{Client as PeerClient, Peer};
use lagbalance_integration::{unique, unique_temp_dir, TestBroker};

/// Every API the client sends, as negotiated with `broker`: never below what Kafka 4.0 kept.
async fn negotiated(broker: &TestBroker) -> Vec<(ApiKey, i16, (i16, i16))> {
    let first = broker.bootstrap.split(',').next().unwrap();
    let conn = Connection::connect(first, ConnectionConfig::default())
        .await
        .expect("connect");
    let apis = (0..100i16)
        .filter_map(|k| ApiKey::try_from(k).ok())
        .filter(|a| client_range(*a).is_some());
    let mut out = Vec::new();
    for api in apis {
        let version = conn
            .version(api)
            .unwrap_or_else(|e| panic!("{api:?} on {}: {e}", broker.label()));
        let range = conn.versions().broker_range(api).expect("announced");
        out.push((api, version, range));
    }
    conn.close();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_at_a_version_kafka_4_removed() {
    for kind in [BrokerKind::KAFKA, BrokerKind::KAFKA_3] {
        let broker = TestBroker::start_kind(kind).await.expect("broker");
        let apis = negotiated(&broker).await;
        assert!(apis.len() >= 16, "{apis:?}");
        for (api, version, (broker_min, broker_max)) in apis {
            eprintln!(
                "{}: {api:?} v{version} (broker {broker_min}..={broker_max})",
                broker.label()
            );
            assert!((broker_min..=broker_max).contains(&version));
            if let Some((_, removed_max)) = KAFKA_4_REMOVED.iter().find(|(a, _)| *a == api) {
                assert!(
                    version > *removed_max,
                    "{api:?} v{version} was removed in 4.0"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_group_is_refused_with_a_clear_error() {
    let broker = TestBroker::start_kind(BrokerKind::KAFKA)
        .await
        .expect("broker");
    let client = Client::new(ClientConfig::new(&broker.bootstrap)).unwrap();
    let topic = unique("kip848");
    let group = unique("kip848-g");
    client.create_topic(&topic, 4, 1).await.unwrap();
    let dir = unique_temp_dir("kip848").unwrap();

    // A Java member forms the group under the new protocol and owns every partition.
    let mut java = Peer::spawn(
        PeerClient::Java,
        &broker.bootstrap,
        &group,
        &topic,
        "java848",
        &["--group-protocol", "consumer"],
        &dir,
    )
    .expect("java peer");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&java.audit).unwrap_or_default();
        let assigned = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Line>(l).ok())
            .any(|l| l.event == "assigned" && !l.partitions.is_empty());
        if assigned {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the KIP-848 member never got partitions:\n{}",
            java.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Our classic member joins the same group: a clear error, no partitions, no retry loop.
    let mut config = ConsumerConfig::new(&broker.bootstrap, &group);
    config.set("auto.offset.reset", "earliest").unwrap();
    let mut consumer = Consumer::new(config, Box::new(lagbalance::consumer::NoopListener)).unwrap();
    consumer.subscribe(&[topic.as_str()]);
    let started = Instant::now();
    let err = loop {
        match consumer.poll(Duration::from_millis(200)).await {
            Err(e) => break e,
            Ok(records) => assert!(records.is_empty(), "consumed under a broker's plan"),
        }
        assert!(
            consumer.assignment().is_empty(),
            "took partitions from the broker's assignment"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no error after 30 s in a KIP-848 group"
        );
    };
    let msg = err.to_string();
    eprintln!("refused after {:?}: {msg}", started.elapsed());
    assert!(msg.contains("KIP-848"), "{msg}");
    assert!(msg.contains(&group), "{msg}");
    // The error stays: polling again does not rejoin.
    assert!(consumer.poll(Duration::from_millis(200)).await.is_err());
    java.terminate(Duration::from_secs(30)).expect("java exits");
    let _ = std::fs::remove_dir_all(&dir);
}
