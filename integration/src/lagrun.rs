//! One run of the lag-aware partitioner experiment on a real broker: a producer writing
//! unkeyed records at a fixed rate into a topic consumed by in-process consumers, one of them
//! slow (a fixed cost per record, slept, so the 2-core test machine is not burnt). Used by
//! `tests/partitioner_tansu.rs` (short, asserts) and `examples/partitioner_bench.rs` (longer,
//! prints the figures in docs/partitioner.md).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lagbalance::consumer::NoopListener;
use lagbalance::lag_partitioner::{LagPartitioner, LagPartitionerConfig, LagReader};
use lagbalance::partitioner::Partitioner;
use lagbalance::producer::{Producer, ProducerConfig};
use lagbalance::records::ProducerRecord;
use lagbalance::{Client, ClientConfig, Consumer, ConsumerConfig};

/// How the producer spreads records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Round-robin over all partitions.
    Even,
    /// The lag-aware partitioner.
    LagAware,
}

#[derive(Clone, Debug)]
pub struct Params {
    pub bootstrap: String,
    pub partitions: i32,
    /// Per-record cost of each consumer; the first is the slow one by convention.
    pub costs: Vec<Duration>,
    /// Records/s the producer writes.
    pub rate: f64,
    /// How long it writes.
    pub duration: Duration,
    pub routing: Routing,
    /// The group's assignor(s). Default `cooperative-sticky`: on tansu 0.6.0 the group
    /// settles 12.6 s after the first member (see `first_alone`). `range` (eager) can
    /// livelock there: an eager member rejoins with an empty owned set, so it repeats its
    /// last subscription byte for byte, generation field included, and the leader keeps
    /// taking that stale claim for a held-back member and keeps partitions with it — seen:
    /// one member of three without partitions for over 40 s, a round every ~12 s. The
    /// partitioner does not care which assignor the group uses.
    pub assignor: String,
    /// Partitioner settings (group and topic are filled in).
    pub partitioner: LagPartitionerConfig,
    /// Limit for the group to settle before producing.
    pub join_limit: Duration,
}

impl Params {
    pub fn new(bootstrap: &str, routing: Routing) -> Params {
        let mut partitioner = LagPartitionerConfig::new("-", "-");
        partitioner.interval = Duration::from_millis(500);
        partitioner.fetch_timeout = Duration::from_millis(400);
        partitioner.slow_lag = 40;
        partitioner.observe = Duration::from_secs(3);
        partitioner.probe_period = Duration::from_secs(3);
        partitioner.probe_share = 0.2;
        Params {
            bootstrap: bootstrap.to_owned(),
            partitions: 12,
            costs: vec![
                Duration::from_millis(20),
                Duration::from_millis(2),
                Duration::from_millis(2),
            ],
            rate: 240.0,
            duration: Duration::from_secs(20),
            routing,
            assignor: "cooperative-sticky".into(),
            partitioner,
            join_limit: Duration::from_secs(30),
        }
    }
}

/// One lag sample.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Seconds since producing began.
    pub t: f64,
    pub total_lag: i64,
    /// Lag of the slow consumer's partitions.
    pub slow_lag: i64,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub routing: Routing,
    /// The slow consumer's partitions when producing began.
    pub slow_partitions: BTreeSet<i32>,
    /// Whether any partition changed owner while producing (a lag-aware assignor may move
    /// them; then the per-consumer figures mix owners).
    pub ownership_changed: bool,
    /// Partitions per consumer before and after producing.
    pub owners: (Vec<BTreeSet<i32>>, Vec<BTreeSet<i32>>),
    /// Group generation per consumer before and after producing (a change means the group
    /// rebalanced while records flowed, even if every partition came back to its owner).
    pub generations: (Vec<i32>, Vec<i32>),
    /// Records written per partition.
    pub produced: Vec<u64>,
    pub samples: Vec<Sample>,
    /// Records each consumer processed while producing.
    pub consumed: Vec<u64>,
    /// State changes the partitioner made (0 for even spread).
    pub transitions: u64,
    pub elapsed: Duration,
}

impl Report {
    /// Share of the records written to the slow consumer's partitions.
    pub fn slow_share(&self) -> f64 {
        let total: u64 = self.produced.iter().sum();
        let slow: u64 = self
            .slow_partitions
            .iter()
            .filter_map(|p| self.produced.get(*p as usize))
            .sum();
        if total == 0 {
            0.0
        } else {
            slow as f64 / total as f64
        }
    }

    /// The slow consumer's fair share by partition count.
    pub fn fair_share(&self) -> f64 {
        self.slow_partitions.len() as f64 / self.produced.len().max(1) as f64
    }

    pub fn max_lag_after(&self, t: f64) -> i64 {
        self.max_lag_in(t, f64::INFINITY)
    }

    /// The highest total lag sampled at `from` ≤ t < `to`.
    pub fn max_lag_in(&self, from: f64, to: f64) -> i64 {
        self.samples
            .iter()
            .filter(|s| s.t >= from && s.t < to)
            .map(|s| s.total_lag)
            .max()
            .unwrap_or(0)
    }

    /// Whether the lag keeps growing: the second half's peak is more than 1.5× the first
    /// half's. A bounded lag under an on/off controller is a sawtooth whose peaks stay level,
    /// so a least-squares trend over half a run depends on where the teeth fall; a lag that
    /// grows at a steady rate peaks about twice as high in the second half.
    pub fn lag_keeps_growing(&self) -> bool {
        let half = self.elapsed.as_secs_f64() / 2.0;
        2 * self.max_lag_after(half) > 3 * self.max_lag_in(0.0, half)
    }

    pub fn final_lag(&self) -> i64 {
        self.samples.last().map_or(0, |s| s.total_lag)
    }

    /// Least-squares slope of total lag (records/s) over samples at or after `t`.
    pub fn lag_slope_after(&self, t: f64) -> f64 {
        let pts: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.t >= t)
            .map(|s| (s.t, s.total_lag as f64))
            .collect();
        let n = pts.len() as f64;
        if n < 2.0 {
            return 0.0;
        }
        let xm = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let ym = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxy: f64 = pts.iter().map(|p| (p.0 - xm) * (p.1 - ym)).sum();
        let sxx: f64 = pts.iter().map(|p| (p.0 - xm).powi(2)).sum();
        if sxx > 0.0 {
            sxy / sxx
        } else {
            0.0
        }
    }
}

/// Round-robin over every partition: the even-spread control.
struct RoundRobin(AtomicU64);

impl Partitioner for RoundRobin {
    fn partition(&self, _topic: &str, _key: Option<&[u8]>, n: i32) -> Option<i32> {
        Some((self.0.fetch_add(1, Ordering::Relaxed) % n.max(1) as u64) as i32)
    }
}

/// A consumer task: its partitions and group generation as it last reported them, and what
/// it processed.
struct Member {
    owned: Arc<Mutex<BTreeSet<i32>>>,
    /// The group generation the member last joined (−1 before the first).
    generation: Arc<AtomicI32>,
    consumed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<()>>,
}

fn spawn_member(
    bootstrap: &str,
    group: &str,
    topic: &str,
    assignor: &str,
    cost: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Member> {
    let mut config = ConsumerConfig::new(bootstrap, group);
    config.set("auto.offset.reset", "earliest")?;
    config.set("partition.assignment.strategy", assignor)?;
    config.set("auto.commit.interval.ms", "200")?;
    // Small batches: the per-record cost is slept per batch, and commits happen between
    // batches, so a big batch would hide processed records from the lag reading.
    config.set("max.poll.records", "20")?;
    let mut consumer = Consumer::new(config, Box::new(NoopListener))?;
    consumer.subscribe(&[topic]);
    let owned = Arc::new(Mutex::new(BTreeSet::new()));
    let generation = Arc::new(AtomicI32::new(-1));
    let consumed = Arc::new(AtomicU64::new(0));
    let (o, g, c) = (owned.clone(), generation.clone(), consumed.clone());
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let records = match consumer.poll(Duration::from_millis(100)).await {
                Ok(r) => r,
                Err(e) if e.is_retriable() => continue,
                Err(e) => return Err(e.into()),
            };
            if !records.is_empty() {
                tokio::time::sleep(cost * records.len() as u32).await;
                c.fetch_add(records.len() as u64, Ordering::Relaxed);
            }
            if let Ok(mut o) = o.lock() {
                *o = consumer.assignment().iter().map(|(_, p)| *p).collect();
                g.store(consumer.identity().generation, Ordering::Relaxed);
            }
        }
        consumer.close(Duration::from_secs(5)).await?;
        Ok(())
    });
    Ok(Member {
        owned,
        generation,
        consumed,
        task,
    })
}

fn ownership(members: &[Member]) -> Vec<BTreeSet<i32>> {
    members
        .iter()
        .map(|m| m.owned.lock().map(|o| o.clone()).unwrap_or_default())
        .collect()
}

fn generations(members: &[Member]) -> Vec<i32> {
    members
        .iter()
        .map(|m| m.generation.load(Ordering::Relaxed))
        .collect()
}

/// Whether the group is where its assignor would leave it: every partition owned exactly once,
/// every member in the same generation, and the shares even (no two members more than one
/// partition apart — what range and cooperative-sticky give a group of equal members).
///
/// An uneven or incomplete assignment is one the leader adjusted: on tansu 0.6.0 (no join
/// barrier) it keeps a partition with its remembered owner, or withholds a contested one, and
/// asks for a *follow-up round* — which its back-off (up to 4 heartbeat intervals, 12 s) can
/// start well after ownership has looked still for a few seconds. A member whose JoinGroup
/// tansu is holding still reports the previous generation.
fn settled(owners: &[BTreeSet<i32>], generations: &[i32], partitions: i32) -> bool {
    let total: usize = owners.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = owners.iter().flatten().copied().collect();
    let sizes = owners.iter().map(BTreeSet::len);
    let (least, most) = (sizes.clone().min(), sizes.max());
    total == partitions as usize
        && union.len() == total
        && least.is_some_and(|l| l > 0 && most.is_some_and(|m| m - l <= 1))
        && generations
            .first()
            .is_some_and(|g| *g >= 0 && generations.iter().all(|x| x == g))
}

/// How long the group must hold still, settled, before producing: a rejoin already in flight
/// (tansu holds a follower's JoinGroup ~3 s) shows within this.
const SETTLE: Duration = Duration::from_secs(4);

/// Wait (until `deadline`) for the first member to own every partition: a group of one,
/// formed and synced. The others are started only then.
///
/// On tansu 0.6.0 (no join barrier) three members started together form the group one
/// JoinGroup at a time: the leader's first plans go to generations that nobody syncs, its
/// memory of them then outranks the members' claims, and follow-up rounds, each behind
/// tansu's ~3 s hold of a follower's JoinGroup, follow (measured: settled after 3.5–27 s,
/// producing at 7.6–31.3 s). With the first member settled alone, the other two join one
/// cooperative rebalance with real claims (measured: settled after 12.6 s every time).
async fn first_alone(members: &[Member], partitions: i32, deadline: Instant) -> Result<()> {
    loop {
        let owned = ownership(members);
        if owned.first().map_or(0, BTreeSet::len) == partitions as usize {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the first member did not own all {partitions} partitions in time: {owned:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run the experiment once, on a fresh topic and group.
pub async fn run(params: &Params) -> Result<Report> {
    let client = Client::new(ClientConfig::new(&params.bootstrap))?;
    let topic = crate::unique("lagpart");
    let group = crate::unique("lagpart-g");
    client.create_topic(&topic, params.partitions, 1).await?;
    let stop = Arc::new(AtomicBool::new(false));
    // The whole join, first member and group, is bounded by `join_limit`.
    let deadline = Instant::now() + params.join_limit;
    let mut members = Vec::new();
    let mut result = Ok(());
    for cost in &params.costs {
        members.push(spawn_member(
            &params.bootstrap,
            &group,
            &topic,
            &params.assignor,
            *cost,
            stop.clone(),
        )?);
        if members.len() == 1 {
            result = first_alone(&members, params.partitions, deadline).await;
            if result.is_err() {
                break;
            }
        }
    }
    let result = match result {
        Ok(()) => measure(params, &client, &topic, &group, &members, deadline).await,
        Err(e) => Err(e),
    };
    stop.store(true, Ordering::Relaxed);
    for m in members {
        match tokio::time::timeout(Duration::from_secs(10), m.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("consumer ended with an error: {e}"),
            Ok(Err(e)) => eprintln!("consumer task failed: {e}"),
            Err(_) => eprintln!("consumer did not close in time"),
        }
    }
    result
}

async fn measure(
    params: &Params,
    client: &Client,
    topic: &str,
    group: &str,
    members: &[Member],
    deadline: Instant,
) -> Result<Report> {
    let n = params.partitions;
    // Wait (until `deadline`) for the group to be settled (see `settled`) and to have held
    // still for SETTLE.
    let mut stable_since: Option<(Instant, Vec<BTreeSet<i32>>, Vec<i32>)> = None;
    // LAGRUN_TRACE=1 prints every ownership or generation change while waiting.
    let trace = std::env::var_os("LAGRUN_TRACE").is_some();
    let began = Instant::now();
    let mut last_seen = (Vec::new(), Vec::new());
    let settled = loop {
        let now = ownership(members);
        let gens = generations(members);
        let good = settled(&now, &gens, n);
        if trace && (last_seen.0 != now || last_seen.1 != gens) {
            eprintln!(
                "{:>5.1} s {group}: {now:?} generations {gens:?}{}",
                began.elapsed().as_secs_f64(),
                if good { " (settled)" } else { "" }
            );
            last_seen = (now.clone(), gens.clone());
        }
        match &stable_since {
            Some((since, seen, seen_gens)) if good && *seen == now && *seen_gens == gens => {
                if since.elapsed() >= SETTLE {
                    break now;
                }
            }
            _ if good => stable_since = Some((Instant::now(), now.clone(), gens.clone())),
            _ => stable_since = None,
        }
        if Instant::now() >= deadline {
            bail!(
                "group did not settle within {:?}: {now:?}, generations {gens:?}",
                params.join_limit
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if trace {
        eprintln!(
            "{:>5.1} s {group}: producing",
            began.elapsed().as_secs_f64()
        );
    }
    let generations_before = generations(members);
    let slow_partitions = settled[0].clone();

    let mut pcfg = params.partitioner.clone();
    pcfg.group = group.to_owned();
    pcfg.topic = topic.to_owned();
    let lag_partitioner = match params.routing {
        Routing::LagAware => Some(LagPartitioner::start(client.clone(), pcfg)?),
        Routing::Even => None,
    };
    let partitioner: Arc<dyn Partitioner> = match &lag_partitioner {
        Some(p) => Arc::new(p.clone()),
        None => Arc::new(RoundRobin(AtomicU64::new(0))),
    };
    let producer = Producer::with_partitioner(
        client.clone(),
        ProducerConfig {
            // One record per batch at these rates anyway; tansu's ListOffsets is exact then.
            linger: Duration::from_millis(1),
            ..Default::default()
        },
        partitioner,
    )?;
    let consumed_before: Vec<u64> = members
        .iter()
        .map(|m| m.consumed.load(Ordering::Relaxed))
        .collect();

    let mut produced = vec![0u64; n as usize];
    let mut samples = Vec::new();
    let mut reader = LagReader::default();
    let started = Instant::now();
    let total = (params.rate * params.duration.as_secs_f64()).round() as usize;
    let mut pending = Vec::with_capacity(total);
    let mut next_sample = Duration::ZERO;
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / params.rate);
        tokio::time::sleep_until(due.into()).await;
        pending.push(
            producer
                .send(ProducerRecord::new(topic).value(format!("v{i}")))
                .await?,
        );
        if started.elapsed() >= next_sample {
            next_sample += Duration::from_secs(1);
            let offsets = client.topic_offsets(group, topic).await?;
            let lags = reader.lags(&offsets);
            let total_lag = lags.iter().flatten().sum();
            let slow_lag = slow_partitions
                .iter()
                .filter_map(|p| lags.get(*p as usize).copied().flatten())
                .sum();
            samples.push(Sample {
                t: started.elapsed().as_secs_f64(),
                total_lag,
                slow_lag,
            });
        }
    }
    producer.flush().await?;
    for d in pending {
        let m = d.await.context("delivery")?;
        if let Some(c) = produced.get_mut(m.partition as usize) {
            *c += 1;
        }
    }
    let elapsed = started.elapsed();
    // The last sample, after the producer finished.
    let offsets = client.topic_offsets(group, topic).await?;
    let lags = reader.lags(&offsets);
    samples.push(Sample {
        t: elapsed.as_secs_f64(),
        total_lag: lags.iter().flatten().sum(),
        slow_lag: slow_partitions
            .iter()
            .filter_map(|p| lags.get(*p as usize).copied().flatten())
            .sum(),
    });
    producer.close().await?;
    let owners_after = ownership(members);
    let generations_after = generations(members);
    let ownership_changed = owners_after != settled;
    Ok(Report {
        routing: params.routing,
        slow_partitions,
        produced,
        samples,
        consumed: members
            .iter()
            .zip(consumed_before)
            .map(|(m, b)| m.consumed.load(Ordering::Relaxed) - b)
            .collect(),
        transitions: lag_partitioner.map_or(0, |p| p.status().transitions),
        elapsed,
        ownership_changed,
        owners: (settled, owners_after),
        generations: (generations_before, generations_after),
    })
}

#[cfg(test)]
mod tests {
    use super::settled;
    use std::collections::BTreeSet;

    fn owners(sets: &[&[i32]]) -> Vec<BTreeSet<i32>> {
        sets.iter().map(|s| s.iter().copied().collect()).collect()
    }

    #[test]
    fn settled_needs_every_partition_once_even_shares_and_one_generation() {
        let even = owners(&[&[0, 1, 2, 3], &[4, 5, 6, 7], &[8, 9, 10, 11]]);
        assert!(settled(&even, &[6, 6, 6], 12));
        // A member whose JoinGroup tansu holds still reports the previous generation.
        assert!(!settled(&even, &[6, 5, 6], 12));
        assert!(!settled(&even, &[-1, -1, -1], 12));
        // Kept with a remembered owner: a follow-up round is coming (seen on tansu).
        let kept = owners(&[&[4, 5], &[0, 1, 2, 3], &[6, 7, 8, 9, 10, 11]]);
        assert!(!settled(&kept, &[6, 6, 6], 12));
        // Withheld (contested) partitions.
        let withheld = owners(&[&[0, 2, 4, 6], &[9, 11], &[1, 3, 5, 7]]);
        assert!(!settled(&withheld, &[7, 7, 7], 12));
        // Owned twice.
        let twice = owners(&[&[0, 1, 2, 3], &[3, 4, 5, 6], &[7, 8, 9, 10, 11]]);
        assert!(!settled(&twice, &[2, 2, 2], 12));
        // Shares one apart are even (e.g. 10 partitions over 3 members).
        let uneven_count = owners(&[&[0, 1, 2, 3], &[4, 5, 6], &[7, 8, 9]]);
        assert!(settled(&uneven_count, &[3, 3, 3], 10));
    }
}
