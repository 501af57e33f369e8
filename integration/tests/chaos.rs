//! The chaos suite (issue 6) on tansu: forced rebalances, `kill -9` mid-rebalance, SIGSTOP past
//! the session timeout, a static member restarted under the same `group.instance.id`, and the
//! sidecar agent killed and restarted — all while records are produced. Each run must show no
//! partition owned by two members at any instant, no record lost, and only duplicates that a
//! crashed or fenced member's uncommitted window explains (`lagbalance_integration::chaos`).
//!
//! The short run is part of `cargo test --workspace`. The long run:
//!
//! ```text
//! LAGBALANCE_CHAOS_REBALANCES=100 LAGBALANCE_CHAOS_CYCLES=3 \
//!     cargo test -p lagbalance-integration --test chaos chaos_long -- --ignored --nocapture
//! ```

use lagbalance_integration::chaos::{self, ChaosConfig, ChaosOutcome};
use lagbalance_integration::TestBroker;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `LAGBALANCE_CHAOS_FAULTS=kill,stop,static,agent` picks the faults (default: all but
/// `static`, see `static_member_restart`).
fn faults() -> chaos::Faults {
    let Ok(list) = std::env::var("LAGBALANCE_CHAOS_FAULTS") else {
        return chaos::Faults::tansu();
    };
    let on = |f: &str| list.split(',').any(|x| x.trim() == f);
    chaos::Faults {
        kill_mid_rebalance: on("kill"),
        stop_past_session: on("stop"),
        static_restart: on("static"),
        agent_restart: on("agent"),
    }
}

fn assert_outcome(label: &str, cfg: &ChaosConfig, out: &ChaosOutcome) {
    eprintln!("{label}: {}", out.summary());
    for f in &out.faults {
        eprintln!("{label}: fault: {f}");
    }
    eprintln!("{label}: logs in {}", out.logs.display());
    let r = &out.report;
    assert!(
        r.overlaps.is_empty(),
        "{label}: double ownership: {:?}",
        r.overlaps
    );
    assert!(
        r.unowned_consumption.is_empty(),
        "{label}: consumed without owning: {:?}",
        &r.unowned_consumption[..r.unowned_consumption.len().min(10)]
    );
    assert!(
        r.missing.is_empty(),
        "{label}: {} records lost, e.g. {:?}",
        r.missing.len(),
        &r.missing[..r.missing.len().min(10)]
    );
    let d = &out.duplicates;
    assert_eq!(
        d.total(),
        r.duplicates,
        "{label}: the attribution saw the audit's duplicates"
    );
    assert!(
        d.unattributed.is_empty(),
        "{label}: {} duplicates not explained by a crash or a lost session: {:?}",
        d.unattributed.len(),
        &d.unattributed[..d.unattributed.len().min(10)]
    );
    assert!(
        out.forced >= cfg.rebalances,
        "{label}: only {} forced rebalances",
        out.forced
    );
    let _ = std::fs::remove_dir_all(&out.logs);
}

/// The short run of the default test command: 15 forced rebalances, and kill -9 mid-rebalance,
/// SIGSTOP past the session and the agent restart once each (about 3 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_short() {
    let broker = TestBroker::start().await.expect("broker");
    let mut cfg = ChaosConfig::short(env_usize("LAGBALANCE_CHAOS_SHORT_REBALANCES", 15));
    cfg.worker_log = std::env::var("LAGBALANCE_CHAOS_WORKER_LOG").ok();
    cfg.faults = faults();
    let out = chaos::run(&broker, &cfg).await.expect("chaos run");
    assert_outcome("chaos short", &cfg, &out);
}

/// A static member killed and restarted under the same `group.instance.id`. On tansu 0.6.0
/// the new process gets the old member id and the unchanged generation, its JoinGroup leaves the
/// group forming without a new generation (nobody else is told to rejoin), and its SyncGroup
/// answers REBALANCE_IN_PROGRESS forever: its partitions are never consumed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "tansu 0.6.0 never lets a restarted static member sync (README, Chaos suite); run with -- --ignored"]
async fn static_member_restart() {
    let broker = TestBroker::start().await.expect("broker");
    let mut cfg = ChaosConfig::short(2);
    cfg.faults = chaos::Faults {
        kill_mid_rebalance: false,
        stop_past_session: false,
        static_restart: true,
        agent_restart: false,
    };
    cfg.worker_log = std::env::var("LAGBALANCE_CHAOS_WORKER_LOG").ok();
    let out = chaos::run(&broker, &cfg).await.expect("chaos run");
    assert_outcome("static restart", &cfg, &out);
}

/// The long run (`LAGBALANCE_CHAOS_REBALANCES`, default 100; `LAGBALANCE_CHAOS_CYCLES`, default
/// 3 rounds of every fault).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run (about 18 minutes); run with -- --ignored (README, Chaos suite)"]
async fn chaos_long() {
    let broker = TestBroker::start().await.expect("broker");
    let mut cfg = ChaosConfig::short(env_usize("LAGBALANCE_CHAOS_REBALANCES", 100));
    cfg.cycles = env_usize("LAGBALANCE_CHAOS_CYCLES", 3);
    cfg.worker_log = std::env::var("LAGBALANCE_CHAOS_WORKER_LOG").ok();
    cfg.faults = faults();
    let out = chaos::run(&broker, &cfg).await.expect("chaos run");
    assert_outcome("chaos long", &cfg, &out);
}
