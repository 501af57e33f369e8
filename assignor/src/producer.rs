//! An async batching producer.
//!
//! `send` places a record in its partition's open batch and returns a future for its offset.
//! A background task ships batches when they are full or have waited `linger`, one request per
//! partition leader, at most one batch in flight per partition (so retries cannot reorder a
//! partition). Retriable failures (leader moved, connection lost) are retried until the
//! delivery timeout; the caller always gets an answer.
//!
//! Idempotence (`enable.idempotence`, on by default as in Kafka ≥ 3.0): before its first batch
//! the producer gets a producer id from InitProducerId, and every batch carries that id, an
//! epoch and a per-partition sequence (see [`crate::idempotence`]). A retry re-sends the same
//! bytes, so a batch whose answer was lost is not written twice: the broker recognises the
//! sequence and answers with the first write's offset.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, ProduceRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use lagbalance_assign::rng::Rng;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::Client;
use crate::delivery::Outcome;
pub use crate::delivery::{DeliveryFuture, RecordMetadata};
use crate::error::{Error, Result};
use crate::idempotence::{ProducerIdentity, Sequencer, Stamp, Verdict};
use crate::partitioner::{partition_for_key, Partitioner};
use crate::records::{encode_stamped_batch, CompressionCodec, ProducerRecord};

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
    /// `enable.idempotence`. `None` is Kafka's default: on, unless `acks` is not `all` (then
    /// off, as the Java client does when only `acks` was set). `Some(true)` with `acks` 0 or 1
    /// is a configuration error. See [`ProducerConfig::idempotent`].
    pub enable_idempotence: Option<bool>,
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
            enable_idempotence: None,
            linger: Duration::from_millis(5),
            batch_size: 64 * 1024,
            compression: CompressionCodec::None,
            delivery_timeout: Duration::from_secs(120),
            buffer_memory: 32 * 1024 * 1024,
        }
    }
}

impl ProducerConfig {
    /// Whether the producer is idempotent. Idempotence needs `acks=all`: a batch only the
    /// leader has can be lost with its sequence state, and then written twice.
    pub fn idempotent(&self) -> Result<bool> {
        match (self.enable_idempotence, self.acks) {
            (Some(false), _) => Ok(false),
            (_, Acks::All) => Ok(true),
            (None, _) => Ok(false),
            (Some(true), acks) => Err(Error::Config(format!(
                "enable.idempotence=true requires acks=all, not {}",
                match acks {
                    Acks::None => "0",
                    _ => "1",
                }
            ))),
        }
    }

    /// Set one property by its Kafka name: `acks`, `enable.idempotence`, `linger.ms`,
    /// `batch.size`, `compression.type`, `delivery.timeout.ms`, `buffer.memory`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        let number = |v: &str| -> Result<u64> {
            v.parse::<u64>()
                .map_err(|_| Error::Config(format!("{key} = '{v}' is not a number")))
        };
        let size = |v: &str| -> Result<usize> {
            usize::try_from(number(v)?)
                .map_err(|_| Error::Config(format!("{key} = '{v}' is too large")))
        };
        match key {
            "acks" => self.acks = Acks::parse(value)?,
            "enable.idempotence" => {
                self.enable_idempotence = Some(match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(Error::Config(format!(
                            "{key} must be true or false, not '{value}'"
                        )))
                    }
                })
            }
            "linger.ms" => self.linger = Duration::from_millis(number(value)?),
            "batch.size" => self.batch_size = size(value)?,
            "compression.type" => self.compression = CompressionCodec::parse(value)?,
            "delivery.timeout.ms" => self.delivery_timeout = Duration::from_millis(number(value)?),
            "buffer.memory" => self.buffer_memory = size(value)?,
            other => {
                return Err(Error::Config(format!(
                    "unknown producer property '{other}'"
                )))
            }
        }
        Ok(self)
    }
}

struct Batch {
    records: Vec<ProducerRecord>,
    /// What every record's delivery future learns when the batch settles.
    outcome: Arc<Outcome>,
    bytes: usize,
    created: Instant,
    /// Encoded once, reused on retries.
    encoded: Option<Bytes>,
    /// Not before this instant (set after a retriable failure).
    retry_at: Option<Instant>,
    /// Idempotence fields, fixed when the batch is first sent and kept for its retries.
    stamp: Option<Stamp>,
    /// An attempt went unanswered (connection lost, timeout): the batch may be in the log.
    maybe_written: bool,
    /// The buffer memory the batch's records hold, one permit grown record by record and
    /// given back in one piece when the batch is dropped.
    _memory: Option<OwnedSemaphorePermit>,
}

impl Drop for Batch {
    /// A batch dropped unsettled (the producer went away) still answers its records.
    fn drop(&mut self) {
        self.outcome.resolve(Err(Error::Shutdown));
    }
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
    /// Spreads unkeyed batches; needs no quality beyond that.
    rng: Rng,
    /// Sequence state of the idempotent producer; `None` when idempotence is off.
    sequencer: Option<Sequencer>,
}

impl Accumulator {
    fn is_idle(&self) -> bool {
        self.queues
            .values()
            .flat_map(HashMap::values)
            .all(|q| q.open.is_none() && q.ready.is_empty() && !q.in_flight)
    }

    /// Whether any batch waits to be sent (open or ready, not in flight).
    fn has_waiting(&self) -> bool {
        self.queues
            .values()
            .flat_map(HashMap::values)
            .any(|q| q.open.is_some() || !q.ready.is_empty())
    }

    /// Fail every waiting batch not yet stamped (never sent) that is older than `max_age`
    /// (`None`: all of them) with `error`.
    fn fail_unsent(&mut self, error: &Error, max_age: Option<Duration>) {
        let expired =
            |b: &Batch| b.stamp.is_none() && max_age.is_none_or(|age| b.created.elapsed() >= age);
        let fail = |b: Batch| b.outcome.resolve(Err(error.clone()));
        for q in self.queues.values_mut().flat_map(HashMap::values_mut) {
            let (gone, kept): (VecDeque<Batch>, VecDeque<Batch>) =
                q.ready.drain(..).partition(|b| expired(b));
            q.ready = kept;
            gone.into_iter().for_each(fail);
            if q.open.as_ref().is_some_and(expired) {
                q.open.take().into_iter().for_each(fail);
            }
        }
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
        let sequencer = config.idempotent()?.then(Sequencer::new);
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let shared = Arc::new(Shared {
            client,
            memory: Arc::new(Semaphore::new(config.buffer_memory)),
            config,
            acc: Mutex::new(Accumulator {
                rng: Rng::new(seed),
                sequencer,
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
                    let p = acc.rng.below(n as u64) as i32;
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
            outcome: Outcome::new(record.topic.clone(), partition),
            bytes: 0,
            created: Instant::now(),
            encoded: None,
            retry_at: None,
            stamp: None,
            maybe_written: false,
            _memory: None,
        });
        batch.bytes += size;
        let delivery = batch.outcome.future(batch.records.len());
        batch.records.push(record);
        match &mut batch._memory {
            Some(held) => held.merge(permit),
            None => batch._memory = Some(permit),
        }
        let full = batch.bytes >= batch_size;
        if full {
            let b = queue.open.take().expect("just filled");
            queue.ready.push_back(b);
            if let Some(topic) = topic {
                // Move unkeyed traffic on once a batch fills, as the Java client does.
                let next = (partition + 1 + acc.rng.below(n as u64 - 1) as i32) % n;
                acc.sticky.insert(topic, next);
            }
        }
        drop(acc);
        // A new batch gives the sender a new linger deadline; a full one is due now.
        if full || opened {
            self.shared.wake.notify_one();
        }
        Ok(delivery)
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
        if let Some(pause) = ensure_producer_id(&shared).await {
            if shared.acc.lock().map(|a| a.is_idle()).unwrap_or(true) {
                shared.idle.notify_waiters();
            }
            let _ = tokio::time::timeout(pause, wake).await;
            continue;
        }
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

/// For an idempotent producer with batches waiting and no producer id: run InitProducerId.
/// `Some(pause)` if there is still no id (try again after `pause`); `None` when batches may go.
async fn ensure_producer_id(shared: &Shared) -> Option<Duration> {
    {
        let mut acc = shared.acc.lock().ok()?;
        let waiting = acc.has_waiting();
        let seq = acc.sequencer.as_mut()?;
        // Lazily: a producer that never sends never asks for an id.
        if !seq.needs_producer_id() || !waiting {
            return None;
        }
    }
    let result = init_producer_id(&shared.client).await;
    let mut acc = shared.acc.lock().ok()?;
    let first = acc.sequencer.as_ref().is_some_and(|s| !s.initialised());
    match result {
        Ok((producer, can_bump)) => {
            tracing::debug!(?producer, can_bump, "producer id");
            if let Some(seq) = acc.sequencer.as_mut() {
                seq.set_producer(producer, can_bump);
            }
            None
        }
        // A broker without InitProducerId, and idempotence only by default: produce without
        // it rather than not at all (Java would fail; an old broker may lack it). Only before
        // the first id: later, batches already carry stamps that need the bookkeeping.
        Err(e @ Error::UnsupportedVersion { .. })
            if first && shared.config.enable_idempotence.is_none() =>
        {
            tracing::warn!(error = %e, "broker has no InitProducerId: idempotence off");
            acc.sequencer = None;
            None
        }
        Err(e) => {
            // Unsent batches wait for an id until their delivery timeout; a lasting refusal
            // (authorisation, explicit idempotence without broker support) fails them now.
            let max_age = e.is_retriable().then_some(shared.config.delivery_timeout);
            tracing::debug!(error = %e, "InitProducerId failed");
            acc.fail_unsent(&e, max_age);
            Some(shared.client.config().retry_backoff)
        }
    }
}

/// InitProducerId without a transactional id, to any broker: a fresh producer id and epoch,
/// and whether the broker speaks v3+ (KIP-360: it accepts a locally bumped epoch).
async fn init_producer_id(client: &Client) -> Result<(ProducerIdentity, bool)> {
    let conn = client.any_broker().await?;
    let (version, resp) = client
        .send(&conn, ApiKey::InitProducerId, |_| {
            // The default request has an empty (not null) transactional id: set every field.
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                // Java's value for a producer without transactions (the field is unused).
                .with_transaction_timeout_ms(i32::MAX)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        })
        .await?;
    crate::error::check_code(|| "InitProducerId".into(), resp.error_code)?;
    if resp.producer_id.0 < 0 || resp.producer_epoch < 0 {
        return Err(Error::malformed(
            "InitProducerId response",
            format!(
                "producer id {} epoch {}",
                resp.producer_id.0, resp.producer_epoch
            ),
        ));
    }
    let producer = ProducerIdentity {
        id: resp.producer_id.0,
        epoch: resp.producer_epoch,
    };
    Ok((producer, version >= 3))
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
    let Accumulator {
        queues, sequencer, ..
    } = &mut *acc;
    for (topic, partition, q) in queues
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
        if let Some(mut batch) = batch {
            if let Some(seq) = sequencer.as_mut() {
                if batch.stamp.is_none() {
                    match seq.stamp(topic, *partition) {
                        Some(s) => batch.stamp = Some(s),
                        None => {
                            // No producer id (being renewed): wait for it at the queue's head.
                            q.ready.push_front(batch);
                            continue;
                        }
                    }
                }
            }
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
            Err(e) => settle(shared, o, Err(e), false),
        }
    }
    for (leader, batches) in by_leader {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut batches = batches;
            let (result, unanswered) = produce_to(&shared, leader, &mut batches).await;
            for (o, r) in batches.into_iter().zip(result) {
                settle(&shared, o, r, unanswered);
            }
            shared.wake.notify_one();
        });
    }
}

/// Send one Produce request; returns the per-batch outcome (base offset) in input order, and
/// whether the request went out without an answer (so its batches may have been written).
async fn produce_to(
    shared: &Shared,
    leader: i32,
    batches: &mut [Outgoing],
) -> (Vec<Result<i64>>, bool) {
    let n = batches.len();
    let all_fail = |e: &Error| -> (Vec<Result<i64>>, bool) { (vec![Err(e.clone()); n], false) };
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
            // Encoded once, with the batch's stamp: a retry sends the very same bytes.
            None => match encode_stamped_batch(
                &o.batch.records,
                now_ms,
                shared.config.compression,
                o.batch.stamp,
            ) {
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
            Ok(()) => (batches.iter().map(|_| Ok(-1)).collect(), false),
            Err(e) => all_fail(&e),
        };
    }
    let resp = match conn.send(&req, version).await {
        Ok(r) => r,
        // Lost connection, timeout: the broker may have written the batches.
        Err(e) => return (vec![Err(e); n], true),
    };
    let results = batches
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
            // The broker has this batch already (a retry of a write whose answer was lost) but
            // no longer remembers its offset: delivered, at the offset it gives (−1).
            if p.error_code == ResponseError::DuplicateSequenceNumber.code() {
                return Ok(p.base_offset);
            }
            crate::error::check_code(
                || format!("produce to {}/{}", o.topic, o.partition),
                p.error_code,
            )?;
            Ok(p.base_offset)
        })
        .collect();
    (results, false)
}

/// Deliver a batch's outcome, or put it back at the head of its queue to retry.
/// `unanswered`: the attempt went out and got no answer (the batch may be in the log).
fn settle(shared: &Shared, mut o: Outgoing, result: Result<i64>, unanswered: bool) {
    let Ok(mut acc) = shared.acc.lock() else {
        return;
    };
    let Accumulator {
        queues, sequencer, ..
    } = &mut *acc;
    let q = queues
        .entry(o.topic.clone())
        .or_default()
        .entry(o.partition)
        .or_default();
    q.in_flight = false;
    o.batch.maybe_written |= unanswered && result.is_err();
    let in_time = o.batch.created.elapsed() < shared.config.delivery_timeout;
    let count = o.batch.records.len() as i32;
    let stamped = sequencer.as_mut().zip(o.batch.stamp);
    let result = match (result, stamped) {
        (Err(e), Some((seq, stamp))) => {
            let verdict = e.broker_code().and_then(|code| {
                seq.on_error(&o.topic, o.partition, stamp, code, o.batch.maybe_written)
            });
            match verdict {
                Some(Verdict::Resend) if in_time => {
                    tracing::debug!(topic = %o.topic, partition = o.partition, error = %e,
                        "resending batch under a new producer epoch");
                    // Re-stamped (sequence 0 of the new epoch) and re-encoded when next sent.
                    o.batch.stamp = None;
                    o.batch.encoded = None;
                    o.batch.retry_at = Some(Instant::now() + shared.client.config().retry_backoff);
                    q.ready.push_front(o.batch);
                    return;
                }
                Some(Verdict::Fail(e)) => Err(e),
                Some(Verdict::Resend) | None => Err(e),
            }
        }
        (r, _) => r,
    };
    match result {
        Ok(base) => {
            if let Some((seq, stamp)) = sequencer.as_mut().zip(o.batch.stamp) {
                seq.acknowledged(&o.topic, o.partition, stamp, count);
            }
            o.batch.outcome.resolve(Ok(base));
        }
        // Retried with the same stamp and bytes: if the broker wrote it, it says so.
        Err(e) if e.is_retriable() && in_time => {
            tracing::debug!(topic = %o.topic, partition = o.partition, error = %e, "retrying batch");
            shared.client.invalidate(&o.topic);
            // Back off so a leader change has time to show in the metadata.
            o.batch.retry_at = Some(Instant::now() + shared.client.config().retry_backoff);
            q.ready.push_front(o.batch);
            return;
        }
        Err(e) => {
            // Given up after it may have been sent: its sequence may or may not be taken.
            if let Some((seq, stamp)) = sequencer.as_mut().zip(o.batch.stamp) {
                seq.failed(&o.topic, o.partition, stamp);
            }
            o.batch.outcome.resolve(Err(e));
        }
    }
    if q.open.is_none() && q.ready.is_empty() {
        if let Some(parts) = queues.get_mut(&o.topic) {
            parts.remove(&o.partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(props: &[(&str, &str)]) -> Result<ProducerConfig> {
        let mut c = ProducerConfig::default();
        for (k, v) in props {
            c.set(k, v)?;
        }
        Ok(c)
    }

    /// Kafka's rules: idempotence defaults on and needs acks=all; an explicit acks 0/1 turns
    /// the default off, an explicit `enable.idempotence=true` with it is an error.
    #[test]
    fn idempotence_defaults_on_and_needs_acks_all() {
        let idempotent = |props: &[(&str, &str)]| config(props).and_then(|c| c.idempotent());
        assert!(idempotent(&[]).unwrap());
        assert!(idempotent(&[("acks", "all")]).unwrap());
        assert!(idempotent(&[("acks", "-1"), ("enable.idempotence", "true")]).unwrap());
        assert!(!idempotent(&[("acks", "1")]).unwrap());
        assert!(!idempotent(&[("acks", "0")]).unwrap());
        assert!(!idempotent(&[("enable.idempotence", "false")]).unwrap());
        assert!(!idempotent(&[("acks", "1"), ("enable.idempotence", "false")]).unwrap());
        for acks in ["0", "1"] {
            // Either order of setting.
            for props in [
                [("acks", acks), ("enable.idempotence", "true")],
                [("enable.idempotence", "true"), ("acks", acks)],
            ] {
                let e = idempotent(&props).unwrap_err();
                assert!(matches!(e, Error::Config(_)), "{e}");
                assert!(e.to_string().contains("requires acks=all"), "{e}");
            }
        }
        assert!(config(&[("enable.idempotence", "yes")]).is_err());
        assert!(config(&[("acks", "2")]).is_err());
        assert!(config(&[("no.such.thing", "1")]).is_err());
        let c = config(&[
            ("linger.ms", "7"),
            ("batch.size", "100"),
            ("compression.type", "zstd"),
            ("delivery.timeout.ms", "3000"),
            ("buffer.memory", "1000"),
        ])
        .unwrap();
        assert_eq!(c.linger, Duration::from_millis(7));
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.compression, CompressionCodec::Zstd);
        assert_eq!(c.delivery_timeout, Duration::from_secs(3));
        assert_eq!(c.buffer_memory, 1000);
        assert!(config(&[("linger.ms", "-1")]).is_err());
    }
}
