//! The chaos suite: a group of our workers on a real broker (Apache Kafka, or tansu with the
//! faults it survives), records produced throughout, and faults injected while the group
//! rebalances — forced rebalances through the control channel, `kill -9` of a member and of the
//! leader mid-rebalance, SIGSTOP past the session timeout then SIGCONT, a static member
//! (`group.instance.id`) restarted, a sidecar agent killed and restarted.
//!
//! Every run ends with the ownership audit (`crate::audit::check`: no partition owned by two
//! members at any instant, no record consumed without ownership, every acknowledged offset
//! consumed) and with [`attribute_duplicates`]: a record consumed twice is only acceptable when
//! the member that consumed it first crashed or lost the partition (session expired) within
//! `window` after consuming it — its uncommitted tail. A record redelivered after a clean
//! revocation (which commits first) fails the run.
//!
//! Every wait is a condition with a deadline. Everything listens on 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use lagbalance::control::{ControlClient, Op};
use lagbalance::NamedPartition;
use lagbalance::{Client, ClientConfig};

use crate::agents::Agent;
use crate::audit;
use crate::audit::Line;
use crate::workers::{is_leader, owned_by_audit, wait_balanced, Worker};
use crate::{unique, unique_temp_dir, TestBroker};

/// Which faults a run injects (each once per cycle), besides the forced rebalances.
#[derive(Clone, Debug)]
pub struct Faults {
    /// `kill -9` a non-leader right after a newcomer's join made a member revoke partitions
    /// (the cooperative hand-over is in flight).
    pub kill_mid_rebalance: bool,
    /// `kill -9` the leader the same way.
    pub kill_leader_mid_rebalance: bool,
    /// SIGSTOP a non-leader until the others took its partitions over, then SIGCONT.
    pub stop_past_session: bool,
    /// `kill -9` the static member and start a new process with the same `group.instance.id`.
    pub static_restart: bool,
    /// `kill -9` the sidecar agent, check the workers keep consuming, start a new one.
    pub agent_restart: bool,
}

impl Faults {
    pub fn all() -> Faults {
        Faults {
            kill_mid_rebalance: true,
            kill_leader_mid_rebalance: true,
            stop_past_session: true,
            static_restart: true,
            agent_restart: true,
        }
    }

    /// Every fault tansu 0.6.0 survives: not the static restart, after which tansu leaves the
    /// group forming under an unchanged generation and the restarted member's SyncGroup answers
    /// REBALANCE_IN_PROGRESS forever, and not the leader's death, which wedges the group
    /// (docs/tansu-quirks.md).
    pub fn tansu() -> Faults {
        Faults {
            static_restart: false,
            kill_leader_mid_rebalance: false,
            ..Faults::all()
        }
    }
}

/// Parameters of one chaos run.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// Forced rebalances to cause (each a rejoin over the control channel that produced a new
    /// generation).
    pub rebalances: usize,
    /// How many times the fault sequence runs, spread over the forced rebalances.
    pub cycles: usize,
    pub faults: Faults,
    pub partitions: i32,
    /// Records per second, round-robin over the partitions.
    pub rate: f64,
    pub session_timeout_ms: u64,
    pub commit_interval_ms: u64,
    /// How long before its last record a crashed / fenced member's consumption may be
    /// redelivered (its uncommitted window, with slack for a loaded machine).
    pub duplicate_window: Duration,
    /// `RUST_LOG` for the workers (e.g. `lagbalance=debug` for the leader's plans).
    pub worker_log: Option<String>,
}

impl ChaosConfig {
    /// The run of the default test command: ≥ `rebalances` forced rebalances, every fault
    /// the broker survives once.
    pub fn short(rebalances: usize, faults: Faults) -> ChaosConfig {
        ChaosConfig {
            rebalances,
            cycles: 1,
            faults,
            partitions: 8,
            rate: 100.0,
            session_timeout_ms: 10_000,
            commit_interval_ms: 200,
            duplicate_window: Duration::from_secs(3),
            worker_log: None,
        }
    }
}

/// Figures of a run.
#[derive(Debug, Default)]
pub struct ChaosOutcome {
    /// Distinct generations the members reached (forced rebalances, faults, follow-up rounds).
    pub rebalances: usize,
    /// Forced rebalances: rejoins requested over the control channel, each followed by a new
    /// generation and a settled group.
    pub forced: usize,
    /// Faults injected, in order, with what happened.
    pub faults: Vec<String>,
    pub produced: usize,
    pub report: audit::Report,
    pub duplicates: Duplicates,
    pub wall: Duration,
    pub logs: PathBuf,
}

impl ChaosOutcome {
    pub fn summary(&self) -> String {
        format!(
            "{} rebalances ({} forced rejoins), {} produced, {} consumed, {} overlaps, {} consumed unowned, {} lost, {} duplicates ({} attributed: {:?}; {} unattributed), max redelivery window {} ms, {:.0} s wall",
            self.rebalances,
            self.forced,
            self.produced,
            self.report.consumed,
            self.report.overlaps.len(),
            self.report.unowned_consumption.len(),
            self.report.missing.len(),
            self.duplicates.total(),
            self.duplicates.attributed.len(),
            self.duplicates.by_cause(),
            self.duplicates.unattributed.len(),
            self.duplicates.max_window_ms,
            self.wall.as_secs_f64(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Duplicate attribution

/// How a member's ownership of a partition ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    /// `revoked`: a clean hand-over (offsets committed first).
    Revoked,
    /// `lost`: the session expired or the member was fenced (no commit).
    Lost,
    /// Still owned when the log ended, and the process was killed.
    Crashed,
    /// Still owned when the log ended, without a kill (the run ended, or a bug).
    Open,
}

/// One redelivered record: `(partition, offset)`, who consumed it before, how that ownership
/// ended, and how long before that member's last record on the partition it consumed it.
#[derive(Clone, Debug)]
pub struct Redelivery {
    pub tp: NamedPartition,
    pub offset: i64,
    pub first: String,
    pub again: String,
    pub end: Option<End>,
    pub before_last_ms: u64,
}

/// Duplicates, split into the acceptable (the first consumer crashed or lost the partition,
/// inside its uncommitted window) and the rest.
#[derive(Debug, Default)]
pub struct Duplicates {
    pub attributed: Vec<Redelivery>,
    pub unattributed: Vec<Redelivery>,
    pub max_window_ms: u64,
}

impl Duplicates {
    pub fn total(&self) -> usize {
        self.attributed.len() + self.unattributed.len()
    }

    /// Attributed duplicates per (first consumer, how its ownership ended).
    pub fn by_cause(&self) -> BTreeMap<(String, End), usize> {
        let mut out = BTreeMap::new();
        for r in &self.attributed {
            if let Some(end) = r.end {
                *out.entry((r.first.clone(), end)).or_default() += 1;
            }
        }
        out
    }
}

fn read_lines(f: &Path) -> Result<Vec<Line>> {
    let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
    let n = text.lines().count();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Line>(raw) {
            Ok(l) => out.push(l),
            // A SIGKILLed worker may leave half a line at the end.
            Err(_) if i + 1 == n => break,
            Err(e) => return Err(e).with_context(|| format!("{}:{}", f.display(), i + 1)),
        }
    }
    Ok(out)
}

struct Owned {
    start: u64,
    end: u64,
    last_consumed: u64,
    how: End,
}

/// Replay the audit `files`; for every record consumed more than once, find how the ownership
/// under which it was consumed the previous time ended. `crashed` names the members that were
/// killed (`kill -9`). Acceptable: that ownership ended `lost` or by the crash, and the record
/// was consumed at most `window` before the member's last record on that partition.
pub fn attribute_duplicates(
    files: &[impl AsRef<Path>],
    crashed: &BTreeSet<String>,
    window: Duration,
) -> Result<Duplicates> {
    let mut owned: BTreeMap<(String, NamedPartition), Vec<Owned>> = BTreeMap::new();
    let mut consumed: BTreeMap<(NamedPartition, i64), Vec<(u64, String)>> = BTreeMap::new();
    for f in files {
        let lines = read_lines(f.as_ref())?;
        let mut member = f.as_ref().display().to_string();
        let mut open: BTreeMap<NamedPartition, (u64, u64)> = BTreeMap::new();
        let mut last_ts = 0;
        for l in lines {
            if let Some(m) = &l.member {
                member.clone_from(m);
            }
            last_ts = last_ts.max(l.ts_ms);
            match l.event.as_str() {
                "assigned" => {
                    for tp in l.partitions {
                        open.insert(tp, (l.ts_ms, l.ts_ms));
                    }
                }
                "revoked" | "lost" => {
                    for tp in l.partitions {
                        if let Some((start, last)) = open.remove(&tp) {
                            let (end, how) = if l.event == "lost" {
                                (last, End::Lost)
                            } else {
                                (l.ts_ms, End::Revoked)
                            };
                            owned.entry((member.clone(), tp)).or_default().push(Owned {
                                start,
                                end,
                                last_consumed: last,
                                how,
                            });
                        }
                    }
                }
                "consumed" => {
                    let handed = l.handed_at();
                    let (Some(t), Some(p), Some(o)) = (l.topic, l.partition, l.offset) else {
                        continue;
                    };
                    let tp = (t, p);
                    if let Some(o) = open.get_mut(&tp) {
                        o.1 = handed;
                    }
                    consumed
                        .entry((tp, o))
                        .or_default()
                        .push((handed, member.clone()));
                }
                _ => {}
            }
        }
        let how = if crashed.contains(&member) {
            End::Crashed
        } else {
            End::Open
        };
        for (tp, (start, last)) in open {
            owned.entry((member.clone(), tp)).or_default().push(Owned {
                start,
                end: last_ts,
                last_consumed: last,
                how,
            });
        }
    }
    let mut out = Duplicates::default();
    for ((tp, offset), mut times) in consumed {
        if times.len() < 2 {
            continue;
        }
        times.sort();
        for pair in times.windows(2) {
            let (ts, first) = &pair[0];
            let interval = owned.get(&(first.clone(), tp.clone())).and_then(|ivs| {
                ivs.iter()
                    .find(|i| i.start <= *ts && *ts <= i.end.max(i.last_consumed))
            });
            let r = Redelivery {
                tp: tp.clone(),
                offset,
                first: first.clone(),
                again: pair[1].1.clone(),
                end: interval.map(|i| i.how),
                before_last_ms: interval.map_or(u64::MAX, |i| i.last_consumed.saturating_sub(*ts)),
            };
            let ok = matches!(r.end, Some(End::Lost | End::Crashed))
                && r.before_last_ms <= window.as_millis() as u64;
            if ok {
                out.max_window_ms = out.max_window_ms.max(r.before_last_ms);
                out.attributed.push(r);
            } else {
                out.unattributed.push(r);
            }
        }
    }
    Ok(out)
}

/// Distinct generations the members reported (`role` lines) at or after `since_ms`.
pub fn generations(files: &[impl AsRef<Path>], since_ms: u64) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for f in files {
        for l in read_lines(f.as_ref()).unwrap_or_default() {
            if l.event == "role" && l.ts_ms >= since_ms {
                if let Some(g) = l.generation.filter(|g| *g >= 0) {
                    out.insert(g);
                }
            }
        }
    }
    out
}

/// The highest generation any of the members reported (−1 if none yet).
pub fn max_generation(files: &[impl AsRef<Path>]) -> i32 {
    generations(files, 0).last().copied().unwrap_or(-1)
}

/// The generation `file`'s member last reported (−1 if none yet).
pub fn last_generation(file: &Path) -> i32 {
    read_lines(file)
        .unwrap_or_default()
        .iter()
        .rev()
        .find(|l| l.event == "role")
        .and_then(|l| l.generation)
        .unwrap_or(-1)
}

/// Records consumed so far across `files`.
pub fn consumed_count(files: &[impl AsRef<Path>]) -> usize {
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f.as_ref()).ok())
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"event\":\"consumed\""))
                .count()
        })
        .sum()
}

/// The first ownership event `event` (`revoked`, `lost`, `assigned`) logged at or after
/// `since_ms` in `file`, if any.
pub fn event_since(file: &Path, event: &str, since_ms: u64) -> Option<(u64, Vec<NamedPartition>)> {
    read_lines(file)
        .unwrap_or_default()
        .into_iter()
        .find(|l| l.event == event && l.ts_ms >= since_ms && !l.partitions.is_empty())
        .map(|l| (l.ts_ms, l.partitions))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The runner

/// One worker process of the run and what the runner knows about it.
struct Member {
    worker: Worker,
    control: SocketAddr,
    instance: Option<String>,
}

struct Run<'a> {
    cfg: &'a ChaosConfig,
    bootstrap: String,
    group: String,
    topic: String,
    dir: PathBuf,
    live: Vec<Member>,
    /// Every audit file of the run (killed workers included).
    files: Vec<PathBuf>,
    crashed: BTreeSet<String>,
    next_id: usize,
    forced: usize,
    rejoin_turn: usize,
    cycle_static: usize,
    faults: Vec<String>,
    agent: Option<(Agent, u16, String)>,
    /// Kafka: a restarted static member must get its partitions back without a rebalance.
    kafka: bool,
}

/// Run the chaos scenario on `broker` and return its figures (the caller asserts).
pub async fn run(broker: &TestBroker, cfg: &ChaosConfig) -> Result<ChaosOutcome> {
    let started = Instant::now();
    let client = Client::new(ClientConfig::new(&broker.bootstrap))?;
    let topic = unique("chaos");
    let group = unique("chaos-g");
    client.create_topic(&topic, cfg.partitions, 1).await?;
    let dir = unique_temp_dir("chaos")?;
    let mut run = Run {
        cfg,
        bootstrap: broker.bootstrap.clone(),
        group,
        topic: topic.clone(),
        dir: dir.clone(),
        live: Vec::new(),
        files: Vec::new(),
        crashed: BTreeSet::new(),
        next_id: 0,
        forced: 0,
        rejoin_turn: 0,
        cycle_static: 0,
        faults: Vec::new(),
        agent: None,
        kafka: broker.kind.is_some_and(|k| k.is_kafka()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn(crate::ledger::produce_until(
        client.clone(),
        topic,
        cfg.partitions,
        cfg.rate,
        stop.clone(),
        None,
    ));
    let result = run.scenario().await;
    stop.store(true, Ordering::Relaxed);
    let produced = producing.await.context("producer task")?;
    if let Err(e) = result {
        eprintln!("chaos: logs kept in {}", dir.display());
        return Err(e);
    }
    let produced = produced?;
    let mut out = run.finish(&produced).await;
    if out.is_err() {
        eprintln!("chaos: logs kept in {}", dir.display());
    }
    if let Ok(o) = out.as_mut() {
        o.produced = produced.len();
        o.wall = started.elapsed();
        o.logs = dir;
    }
    out
}

impl Run<'_> {
    fn spawn(&mut self, prefix: &str, instance: Option<&str>) -> Result<()> {
        self.next_id += 1;
        let name = format!("{prefix}{}", self.next_id);
        let session = self.cfg.session_timeout_ms.to_string();
        let commit = self.cfg.commit_interval_ms.to_string();
        let mut args = vec![
            "--assignor",
            "lagbalance",
            "--session-timeout-ms",
            session.as_str(),
            "--commit-interval-ms",
            commit.as_str(),
        ];
        if let Some(id) = instance {
            args.extend(["--instance-id", id]);
        }
        // The chaos run asks for rebalances itself, back to back: no consumer-side rate limit.
        let mut env = vec![
            ("LAGBALANCE_CONTROL_ADDR", "127.0.0.1:0"),
            ("LAGBALANCE_CONTROL_MIN_INTERVAL_MS", "0"),
        ];
        if let Some(log) = &self.cfg.worker_log {
            env.push(("RUST_LOG", log.as_str()));
        }
        let worker = Worker::spawn(
            &self.bootstrap,
            &self.group,
            &self.topic,
            &name,
            &args,
            &env,
            &self.dir,
        )?;
        self.files.push(worker.audit.clone());
        self.live.push(Member {
            worker,
            control: SocketAddr::from(([127, 0, 0, 1], 0)),
            instance: instance.map(str::to_owned),
        });
        Ok(())
    }

    /// Learn the control addresses of members that do not have one yet.
    async fn learn_controls(&mut self) -> Result<()> {
        for m in self.live.iter_mut() {
            if m.control.port() == 0 {
                m.control = m.worker.control_addr(Duration::from_secs(20)).await?;
            }
        }
        Ok(())
    }

    fn refs(&self) -> Vec<&Worker> {
        self.live.iter().map(|m| &m.worker).collect()
    }

    /// Wait until the live members own every partition, disjointly, each at least one, for
    /// `settle`.
    async fn settled(&self, settle: Duration, limit: Duration) -> Result<()> {
        wait_balanced(&self.refs(), self.cfg.partitions, false, settle, limit)
            .await
            .map(|_| ())
    }

    /// The usual wait after members came or went: [`Self::settled`] for 2 s, within 90 s.
    /// `what` names the wait in the error.
    async fn settle(&self, what: &'static str) -> Result<()> {
        self.settled(Duration::from_secs(2), Duration::from_secs(90))
            .await
            .context(what)
    }

    /// After members started: learn their control addresses, then [`Self::settle`].
    async fn settle_newcomers(&mut self, what: &'static str) -> Result<()> {
        self.learn_controls().await?;
        self.settle(what).await
    }

    /// Start a static member with instance id `id` and [`Self::settle_newcomers`]; its index in
    /// `live`.
    async fn start_static(&mut self, id: &str, what: &'static str) -> Result<usize> {
        self.spawn("s", Some(id))?;
        self.settle_newcomers(what).await?;
        Ok(self.live.len() - 1)
    }

    /// How many partitions live member `i` owns by its audit.
    fn owned_count(&self, i: usize) -> usize {
        owned_by_audit(&[&self.live[i].worker])
            .values()
            .map(|s| s.len())
            .sum()
    }

    /// Fail clearly when a worker exited that the run did not stop (e.g. a signal from outside).
    fn check_alive(&mut self) -> Result<()> {
        for m in self.live.iter_mut() {
            if !m.worker.is_running() {
                bail!(
                    "{} exited without being stopped by the run (see {})",
                    m.worker.name,
                    m.worker.log.display()
                );
            }
        }
        Ok(())
    }

    /// Wait until no member reached a new generation for `quiet`, for at most `limit`.
    async fn quiet(&self, quiet: Duration, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let (mut seen, mut since) = (max_generation(&self.files), Instant::now());
        while since.elapsed() < quiet {
            ensure!(
                Instant::now() < deadline,
                "generations still moving after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = max_generation(&self.files);
            if now != seen {
                (seen, since) = (now, Instant::now());
            }
        }
        Ok(())
    }

    fn leader(&self) -> Option<usize> {
        self.live.iter().position(|m| is_leader(&m.worker))
    }

    /// Ask a dynamic member (round-robin) to rejoin with fresh user data; wait until a
    /// generation newer than the current one shows up, and the group settles again.
    async fn forced_rebalance(&mut self) -> Result<()> {
        self.check_alive()?;
        let before = max_generation(&self.files);
        let t = Instant::now();
        // Static members' metadata changes are "soft updates" on tansu (no new generation).
        let dynamic: Vec<usize> = (0..self.live.len())
            .filter(|i| self.live[*i].instance.is_none())
            .collect();
        ensure!(!dynamic.is_empty(), "no dynamic member to ask");
        let i = dynamic[self.rejoin_turn % dynamic.len()];
        self.rejoin_turn += 1;
        let addr = self.live[i].control;
        let mut c = ControlClient::connect(addr, None, Duration::from_secs(2)).await?;
        let reply = c
            .request(
                Op::Rejoin {
                    reason: "chaos: forced rebalance".into(),
                },
                Duration::from_secs(5),
            )
            .await?;
        ensure!(reply.ok, "rejoin refused: {:?}", reply.error);
        self.forced += 1;
        // Done when every live member has synced into a newer generation and the partitions
        // are all owned again (the cooperative follow-up rounds finished).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let behind: Vec<String> = self
                .live
                .iter()
                .filter(|m| last_generation(&m.worker.audit) <= before)
                .map(|m| m.worker.name.clone())
                .collect();
            if behind.is_empty() {
                break;
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                bail!(
                    "{behind:?} not past generation {before} within 60 s of asking {} to rejoin",
                    self.live[i].worker.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.settled(Duration::from_millis(500), Duration::from_secs(60))
            .await
            .context("settling after a forced rebalance")?;
        eprintln!(
            "chaos: forced rebalance {} ({} rejoined, generation {before} -> {}) took {:.1} s",
            self.forced,
            self.live[i].worker.name,
            max_generation(&self.files),
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn kill(&mut self, i: usize) -> Member {
        let mut m = self.live.remove(i);
        m.worker.kill();
        self.crashed.insert(m.worker.name.clone());
        m
    }

    /// A newcomer joins; as soon as some member logs a `revoked` (the cooperative hand-over is
    /// in flight), a member is killed with SIGKILL: the leader, or a non-leader holding
    /// partitions.
    async fn kill_mid_rebalance(&mut self, kill_leader: bool) -> Result<()> {
        let t0 = now_ms();
        self.spawn("d", None)?;
        let newcomer = self.live.len() - 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        let revoker = loop {
            if let Some(i) = (0..newcomer)
                .find(|i| event_since(&self.live[*i].worker.audit, "revoked", t0).is_some())
            {
                break Some(i);
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let leader = self.leader();
        let owned = owned_by_audit(&self.refs());
        let holds = |i: usize| {
            owned
                .get(&self.live[i].worker.name)
                .is_some_and(|s| !s.is_empty())
        };
        // A non-leader: prefer the member that just revoked.
        let victim = if kill_leader {
            leader
                .filter(|i| *i < newcomer)
                .context("no leader among the old members")?
        } else {
            revoker
                .filter(|i| Some(*i) != leader && holds(*i))
                .or_else(|| (0..newcomer).find(|i| Some(*i) != leader && holds(*i)))
                .context("no non-leader holding partitions to kill")?
        };
        let in_flight = {
            let refs = self.refs();
            let now = owned_by_audit(&refs);
            now.values().map(|s| s.len()).sum::<usize>() < self.cfg.partitions as usize
        };
        let m = self.kill(victim);
        self.faults.push(format!(
            "kill -9 {}{} {} ms after {} joined ({}; {} partitions unowned at the kill)",
            if kill_leader { "the leader " } else { "" },
            m.worker.name,
            now_ms() - t0,
            self.live.last().map_or("", |m| m.worker.name.as_str()),
            match revoker {
                Some(r) if r == victim => "it had just revoked".to_owned(),
                Some(_) => "another member had just revoked".to_owned(),
                None => "no revoke seen within 30 s".to_owned(),
            },
            if in_flight { "some" } else { "no" },
        ));
        self.settle_newcomers("settling after kill -9 mid-rebalance")
            .await
    }

    /// SIGSTOP a non-leader until the others own every partition (its session expired), then
    /// SIGCONT: it must report its partitions `lost` and rejoin.
    async fn stop_past_session(&mut self) -> Result<()> {
        let leader = self.leader();
        let owned = owned_by_audit(&self.refs());
        let victim = (0..self.live.len())
            .find(|i| {
                Some(*i) != leader
                    && self.live[*i].instance.is_none()
                    && owned
                        .get(&self.live[*i].worker.name)
                        .is_some_and(|s| !s.is_empty())
            })
            .context("no non-leader to stop")?;
        let t0 = now_ms();
        let stopped_at = Instant::now();
        self.live[victim].worker.pause()?;
        let others: Vec<&Worker> = (0..self.live.len())
            .filter(|i| *i != victim)
            .map(|i| &self.live[i].worker)
            .collect();
        let taken = wait_balanced(
            &others,
            self.cfg.partitions,
            false,
            Duration::from_millis(500),
            Duration::from_secs(90),
        )
        .await;
        let took_over = stopped_at.elapsed();
        self.live[victim].worker.resume()?;
        taken.context("the others never took the stopped member's partitions")?;
        let name = self.live[victim].worker.name.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let lost = loop {
            if let Some(l) = event_since(&self.live[victim].worker.audit, "lost", t0) {
                break l;
            }
            if Instant::now() >= deadline {
                bail!("{name} never reported its partitions lost after SIGCONT");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.faults.push(format!(
            "SIGSTOP {name} for {:.1} s (session {} ms); the others owned everything after {:.1} s; after SIGCONT it reported {} partitions lost",
            stopped_at.elapsed().as_secs_f64(),
            self.cfg.session_timeout_ms,
            took_over.as_secs_f64(),
            lost.1.len()
        ));
        self.settle("settling after SIGSTOP/SIGCONT").await
    }

    /// A static member (`group.instance.id`) joins, is killed with SIGKILL and restarted under
    /// the same instance id; once the group settled it leaves cleanly. It is only in the group
    /// for this fault: on tansu 0.6.0 a static member's JoinGroup and SyncGroup are each held
    /// 3 s, and while forced rebalances keep bumping the generation its SyncGroup always
    /// answers REBALANCE_IN_PROGRESS (the member starves; see the chaos section of the README).
    async fn static_restart(&mut self) -> Result<()> {
        self.cycle_static += 1;
        let id = format!("chaos-static-{}", self.cycle_static);
        let i = self
            .start_static(&id, "the static member never settled in")
            .await?;
        if self.leader() == Some(i) && !self.kafka {
            bail!("the static member leads; killing a leader wedges tansu 0.6.0");
        }
        // The restart must cause no rebalance: start it once the group is quiet, after the
        // leader's own round a session timeout after a plan (docs/group-protocol.md rule 15).
        self.quiet(
            Duration::from_millis(self.cfg.session_timeout_ms + 2_000),
            Duration::from_secs(90),
        )
        .await
        .context("the group never went quiet before the static restart")?;
        let generation = max_generation(&self.files);
        let before = self.owned_count(i);
        let m = self.kill(i);
        let t = Instant::now();
        let new = self
            .start_static(&id, "settling after the static member restarted")
            .await?;
        let after = self.owned_count(new);
        let took = t.elapsed();
        let generation_after = max_generation(&self.files);
        // KIP-345: the broker hands a static member that comes back within its session its
        // previous assignment; nobody rebalances.
        ensure!(
            !self.kafka || (generation_after == generation && after == before),
            "the static member's restart rebalanced: generation {generation} -> \
             {generation_after}, {before} -> {after} partitions"
        );
        let mut restarted = self.live.remove(new);
        let new_name = restarted.worker.name.clone();
        restarted
            .worker
            .terminate(Duration::from_secs(30))
            .context("the restarted static member exits cleanly")?;
        self.settle("settling after the static member left").await?;
        self.faults.push(format!(
            "kill -9 static {} (instance {id}, {before} partitions, generation {generation}), restarted as {new_name}: settled after {:.1} s with {after} partitions in generation {generation_after}, then left cleanly",
            m.worker.name,
            took.as_secs_f64()
        ));
        Ok(())
    }

    /// Start the sidecar agent beside the leader (never killed in a run).
    async fn start_agent(&mut self) -> Result<()> {
        let i = self.leader().unwrap_or(0);
        let name = self.live[i].worker.name.clone();
        let control = self.live[i].control;
        let mut last = None;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let env = [
                ("LAGBALANCE_HTTP_ADDR", format!("127.0.0.1:{port}")),
                ("LAGBALANCE_INTERVAL", "1s".to_owned()),
                ("LAGBALANCE_CPU_LIMIT", "256".to_owned()),
            ];
            let agent = Agent::spawn(
                &self.bootstrap,
                &self.group,
                control,
                &format!("{name}-{}", self.next_id),
                &env,
                &self.dir,
            )?;
            self.next_id += 1;
            match wait_agent_connected(port, Duration::from_secs(20)).await {
                Ok(()) => {
                    self.agent = Some((agent, port, name));
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("agent never connected")))
    }

    /// `kill -9` the agent; the workers must keep consuming; a new agent must reconnect.
    async fn agent_restart(&mut self) -> Result<()> {
        if let Some((mut a, _, _)) = self.agent.take() {
            a.kill();
        }
        let before = consumed_count(&self.files);
        let deadline = Instant::now() + Duration::from_secs(30);
        // The producer writes `rate` records per second: wait for a couple of seconds' worth.
        let want = (self.cfg.rate * 2.0) as usize;
        while consumed_count(&self.files) < before + want {
            if Instant::now() >= deadline {
                bail!("the workers stopped consuming while the agent was down");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let during = consumed_count(&self.files) - before;
        let t = Instant::now();
        self.start_agent().await?;
        self.faults.push(format!(
            "kill -9 agent: {during} records consumed while it was down; the new agent reconnected in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    async fn scenario(&mut self) -> Result<()> {
        for _ in 0..3 {
            self.spawn("w", None)?;
        }
        self.settle_newcomers("the first three workers never settled")
            .await?;
        if self.cfg.faults.agent_restart {
            self.start_agent().await?;
        }
        // The faults, `cycles` times over, spread evenly between the forced rebalances.
        let f = &self.cfg.faults;
        let one: Vec<&str> = [
            (f.kill_mid_rebalance, "kill"),
            (f.kill_leader_mid_rebalance, "leader"),
            (f.stop_past_session, "stop"),
            (f.static_restart, "static"),
            (f.agent_restart, "agent"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        let plan: Vec<&str> = (0..self.cfg.cycles.max(1))
            .flat_map(|_| one.clone())
            .collect();
        let total = self.cfg.rebalances;
        for (j, fault) in plan.iter().enumerate() {
            let due = total * (j + 1) / (plan.len() + 1);
            while self.forced < due {
                self.forced_rebalance().await?;
            }
            match *fault {
                "kill" => self.kill_mid_rebalance(false).await?,
                "leader" => self.kill_mid_rebalance(true).await?,
                "stop" => self.stop_past_session().await?,
                "static" => self.static_restart().await?,
                _ => self.agent_restart().await?,
            }
            eprintln!(
                "chaos: {} forced rebalances; {}",
                self.forced,
                self.faults.last().map_or("", String::as_str)
            );
        }
        while self.forced < total {
            self.forced_rebalance().await?;
            if self.forced % 10 == 0 {
                eprintln!("chaos: {} forced rebalances", self.forced);
            }
        }
        Ok(())
    }

    async fn finish(&mut self, produced: &BTreeSet<(NamedPartition, i64)>) -> Result<ChaosOutcome> {
        let files: Vec<&Path> = self.files.iter().map(|p| p.as_path()).collect();
        audit::wait_all_consumed(&files, produced, Duration::from_secs(120)).await?;
        for m in self.live.iter_mut() {
            m.worker.terminate(Duration::from_secs(30))?;
        }
        if let Some((mut a, _, _)) = self.agent.take() {
            a.kill();
        }
        let since = 0;
        Ok(ChaosOutcome {
            rebalances: generations(&self.files, since).len(),
            forced: self.forced,
            faults: std::mem::take(&mut self.faults),
            produced: produced.len(),
            report: audit::check(&files, produced)?,
            duplicates: attribute_duplicates(
                &self.files,
                &self.crashed,
                self.cfg.duplicate_window,
            )?,
            wall: Duration::ZERO,
            logs: self.dir.clone(),
        })
    }
}

/// Scrape the agent's `/metrics` until it reports `lagbalance_agent_control_connected 1`.
pub async fn wait_agent_connected(port: u16, limit: Duration) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + limit;
    loop {
        let scrape = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await?;
            let mut body = Vec::new();
            s.read_to_end(&mut body).await?;
            anyhow::Ok(String::from_utf8_lossy(&body).into_owned())
        };
        if let Ok(Ok(text)) = tokio::time::timeout(Duration::from_secs(2), scrape).await {
            if text
                .lines()
                .any(|l| l.trim() == "lagbalance_agent_control_connected 1")
            {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("the agent on port {port} did not connect to its app within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    }

    fn dir() -> PathBuf {
        unique_temp_dir("chaos-test").unwrap()
    }

    const A_CRASHES: &[&str] = &[
        r#"{"ts_ms":1,"member":"a","event":"assigned","partitions":[["t",0]]}"#,
        r#"{"ts_ms":100,"member":"a","event":"consumed","topic":"t","partition":0,"offset":0}"#,
        r#"{"ts_ms":5000,"member":"a","event":"consumed","topic":"t","partition":0,"offset":1}"#,
    ];
    const B_TAKES_OVER: &[&str] = &[
        r#"{"ts_ms":9000,"member":"b","event":"assigned","partitions":[["t",0]]}"#,
        r#"{"ts_ms":9001,"member":"b","event":"consumed","topic":"t","partition":0,"offset":1}"#,
    ];

    #[test]
    fn a_crashed_members_uncommitted_tail_is_attributed() {
        let d = dir();
        let files = [write(&d, "a", A_CRASHES), write(&d, "b", B_TAKES_OVER)];
        let crashed = BTreeSet::from(["a".to_string()]);
        let r = attribute_duplicates(&files, &crashed, Duration::from_secs(1)).unwrap();
        assert_eq!(r.attributed.len(), 1, "{r:?}");
        assert_eq!(r.attributed[0].end, Some(End::Crashed));
        assert!(r.unattributed.is_empty());
        // Not killed: the same log is a member that kept ownership and was redelivered anyway.
        let r = attribute_duplicates(&files, &BTreeSet::new(), Duration::from_secs(1)).unwrap();
        assert_eq!(r.unattributed.len(), 1, "{r:?}");
    }

    #[test]
    fn a_record_finished_after_a_freeze_is_the_frozen_members_redelivery() {
        // a was handed offset 1 at 5000 and frozen before finishing it; b took over at 9000 and
        // read it again; a woke, finished it at 9500 and learned it had lost the partition.
        let d = dir();
        let a = [
            r#"{"ts_ms":1,"member":"a","event":"assigned","partitions":[["t",0]]}"#,
            r#"{"ts_ms":9500,"handed_ms":5000,"member":"a","event":"consumed","topic":"t","partition":0,"offset":1}"#,
            r#"{"ts_ms":9500,"member":"a","event":"lost","partitions":[["t",0]]}"#,
        ];
        let files = [write(&d, "a", &a), write(&d, "b", B_TAKES_OVER)];
        let r = attribute_duplicates(&files, &BTreeSet::new(), Duration::from_secs(1)).unwrap();
        assert!(r.unattributed.is_empty(), "{r:?}");
        assert_eq!(r.attributed.len(), 1);
        assert_eq!(
            (r.attributed[0].first.as_str(), r.attributed[0].end),
            ("a", Some(End::Lost))
        );
    }

    #[test]
    fn redelivery_after_a_clean_revoke_or_outside_the_window_is_not_attributed() {
        let d = dir();
        let mut revoked = A_CRASHES.to_vec();
        revoked.push(r#"{"ts_ms":6000,"member":"a","event":"revoked","partitions":[["t",0]]}"#);
        let files = [write(&d, "a", &revoked), write(&d, "b", B_TAKES_OVER)];
        let r = attribute_duplicates(&files, &BTreeSet::new(), Duration::from_secs(1)).unwrap();
        assert_eq!(r.unattributed.len(), 1, "{r:?}");
        assert_eq!(r.unattributed[0].end, Some(End::Revoked));

        // Offset 0 was consumed 4.9 s before a's last record: outside a 1 s window.
        let mut b = B_TAKES_OVER.to_vec();
        b.push(r#"{"ts_ms":9002,"member":"b","event":"consumed","topic":"t","partition":0,"offset":0}"#);
        let files = [write(&d, "a2", A_CRASHES), write(&d, "b2", &b)];
        let crashed = BTreeSet::from(["a".to_string()]);
        let r = attribute_duplicates(&files, &crashed, Duration::from_secs(1)).unwrap();
        assert_eq!(r.attributed.len(), 1, "{r:?}");
        assert_eq!(r.unattributed.len(), 1);
        assert_eq!(r.unattributed[0].offset, 0);
    }
}
