//! One end-to-end group run on a real broker, shared by the demo (`examples/demo.rs`) and the
//! end-to-end benchmark (`examples/e2e_bench.rs`).
//!
//! A fresh topic of `partitions` partitions; a group of members with per-record costs (slept:
//! I/O-bound work, so the result does not depend on the CPU); records produced round-robin over
//! the partitions at a fixed rate, every acknowledgement kept in a ledger. The group is either
//! our example workers (`assignor/examples/worker.rs`, one process each, optionally each with a
//! `lagbalance-agent`) or in-process `rdkafka` (librdkafka) consumers with
//! `cooperative-sticky`. Every `sample_every` the run measures, like the agents do,
//! group lag = acknowledged end offsets − committed offsets (OffsetFetch naming the partitions:
//! tansu 0.6.0 cannot answer an all-topics OffsetFetch), split by which member owns each
//! partition (from the workers' audit files or the rdkafka rebalance callbacks).
//!
//! Everything the figures need is kept: samples, ownership changes with wall-clock times, and
//! agent triggers (from the agents' JSON logs). [`capacity_rebalances`] and friends turn
//! them into the benchmark's numbers. Every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use lagbalance::{Client, ClientConfig};

use crate::agents::{Agent, ACTED};
use crate::audit;
use crate::ledger::produce_paced;
use crate::workers::Worker;

/// Which kind of group consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// Our example workers with this `--assignor` (repeatable, comma-separated), each with its
    /// own sidecar agent when `agents`.
    Workers { assignor: String, agents: bool },
    /// In-process `rdkafka` consumers, `partition.assignment.strategy=cooperative-sticky`.
    Rdkafka,
}

impl GroupKind {
    pub fn label(&self) -> String {
        match self {
            GroupKind::Workers { assignor, agents } => {
                format!("{assignor}{}", if *agents { " + agents" } else { "" })
            }
            GroupKind::Rdkafka => "rdkafka cooperative-sticky".into(),
        }
    }
}

/// A member and its per-record cost.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    pub name: String,
    pub cost_us: u64,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunParams {
    pub bootstrap: String,
    pub kind: GroupKind,
    pub partitions: i32,
    /// Records per second, round-robin over the partitions.
    pub rate: f64,
    pub members: Vec<MemberSpec>,
    /// How long records are produced.
    pub duration: Duration,
    /// After producing, keep measuring until the group lag is 0 or this long has passed.
    pub drain: Duration,
    /// `LAGBALANCE_*` settings of every agent (the bootstrap, group and control address are
    /// filled in).
    pub agent_env: Vec<(String, String)>,
    /// `RUST_LOG` of the workers (e.g. `lagbalance=debug,lagbalance_assign=debug` for the
    /// leader's plans in their logs).
    pub worker_log: Option<String>,
    /// How long the group may take to settle before producing starts.
    pub settle_limit: Duration,
    pub sample_every: Duration,
    /// Where audit files and logs go (created).
    pub dir: PathBuf,
}

impl RunParams {
    /// Demo defaults: three members, the third half as fast (2 000 / 2 000 / 4 000 µs per
    /// record = 500 + 500 + 250 records/s), 30 partitions, 900 records/s: an even spread gives
    /// each member 300/s, more than the slow one can take, while the group could take 1 250/s.
    pub fn demo(bootstrap: &str, kind: GroupKind, dir: PathBuf) -> RunParams {
        RunParams {
            bootstrap: bootstrap.to_owned(),
            kind,
            partitions: 30,
            rate: 900.0,
            members: vec![
                MemberSpec {
                    name: "a".into(),
                    cost_us: 2_000,
                },
                MemberSpec {
                    name: "b".into(),
                    cost_us: 2_000,
                },
                MemberSpec {
                    name: "c".into(),
                    cost_us: 4_000,
                },
            ],
            duration: Duration::from_secs(75),
            drain: Duration::from_secs(20),
            agent_env: demo_agent_env(900.0),
            worker_log: None,
            settle_limit: Duration::from_secs(90),
            sample_every: Duration::from_secs(1),
            dir,
        }
    }
}

/// Agent settings for a short demo: poll every second, act after 3 intervals above a floor of
/// ~2 s of input, 20 s cooldown.
pub fn demo_agent_env(rate: f64) -> Vec<(String, String)> {
    vec![
        ("LAGBALANCE_MODE".into(), "rejoin".into()),
        ("LAGBALANCE_INTERVAL".into(), "1s".into()),
        ("LAGBALANCE_SUSTAIN".into(), "3".into()),
        (
            "LAGBALANCE_LAG_FLOOR".into(),
            ((2.0 * rate).round() as i64).to_string(),
        ),
        ("LAGBALANCE_COOLDOWN".into(), "20s".into()),
        ("LAGBALANCE_EWMA_WINDOW".into(), "5s".into()),
        // Every process here shares one cgroup, so each agent would report the whole machine's
        // CPU use as its pod's (see integration/src/agent_scenario.rs): a limit far above the
        // machine makes that share negligible and the members' measured busy fraction decides.
        ("LAGBALANCE_CPU_LIMIT".into(), "256".into()),
    ]
}

/// One member at one sample.
#[derive(Clone, Debug, Default)]
pub struct MemberSample {
    pub name: String,
    pub partitions: usize,
    pub lag: i64,
    /// Records processed so far (since the member started).
    pub consumed: u64,
    /// Times its agent asked it to rebalance so far.
    pub actions: usize,
}

/// One measurement.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Seconds since producing began.
    pub t: f64,
    pub group_lag: i64,
    /// Lag of partitions nobody owns at the moment (mid-rebalance).
    pub unowned_lag: i64,
    pub members: Vec<MemberSample>,
    /// Records acknowledged so far.
    pub produced: usize,
}

impl Sample {
    pub fn consumed(&self) -> u64 {
        self.members.iter().map(|m| m.consumed).sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Assigned,
    Revoked,
    Lost,
}

impl Change {
    /// Bring a member's `owned` set up to date with this change of `partitions`.
    fn apply(self, owned: &mut BTreeSet<i32>, partitions: &[i32]) {
        for p in partitions {
            if self == Change::Assigned {
                owned.insert(*p);
            } else {
                owned.remove(p);
            }
        }
    }
}

/// An ownership change a member reported (wall clock, ms since the epoch).
#[derive(Clone, Debug)]
pub struct OwnershipEvent {
    pub ts_ms: u64,
    pub member: String,
    pub change: Change,
    pub partitions: Vec<i32>,
}

/// An agent's "asked the app to rebalance".
#[derive(Clone, Debug)]
pub struct Trigger {
    pub ts_ms: u64,
    pub member: String,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct RunResult {
    pub label: String,
    /// Wall clock (ms since the epoch) when producing began: t = 0 of the samples.
    pub start_ms: u64,
    pub samples: Vec<Sample>,
    pub events: Vec<OwnershipEvent>,
    pub triggers: Vec<Trigger>,
    /// Records acknowledged.
    pub produced: usize,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Seconds producing lasted.
    pub produce_s: f64,
    /// The ownership audit (workers only): double ownership, loss (records not yet consumed
    /// when the run stopped count as missing), redelivery.
    pub audit: Option<audit::Report>,
    /// Audit files and logs (the caller removes or keeps them).
    pub logs: PathBuf,
}

/// What the run reports while it goes.
pub enum Progress<'a> {
    Phase(&'a str),
    Sample(&'a Sample),
}

impl RunResult {
    /// Seconds since producing began of a wall-clock time.
    pub fn t_of(&self, ts_ms: u64) -> f64 {
        (ts_ms as f64 - self.start_ms as f64) / 1000.0
    }

    /// Records consumed per second between `from` and `to` (seconds since producing began),
    /// from the samples nearest inside that window.
    pub fn consumed_rate(&self, from: f64, to: f64) -> Option<f64> {
        let inside: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.t >= from && s.t <= to)
            .collect();
        let (a, b) = (inside.first()?, inside.last()?);
        (b.t > a.t).then(|| (b.consumed() as f64 - a.consumed() as f64) / (b.t - a.t))
    }

    /// Least-squares slope of group lag (records/s) between `from` and `to`.
    pub fn lag_slope(&self, from: f64, to: f64) -> Option<f64> {
        let pts: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.t >= from && s.t <= to)
            .map(|s| (s.t, s.group_lag as f64))
            .collect();
        slope(&pts)
    }

    pub fn peak_lag(&self) -> i64 {
        self.samples.iter().map(|s| s.group_lag).max().unwrap_or(0)
    }

    /// The samples taken while records were produced (half a second's grace for the last).
    fn while_producing(&self) -> impl DoubleEndedIterator<Item = &Sample> {
        self.samples.iter().filter(|s| s.t <= self.produce_s + 0.5)
    }

    /// 99th percentile (nearest rank) of the group lag sampled while producing.
    pub fn p99_lag(&self) -> i64 {
        let mut lags: Vec<i64> = self.while_producing().map(|s| s.group_lag).collect();
        if lags.is_empty() {
            return 0;
        }
        lags.sort_unstable();
        let rank = (0.99 * lags.len() as f64).ceil() as usize;
        lags[rank.clamp(1, lags.len()) - 1]
    }

    /// Group lag at the last sample taken while producing.
    pub fn lag_at_end_of_input(&self) -> i64 {
        self.while_producing()
            .next_back()
            .map_or(0, |s| s.group_lag)
    }

    /// Partitions per member at the end of producing.
    pub fn final_partitions(&self) -> Vec<(String, usize)> {
        self.while_producing()
            .next_back()
            .map(|s| {
                s.members
                    .iter()
                    .map(|m| (m.name.clone(), m.partitions))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Least-squares slope of `(x, y)` points.
pub fn slope(pts: &[(f64, f64)]) -> Option<f64> {
    let n = pts.len() as f64;
    if pts.len() < 2 {
        return None;
    }
    let xm = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let ym = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = pts.iter().map(|p| (p.0 - xm) * (p.1 - ym)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - xm).powi(2)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// What set a capacity-driven rebalance going.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Input began: the group formed (evenly, with no measurements) before any record was
    /// produced, so whatever moves now moves because the members measured themselves.
    InputBegan,
    /// An agent asked its member to rebalance.
    Agent(String),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::InputBegan => f.write_str("input began"),
            Cause::Agent(member) => write!(f, "agent {member}"),
        }
    }
}

/// One capacity-driven rebalance: what input starting, or an agent's trigger, led to.
#[derive(Clone, Debug)]
pub struct Rebalance {
    /// When it was set going, in seconds since producing began.
    pub start_t: f64,
    pub cause: Cause,
    /// First ownership change after the start (seconds after it), if any.
    pub first_change_after: Option<f64>,
    /// Start → the first change after which every partition had an owner and ownership then
    /// held still for `quiet` inside the window (seconds), if ownership changed at all.
    pub stable_after: Option<f64>,
    /// Partitions whose owner differs between the start and the stable point.
    pub moved: usize,
    /// Partitions revoked or lost (processing paused) between the start and the stable point.
    pub paused: usize,
    /// Partition callbacks (assigned / revoked / lost) in that span.
    pub callbacks: usize,
}

/// The rebalance after input began, then one for every agent trigger: window = until the next
/// start or the end of the run; stable = every partition owned and ownership unchanged for
/// `quiet` afterwards (a cooperative move leaves revoked partitions unowned until the next
/// round: that gap is part of the rebalance, not a stable state). Empty for a group without
/// ownership events (in-process consumers).
pub fn capacity_rebalances(r: &RunResult, quiet: Duration) -> Vec<Rebalance> {
    if r.events.is_empty() {
        return Vec::new();
    }
    let mut events = r.events.clone();
    events.sort_by_key(|e| e.ts_ms);
    let end_ms = r.start_ms + (r.samples.last().map_or(0.0, |s| s.t) * 1000.0) as u64;
    let quiet_ms = quiet.as_millis() as u64;
    let starts: Vec<(u64, Cause)> = std::iter::once((r.start_ms, Cause::InputBegan))
        .chain(
            r.triggers
                .iter()
                .map(|t| (t.ts_ms, Cause::Agent(t.member.clone()))),
        )
        .collect();
    let mut out = Vec::new();
    for (i, (start_ms, cause)) in starts.iter().enumerate() {
        let start_ms = *start_ms;
        let window_end = starts.get(i + 1).map_or(end_ms, |n| n.0).max(start_ms);
        let after: Vec<&OwnershipEvent> = events
            .iter()
            .filter(|e| e.ts_ms > start_ms && e.ts_ms <= window_end)
            .collect();
        // The end of the first burst of changes: every partition owned, and the next change (or
        // the window's end) is at least `quiet` later.
        let mut stable_at = None;
        for (k, e) in after.iter().enumerate() {
            let next = after.get(k + 1).map_or(window_end, |n| n.ts_ms);
            let complete =
                r.partitions <= 0 || owners_at(&events, e.ts_ms).len() == r.partitions as usize;
            if complete && next.saturating_sub(e.ts_ms) >= quiet_ms {
                stable_at = Some(e.ts_ms);
                break;
            }
        }
        let until = stable_at.unwrap_or(window_end);
        let before = owners_at(&events, start_ms);
        let then = owners_at(&events, until);
        let all: BTreeSet<i32> = before.keys().chain(then.keys()).copied().collect();
        let moved = all.iter().filter(|p| before.get(p) != then.get(p)).count();
        let span: Vec<&&OwnershipEvent> = after.iter().filter(|e| e.ts_ms <= until).collect();
        let paused: BTreeSet<i32> = span
            .iter()
            .filter(|e| e.change != Change::Assigned)
            .flat_map(|e| e.partitions.iter().copied())
            .collect();
        out.push(Rebalance {
            start_t: r.t_of(start_ms),
            cause: cause.clone(),
            first_change_after: after.first().map(|e| (e.ts_ms - start_ms) as f64 / 1000.0),
            stable_after: stable_at.map(|s| (s - start_ms) as f64 / 1000.0),
            moved,
            paused: paused.len(),
            callbacks: span.len(),
        });
    }
    out
}

/// Owner of every partition after replaying `events` (sorted) up to `ts_ms`.
fn owners_at(events: &[OwnershipEvent], ts_ms: u64) -> BTreeMap<i32, String> {
    let mut owner = BTreeMap::new();
    for e in events.iter().take_while(|e| e.ts_ms <= ts_ms) {
        for p in &e.partitions {
            match e.change {
                Change::Assigned => {
                    owner.insert(*p, e.member.clone());
                }
                Change::Revoked | Change::Lost => {
                    if owner.get(p) == Some(&e.member) {
                        owner.remove(p);
                    }
                }
            }
        }
    }
    owner
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads a growing file from where it left off; yields complete lines only.
struct Tail {
    path: PathBuf,
    pos: u64,
    partial: String,
}

impl Tail {
    fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_owned(),
            pos: 0,
            partial: String::new(),
        }
    }

    fn lines(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.pos)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.pos += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let Some(cut) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(cut + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        done.lines().map(str::to_owned).collect()
    }
}

/// What one member holds and did, as seen by the run.
#[derive(Default)]
struct MemberState {
    owned: BTreeSet<i32>,
    consumed: u64,
    actions: usize,
}

/// A file one member's process writes (its worker's audit or its agent's log), read
/// incrementally.
struct MemberTail {
    tail: Tail,
    member: String,
}

impl MemberTail {
    fn new(path: &Path, member: &str) -> MemberTail {
        MemberTail {
            tail: Tail::new(path),
            member: member.to_owned(),
        }
    }

    /// New lines of a worker's audit: ownership changes (consumed lines are counted, not
    /// parsed).
    fn poll_audit(&mut self, state: &mut MemberState, events: &mut Vec<OwnershipEvent>) {
        for line in self.tail.lines() {
            if line.contains("\"event\":\"consumed\"") {
                state.consumed += 1;
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let change = match v["event"].as_str() {
                Some("assigned") => Change::Assigned,
                Some("revoked") => Change::Revoked,
                Some("lost") => Change::Lost,
                _ => continue,
            };
            let partitions: Vec<i32> = v["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p[1].as_i64().map(|p| p as i32))
                .collect();
            // The worker logs an empty `assigned` after every round that gave it nothing new.
            if partitions.is_empty() {
                continue;
            }
            change.apply(&mut state.owned, &partitions);
            events.push(OwnershipEvent {
                ts_ms: v["ts_ms"].as_u64().unwrap_or_else(now_ms),
                member: self.member.clone(),
                change,
                partitions,
            });
        }
    }

    /// New lines of an agent's JSON log: its triggers.
    fn poll_agent_log(&mut self, state: &mut MemberState, triggers: &mut Vec<Trigger>) {
        for line in self.tail.lines() {
            if !line.contains(ACTED) {
                continue;
            }
            state.actions += 1;
            let ts = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["timestamp"].as_str().and_then(parse_rfc3339_ms))
                .unwrap_or_else(now_ms);
            triggers.push(Trigger {
                ts_ms: ts,
                member: self.member.clone(),
            });
        }
    }
}

/// `2025-01-02T03:04:05.678901Z` (UTC, as `tracing-subscriber` writes it) → ms since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, mo, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((((days * 24 + h) * 60 + mi) * 60 + sec) * 1000 + ms).ok()
}

/// An in-process rdkafka member.
struct RdMember {
    name: String,
    shared: Arc<RdShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct RdShared {
    owned: Mutex<BTreeSet<i32>>,
    events: Mutex<Vec<OwnershipEvent>>,
    consumed: AtomicU64,
    name: String,
}

struct RdContext(Arc<RdShared>);

impl rdkafka::ClientContext for RdContext {}

impl rdkafka::consumer::ConsumerContext for RdContext {
    fn pre_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance {
            self.record(Change::Revoked, tpl);
        }
    }
    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Assign(tpl) = rebalance {
            self.record(Change::Assigned, tpl);
        }
    }
}

impl RdContext {
    fn record(&self, change: Change, tpl: &rdkafka::TopicPartitionList) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        if partitions.is_empty() {
            return;
        }
        if let Ok(mut owned) = self.0.owned.lock() {
            change.apply(&mut owned, &partitions);
        }
        if let Ok(mut ev) = self.0.events.lock() {
            ev.push(OwnershipEvent {
                ts_ms: now_ms(),
                member: self.0.name.clone(),
                change,
                partitions,
            });
        }
    }
}

fn spawn_rdkafka(
    bootstrap: &str,
    group: &str,
    topic: &str,
    spec: &MemberSpec,
    stop: Arc<AtomicBool>,
) -> Result<RdMember> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let shared = Arc::new(RdShared {
        name: spec.name.clone(),
        ..Default::default()
    });
    let consumer: BaseConsumer<RdContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", &spec.name)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("auto.offset.reset", "earliest")
        // Like the workers: commit what was processed, every 200 ms and before a revocation.
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "12000")
        .set("heartbeat.interval.ms", "4000")
        .create_with_context(RdContext(shared.clone()))
        .context("creating an rdkafka consumer")?;
    consumer.subscribe(&[topic])?;
    let cost = Duration::from_micros(spec.cost_us);
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name(format!("rdkafka-{}", spec.name))
        .spawn(move || {
            // Like the worker in sleep mode: take what is ready (up to 500 records, the
            // worker's max.poll.records), sleep the batch's cost, then mark it processed.
            while !stop.load(Ordering::Relaxed) {
                let mut batch = Vec::new();
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => batch.push(m),
                    Some(Err(_)) | None => continue,
                }
                while batch.len() < 500 {
                    match consumer.poll(Duration::ZERO) {
                        Some(Ok(m)) => batch.push(m),
                        _ => break,
                    }
                }
                std::thread::sleep(cost * batch.len() as u32);
                for m in &batch {
                    // Fails for a partition revoked meanwhile: its next owner re-reads it.
                    let _ = consumer.store_offset_from_message(m);
                }
                s.consumed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            consumer.unsubscribe();
        })?;
    Ok(RdMember {
        name: spec.name.clone(),
        shared,
        thread: Some(thread),
    })
}

/// The consuming group, whichever kind.
enum Group {
    Workers {
        workers: Vec<Worker>,
        audits: Vec<MemberTail>,
        agents: Vec<Agent>,
        agent_logs: Vec<MemberTail>,
    },
    Rdkafka {
        members: Vec<RdMember>,
        stop: Arc<AtomicBool>,
    },
}

impl Group {
    /// Read what changed: member states (in `members` order), new events and triggers.
    fn observe(
        &mut self,
        states: &mut [MemberState],
        events: &mut Vec<OwnershipEvent>,
        triggers: &mut Vec<Trigger>,
    ) {
        match self {
            Group::Workers {
                audits, agent_logs, ..
            } => {
                for (a, s) in audits.iter_mut().zip(states.iter_mut()) {
                    a.poll_audit(s, events);
                }
                for a in agent_logs.iter_mut() {
                    if let Some(i) = audits.iter().position(|x| x.member == a.member) {
                        a.poll_agent_log(&mut states[i], triggers);
                    }
                }
            }
            Group::Rdkafka { members, .. } => {
                for (m, s) in members.iter().zip(states.iter_mut()) {
                    s.owned = m.shared.owned.lock().map(|o| o.clone()).unwrap_or_default();
                    s.consumed = m.shared.consumed.load(Ordering::Relaxed);
                    if let Ok(mut ev) = m.shared.events.lock() {
                        events.append(&mut ev);
                    }
                }
            }
        }
    }

    /// Stop every member (bounded), agents first.
    fn shutdown(&mut self) -> Result<()> {
        match self {
            Group::Workers {
                workers, agents, ..
            } => {
                for a in agents.iter_mut() {
                    a.kill();
                }
                let mut failed = Vec::new();
                for w in workers.iter_mut() {
                    if let Err(e) = w.terminate(Duration::from_secs(20)) {
                        failed.push(e.to_string());
                    }
                }
                if !failed.is_empty() {
                    bail!("workers did not stop cleanly: {failed:?}");
                }
            }
            Group::Rdkafka { members, stop } => {
                stop.store(true, Ordering::Relaxed);
                let deadline = Instant::now() + Duration::from_secs(20);
                for m in members.iter_mut() {
                    if let Some(t) = m.thread.take() {
                        while !t.is_finished() && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        if t.is_finished() {
                            let _ = t.join();
                        } else {
                            eprintln!("rdkafka member {} did not stop in time", m.name);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Group::Rdkafka { stop, .. } = self {
            stop.store(true, Ordering::Relaxed);
        }
        // Workers and agents kill their processes when dropped.
    }
}

/// The producer's acknowledgements: end offset per partition and every acknowledged offset.
#[derive(Default)]
struct Ledger {
    ends: BTreeMap<i32, i64>,
    acked: Vec<(i32, i64)>,
}

/// Run once on a fresh topic and group. `progress` hears the phases and every sample.
pub async fn run(p: &RunParams, progress: &mut dyn FnMut(Progress<'_>)) -> Result<RunResult> {
    std::fs::create_dir_all(&p.dir)?;
    let client = Client::new(ClientConfig::new(&p.bootstrap))?;
    let topic = crate::unique("e2e");
    let group_id = crate::unique("e2e-g");
    client.create_topic(&topic, p.partitions, 1).await?;
    progress(Progress::Phase("starting the group"));
    let mut group = start_group(p, &group_id, &topic)?;
    let mut states: Vec<MemberState> = p.members.iter().map(|_| MemberState::default()).collect();
    let mut events = Vec::new();
    let mut triggers = Vec::new();

    // Wait (bounded) until every partition is owned exactly once, each member has some, and
    // nothing changed for 4 s (tansu pauses rejoining followers ~3 s between cooperative rounds).
    progress(Progress::Phase("waiting for the group to settle"));
    let deadline = Instant::now() + p.settle_limit;
    let mut stable: Option<(Instant, Vec<BTreeSet<i32>>)> = None;
    loop {
        group.observe(&mut states, &mut events, &mut triggers);
        let now: Vec<BTreeSet<i32>> = states.iter().map(|s| s.owned.clone()).collect();
        let total: usize = now.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = now.iter().flatten().copied().collect();
        let good = total == p.partitions as usize
            && union.len() == total
            && now.iter().all(|s| !s.is_empty());
        match &stable {
            Some((since, seen)) if good && *seen == now => {
                if since.elapsed() >= Duration::from_secs(4) {
                    break;
                }
            }
            _ if good => stable = Some((Instant::now(), now.clone())),
            _ => stable = None,
        }
        if Instant::now() >= deadline {
            bail!(
                "{}: the group did not settle within {:?}; owned: {now:?} (logs in {})",
                p.kind.label(),
                p.settle_limit,
                p.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Group::Workers {
        workers,
        agents,
        agent_logs,
        ..
    } = &mut group
    {
        if matches!(p.kind, GroupKind::Workers { agents: true, .. }) {
            progress(Progress::Phase("starting one agent per worker"));
            for w in workers.iter() {
                let control = w.control_addr(Duration::from_secs(10)).await?;
                let env: Vec<(&str, String)> = p
                    .agent_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                let a = Agent::spawn(&p.bootstrap, &group_id, control, &w.name, &env, &p.dir)?;
                agent_logs.push(MemberTail::new(&a.log, &w.name));
                agents.push(a);
            }
        }
    }

    progress(Progress::Phase("producing"));
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let start_ms = now_ms();
    let started = Instant::now();
    let producing = tokio::spawn(produce(
        client.clone(),
        topic.clone(),
        p.partitions,
        p.rate,
        p.duration,
        ledger.clone(),
    ));
    let partitions: Vec<(String, i32)> = (0..p.partitions).map(|i| (topic.clone(), i)).collect();
    let mut samples = Vec::new();
    let mut tick = 0u32;
    let mut produce_s = None;
    let mut producing = Some(producing);
    loop {
        tick += 1;
        tokio::time::sleep_until((started + p.sample_every * tick).into()).await;
        if producing.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = producing.take() {
                h.await.context("producer task")??;
            }
            produce_s = Some(started.elapsed().as_secs_f64());
            progress(Progress::Phase("input stopped; draining"));
        }
        group.observe(&mut states, &mut events, &mut triggers);
        let (ends, produced) = match ledger.lock() {
            Ok(l) => (l.ends.clone(), l.acked.len()),
            Err(_) => bail!("ledger poisoned"),
        };
        let committed = match client.offset_fetch(&group_id, Some(&partitions)).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("offset fetch failed (sample skipped): {e}");
                continue;
            }
        };
        let lag_of = |p: i32| {
            let end = ends.get(&p).copied().unwrap_or(0);
            let done = committed.get(&(topic.clone(), p)).copied().unwrap_or(0);
            (end - done).max(0)
        };
        let mut owned_any = BTreeSet::new();
        let members: Vec<MemberSample> = p
            .members
            .iter()
            .zip(&states)
            .map(|(spec, s)| {
                owned_any.extend(s.owned.iter().copied());
                MemberSample {
                    name: spec.name.clone(),
                    partitions: s.owned.len(),
                    lag: s.owned.iter().map(|&p| lag_of(p)).sum(),
                    consumed: s.consumed,
                    actions: s.actions,
                }
            })
            .collect();
        let sample = Sample {
            t: started.elapsed().as_secs_f64(),
            group_lag: (0..p.partitions).map(lag_of).sum(),
            unowned_lag: (0..p.partitions)
                .filter(|q| !owned_any.contains(q))
                .map(lag_of)
                .sum(),
            members,
            produced,
        };
        progress(Progress::Sample(&sample));
        let lag = sample.group_lag;
        samples.push(sample);
        if let Some(done) = produce_s {
            if lag == 0 || started.elapsed().as_secs_f64() >= done + p.drain.as_secs_f64() {
                break;
            }
        }
        if started.elapsed() > p.duration + p.drain + Duration::from_secs(120) {
            bail!("the producer did not finish (logs in {})", p.dir.display());
        }
    }
    progress(Progress::Phase("stopping the group"));
    let stopped = group.shutdown();
    group.observe(&mut states, &mut events, &mut triggers);
    let acked: BTreeSet<((String, i32), i64)> = match ledger.lock() {
        Ok(l) => l
            .acked
            .iter()
            .map(|&(q, o)| ((topic.clone(), q), o))
            .collect(),
        Err(_) => bail!("ledger poisoned"),
    };
    let audit = match &group {
        Group::Workers { workers, .. } => {
            let files: Vec<PathBuf> = workers.iter().map(|w| w.audit.clone()).collect();
            Some(audit::check(&files, &acked)?)
        }
        Group::Rdkafka { .. } => None,
    };
    drop(group);
    if let Err(e) = stopped {
        eprintln!("{}: {e}", p.kind.label());
    }
    Ok(RunResult {
        label: p.kind.label(),
        start_ms,
        samples,
        events,
        triggers,
        produced: acked.len(),
        partitions: p.partitions,
        produce_s: produce_s.unwrap_or(p.duration.as_secs_f64()),
        audit,
        logs: p.dir.clone(),
    })
}

fn start_group(p: &RunParams, group: &str, topic: &str) -> Result<Group> {
    match &p.kind {
        GroupKind::Workers { assignor, agents } => {
            let mut workers = Vec::new();
            let mut audits = Vec::new();
            for m in &p.members {
                let cost = m.cost_us.to_string();
                let mut args = vec![
                    "--cost-mode",
                    "sleep",
                    "--cost-us",
                    cost.as_str(),
                    "--session-timeout-ms",
                    "12000",
                    "--commit-interval-ms",
                    "200",
                ];
                for a in assignor.split(',') {
                    args.extend(["--assignor", a]);
                }
                let mut env = Vec::new();
                if *agents {
                    env.push(("LAGBALANCE_CONTROL_ADDR", "127.0.0.1:0"));
                }
                if let Some(filter) = &p.worker_log {
                    env.push(("RUST_LOG", filter.as_str()));
                }
                let w = Worker::spawn(&p.bootstrap, group, topic, &m.name, &args, &env, &p.dir)?;
                audits.push(MemberTail::new(&w.audit, &m.name));
                workers.push(w);
            }
            Ok(Group::Workers {
                workers,
                audits,
                agents: Vec::new(),
                agent_logs: Vec::new(),
            })
        }
        GroupKind::Rdkafka => {
            let stop = Arc::new(AtomicBool::new(false));
            let members = p
                .members
                .iter()
                .map(|m| spawn_rdkafka(&p.bootstrap, group, topic, m, stop.clone()))
                .collect::<Result<Vec<_>>>()?;
            Ok(Group::Rdkafka { members, stop })
        }
    }
}

/// Produce for `duration` at `rate`/s, partition `i % partitions`, keeping `ledger` current.
async fn produce(
    client: Client,
    topic: String,
    partitions: i32,
    rate: f64,
    duration: Duration,
    ledger: Arc<Mutex<Ledger>>,
) -> Result<()> {
    let running = |elapsed: Duration| elapsed < duration;
    produce_paced(client, &topic, partitions, rate, running, move |m| {
        let mut l = ledger
            .lock()
            .map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
        let end = l.ends.entry(m.partition).or_insert(0);
        *end = (*end).max(m.offset + 1);
        l.acked.push((m.partition, m.offset));
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T12:34:56.789123Z"),
            Some(1_709_210_096_789)
        );
        assert_eq!(parse_rfc3339_ms("2024-02-29T12:34:56+01:00"), None);
    }

    fn ev(ts: u64, member: &str, change: Change, ps: &[i32]) -> OwnershipEvent {
        OwnershipEvent {
            ts_ms: ts,
            member: member.into(),
            change,
            partitions: ps.to_vec(),
        }
    }

    /// p99 is the nearest-rank percentile of the samples taken while producing: a spike
    /// after input stopped does not count, one sample in a hundred during input does.
    #[test]
    fn p99_lag_counts_only_samples_taken_while_producing() {
        let sample = |t: f64, group_lag: i64| Sample {
            t,
            group_lag,
            ..Default::default()
        };
        let mut samples: Vec<Sample> = (0..100).map(|i| sample(i as f64, 10)).collect();
        samples[7].group_lag = 5_000;
        samples[8].group_lag = 900;
        samples.push(sample(101.0, 99_999));
        let r = RunResult {
            samples,
            produce_s: 99.5,
            ..Default::default()
        };
        assert_eq!(r.p99_lag(), 900);
        assert_eq!(r.peak_lag(), 99_999);
        assert_eq!(RunResult::default().p99_lag(), 0);
    }

    #[test]
    fn a_cooperative_move_pauses_only_what_moves() {
        let r = RunResult {
            start_ms: 0,
            samples: vec![Sample {
                t: 100.0,
                ..Default::default()
            }],
            events: vec![
                ev(0, "a", Change::Assigned, &[0, 1]),
                ev(0, "c", Change::Assigned, &[2, 3, 4]),
                // The trigger at 10 s; c gives up 3 and 4, a takes them after tansu's pause.
                ev(11_000, "c", Change::Revoked, &[3, 4]),
                ev(14_000, "a", Change::Assigned, &[3, 4]),
            ],
            triggers: vec![Trigger {
                ts_ms: 10_000,
                member: "c".into(),
            }],
            partitions: 5,
            ..Default::default()
        };
        let rb = capacity_rebalances(&r, Duration::from_secs(8));
        assert_eq!(rb.len(), 2);
        // Nothing moved between input start and the trigger.
        assert_eq!(rb[0].cause, Cause::InputBegan);
        assert_eq!((rb[0].moved, rb[0].paused, rb[0].callbacks), (0, 0, 0));
        assert_eq!(rb[1].cause, Cause::Agent("c".into()));
        assert_eq!((rb[1].moved, rb[1].paused), (2, 2));
        assert_eq!(rb[1].stable_after, Some(4.0));
        assert_eq!(rb[1].first_change_after, Some(1.0));
        // Revoked partitions left unowned longer than `quiet` are not a stable assignment.
        let mut late = r;
        late.events[3].ts_ms = 30_000;
        let rb = capacity_rebalances(&late, Duration::from_secs(8));
        assert_eq!(rb[1].stable_after, Some(20.0));
        assert_eq!((rb[1].moved, rb[1].paused), (2, 2));
    }

    #[test]
    fn what_moves_after_input_began_is_measured_without_a_trigger() {
        let r = RunResult {
            start_ms: 1_000,
            samples: vec![Sample {
                t: 60.0,
                ..Default::default()
            }],
            events: vec![
                ev(0, "a", Change::Assigned, &[0, 1]),
                ev(0, "c", Change::Assigned, &[2, 3]),
                // The leader moves 3 from c to a from the members' measurements alone.
                ev(13_000, "c", Change::Revoked, &[3]),
                ev(16_000, "a", Change::Assigned, &[3]),
            ],
            partitions: 4,
            ..Default::default()
        };
        let rb = capacity_rebalances(&r, Duration::from_secs(8));
        assert_eq!(rb.len(), 1);
        assert_eq!(rb[0].cause, Cause::InputBegan);
        assert_eq!((rb[0].moved, rb[0].paused), (1, 1));
        assert_eq!(rb[0].first_change_after, Some(12.0));
        assert_eq!(rb[0].stable_after, Some(15.0));
    }

    #[test]
    fn a_group_without_ownership_events_has_no_rebalances_to_report() {
        let r = RunResult {
            triggers: vec![Trigger {
                ts_ms: 10_000,
                member: "a".into(),
            }],
            ..Default::default()
        };
        assert!(capacity_rebalances(&r, Duration::from_secs(8)).is_empty());
    }

    #[test]
    fn no_change_after_a_trigger_is_no_rebalance() {
        let r = RunResult {
            samples: vec![Sample {
                t: 100.0,
                ..Default::default()
            }],
            events: vec![ev(0, "a", Change::Assigned, &[0])],
            triggers: vec![Trigger {
                ts_ms: 10_000,
                member: "a".into(),
            }],
            ..Default::default()
        };
        let rb = capacity_rebalances(&r, Duration::from_secs(8));
        assert_eq!((rb[1].moved, rb[1].paused), (0, 0));
        assert_eq!(rb[1].stable_after, None);
    }
}
