//! Fault injection with librdkafka's mock cluster (a broker with a join barrier): errors on
//! Heartbeat, JoinGroup, SyncGroup and OffsetCommit. The consumer must recover, report
//! revoked vs lost partitions correctly, and go on consuming everything.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lagbalance::consumer::RebalanceListener;
use lagbalance::producer::{Producer, ProducerConfig};
use lagbalance::records::ProducerRecord;
use lagbalance::NamedPartition;
use lagbalance::{Client, ClientConfig, Consumer, ConsumerConfig};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[derive(Clone, Debug, PartialEq)]
enum Event {
    Assigned(Vec<NamedPartition>),
    Revoked(Vec<NamedPartition>),
    Lost(Vec<NamedPartition>),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

impl RebalanceListener for Recorder {
    fn on_assigned(&mut self, p: &[NamedPartition]) {
        self.0.lock().unwrap().push(Event::Assigned(p.to_vec()));
    }
    fn on_revoked(&mut self, p: &[NamedPartition]) {
        self.0.lock().unwrap().push(Event::Revoked(p.to_vec()));
    }
    fn on_lost(&mut self, p: &[NamedPartition]) {
        self.0.lock().unwrap().push(Event::Lost(p.to_vec()));
    }
}

const TOPIC: &str = "faults";
const PARTITIONS: i32 = 4;

async fn produce(bootstrap: &str, from: usize, n: usize) {
    let client = Client::new(ClientConfig::new(bootstrap)).unwrap();
    let p = Producer::new(client, ProducerConfig::default()).unwrap();
    let mut pending = Vec::new();
    for i in from..from + n {
        pending.push(
            p.send(
                ProducerRecord::new(TOPIC)
                    .key(format!("k{i}"))
                    .value(format!("{i}")),
            )
            .await
            .unwrap(),
        );
    }
    p.flush().await.unwrap();
    for d in pending {
        d.await.unwrap();
    }
    p.close().await.unwrap();
}

/// Poll until `seen` holds `want` distinct values or the deadline passes.
async fn consume_until(
    consumer: &mut Consumer,
    seen: &mut BTreeSet<String>,
    want: usize,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    while seen.len() < want {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {want}",
            seen.len()
        );
        for r in consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll")
        {
            seen.insert(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
}

fn all_partitions() -> Vec<NamedPartition> {
    (0..PARTITIONS).map(|p| (TOPIC.to_string(), p)).collect()
}

/// Which outcome an injected error must have.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The member was fenced: its partitions are lost (no commit), then reassigned.
    Lost,
    /// Recoverable without giving anything up.
    Kept,
}

async fn run_case(api: RDKafkaApiKey, error: RDKafkaRespErr, expect: Expect) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    produce(&bootstrap, 0, 200).await;

    let recorder = Recorder::default();
    let mut config = ConsumerConfig::new(&bootstrap, "faults-group");
    config
        .set("auto.offset.reset", "earliest")
        .unwrap()
        .set("session.timeout.ms", "6000")
        .unwrap()
        .set("heartbeat.interval.ms", "300")
        .unwrap()
        .set("partition.assignment.strategy", "cooperative-sticky")
        .unwrap();
    let mut consumer = Consumer::new(config, Box::new(recorder.clone())).unwrap();
    consumer.subscribe(&[TOPIC]);
    let mut seen = BTreeSet::new();
    consume_until(&mut consumer, &mut seen, 200, Duration::from_secs(30)).await;
    assert_eq!(
        consumer.assignment().iter().cloned().collect::<Vec<_>>(),
        all_partitions()
    );
    let before = recorder.events().len();

    let seen_before = consumer.identity().error_count(error as i16);
    // Inject the error on the next request of that API, then make that request happen.
    cluster.request_errors(api, &[error]);
    match api {
        RDKafkaApiKey::JoinGroup | RDKafkaApiKey::SyncGroup => {
            consumer.request_rebalance("fault injection")
        }
        RDKafkaApiKey::OffsetCommit => {
            // Something new to commit, then commit it.
            produce(&bootstrap, 200, 4).await;
            consume_until(&mut consumer, &mut seen, 204, Duration::from_secs(20)).await;
            let committed = consumer.commit().await;
            assert!(
                committed.is_err(),
                "{api:?} {error:?}: the injected error must surface"
            );
        }
        _ => {} // the next heartbeat picks it up
    }

    // Wait until the consumer has really met the error (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumer.identity().error_count(error as i16) <= seen_before {
        assert!(
            Instant::now() < deadline,
            "{api:?} {error:?}: the error never reached the consumer"
        );
        consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll");
    }

    // More records arrive; the consumer must recover and read every one of them.
    let from = seen.len();
    produce(&bootstrap, from, 100).await;
    consume_until(
        &mut consumer,
        &mut seen,
        from + 100,
        Duration::from_secs(40),
    )
    .await;
    // Wait (bounded) until it owns everything again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().len() != PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "{api:?} {error:?}: not reassigned"
        );
        consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll");
    }

    let after: Vec<Event> = recorder.events()[before..].to_vec();
    let lost: Vec<&Event> = after
        .iter()
        .filter(|e| matches!(e, Event::Lost(p) if !p.is_empty()))
        .collect();
    let revoked: Vec<&Event> = after
        .iter()
        .filter(|e| matches!(e, Event::Revoked(p) if !p.is_empty()))
        .collect();
    match expect {
        Expect::Lost => {
            assert_eq!(
                lost,
                vec![&Event::Lost(all_partitions())],
                "{api:?} {error:?}: {after:?}"
            );
            assert!(
                revoked.is_empty(),
                "{api:?} {error:?}: lost partitions are not revoked: {after:?}"
            );
        }
        Expect::Kept => {
            assert!(
                lost.is_empty() && revoked.is_empty(),
                "{api:?} {error:?}: nothing given up: {after:?}"
            );
        }
    }
    consumer.close(Duration::from_secs(5)).await.unwrap();
}

macro_rules! case {
    ($name:ident, $api:ident, $err:ident, $expect:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run_case(RDKafkaApiKey::$api, RDKafkaRespErr::$err, Expect::$expect).await;
        }
    };
}

case!(
    heartbeat_illegal_generation,
    Heartbeat,
    RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
    Lost
);
case!(
    heartbeat_unknown_member,
    Heartbeat,
    RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
    Lost
);
case!(
    heartbeat_rebalance_in_progress,
    Heartbeat,
    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
    Kept
);
case!(
    heartbeat_not_coordinator,
    Heartbeat,
    RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
    Kept
);
case!(
    heartbeat_coordinator_loading,
    Heartbeat,
    RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
    Kept
);
case!(
    join_illegal_generation,
    JoinGroup,
    RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
    Lost
);
case!(
    join_unknown_member,
    JoinGroup,
    RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
    Lost
);
case!(
    join_rebalance_in_progress,
    JoinGroup,
    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
    Kept
);
case!(
    join_not_coordinator,
    JoinGroup,
    RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
    Kept
);
case!(
    join_coordinator_loading,
    JoinGroup,
    RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
    Kept
);
case!(
    sync_illegal_generation,
    SyncGroup,
    RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
    Lost
);
case!(
    sync_unknown_member,
    SyncGroup,
    RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
    Lost
);
case!(
    sync_rebalance_in_progress,
    SyncGroup,
    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
    Kept
);
case!(
    sync_not_coordinator,
    SyncGroup,
    RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
    Kept
);
case!(
    sync_coordinator_loading,
    SyncGroup,
    RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
    Kept
);
case!(
    commit_illegal_generation,
    OffsetCommit,
    RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
    Lost
);
case!(
    commit_unknown_member,
    OffsetCommit,
    RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
    Lost
);
case!(
    commit_rebalance_in_progress,
    OffsetCommit,
    RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
    Kept
);
case!(
    commit_not_coordinator,
    OffsetCommit,
    RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
    Kept
);
case!(
    commit_coordinator_loading,
    OffsetCommit,
    RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
    Kept
);
