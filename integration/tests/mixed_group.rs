//! Mixed consumer groups of our worker (`assignor/examples/worker.rs`) and peers from other
//! client libraries — Java `KafkaConsumer` 4.1.1, confluent-kafka (librdkafka), kafka-python —
//! all offering `cooperative-sticky` (`integration/src/peers.rs`), audited while records are
//! produced throughout:
//!
//! - **our member leading** on Apache Kafka 4.1.1 (the user's shared broker): our worker starts
//!   first and leads; a Java, a confluent-kafka and a kafka-python peer join one by one; confluent
//!   leaves cleanly, Java is `kill -9`ed and its partitions come back after its session timeout;
//!   on tansu 0.6.0 (no JoinGroup barrier) the joins without the Java peer, which tansu starves;
//! - **a Java leader with our members** on Kafka: the Java peer starts first and leads; two of
//!   our workers join, one offering only `cooperative-sticky`, one our default list
//!   (`lagbalance,cooperative-sticky`: the broker picks the protocol every member offers); the
//!   first leaves cleanly, the second is `kill -9`ed.
//!
//! After every join or leave the members' own audit logs must show all partitions owned,
//! disjointly, evenly, stable for a few seconds, and the member meant to lead must still lead
//! (its `role` audit lines; no other member's say it leads). At the end the ownership audit proves no
//! partition was owned by two members at any instant, nothing was consumed without ownership,
//! every produced offset was consumed, and no partition went without an owner longer than the
//! scenario's stated bound while a member was live. On any failure the test prints the audit so
//! far (every partition's longest unowned stretch and its owners) and each member's log tail, and
//! keeps the audit directory (`LAGBALANCE_MIXED_KEEP_LOGS=1` keeps it on success too).
//! `LAGBALANCE_MIXED_WORKER_LOG` sets our workers' `RUST_LOG` (default:
//! `warn,lagbalance::group=debug`, which includes the leader's plans).
//!
//! ```sh
//! cargo build -p lagbalance --examples      # the worker these tests spawn
//! cargo test -p lagbalance-integration --test mixed_group kafka_ -- --nocapture
//! cargo test -p lagbalance-integration --test mixed_group tansu_ -- --nocapture
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lagbalance::{Client, ClientConfig, NamedPartition};
use lagbalance_integration::audit::{self, Report};
use lagbalance_integration::broker::BrokerKind;
use lagbalance_integration::ledger::{produce_until, LiveLedger};
use lagbalance_integration::peers::{self, Peer};
use lagbalance_integration::workers::{is_leader, wait_balanced, Audited, Ownership, Worker};
use lagbalance_integration::{unique, unique_temp_dir, TestBroker};

const PARTITIONS: i32 = 12;
/// Records per second, round-robin over the partitions, from the first join to the last balance.
const RATE: f64 = 100.0;
/// Every member's `session.timeout.ms`; each heartbeats every third of it.
const SESSION_S: u64 = 10;
const SESSION_TIMEOUT: Duration = Duration::from_secs(SESSION_S);

/// Liveness bound when our member leads: a killed member's partitions wait for the coordinator
/// to expire its session (10 s); our leader then gives what a member missing from the JoinGroup
/// answer had to nobody for one more session timeout (docs/group-protocol.md, rule 13 — the
/// member may be alive on tansu); the round that hands them on, and each join's or leave's two
/// cooperative rounds (every member hears of a rebalance at its next heartbeat, a third of the
/// session), fit in the third session timeout.
const OUR_LEADER_BOUND: Duration = Duration::from_secs(3 * SESSION_S);

/// Liveness bound under a Java leader, which hands a missing member's partitions on at once:
/// the killed member's session (10 s), then one rebalance in which every member hears of it at
/// its next heartbeat (≤ 3.3 s) and rejoins; a join's or a leave's cooperative rounds are shorter.
const JAVA_LEADER_BOUND: Duration = Duration::from_secs(2 * SESSION_S);

/// Nothing may change for this long before a step counts as balanced.
const SETTLE: Duration = Duration::from_secs(3);
/// How long a join may take to balance (a leave or a kill: the scenario's liveness bound, the
/// settle window and 10 s for the round after).
const STEP_LIMIT: Duration = Duration::from_secs(30);
/// The same on tansu, which holds every rejoining follower's JoinGroup 3 s and bumps the
/// generation on every changed subscription: a kafka-python member's join balanced after 30 s
/// (its commits failing REBALANCE_IN_PROGRESS in between), and the leader keeps a partition
/// with a member that claims it until that member has synced the plan taking it away.
const TANSU_STEP_LIMIT: Duration = Duration::from_secs(60);

fn step_limit(kind: BrokerKind) -> Duration {
    if kind.is_kafka() {
        STEP_LIMIT
    } else {
        TANSU_STEP_LIMIT
    }
}
/// How long everything produced may take to show up as consumed once the group is balanced.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long a member may take to exit after SIGTERM.
const EXIT_LIMIT: Duration = Duration::from_secs(20);

/// One scenario at a time: each runs four processes, and the timing they are judged by (session
/// timeouts, settle windows) should not depend on a neighbour.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The arguments every member gets (peers and our workers take the same names).
fn common_args() -> Vec<String> {
    vec![
        "--session-timeout-ms".into(),
        SESSION_TIMEOUT.as_millis().to_string(),
        "--commit-interval-ms".into(),
        "500".into(),
    ]
}

fn worker_log_filter() -> String {
    std::env::var("LAGBALANCE_MIXED_WORKER_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "warn,lagbalance::group=debug".to_owned())
}

/// A scenario in progress: where its members log and audit, what was produced so far, and how to
/// fail with everything the reader needs.
struct Scene {
    label: String,
    bound: Duration,
    bootstrap: String,
    group: String,
    topic: String,
    dir: PathBuf,
    started: Instant,
    /// `started` as wall-clock ms (the audit's `ts_ms`).
    started_ms: u64,
    /// `(name, log, audit)` of every member ever started, in order.
    members: Vec<(String, PathBuf, PathBuf)>,
    ledger: LiveLedger,
}

impl Scene {
    fn args<'a>(&self, extra: &'a [String]) -> Vec<&'a str> {
        extra.iter().map(String::as_str).collect()
    }

    fn worker(&mut self, name: &str, assignor: Option<&str>) -> Worker {
        let mut extra = common_args();
        if let Some(a) = assignor {
            extra.extend(["--assignor".to_owned(), a.to_owned()]);
        }
        let filter = worker_log_filter();
        let w = Worker::spawn(
            &self.bootstrap,
            &self.group,
            &self.topic,
            name,
            &self.args(&extra),
            &[("RUST_LOG", filter.as_str())],
            &self.dir,
        )
        .unwrap_or_else(|e| self.fail(&format!("starting worker {name}"), e));
        self.members
            .push((name.to_owned(), w.log.clone(), w.audit.clone()));
        w
    }

    fn peer(&mut self, client: peers::Client, name: &str) -> Peer {
        let extra = common_args();
        let p = Peer::spawn(
            client,
            &self.bootstrap,
            &self.group,
            &self.topic,
            name,
            &self.args(&extra),
            &self.dir,
        )
        .unwrap_or_else(|e| self.fail(&format!("starting {client:?} peer {name}"), e));
        self.members
            .push((name.to_owned(), p.log.clone(), p.audit.clone()));
        p
    }

    fn step(&self, what: &str) {
        eprintln!(
            "[{} +{:5.1}s] {what}",
            self.label,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Wait until `members` own every partition evenly and stably, or fail.
    async fn balanced(&self, what: &str, members: &[&dyn Audited], limit: Duration) -> Ownership {
        let t = Instant::now();
        match wait_balanced(members, PARTITIONS, true, SETTLE, limit).await {
            Ok(own) => {
                let counts: Vec<String> = own
                    .iter()
                    .map(|(m, ps)| format!("{m}={}", ps.len()))
                    .collect();
                self.step(&format!(
                    "{what}: balanced after {:.1?} (incl. {SETTLE:?} settle): {}",
                    t.elapsed(),
                    counts.join(" ")
                ));
                own
            }
            Err(e) => self.fail(what, e),
        }
    }

    /// Fail unless `leader` is the member whose last `role` line says it leads, and none of
    /// `others` says so (librdkafka peers write no `role` lines).
    fn expect_leader(&self, after: &str, leader: &dyn Audited, others: &[&dyn Audited]) {
        let usurpers: Vec<&str> = others
            .iter()
            .filter(|m| is_leader(**m))
            .map(|m| m.name())
            .collect();
        if !is_leader(leader) || !usurpers.is_empty() {
            self.fail(
                &format!("{} still leads after {after}", leader.name()),
                format!(
                    "its last role line says leader={}; leading per their role lines: {usurpers:?}",
                    is_leader(leader)
                ),
            );
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        self.members.iter().map(|(_, _, a)| a.clone()).collect()
    }

    fn produced_so_far(&self) -> BTreeSet<(NamedPartition, i64)> {
        let ledger = self.ledger.lock().map(|l| l.clone()).unwrap_or_default();
        ledger
            .into_iter()
            .flat_map(|(tp, offsets)| offsets.into_iter().map(move |o| (tp.clone(), o)))
            .collect()
    }

    /// Print the audit of `produced` (so far): the summary, and for every partition how long it
    /// went unowned while a member was live, and who owned it when.
    fn print_audit(&self, produced: &BTreeSet<(NamedPartition, i64)>) {
        let files = self.files();
        let report = match audit::check(&files, produced) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("audit unreadable: {e:#}");
                return;
            }
        };
        let t0 = self.started_ms;
        let rel = |ms: u64| format!("+{:.1}s", ms.saturating_sub(t0) as f64 / 1000.0);
        let (worst, from, len) = report.longest_unowned.clone().unwrap_or_default();
        eprintln!(
            "=== audit of {} (times +s since the scenario began, as in its steps) ===\n\
             {} produced so far, {} consumed, {} redelivered, {} ownership changes, \
             {} overlaps, {} consumed unowned, {} missing; longest unowned {len} ms \
             ({worst:?} from {}; bound {} ms)",
            self.label,
            produced.len(),
            report.consumed,
            report.duplicates,
            report.ownership_changes,
            report.overlaps.len(),
            report.unowned_consumption.len(),
            report.missing.len(),
            rel(from),
            self.bound.as_millis()
        );
        for (m, a, b) in &report.live {
            eprintln!("  live: {m} {}..{}", rel(*a), rel(*b));
        }
        for o in report.overlaps.iter().take(5) {
            eprintln!("  overlap: {o:?}");
        }
        for (tp, gaps) in unowned_stretches(&self.topic, &report) {
            let total: u64 = gaps.iter().map(|(_, l)| l).sum();
            let longest = gaps.iter().map(|(_, l)| *l).max().unwrap_or(0);
            let long: Vec<String> = gaps
                .iter()
                .filter(|(_, l)| *l >= 1_000)
                .map(|(f, l)| format!("{} for {:.1}s", rel(*f), *l as f64 / 1000.0))
                .collect();
            let owners: Vec<String> = report
                .intervals
                .get(&tp)
                .into_iter()
                .flatten()
                .map(|i| format!("{} {}..{}", i.member, rel(i.start), rel(i.end)))
                .collect();
            eprintln!(
                "  {}-{}: unowned {:.1}s in all, longest {:.1}s{}{}; owners: {}",
                tp.0,
                tp.1,
                total as f64 / 1000.0,
                longest as f64 / 1000.0,
                if longest as u128 > self.bound.as_millis() {
                    " (OVER THE BOUND)"
                } else {
                    ""
                },
                if long.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", long.join(", "))
                },
                if owners.is_empty() {
                    "nobody, ever".to_owned()
                } else {
                    owners.join(", ")
                }
            );
        }
    }

    /// Remove the audit directory of a passing run, unless asked to keep it.
    fn cleanup(&self) {
        if keep_logs() {
            eprintln!("(audit files and logs kept in {})", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn print_logs(&self) {
        for (name, log, _) in &self.members {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- {name}: last lines of {} ---\n{}",
                log.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        eprintln!("(audit files and full logs kept in {})", self.dir.display());
    }

    /// Fail the scenario: the audit so far, every member's log tail, then panic.
    fn fail(&self, what: &str, err: impl std::fmt::Display) -> ! {
        self.step(&format!("FAILED: {what}: {err}"));
        self.print_audit(&self.produced_so_far());
        self.print_logs();
        panic!("{}: {what}: {err}", self.label)
    }

    /// The final audit against everything produced: print the figures, and on any finding the
    /// per-partition audit and the logs before [`audit::assert_clean`] fails.
    /// The end of a scenario: the audit ([`Scene::finish`]), every member in `members` owned a
    /// partition at some point, then the time taken and the clean-up.
    fn conclude(
        &self,
        produced: &BTreeSet<(NamedPartition, i64)>,
        members: &[&str],
        started: Instant,
    ) {
        let report = self.finish(produced);
        for name in members {
            assert!(
                report.ever_owned(name),
                "{}: {name} never owned a partition",
                self.label
            );
        }
        eprintln!("{} done in {:.1?}", self.label, started.elapsed());
        self.cleanup();
    }

    fn finish(&self, produced: &BTreeSet<(NamedPartition, i64)>) -> Report {
        let files = self.files();
        let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let report = audit::check(&paths, produced).expect("audit files readable");
        let unowned_ms = report.longest_unowned.as_ref().map_or(0, |(_, _, l)| *l);
        if !report.is_clean() || u128::from(unowned_ms) > self.bound.as_millis() {
            self.print_audit(produced);
            self.print_logs();
        } else {
            self.print_longest_gaps(&report);
        }
        audit::assert_clean(&self.label, &paths, produced, self.bound)
    }

    /// The three longest unowned stretches, in the scenario's time (`+s` since its start), to
    /// tell which step they belong to.
    fn print_longest_gaps(&self, report: &Report) {
        let t0 = self.started_ms;
        let mut gaps: Vec<(u64, NamedPartition, u64)> = unowned_stretches(&self.topic, report)
            .into_iter()
            .flat_map(|(tp, g)| g.into_iter().map(move |(f, l)| (l, tp.clone(), f)))
            .collect();
        gaps.sort_unstable_by(|a, b| b.cmp(a));
        let top: Vec<String> = gaps
            .iter()
            .take(3)
            .map(|(l, tp, f)| {
                format!(
                    "{}-{} {:.1}s from +{:.1}s",
                    tp.0,
                    tp.1,
                    *l as f64 / 1000.0,
                    f.saturating_sub(t0) as f64 / 1000.0
                )
            })
            .collect();
        self.step(&format!("longest unowned stretches: {}", top.join("; ")));
    }
}

/// Every stretch, per partition of `topic`, in which it had no owner while some member was live:
/// `(from ms, length ms)`.
fn unowned_stretches(topic: &str, report: &Report) -> Vec<(NamedPartition, Vec<(u64, u64)>)> {
    fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (a, b) in v {
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        out
    }
    let live = merge(report.live.iter().map(|(_, a, b)| (*a, *b)).collect());
    (0..PARTITIONS)
        .map(|p| {
            let tp = (topic.to_owned(), p);
            let owned = merge(
                report
                    .intervals
                    .get(&tp)
                    .into_iter()
                    .flatten()
                    .map(|i| (i.start, i.end))
                    .collect(),
            );
            let mut gaps = Vec::new();
            for &(a, b) in &live {
                let mut cursor = a;
                for &(s, e) in owned.iter().filter(|(s, e)| *e > a && *s < b) {
                    if s.min(b) > cursor {
                        gaps.push((cursor, s.min(b) - cursor));
                    }
                    cursor = cursor.max(e);
                }
                if b > cursor {
                    gaps.push((cursor, b - cursor));
                }
            }
            (tp, gaps)
        })
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether to keep the audit files and logs of a passing run (`LAGBALANCE_MIXED_KEEP_LOGS=1`).
fn keep_logs() -> bool {
    std::env::var("LAGBALANCE_MIXED_KEEP_LOGS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A broker, a topic, a group and a producer running until [`Scene`]'s scenario stops it.
struct Setup {
    _broker: TestBroker,
    scene: Scene,
    stop: Arc<AtomicBool>,
    producing: tokio::task::JoinHandle<anyhow::Result<BTreeSet<(NamedPartition, i64)>>>,
}

async fn setup(kind: BrokerKind, what: &str, bound: Duration) -> Setup {
    let t = Instant::now();
    peers::build().expect("building the peers (integration/peers/build)");
    let broker = TestBroker::start_kind(kind).await.expect("broker");
    let label = format!("{what} on {}", broker.label());
    eprintln!(
        "[{label}] peers built and broker {} ready in {:.1?}; liveness bound {bound:?}",
        broker.bootstrap,
        t.elapsed()
    );
    let client = Client::new(ClientConfig::new(&broker.bootstrap)).unwrap();
    let topic = unique("mixed");
    let group = unique("g");
    client.create_topic(&topic, PARTITIONS, 1).await.unwrap();
    let dir = unique_temp_dir("mixed-audit").unwrap();
    let ledger = LiveLedger::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn(produce_until(
        client,
        topic.clone(),
        PARTITIONS,
        RATE,
        stop.clone(),
        Some(ledger.clone()),
    ));
    Setup {
        scene: Scene {
            label,
            bound,
            bootstrap: broker.bootstrap.clone(),
            group,
            topic,
            dir,
            started: Instant::now(),
            started_ms: now_ms(),
            members: Vec::new(),
            ledger,
        },
        _broker: broker,
        stop,
        producing,
    }
}

/// Stop producing, wait (bounded) until everything produced was consumed.
async fn drain(s: Setup) -> (Scene, BTreeSet<(NamedPartition, i64)>, TestBroker) {
    let Setup {
        _broker,
        scene,
        stop,
        producing,
    } = s;
    stop.store(true, Ordering::Relaxed);
    let produced = match tokio::time::timeout(Duration::from_secs(30), producing).await {
        Ok(Ok(Ok(p))) => p,
        Ok(Ok(Err(e))) => scene.fail("producing", format!("{e:#}")),
        Ok(Err(e)) => scene.fail("producing", e),
        Err(_) => scene.fail("producing", "the producer did not finish within 30 s"),
    };
    let files = scene.files();
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    if let Err(e) = audit::wait_all_consumed(&paths, &produced, DRAIN_LIMIT).await {
        scene.fail("every produced record consumed", e);
    }
    scene.step(&format!("all {} produced records consumed", produced.len()));
    (scene, produced, _broker)
}

/// SIGTERM and a bounded wait for a clean exit, without blocking the runtime's other thread.
fn terminate(scene: &Scene, name: &str, f: impl FnOnce() -> anyhow::Result<()>) {
    if let Err(e) = tokio::task::block_in_place(f) {
        scene.fail(&format!("{name} exits cleanly on SIGTERM"), e);
    }
    scene.step(&format!("{name} left cleanly"));
}

/// Our worker leads a cooperative-sticky group that a Java peer (`with_java`), a librdkafka and a
/// kafka-python peer join.
async fn our_member_leads(kind: BrokerKind, with_java: bool) {
    let started = Instant::now();
    let mut s = setup(kind, "our member leading", OUR_LEADER_BOUND).await;
    let sc = &mut s.scene;
    let mut ours = sc.worker("ours", Some("cooperative-sticky"));
    sc.balanced("ours alone", &[&ours], step_limit(kind)).await;
    sc.expect_leader("starting alone", &ours, &[]);
    // The Java peer, when there is one, joins first and is killed at the end.
    let mut java = with_java.then(|| sc.peer(peers::Client::Java, "java"));
    if let Some(j) = &java {
        sc.balanced("+ java", &[&ours, j], step_limit(kind)).await;
        sc.expect_leader("java joined", &ours, &[j]);
    }
    let mut cf = sc.peer(peers::Client::Confluent, "confluent");
    {
        let mut m: Vec<&dyn Audited> = vec![&ours];
        m.extend(java.iter().map(|j| j as &dyn Audited));
        m.push(&cf);
        sc.balanced("+ confluent", &m, step_limit(kind)).await;
        sc.expect_leader("confluent joined", &ours, &m[1..]);
    }
    let mut kp = sc.peer(peers::Client::KafkaPython, "kafka-python");
    {
        let mut m: Vec<&dyn Audited> = vec![&ours];
        m.extend(java.iter().map(|j| j as &dyn Audited));
        m.extend([&cf as &dyn Audited, &kp]);
        sc.balanced("+ kafka-python", &m, step_limit(kind)).await;
        sc.expect_leader("kafka-python joined", &ours, &m[1..]);
    }

    // On tansu the joins are the case (the reported stall); its leader moves to a peer when one
    // leaves (no barrier decides who rejoins first), which would make it another test.
    if !kind.is_kafka() {
        let (scene, produced, _broker) = drain(s).await;
        terminate(&scene, "confluent", || cf.terminate(EXIT_LIMIT));
        terminate(&scene, "kafka-python", || kp.terminate(EXIT_LIMIT));
        terminate(&scene, "ours", || ours.terminate(EXIT_LIMIT));
        scene.conclude(&produced, &["ours", "confluent", "kafka-python"], started);
        return;
    }
    // librdkafka leaves cleanly (revoke with commit, LeaveGroup) while records arrive.
    terminate(sc, "confluent", || cf.terminate(EXIT_LIMIT));
    let limit = OUR_LEADER_BOUND + SETTLE + Duration::from_secs(10);
    {
        let mut m: Vec<&dyn Audited> = vec![&ours];
        m.extend(java.iter().map(|j| j as &dyn Audited));
        m.push(&kp);
        sc.balanced("confluent left", &m, limit).await;
        sc.expect_leader("confluent left", &ours, &m[1..]);
    }
    if let Some(j) = java.as_mut() {
        // Java dies without a word: its partitions come back once the coordinator expires it.
        j.kill();
        sc.step("java killed (kill -9)");
        sc.balanced("java's partitions handed on", &[&ours, &kp], limit)
            .await;
        sc.expect_leader("java was killed", &ours, &[&kp]);
    }

    let (scene, produced, _broker) = drain(s).await;
    terminate(&scene, "kafka-python", || kp.terminate(EXIT_LIMIT));
    terminate(&scene, "ours", || ours.terminate(EXIT_LIMIT));
    let names: &[&str] = if with_java {
        &["ours", "java", "confluent", "kafka-python"]
    } else {
        &["ours", "confluent", "kafka-python"]
    };
    scene.conclude(&produced, names, started);
}

/// A Java peer leads; two of our workers join (one offering only cooperative-sticky, one our
/// default list), one leaves cleanly, one is killed.
async fn java_leads_our_members(kind: BrokerKind) {
    let started = Instant::now();
    let mut s = setup(kind, "java leading our members", JAVA_LEADER_BOUND).await;
    let sc = &mut s.scene;
    let mut java = sc.peer(peers::Client::Java, "java");
    sc.balanced("java alone", &[&java], STEP_LIMIT).await;
    sc.expect_leader("starting alone", &java, &[]);
    let mut sticky = sc.worker("ours-sticky", Some("cooperative-sticky"));
    sc.balanced("+ ours-sticky", &[&java, &sticky], STEP_LIMIT)
        .await;
    sc.expect_leader("ours-sticky joined", &java, &[&sticky]);
    // Our default list, `lagbalance,cooperative-sticky`: the group runs cooperative-sticky, the
    // only protocol every member offers.
    let mut default = sc.worker("ours-default", None);
    sc.balanced(
        "+ ours-default (lagbalance,cooperative-sticky)",
        &[&java, &sticky, &default],
        STEP_LIMIT,
    )
    .await;
    sc.expect_leader("ours-default joined", &java, &[&sticky, &default]);

    terminate(sc, "ours-sticky", || sticky.terminate(EXIT_LIMIT));
    let limit = JAVA_LEADER_BOUND + SETTLE + Duration::from_secs(10);
    sc.balanced("ours-sticky left", &[&java, &default], limit)
        .await;
    sc.expect_leader("ours-sticky left", &java, &[&default]);
    default.kill();
    sc.step("ours-default killed (kill -9)");
    sc.balanced("ours-default's partitions handed on", &[&java], limit)
        .await;

    let (scene, produced, _broker) = drain(s).await;
    terminate(&scene, "java", || java.terminate(EXIT_LIMIT));
    scene.conclude(&produced, &["java", "ours-sticky", "ours-default"], started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_our_member_leads_a_mixed_group() {
    let _turn = ONE_AT_A_TIME.lock().await;
    our_member_leads(BrokerKind::KAFKA, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_java_leads_our_members() {
    let _turn = ONE_AT_A_TIME.lock().await;
    java_leads_our_members(BrokerKind::KAFKA).await;
}

/// Reported: on tansu our leader gave every peer an empty assignment generation after generation
/// (9 of 12 partitions unowned for 80 s, a librdkafka and a kafka-python member). Rules 15 and 16
/// (docs/group-protocol.md) end the stall. Two double-ownership paths rule 15 had opened (a
/// claim ignored while its member had not yet synced the plan taking the partition away; rule
/// 13's hold cut short) are closed since session 6: 0 overlaps in the runs since. But the group
/// does not settle within 60 s once kafka-python joins: two partitions keep moving between
/// the librdkafka member, the kafka-python member and nobody (40 ownership changes in 79 s).
/// Open in issue 12 (docs/kafka.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "tansu: with kafka-python the group does not settle within 60 s (issue 12, docs/kafka.md); run with -- --ignored"]
async fn tansu_our_member_leads_a_mixed_group() {
    let _turn = ONE_AT_A_TIME.lock().await;
    our_member_leads(BrokerKind::Tansu, false).await;
}

/// With a Java peer as well, on tansu: the Java member never completes a SyncGroup. tansu holds
/// each of its JoinGroups 3 s and every one of them changes its metadata (its subscription carries
/// the generation it last saw), which on tansu starts a new generation before the answer arrives;
/// its SyncGroup then answers REBALANCE_IN_PROGRESS, round after round. When tansu made the Java
/// member leader instead, its cooperative-sticky trusted stale claims and two peers owned the same
/// partitions (docs/tansu-quirks.md). A broker problem; on Kafka the same group passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "tansu 0.6.0 starves a Java member (docs/tansu-quirks.md); run with -- --ignored"]
async fn tansu_our_member_leads_a_mixed_group_with_java() {
    let _turn = ONE_AT_A_TIME.lock().await;
    our_member_leads(BrokerKind::Tansu, true).await;
}
