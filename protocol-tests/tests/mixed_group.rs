//! A mixed group on librdkafka's mock cluster (a broker with a join barrier): our consumer and a
//! real `rdkafka` consumer, both `cooperative-sticky`, in both leader orders. The group must
//! converge, and the ownership audit must find no partition owned by two members at any instant
//! and no produced offset left unconsumed.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lagbalance::consumer::{OnOwnershipChange, OwnershipChange};
use lagbalance::producer::{Producer, ProducerConfig};
use lagbalance::records::ProducerRecord;
use lagbalance::{Client, ClientConfig, Consumer, ConsumerConfig, NamedPartition};
use lagbalance_integration::audit;
use lagbalance_integration::unique_temp_dir;
use rdkafka::config::ClientConfig as RdConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientContext, Message};

const TOPIC: &str = "mixed";
const PARTITIONS: i32 = 6;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An audit log in the worker's format (see `integration::audit`).
#[derive(Clone)]
struct AuditLog {
    member: String,
    out: Arc<Mutex<File>>,
    owned: Arc<Mutex<BTreeSet<(String, i32)>>>,
}

impl AuditLog {
    fn new(dir: &Path, member: &str) -> (Self, PathBuf) {
        let path = dir.join(format!("{member}.jsonl"));
        let log = AuditLog {
            member: member.into(),
            out: Arc::new(Mutex::new(File::create(&path).unwrap())),
            owned: Default::default(),
        };
        (log, path)
    }
    fn ownership(&self, event: &str, parts: &[(String, i32)]) {
        let mut owned = self.owned.lock().unwrap();
        for p in parts {
            if event == "assigned" {
                owned.insert(p.clone());
            } else {
                owned.remove(p);
            }
        }
        let line = serde_json::json!({"ts_ms": now_ms(), "member": self.member, "event": event,
            "partitions": parts.iter().map(|(t, p)| serde_json::json!([t, p])).collect::<Vec<_>>()});
        writeln!(self.out.lock().unwrap(), "{line}").unwrap();
    }
    /// `started` / `stopping`: the audit counts the member live in between.
    fn event(&self, event: &str) {
        let line = serde_json::json!({"ts_ms": now_ms(), "member": self.member, "event": event});
        writeln!(self.out.lock().unwrap(), "{line}").unwrap();
    }
    fn consumed(&self, partition: i32, offset: i64) {
        let line = serde_json::json!({"ts_ms": now_ms(), "member": self.member, "event": "consumed",
            "topic": TOPIC, "partition": partition, "offset": offset});
        writeln!(self.out.lock().unwrap(), "{line}").unwrap();
    }
    fn owned(&self) -> BTreeSet<(String, i32)> {
        self.owned.lock().unwrap().clone()
    }
}

/// The rdkafka consumer's rebalance callbacks feed the same audit.
struct RdContext(AuditLog);
impl ClientContext for RdContext {}
impl ConsumerContext for RdContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            self.0.ownership("revoked", &parts);
        }
    }
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts: Vec<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            self.0.ownership("assigned", &parts);
        }
    }
}

/// Run an rdkafka consumer on its own thread until `stop`.
fn spawn_rdkafka(
    bootstrap: String,
    log: AuditLog,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer<RdContext> = RdConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "mixed-group")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "200")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create_with_context(RdContext(log.clone()))
            .unwrap();
        consumer.subscribe(&[TOPIC]).unwrap();
        log.event("started");
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                log.consumed(m.partition(), m.offset());
            }
        }
        log.event("stopping");
        // Closing runs the final revoke through the context, committing on the way out.
        drop(consumer);
    })
}

async fn run_ours(bootstrap: String, log: AuditLog, stop: Arc<AtomicBool>) {
    let mut config = ConsumerConfig::new(&bootstrap, "mixed-group");
    config
        .set("auto.offset.reset", "earliest")
        .unwrap()
        .set("auto.commit.interval.ms", "200")
        .unwrap()
        .set("session.timeout.ms", "6000")
        .unwrap()
        .set("heartbeat.interval.ms", "500")
        .unwrap()
        // cooperative-sticky first: the mock insists every member's first protocol matches.
        .set(
            "partition.assignment.strategy",
            "cooperative-sticky,lagbalance",
        )
        .unwrap();
    let mut consumer = Consumer::new(config, {
        let log = log.clone();
        Box::new(OnOwnershipChange(
            move |change: OwnershipChange, p: &[NamedPartition]| log.ownership(change.as_str(), p),
        ))
    })
    .unwrap();
    consumer.subscribe(&[TOPIC]);
    log.event("started");
    while !stop.load(Ordering::Relaxed) {
        for r in consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll")
        {
            log.consumed(r.partition, r.offset);
        }
    }
    log.event("stopping");
    consumer.close(Duration::from_secs(10)).await.unwrap();
}

/// Wait until both members own partitions, together all of them, unchanged for 3 s.
async fn wait_converged(a: &AuditLog, b: &AuditLog, limit: Duration) {
    let deadline = Instant::now() + limit;
    type Both = (BTreeSet<(String, i32)>, BTreeSet<(String, i32)>);
    let mut since: Option<(Instant, Both)> = None;
    loop {
        let (oa, ob) = (a.owned(), b.owned());
        let good = !oa.is_empty()
            && !ob.is_empty()
            && oa.is_disjoint(&ob)
            && oa.len() + ob.len() == PARTITIONS as usize;
        match &since {
            Some((t, seen)) if good && *seen == (oa.clone(), ob.clone()) => {
                if t.elapsed() >= Duration::from_secs(3) {
                    return;
                }
            }
            _ if good => since = Some((Instant::now(), (oa, ob))),
            _ => since = None,
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: {:?} / {:?}",
            a.owned(),
            b.owned()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No partition may go without an owner longer than this while a member is live: two session
/// timeouts (6 s) plus the mock's 3 s first-join wait and a rebalance round.
const LIVENESS_BOUND: Duration = Duration::from_secs(2 * 6 + 3 + 5);

async fn scenario(ours_first: bool) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = unique_temp_dir("mixed").unwrap();
    let (ours, ours_path) = AuditLog::new(&dir, "ours");
    let (theirs, theirs_path) = AuditLog::new(&dir, "rdkafka");

    // Records before and during the rebalance.
    let client = Client::new(ClientConfig::new(&bootstrap)).unwrap();
    let producer = Producer::new(client, ProducerConfig::default()).unwrap();
    let mut produced = BTreeSet::new();
    let send = |from: usize, n: usize| {
        let producer = producer.clone();
        async move {
            let mut out = Vec::new();
            for i in from..from + n {
                out.push(
                    producer
                        .send(
                            ProducerRecord::new(TOPIC)
                                .key(format!("k{i}"))
                                .value(format!("{i}")),
                        )
                        .await
                        .unwrap(),
                );
            }
            producer.flush().await.unwrap();
            let mut got = BTreeSet::new();
            for d in out {
                let m = d.await.unwrap();
                got.insert(((m.topic, m.partition), m.offset));
            }
            got
        }
    };
    produced.extend(send(0, 1000).await);

    let stop = Arc::new(AtomicBool::new(false));
    let (ours_task, rd_thread);
    if ours_first {
        ours_task = tokio::spawn(run_ours(bootstrap.clone(), ours.clone(), stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while ours.owned().len() != PARTITIONS as usize {
            assert!(Instant::now() < deadline, "ours never got the partitions");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rd_thread = spawn_rdkafka(bootstrap.clone(), theirs.clone(), stop.clone());
    } else {
        rd_thread = spawn_rdkafka(bootstrap.clone(), theirs.clone(), stop.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        while theirs.owned().len() != PARTITIONS as usize {
            assert!(
                Instant::now() < deadline,
                "rdkafka never got the partitions"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ours_task = tokio::spawn(run_ours(bootstrap.clone(), ours.clone(), stop.clone()));
    }
    produced.extend(send(1000, 1000).await);
    wait_converged(&ours, &theirs, Duration::from_secs(60)).await;
    produced.extend(send(2000, 500).await);

    // Everything consumed (bounded), then stop both.
    let files = [ours_path.as_path(), theirs_path.as_path()];
    audit::wait_all_consumed(&files, &produced, Duration::from_secs(60))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    ours_task.await.unwrap();
    rd_thread.join().unwrap();

    audit::assert_clean(
        &format!("mixed group, ours first: {ours_first}"),
        &files,
        &produced,
        LIVENESS_BOUND,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_group_led_by_our_consumer() {
    scenario(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_group_led_by_rdkafka() {
    scenario(false).await;
}
