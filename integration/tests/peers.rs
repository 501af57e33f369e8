//! A cooperative-sticky group of real peers from three client libraries — Java `KafkaConsumer`,
//! kafka-python, confluent-kafka (librdkafka) — on the broker of the run ([`TestBroker::start`]:
//! `LAGBALANCE_BOOTSTRAP` if set, else the user's shared Kafka 4.1.1, started or reused through
//! `scripts/test-broker up`; finding no broker fails the test, it never skips), each writing our
//! audit lines (`integration/src/peers.rs`). They join one by one while records are produced,
//! the first (the leader) leaves, the others consume everything; the ownership audit proves no
//! partition was owned twice at any instant and every produced offset was consumed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lagbalance::{Client, ClientConfig};
use lagbalance_integration::audit;
use lagbalance_integration::ledger::produce_until;
use lagbalance_integration::peers::{self, Peer};
use lagbalance_integration::workers::{wait_balanced, Audited};
use lagbalance_integration::{unique, unique_temp_dir, TestBroker};

const PARTITIONS: i32 = 6;

/// No partition may go without an owner longer than this while a member is live: a rebalance
/// reaches a member with its next heartbeat (a third of the 10 s session), and a cooperative
/// move takes two rounds.
const LIVENESS_BOUND: Duration = Duration::from_secs(10);

/// Panic with `what` and the tail of every peer's log.
fn fail(what: &str, err: impl std::fmt::Display, peers: &[&Peer]) -> ! {
    let logs: Vec<String> = peers
        .iter()
        .map(|p| format!("--- {} ({:?}) ---\n{}", p.name, p.client, p.log_tail(30)))
        .collect();
    panic!("{what}: {err}\n{}", logs.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_kafka_python_and_confluent_share_a_cooperative_group() {
    let t0 = Instant::now();
    peers::build().expect("building the peers (integration/peers/build)");
    eprintln!("peers built in {:.1?}", t0.elapsed());
    let started = Instant::now();
    let broker = TestBroker::start()
        .await
        .expect("a broker (LAGBALANCE_BOOTSTRAP, or the shared Kafka of scripts/test-broker up)");
    eprintln!("broker: {} at {}", broker.label(), broker.bootstrap);
    let client = Client::new(ClientConfig::new(&broker.bootstrap)).unwrap();
    let topic = unique("peers");
    let group = unique("g");
    client.create_topic(&topic, PARTITIONS, 1).await.unwrap();
    let dir = unique_temp_dir("peers-audit").unwrap();
    let b = broker.bootstrap.as_str();
    let args = [
        "--session-timeout-ms",
        "10000",
        "--commit-interval-ms",
        "500",
    ];

    // Records keep arriving through every rebalance until the group is down to two.
    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn(produce_until(
        client.clone(),
        topic.clone(),
        PARTITIONS,
        200.0,
        stop.clone(),
        None,
    ));

    let (settle, limit) = (Duration::from_secs(3), Duration::from_secs(30));
    let mut java =
        Peer::spawn(peers::Client::Java, b, &group, &topic, "java", &args, &dir).unwrap();
    if let Err(e) = wait_balanced(&[&java], PARTITIONS, true, settle, limit).await {
        fail("java alone", e, &[&java]);
    }
    let mut kp = Peer::spawn(
        peers::Client::KafkaPython,
        b,
        &group,
        &topic,
        "kafka-python",
        &args,
        &dir,
    )
    .unwrap();
    let two: [&dyn Audited; 2] = [&java, &kp];
    if let Err(e) = wait_balanced(&two, PARTITIONS, true, settle, limit).await {
        fail("java + kafka-python", e, &[&java, &kp]);
    }
    let mut cf = Peer::spawn(
        peers::Client::Confluent,
        b,
        &group,
        &topic,
        "confluent",
        &args,
        &dir,
    )
    .unwrap();
    let three: [&dyn Audited; 3] = [&java, &kp, &cf];
    if let Err(e) = wait_balanced(&three, PARTITIONS, true, settle, limit).await {
        fail("java + kafka-python + confluent", e, &[&java, &kp, &cf]);
    }
    // The first member leads: it leaves cleanly and a Python client's assignor takes over,
    // moving its partitions while records arrive.
    if let Err(e) = java.terminate(Duration::from_secs(20)) {
        fail("java exits cleanly on SIGTERM", e, &[&java]);
    }
    let rest: [&dyn Audited; 2] = [&kp, &cf];
    if let Err(e) = wait_balanced(&rest, PARTITIONS, true, settle, limit).await {
        fail("kafka-python + confluent", e, &[&java, &kp, &cf]);
    }
    stop.store(true, Ordering::Relaxed);
    let produced = producing.await.unwrap().expect("producing");

    let paths = [java.audit.clone(), kp.audit.clone(), cf.audit.clone()];
    let files: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    if let Err(e) = audit::wait_all_consumed(&files, &produced, Duration::from_secs(30)).await {
        fail("every produced record consumed", e, &[&java, &kp, &cf]);
    }
    for p in [&mut kp, &mut cf] {
        if let Err(e) = p.terminate(Duration::from_secs(20)) {
            let name = p.name.clone();
            fail(&format!("{name} exits cleanly on SIGTERM"), e, &[&*p]);
        }
    }

    let label = format!("java + kafka-python + confluent on {}", broker.label());
    let label = label.as_str();
    let report = audit::assert_clean(label, &files, &produced, LIVENESS_BOUND);
    for name in ["java", "kafka-python", "confluent"] {
        assert!(report.ever_owned(name), "{name} never owned a partition");
    }
    eprintln!("mixed group done in {:.1?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
