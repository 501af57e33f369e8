//! The fetch path: positions per partition, Fetch requests to partition leaders in parallel,
//! batch decoding, `auto.offset.reset`, and bounded memory (one response per leader at a time,
//! each capped by `fetch.max.bytes` and `max.partition.fetch.bytes`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use lagbalance_assign::NamedPartition;
use tokio::task::JoinSet;

use crate::admin::OffsetSpec;
use crate::cluster::{Client, Lane};
use crate::error::{Error, Result};
use crate::lag;
use crate::records::{decode_records, ConsumerRecord};

/// `auto.offset.reset`: where to start when there is no valid position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OffsetReset {
    #[default]
    Latest,
    Earliest,
    /// Fail with [`Error::OffsetOutOfRange`].
    None,
}

impl OffsetReset {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            "none" => Ok(OffsetReset::None),
            other => Err(Error::Config(format!(
                "auto.offset.reset '{other}' is not one of earliest, latest, none"
            ))),
        }
    }
}

/// Fetch settings, named after the Java consumer's.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// `fetch.max.wait.ms`.
    pub max_wait: Duration,
    /// `fetch.min.bytes`.
    pub min_bytes: i32,
    /// `fetch.max.bytes`: cap of one response.
    pub max_bytes: i32,
    /// `max.partition.fetch.bytes`.
    pub max_partition_bytes: i32,
    pub auto_offset_reset: OffsetReset,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            max_partition_bytes: 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
        }
    }
}

/// What the fetcher knows about one assigned partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionState {
    /// Next offset to fetch; `None` until resolved by the reset policy.
    pub position: Option<i64>,
    /// Last high watermark the leader reported.
    pub high_watermark: Option<i64>,
    pub paused: bool,
}

impl PartitionState {
    /// Records between the position and the high watermark, when both are known, by the one
    /// lag rule ([`crate::lag`]).
    pub fn lag(&self) -> Option<i64> {
        lag::read(Some(self.high_watermark?), Some(self.position?), None).lag
    }
}

/// Fetches records for a set of assigned partitions.
pub struct Fetcher {
    client: Client,
    config: FetchConfig,
    partitions: BTreeMap<(String, i32), PartitionState>,
}

impl Fetcher {
    pub fn new(client: Client, config: FetchConfig) -> Self {
        Fetcher {
            client,
            config,
            partitions: BTreeMap::new(),
        }
    }

    /// Start fetching `topic`/`partition` at `offset` (or per `auto.offset.reset` if `None`).
    pub fn assign(&mut self, topic: &str, partition: i32, offset: Option<i64>) {
        self.partitions.insert(
            (topic.to_owned(), partition),
            PartitionState {
                position: offset,
                ..Default::default()
            },
        );
    }

    pub fn unassign(&mut self, topic: &str, partition: i32) -> Option<PartitionState> {
        self.partitions.remove(&(topic.to_owned(), partition))
    }

    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(s) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            s.position = Some(offset);
        }
    }

    pub fn set_paused(&mut self, topic: &str, partition: i32, paused: bool) {
        if let Some(s) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            s.paused = paused;
        }
    }

    pub fn state(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.partitions.get(&(topic.to_owned(), partition))
    }

    /// Every assigned partition with its state.
    pub fn assigned(&self) -> impl Iterator<Item = (&NamedPartition, &PartitionState)> {
        self.partitions.iter()
    }

    /// One fetch round: resolve missing positions, fetch from every leader in parallel, and
    /// return the records in partition order. Waits at most `fetch.max.wait.ms` (plus the
    /// request timeout) when there is nothing new.
    pub async fn fetch(&mut self) -> Result<Vec<ConsumerRecord>> {
        self.resolve_positions().await?;
        let mut by_leader: BTreeMap<i32, Vec<(NamedPartition, i64)>> = BTreeMap::new();
        let mut first_error = None;
        for (tp, st) in &self.partitions {
            let (Some(pos), false) = (st.position, st.paused) else {
                continue;
            };
            match self.client.leader(&tp.0, tp.1).await {
                Ok(leader) => by_leader.entry(leader).or_default().push((tp.clone(), pos)),
                Err(e) if e.is_retriable() => {
                    tracing::debug!(?tp, error = %e, "no leader yet");
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if by_leader.is_empty() {
            if let Some(e) = first_error {
                return Err(e);
            }
            // Nothing fetchable (all paused or none assigned): behave like an empty long poll.
            tokio::time::sleep(self.config.max_wait.min(Duration::from_millis(100))).await;
            return Ok(Vec::new());
        }
        let mut tasks = JoinSet::new();
        for (leader, parts) in by_leader {
            let client = self.client.clone();
            let config = self.config.clone();
            tasks.spawn(async move { fetch_from(client, config, leader, parts).await });
        }
        let mut records = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let outcomes = match joined {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => {
                    self.note_error(&e);
                    first_error.get_or_insert(e);
                    continue;
                }
                Err(join) => {
                    first_error.get_or_insert(Error::malformed("fetch task", join));
                    continue;
                }
            };
            for o in outcomes {
                self.apply(o, &mut records)?;
            }
        }
        match first_error {
            // Partial success is success: the failed leaders are retried next round. With
            // nothing to show, the caller learns why (and `is_retriable` tells it whether
            // to keep going).
            Some(e) if records.is_empty() => Err(e),
            _ => Ok(records),
        }
    }

    fn note_error(&self, e: &Error) {
        if e.is_retriable() {
            for (t, _) in self.partitions.keys() {
                self.client.invalidate(t);
            }
        }
    }

    /// Apply one partition's fetch outcome to its state; collect its records.
    fn apply(&mut self, o: PartitionOutcome, out: &mut Vec<ConsumerRecord>) -> Result<()> {
        let Some(state) = self.partitions.get_mut(&o.tp) else {
            return Ok(()); // unassigned while the fetch was out
        };
        if state.position != Some(o.fetched_at) {
            return Ok(()); // seeked while the fetch was out: these records are stale
        }
        if o.high_watermark >= 0 {
            state.high_watermark = Some(o.high_watermark);
        }
        // A position past the high watermark is out of range even when the broker does not
        // say so (tansu 0.6.0 answers such fetches with no error and no records).
        let past_end = o.error == 0 && o.high_watermark >= 0 && o.fetched_at > o.high_watermark;
        let error = if past_end {
            ResponseError::OffsetOutOfRange.code()
        } else {
            o.error
        };
        match error {
            0 => {}
            c if c == ResponseError::OffsetOutOfRange.code() => {
                if self.config.auto_offset_reset == OffsetReset::None {
                    return Err(Error::OffsetOutOfRange {
                        topic: o.tp.0,
                        partition: o.tp.1,
                        offset: o.fetched_at,
                    });
                }
                tracing::info!(topic = %o.tp.0, partition = o.tp.1, offset = o.fetched_at, "offset out of range; resetting");
                state.position = None;
                return Ok(());
            }
            c => {
                let e = Error::broker(format!("fetch {}/{}", o.tp.0, o.tp.1), c);
                if e.is_retriable() {
                    self.client.invalidate(&o.tp.0);
                    return Ok(());
                }
                return Err(e);
            }
        }
        if let Some(next) = o.next_offset {
            state.position = Some(next.max(o.fetched_at));
        }
        out.extend(o.records);
        Ok(())
    }

    /// Give every partition without a position one, by `auto.offset.reset`.
    async fn resolve_positions(&mut self) -> Result<()> {
        let mut missing: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for ((t, p), st) in &self.partitions {
            if st.position.is_none() {
                missing.entry(t.clone()).or_default().push(*p);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let spec = match self.config.auto_offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::None => {
                let (t, ps) = missing.into_iter().next().expect("not empty");
                return Err(Error::OffsetOutOfRange {
                    topic: t,
                    partition: ps[0],
                    offset: -1,
                });
            }
        };
        for (topic, parts) in missing {
            let offsets = self.client.list_offsets(&topic, &parts, spec).await?;
            for (p, o) in offsets {
                if let Some(st) = self.partitions.get_mut(&(topic.clone(), p)) {
                    st.position = Some(o);
                }
            }
        }
        Ok(())
    }
}

/// What a Fetch response said about one partition.
struct PartitionOutcome {
    tp: NamedPartition,
    fetched_at: i64,
    error: i16,
    high_watermark: i64,
    next_offset: Option<i64>,
    records: Vec<ConsumerRecord>,
}

async fn fetch_from(
    client: Client,
    config: FetchConfig,
    leader: i32,
    parts: Vec<(NamedPartition, i64)>,
) -> Result<Vec<PartitionOutcome>> {
    let conn = client.broker_on(leader, Lane::Fetch).await?;
    let version = conn.version(ApiKey::Fetch)?;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((t, p), offset) in &parts {
        let fp = FetchPartition::default()
            .with_partition(*p)
            .with_current_leader_epoch(-1)
            .with_fetch_offset(*offset)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(config.max_partition_bytes);
        match topics.iter_mut().find(|ft| ft.topic.0.as_str() == t) {
            Some(ft) => ft.partitions.push(fp),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(vec![fp]),
            ),
        }
    }
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = config.max_wait.as_millis() as i32;
    req.min_bytes = config.min_bytes;
    req.max_bytes = config.max_bytes;
    req.isolation_level = 0;
    req.session_id = 0;
    req.session_epoch = -1;
    req.topics = topics;
    let timeout = client.config().connection.request_timeout + config.max_wait;
    let resp = conn.send_with_timeout(&req, version, timeout).await?;
    crate::error::check_code(|| format!("fetch from broker {leader}"), resp.error_code)?;
    let requested: BTreeSet<&NamedPartition> = parts.iter().map(|(tp, _)| tp).collect();
    let mut out = Vec::new();
    for t in resp.responses {
        let topic = t.topic.0.to_string();
        for p in t.partitions {
            let tp = (topic.clone(), p.partition_index);
            let Some((_, fetched_at)) = parts.iter().find(|(x, _)| *x == tp) else {
                continue; // not something we asked for
            };
            debug_assert!(requested.contains(&tp));
            let decoded = match (p.error_code, p.records) {
                (0, Some(bytes)) => decode_records(&topic, p.partition_index, bytes, *fetched_at)?,
                _ => Default::default(),
            };
            out.push(PartitionOutcome {
                tp,
                fetched_at: *fetched_at,
                error: p.error_code,
                high_watermark: p.high_watermark,
                next_offset: decoded.next_offset,
                records: decoded.records,
            });
        }
    }
    Ok(out)
}
