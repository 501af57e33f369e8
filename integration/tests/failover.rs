//! Coordinator failover on Apache Kafka 4.1.1's 3-node KRaft cluster: a group of our workers
//! consumes a replicated topic (×3) while records are produced with `acks=all`; a fourth worker
//! joins, and the moment the first cooperative round of that rebalance has made a member revoke
//! partitions — the second round's JoinGroup is in flight, the revoked partitions have no owner —
//! the group's coordinator is `kill -9`ed. The producer must ride through (retrying to the new
//! partition leaders); the members must lose their connections (or hear NOT_COORDINATOR /
//! COORDINATOR_LOAD_IN_PROGRESS), find the new coordinator
//! once the controller has fenced the dead broker and moved the `__consumer_offsets` partition,
//! and settle again — with no partition owned twice, every acknowledged record consumed, the
//! committed offsets intact on the new coordinator, few redeliveries, and no partition without
//! an owner longer than [`liveness_bound`]. The killed node is restarted at the end; the group
//! must be settled again with it back (the figures say whether any partition moved meanwhile).
//!
//! ```text
//! cargo build -p lagbalance --examples
//! cargo test -p lagbalance-integration --test failover -- --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lagbalance::producer::{Producer, ProducerConfig};
use lagbalance::records::ProducerRecord;
use lagbalance::NamedPartition;
use lagbalance::{Client, ClientConfig};
use lagbalance_integration::audit;
use lagbalance_integration::broker::BrokerKind;
use lagbalance_integration::workers::{wait_balanced, Worker};
use lagbalance_integration::{unique, unique_temp_dir, TestBroker};
use tokio::sync::watch;

const PARTITIONS: i32 = 12;
const REPLICATION: i16 = 3;
/// Records per second, `acks=all`.
const RATE: f64 = 100.0;
/// A member's session. Long enough that a member keeps its partitions through the failover
/// (it gives them up after `SESSION − HEARTBEAT` without contact, docs/group-protocol.md
/// rule 5, and the failover takes up to [`FAILOVER`]).
const SESSION: Duration = Duration::from_secs(20);
const HEARTBEAT: Duration = Duration::from_secs(3);
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// The broker side of a coordinator failover: the controller fences a broker that stopped
/// heartbeating after `broker.session.timeout.ms` (9 s, KRaft's default), and moves the
/// leadership of its partitions — `__consumer_offsets` too — to another in-sync replica. If
/// the killed node was also the active controller, the quorum first elects a new one
/// (`controller.quorum.election.timeout.ms` 1 s after `controller.quorum.fetch.timeout.ms` 2 s),
/// which counts broker sessions from its own start: up to 3 s more. The new coordinator then
/// loads the group from the log (under a second here). Measured: 8.7–12.3 s from the kill to
/// FindCoordinator naming the new node.
const FAILOVER: Duration = Duration::from_secs(9 + 3 + 1);
/// A rebalance round once the coordinator is back: members hear of it within a heartbeat,
/// JoinGroup and SyncGroup take well under a second on loopback; a cooperative assignor needs
/// two rounds to move a partition (revoke, then assign), and a new lagbalance/cooperative
/// leader that lacks history runs one follow-up round after a heartbeat interval
/// (docs/group-protocol.md rules 3 and 8).
const ROUND: Duration = Duration::from_secs(3 + 1);

/// The longest a partition may go without an owner while a member is live. Worst case: the
/// partition was revoked in the first cooperative round of the newcomer's rebalance just
/// before the kill (so its hand-over waits for the failover), and after the failover the
/// group needs three rounds — the interrupted rebalance again (revoke, assign) and a new
/// leader's follow-up. A member missing from a leader's plan would add a session timeout
/// (rule 13); Kafka's join barrier keeps that from happening here.
fn liveness_bound() -> Duration {
    FAILOVER + 3 * ROUND
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the producer achieved.
#[derive(Default)]
struct Produced {
    /// Every acknowledged record, `(partition, offset)`: the records the audit must find.
    acked: BTreeSet<(NamedPartition, i64)>,
    /// Acknowledgement times (ms since epoch) of `acked`, in no particular order.
    acked_at: Vec<u64>,
    /// Records whose delivery failed for good (not counted as produced).
    failed: usize,
    /// `send` refused the record (no metadata).
    refused: usize,
    /// The slowest acknowledgement.
    slowest: Duration,
}

/// Produce at `RATE` until `stop` turns true, then wait (bounded by the delivery timeout) for
/// every delivery result.
async fn produce_until(client: Client, topic: String, mut stop: watch::Receiver<bool>) -> Produced {
    let config = ProducerConfig {
        // Far beyond the failover: a record fails only if the cluster never recovers.
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let producer = Arc::new(Producer::new(client, config).expect("producer"));
    let started = Instant::now();
    let mut deliveries = tokio::task::JoinSet::new();
    let mut out = Produced::default();
    for i in 0u64.. {
        let at = started + Duration::from_secs_f64(i as f64 / RATE);
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let record = ProducerRecord::new(&topic)
            .key(format!("k{i}"))
            .value(format!("v{i}"));
        let sent = Instant::now();
        match producer.send(record).await {
            Ok(delivery) => {
                deliveries.spawn(async move { (delivery.await, sent.elapsed(), now_ms()) });
            }
            Err(e) => {
                eprintln!("send refused: {e}");
                out.refused += 1;
            }
        }
    }
    let _ = producer.flush().await;
    while let Some(joined) = deliveries.join_next().await {
        let (result, latency, at) = joined.expect("delivery task");
        match result {
            Ok(m) => {
                out.acked.insert(((m.topic, m.partition), m.offset));
                out.acked_at.push(at);
                out.slowest = out.slowest.max(latency);
            }
            Err(e) => {
                if out.failed == 0 {
                    eprintln!("first failed delivery: {e}");
                }
                out.failed += 1;
            }
        }
    }
    let _ = producer.close().await;
    out
}

/// The coordinator's node id as FindCoordinator reports it.
async fn coordinator_node(client: &Client, group: &str) -> i32 {
    tokio::time::timeout(Duration::from_secs(30), client.find_coordinator(group))
        .await
        .expect("FindCoordinator within 30 s")
        .expect("FindCoordinator")
        .node_id
}

/// Committed offsets of every partition of `topic` for `group` (bounded).
async fn committed(client: &Client, group: &str, topic: &str) -> BTreeMap<NamedPartition, i64> {
    let tps: Vec<NamedPartition> = (0..PARTITIONS).map(|p| (topic.to_owned(), p)).collect();
    tokio::time::timeout(
        Duration::from_secs(30),
        client.offset_fetch(group, Some(&tps)),
    )
    .await
    .expect("OffsetFetch within 30 s")
    .expect("OffsetFetch")
}

/// The latest ownership change (assigned / revoked / lost) in the members' audit logs, ms.
fn last_ownership_change(files: &[&Path]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| matches!(v["event"].as_str(), Some("assigned" | "revoked" | "lost")))
                .filter_map(|v| v["ts_ms"].as_u64())
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
}

/// How often each worker's log says it lost its coordinator, and why (distinct reasons).
fn rediscoveries(log: &Path) -> (usize, BTreeSet<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut n = 0;
    let mut why = BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| l.contains("coordinator lost; rediscovering"))
    {
        n += 1;
        if let Some(rest) = line.split("why=").nth(1) {
            // Keep the kind of failure, not the address or the request id.
            let reason: String = rest
                .trim_matches('"')
                .split(|c: char| c.is_ascii_digit() || c == '(')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            why.insert(reason);
        }
    }
    (n, why)
}

async fn run_failover(assignor: &str) {
    let scenario = Instant::now();
    let broker = TestBroker::start_own_kind(BrokerKind::KAFKA, 3)
        .await
        .expect("3-node Kafka cluster");
    let nodes = broker.nodes();
    assert_eq!(nodes.len(), 3, "three nodes: {nodes:?}");
    let label = format!("{assignor} on {} ×3, coordinator killed", broker.label());
    eprintln!(
        "{label}: cluster up after {:.1} s",
        scenario.elapsed().as_secs_f64()
    );
    let client = Client::new(ClientConfig::new(&broker.bootstrap)).unwrap();
    let topic = unique("failover");
    let group = unique("g");
    client
        .create_topic(&topic, PARTITIONS, REPLICATION)
        .await
        .unwrap();
    let dir = unique_temp_dir("failover").unwrap();
    // Kept when the test fails (or with LAGBALANCE_FAILOVER_KEEP_LOGS=1).
    eprintln!("{label}: worker logs and audits in {}", dir.display());
    let session = SESSION.as_millis().to_string();
    let heartbeat = HEARTBEAT.as_millis().to_string();
    let commit = COMMIT_INTERVAL.as_millis().to_string();
    let args = [
        "--assignor",
        assignor,
        "--session-timeout-ms",
        &session,
        "--heartbeat-interval-ms",
        &heartbeat,
        "--commit-interval-ms",
        &commit,
    ];
    // The machine says at info level when it loses the coordinator, and why.
    // LAGBALANCE_FAILOVER_WORKER_LOG=lagbalance=debug keeps every request and plan.
    let filter = std::env::var("LAGBALANCE_FAILOVER_WORKER_LOG")
        .unwrap_or_else(|_| "warn,lagbalance::group=info".to_owned());
    let env = [("RUST_LOG", filter.as_str())];
    let spawn = |name: &str| {
        Worker::spawn(&broker.bootstrap, &group, &topic, name, &args, &env, &dir).expect("worker")
    };

    // FindCoordinator creates `__consumer_offsets` on a new cluster, and its partition then
    // loads: wait for that here, so the members' first join does not count against liveness.
    let _ = tokio::time::timeout(Duration::from_secs(60), client.describe_group(&group)).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let producing = tokio::spawn(produce_until(client.clone(), topic.clone(), stop_rx));

    let limit = Duration::from_secs(60);
    let settle = Duration::from_secs(4);
    let even = assignor == "cooperative-sticky";
    let mut a = spawn("a");
    let mut b = spawn("b");
    let mut c = spawn("c");
    wait_balanced(&[&a, &b, &c], PARTITIONS, even, settle, limit)
        .await
        .expect("a + b + c");

    // Committed offsets before the kill: the new coordinator must have them (or newer ones).
    let before = committed(&client, &group, &topic).await;
    assert_eq!(
        before.len(),
        PARTITIONS as usize,
        "every partition committed before the kill: {before:?}"
    );
    let coordinator = coordinator_node(&client, &group).await;

    // A fourth member joins. Its first cooperative round makes a, b and c revoke what d is to
    // get; the moment one of them has revoked, it is rejoining for the second round, which
    // hands those partitions to d. Kill the coordinator then: the revoked partitions have no
    // owner until the group completes that round on the new coordinator.
    let old: Vec<PathBuf> = [&a, &b, &c].iter().map(|w| w.audit.clone()).collect();
    let revocations = |paths: &[PathBuf]| {
        paths
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.matches(r#""event":"revoked""#).count())
            .sum::<usize>()
    };
    let revoked_before = revocations(&old);
    let mut d = spawn("d");
    let rebalance_ms = now_ms();
    let deadline = Instant::now() + Duration::from_secs(30);
    while revocations(&old) == revoked_before {
        assert!(
            Instant::now() < deadline,
            "{label}: nobody revoked anything within 30 s of d's start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = tokio::time::timeout(Duration::from_secs(2), client.describe_group(&group))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|g| g.state)
        .unwrap_or_default();
    broker.kill_node(coordinator).expect("kill the coordinator");
    let killed = Instant::now();
    let killed_ms = now_ms();
    eprintln!("{label}: killed node {coordinator} (the coordinator) during {state}");
    assert!(
        state == "PreparingRebalance" || state == "CompletingRebalance",
        "{label}: the coordinator was killed outside a rebalance (state {state:?})"
    );

    // FindCoordinator answers the dead node until the controller fences it.
    let moved = loop {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(5), client.find_coordinator(&group)).await
        {
            if c.node_id != coordinator {
                break c.node_id;
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "{label}: the coordinator did not move within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let moved_after = killed.elapsed();
    eprintln!(
        "{label}: coordinator moved to node {moved} after {:.1} s",
        moved_after.as_secs_f64()
    );
    let paths: Vec<PathBuf> = [&a, &b, &c, &d].iter().map(|w| w.audit.clone()).collect();
    let files: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let settled = wait_balanced(
        &[&a, &b, &c, &d],
        PARTITIONS,
        even,
        settle,
        Duration::from_secs(90),
    )
    .await
    .expect("a + b + c + d after the failover");
    let settled_ms = last_ownership_change(&files);
    let settled_after = Duration::from_millis(settled_ms.saturating_sub(killed_ms));
    eprintln!(
        "{label}: group settled {:.1} s after the kill (last ownership change)",
        settled_after.as_secs_f64()
    );

    // The new coordinator kept every commit the old one acknowledged.
    let after = committed(&client, &group, &topic).await;
    let regressed: Vec<(&NamedPartition, i64, Option<&i64>)> = before
        .iter()
        .filter(|(tp, o)| after.get(*tp).is_none_or(|n| n < *o))
        .map(|(tp, o)| (tp, *o, after.get(tp)))
        .collect();
    assert!(
        regressed.is_empty(),
        "{label}: committed offsets lost in the failover (partition, before, after): {regressed:?}"
    );
    // The new coordinator runs the group: Stable with all four (a leader's follow-up round may
    // be under way right now, so wait for it, bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let g = tokio::time::timeout(Duration::from_secs(10), client.describe_group(&group))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|g| (g.state, g.members.len()));
        if g.as_ref()
            .is_some_and(|(state, n)| state == "Stable" && *n == 4)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: the group is not Stable with 4 members on the new coordinator: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Bring the node back (the cluster is whole again for whatever runs next): it returns as a
    // follower of `__consumer_offsets` (preferred-leader election runs every 5 min), so the
    // coordinator stays put and the group must settle with it back. cooperative-sticky moves
    // nothing then; lagbalance may move load (the restarting JVM takes CPU from the workers).
    let restart_started = Instant::now();
    // `restart_node` blocks on the script until the JVM is up: not on a runtime thread.
    tokio::task::block_in_place(|| broker.restart_node(coordinator))
        .expect("restart the killed node");
    eprintln!(
        "{label}: node {coordinator} back after {:.1} s",
        restart_started.elapsed().as_secs_f64()
    );
    // Records keep flowing for a while with the node back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let back = wait_balanced(&[&a, &b, &c, &d], PARTITIONS, even, settle, limit)
        .await
        .expect("a + b + c + d with the node back");
    let moved_on_return: usize = back
        .iter()
        .map(|(m, owned)| owned.difference(&settled[m]).count())
        .sum();

    stop_tx.send(true).unwrap();
    let produced = tokio::time::timeout(Duration::from_secs(90), producing)
        .await
        .expect("producer finished within its delivery timeout")
        .unwrap();
    audit::wait_all_consumed(&files, &produced.acked, Duration::from_secs(60))
        .await
        .unwrap();
    let workers: [&mut Worker; 4] = [&mut a, &mut b, &mut c, &mut d];
    let mut logs: Vec<(String, PathBuf)> = Vec::new();
    for w in workers {
        logs.push((w.name.clone(), w.log.clone()));
        w.terminate(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{}: {e}", w.name));
    }

    let report = audit::assert_clean(&label, &files, &produced.acked, liveness_bound());
    // Only an uncommitted window can be redelivered: from the newcomer's arrival (while a
    // round completes, commits answer REBALANCE_IN_PROGRESS; a commit-before-revoke in flight
    // when the coordinator dies is lost, and that partition's new owner starts at the older
    // commit) until the coordinator moved (no commit lands before), plus a commit interval.
    // Once the coordinator is back, every revocation commits first. Lost or reset committed
    // offsets would replay from the start (`earliest`). Measured: 0–45 with the fix of
    // 4408a2d (a member's commit-before-revoke cut by the kill); 18 and 66 before it (members
    // lost all their partitions uncommitted).
    let window = (
        rebalance_ms,
        killed_ms + (moved_after + COMMIT_INTERVAL).as_millis() as u64,
    );
    let in_window = produced
        .acked_at
        .iter()
        .filter(|t| (window.0..=window.1).contains(*t))
        .count();
    let mut rediscovered = Vec::new();
    for (name, log) in &logs {
        let (n, why) = rediscoveries(log);
        assert!(
            n > 0,
            "{label}: {name} never lost its coordinator (log {})",
            log.display()
        );
        rediscovered.push(format!("{name} {n}× {why:?}"));
    }
    // Partitions given up without a commit (`lost`): where redeliveries come from.
    let lost: Vec<String> = files
        .iter()
        .zip(&logs)
        .filter_map(|(f, (name, _))| {
            let text = std::fs::read_to_string(f).ok()?;
            let n = text.matches(r#""event":"lost""#).count();
            (n > 0).then(|| format!("{name} {n}×"))
        })
        .collect();
    let (_, _, longest) = report.longest_unowned.clone().unwrap_or_default();
    eprintln!(
        "{label}: FIGURES kill→coordinator moved {:.1} s, kill→settled {:.1} s, longest unowned \
         {:.1} s (bound {:.0} s), duplicates {} (bound {in_window}: the uncommitted window's \
         records), acked {} / failed {} / refused {}, slowest ack {:.1} s, partitions moved \
         while the node came back {moved_on_return}, scenario {:.0} s",
        moved_after.as_secs_f64(),
        settled_after.as_secs_f64(),
        longest as f64 / 1000.0,
        liveness_bound().as_secs_f64(),
        report.duplicates,
        produced.acked.len(),
        produced.failed,
        produced.refused,
        produced.slowest.as_secs_f64(),
        scenario.elapsed().as_secs_f64(),
    );
    eprintln!("{label}: rediscoveries: {}", rediscovered.join("; "));
    eprintln!("{label}: members that lost partitions (no commit): {lost:?}");
    assert_eq!(
        (produced.failed, produced.refused),
        (0, 0),
        "{label}: the producer did not ride through the failover"
    );
    assert!(
        report.duplicates <= in_window,
        "{label}: {} redelivered, more than the {in_window} records of the uncommitted window",
        report.duplicates
    );
    if std::env::var_os("LAGBALANCE_FAILOVER_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// One scenario at a time: each runs a 3-node cluster and four workers on a small machine, and
/// the timing they are judged by should not depend on a neighbour.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_lagbalance_group_survives_coordinator_kill_mid_rebalance() {
    let _turn = ONE_AT_A_TIME.lock().await;
    run_failover("lagbalance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cooperative_sticky_group_survives_coordinator_kill_mid_rebalance() {
    let _turn = ONE_AT_A_TIME.lock().await;
    run_failover("cooperative-sticky").await;
}
