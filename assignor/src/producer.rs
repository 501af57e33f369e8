//! An async batching producer.
//!
//! `send` places a record in its partition's open batch and returns a future for its offset.
//! A background task ships batches when they are full or have waited `linger`, one request per
//! partition leader, at most one batch in flight per partition (so retries cannot reorder a
//! partition). Retriable failures (leader moved, connection lost) are retried until the
//! delivery timeout; the caller always gets an answer.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::Client;
use crate::error::{Error, Result};
use crate::partitioner::{partition_for_key, Partitioner};
use crate::records::{encode_batch, CompressionCodec, ProducerRecord};

/// `acks`: how many replicas must have the batch before the broker answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: fire and forget; offsets are unknown (-1).
    None,
    /// `acks=1`: the leader wrote it.
    Leader,
    /// `acks=all`: every in-sync replica has it.
    All,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
    /// Parse an `acks` setting: `0`, `1`, `all` or `-1`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(Error::Config(format!(
                "acks '{other}' is not one of 0, 1, all"
            ))),
        }
    }
}

/// Producer settings, named after the Java client's.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// `linger.ms`: how long a batch waits for more records.
    pub linger: Duration,
    /// `batch.size` in bytes.
    pub batch_size: usize,
    /// `compression.type`.
    pub compression: CompressionCodec,
    /// `delivery.timeout.ms`: a record fails after this long, retries included.
    pub delivery_timeout: Duration,
    /// `buffer.memory`: `send` waits while this many bytes are unacknowledged.
    pub buffer_memory: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 64 * 1024,
            compression: CompressionCodec::None,
            delivery_timeout: Duration::from_secs(120),
            buffer_memory: 32 * 1024 * 1024,
        }
    }
}

/// Where a record was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    /// Offset in the partition; -1 with `acks=0`.
    pub offset: i64,
}

/// Resolves when the record is acknowledged (or definitely failed).
pub struct DeliveryFuture(oneshot::Receiver<Result<RecordMetadata>>);

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Shutdown)))
    }
}

type Waiter = oneshot::Sender<Result<RecordMetadata>>;

struct Batch {
    records: Vec<ProducerRecord>,
    waiters: Vec<Waiter>,
    bytes: usize,
    created: Instant,
    /// Encoded once, reused on retries.
    encoded: Option<Bytes>,
    /// Not before this instant (set after a retriable failure).
    retry_at: Option<Instant>,
    _permits: Vec<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<Batch>,
    ready: VecDeque<Batch>,
    in_flight: bool,
}

#[derive(Default)]
struct Accumulator {
    /// Topic → partition → queue. Two levels so that the per-record lookup borrows the
    /// topic name instead of allocating a key.
    queues: HashMap<String, HashMap<i32, PartitionQueue>>,
    /// Partition unkeyed records of a topic currently stick to (Kafka's sticky partitioner).
    sticky: HashMap<String, i32>,
    flushing: usize,
    closed: bool,
    rng: u64,
}

impl Accumulator {
    fn is_idle(&self) -> bool {
        self.queues
            .values()
            .flat_map(HashMap::values)
            .all(|q| q.open.is_none() && q.ready.is_empty() && !q.in_flight)
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: only spreads unkeyed batches, needs no quality beyond that.
        let mut x = self.rng.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    acc: Mutex<Accumulator>,
    wake: Notify,
    idle: Notify,
    memory: Arc<Semaphore>,
    /// Consulted before the default partitioning; `None` costs one branch per record.
    partitioner: Option<Arc<dyn Partitioner>>,
}

/// An async, batching producer. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    sender: Arc<JoinHandle<()>>,
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Result<Producer> {
        Self::build(client, config, None)
    }

    /// A producer that asks `partitioner` where each record without an explicit partition
    /// goes (falling back to the default when it answers `None`).
    pub fn with_partitioner(
        client: Client,
        config: ProducerConfig,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<Producer> {
        Self::build(client, config, Some(partitioner))
    }

    fn build(
        client: Client,
        config: ProducerConfig,
        partitioner: Option<Arc<dyn Partitioner>>,
    ) -> Result<Producer> {
        if config.batch_size == 0 || config.buffer_memory < config.batch_size {
            return Err(Error::Config(
                "batch.size must be > 0 and buffer.memory ≥ batch.size".into(),
            ));
        }
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let shared = Arc::new(Shared {
            client,
            memory: Arc::new(Semaphore::new(config.buffer_memory)),
            config,
            acc: Mutex::new(Accumulator {
                rng: seed,
                ..Default::default()
            }),
            wake: Notify::new(),
            idle: Notify::new(),
            partitioner,
        });
        let sender = Arc::new(tokio::spawn(run_sender(shared.clone())));
        Ok(Producer { shared, sender })
    }

    /// Queue `record`; the returned future resolves with its offset.
    pub async fn send(&self, mut record: ProducerRecord) -> Result<DeliveryFuture> {
        let n = match self.shared.client.cached_partition_count(&record.topic) {
            Some(n) => n,
            None => self.shared.client.partitions(&record.topic).await?.len(),
        } as i32;
        if n == 0 {
            return Err(Error::UnknownTopicOrPartition {
                topic: record.topic,
                partition: -1,
            });
        }
        // Asked before the lock: a custom partitioner must not serialise every sender.
        let custom = match (&self.shared.partitioner, record.partition) {
            (Some(p), None) => p
                .partition(&record.topic, record.key.as_deref(), n)
                .filter(|p| (0..n).contains(p)),
            _ => None,
        };
        let size = record.estimated_size();
        // A record bigger than the whole buffer still goes through, alone.
        let want = size.min(self.shared.config.buffer_memory) as u32;
        let permit = self
            .shared
            .memory
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| Error::Shutdown)?;
        let (tx, rx) = oneshot::channel();
        let mut acc = self.shared.acc.lock().map_err(|_| Error::Shutdown)?;
        if acc.closed {
            return Err(Error::Shutdown);
        }
        let partition = match (custom.or(record.partition), &record.key) {
            (Some(p), _) if p < 0 || p >= n => {
                return Err(Error::UnknownTopicOrPartition {
                    topic: record.topic,
                    partition: p,
                })
            }
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, n),
            (None, None) => match acc.sticky.get(&record.topic) {
                Some(p) if *p < n => *p,
                _ => {
                    let p = (acc.next_random() % n as u64) as i32;
                    acc.sticky.insert(record.topic.clone(), p);
                    p
                }
            },
        };
        record.partition = Some(partition);
        // The sticky partition moves on only for records it placed.
        let unkeyed = record.key.is_none() && custom.is_none();
        let batch_size = self.shared.config.batch_size;
        if !acc.queues.contains_key(&record.topic) {
            acc.queues.insert(record.topic.clone(), HashMap::new());
        }
        // Only an unkeyed record that fills its batch needs the topic name afterwards.
        let topic = (unkeyed && n > 1).then(|| record.topic.clone());
        let queue = acc
            .queues
            .get_mut(&record.topic)
            .expect("inserted above")
            .entry(partition)
            .or_default();
        let opened = queue.open.is_none();
        let batch = queue.open.get_or_insert_with(|| Batch {
            records: Vec::new(),
            waiters: Vec::new(),
            bytes: 0,
            created: Instant::now(),
            encoded: None,
            retry_at: None,
            _permits: Vec::new(),
        });
        batch.bytes += size;
        batch.records.push(record);
        batch.waiters.push(tx);
        batch._permits.push(permit);
        let full = batch.bytes >= batch_size;
        if full {
            let b = queue.open.take().expect("just filled");
            queue.ready.push_back(b);
            if let Some(topic) = topic {
                // Move unkeyed traffic on once a batch fills, as the Java client does.
                let next = (partition + 1 + (acc.next_random() % (n as u64 - 1)) as i32) % n;
                acc.sticky.insert(topic, next);
            }
        }
        drop(acc);
        // A new batch gives the sender a new linger deadline; a full one is due now.
        if full || opened {
            self.shared.wake.notify_one();
        }
        Ok(DeliveryFuture(rx))
    }

    /// Ship every queued record now and wait until all have an answer.
    pub async fn flush(&self) -> Result<()> {
        {
            let mut acc = self.shared.acc.lock().map_err(|_| Error::Shutdown)?;
            acc.flushing += 1;
        }
        let deadline = Instant::now() + self.shared.config.delivery_timeout;
        let result = loop {
            let idle = self.shared.idle.notified();
            if self
                .shared
                .acc
                .lock()
                .map_err(|_| Error::Shutdown)?
                .is_idle()
            {
                break Ok(());
            }
            self.shared.wake.notify_one();
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break Err(Error::Timeout {
                    what: "producer flush".into(),
                    after: self.shared.config.delivery_timeout,
                });
            }
        };
        if let Ok(mut acc) = self.shared.acc.lock() {
            acc.flushing -= 1;
        }
        result
    }

    /// Flush, then stop the background sender.
    pub async fn close(&self) -> Result<()> {
        let flushed = self.flush().await;
        if let Ok(mut acc) = self.shared.acc.lock() {
            acc.closed = true;
        }
        self.sender.abort();
        flushed
    }
}

/// One batch taken out of the accumulator to be sent.
struct Outgoing {
    topic: String,
    partition: i32,
    batch: Batch,
}

async fn run_sender(shared: Arc<Shared>) {
    loop {
        let wake = shared.wake.notified();
        let (drained, next_deadline) = drain(&shared);
        if !drained.is_empty() {
            dispatch(&shared, drained).await;
            continue;
        }
        if shared.acc.lock().map(|a| a.is_idle()).unwrap_or(true) {
            shared.idle.notify_waiters();
        }
        match next_deadline {
            Some(at) => {
                let _ = tokio::time::timeout_at(at, wake).await;
            }
            None => wake.await,
        }
    }
}

/// Take every batch that may go now; also return when the next open batch will be due.
fn drain(shared: &Shared) -> (Vec<Outgoing>, Option<Instant>) {
    let Ok(mut acc) = shared.acc.lock() else {
        return (Vec::new(), None);
    };
    let now = Instant::now();
    let flushing = acc.flushing > 0 || acc.closed;
    let linger = shared.config.linger;
    let mut out = Vec::new();
    let mut next: Option<Instant> = None;
    for (topic, partition, q) in acc
        .queues
        .iter_mut()
        .flat_map(|(t, parts)| parts.iter_mut().map(move |(p, q)| (t, p, q)))
    {
        if q.in_flight {
            continue;
        }
        let backing_off = q
            .ready
            .front()
            .and_then(|b| b.retry_at)
            .filter(|at| *at > now);
        let batch = if let Some(at) = backing_off {
            next = Some(next.map_or(at, |n| n.min(at)));
            None
        } else if let Some(b) = q.ready.pop_front() {
            Some(b)
        } else if q
            .open
            .as_ref()
            .is_some_and(|b| flushing || now >= b.created + linger)
        {
            q.open.take()
        } else {
            if let Some(b) = &q.open {
                let due = b.created + linger;
                next = Some(next.map_or(due, |n| n.min(due)));
            }
            None
        };
        if let Some(batch) = batch {
            q.in_flight = true;
            out.push(Outgoing {
                topic: topic.clone(),
                partition: *partition,
                batch,
            });
        }
    }
    (out, next)
}

/// Send drained batches grouped by leader; each leader's request runs as its own task.
async fn dispatch(shared: &Arc<Shared>, drained: Vec<Outgoing>) {
    let mut by_leader: HashMap<i32, Vec<Outgoing>> = HashMap::new();
    for o in drained {
        match shared.client.leader(&o.topic, o.partition).await {
            Ok(l) => by_leader.entry(l).or_default().push(o),
            Err(e) => settle(shared, o, Err(e)),
        }
    }
    for (leader, batches) in by_leader {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut batches = batches;
            let result = produce_to(&shared, leader, &mut batches).await;
            for (o, r) in batches.into_iter().zip(result) {
                settle(&shared, o, r);
            }
            shared.wake.notify_one();
        });
    }
}

/// Send one Produce request; returns the per-batch outcome (base offset) in input order.
async fn produce_to(shared: &Shared, leader: i32, batches: &mut [Outgoing]) -> Vec<Result<i64>> {
    let n = batches.len();
    let all_fail = |e: &Error| -> Vec<Result<i64>> { vec![Err(e.clone()); n] };
    let conn = match shared.client.broker(leader).await {
        Ok(c) => c,
        Err(e) => return all_fail(&e),
    };
    let version = match conn.version(ApiKey::Produce) {
        Ok(v) => v,
        Err(e) => return all_fail(&e),
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for o in batches.iter_mut() {
        let encoded = match &o.batch.encoded {
            Some(b) => b.clone(),
            None => match encode_batch(&o.batch.records, now_ms, shared.config.compression) {
                Ok(b) => b,
                Err(e) => return all_fail(&e),
            },
        };
        o.batch.encoded = Some(encoded.clone());
        let data = PartitionProduceData::default()
            .with_index(o.partition)
            .with_records(Some(encoded));
        match topics.iter_mut().find(|t| t.name.0.as_str() == o.topic) {
            Some(t) => t.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(o.topic.clone())))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    let mut req = ProduceRequest::default();
    req.acks = shared.config.acks.wire();
    req.timeout_ms = shared
        .client
        .config()
        .connection
        .request_timeout
        .as_millis() as i32;
    req.topic_data = topics;
    if shared.config.acks == Acks::None {
        return match conn.send_oneway(&req, version) {
            Ok(()) => batches.iter().map(|_| Ok(-1)).collect(),
            Err(e) => all_fail(&e),
        };
    }
    let resp = match conn.send(&req, version).await {
        Ok(r) => r,
        Err(e) => return all_fail(&e),
    };
    batches
        .iter()
        .map(|o| {
            let p = resp
                .responses
                .iter()
                .filter(|t| t.name.0.as_str() == o.topic)
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == o.partition)
                .ok_or_else(|| {
                    Error::malformed(
                        "Produce response",
                        format!("no answer for {}/{}", o.topic, o.partition),
                    )
                })?;
            crate::error::check_code(
                || format!("produce to {}/{}", o.topic, o.partition),
                p.error_code,
            )?;
            Ok(p.base_offset)
        })
        .collect()
}

/// Deliver a batch's outcome, or put it back at the head of its queue to retry.
fn settle(shared: &Shared, mut o: Outgoing, result: Result<i64>) {
    let Ok(mut acc) = shared.acc.lock() else {
        return;
    };
    let q = acc
        .queues
        .entry(o.topic.clone())
        .or_default()
        .entry(o.partition)
        .or_default();
    q.in_flight = false;
    match result {
        Ok(base) => {
            for (i, w) in o.batch.waiters.drain(..).enumerate() {
                let offset = if base < 0 { -1 } else { base + i as i64 };
                let _ = w.send(Ok(RecordMetadata {
                    topic: o.topic.clone(),
                    partition: o.partition,
                    offset,
                }));
            }
        }
        Err(e)
            if e.is_retriable() && o.batch.created.elapsed() < shared.config.delivery_timeout =>
        {
            tracing::debug!(topic = %o.topic, partition = o.partition, error = %e, "retrying batch");
            shared.client.invalidate(&o.topic);
            // Back off so a leader change has time to show in the metadata.
            o.batch.retry_at = Some(Instant::now() + shared.client.config().retry_backoff);
            q.ready.push_front(o.batch);
            return;
        }
        Err(e) => {
            for w in o.batch.waiters.drain(..) {
                let _ = w.send(Err(e.clone()));
            }
        }
    }
    if q.open.is_none() && q.ready.is_empty() {
        if let Some(parts) = acc.queues.get_mut(&o.topic) {
            parts.remove(&o.partition);
        }
    }
}
