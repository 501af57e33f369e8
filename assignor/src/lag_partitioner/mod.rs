//! A lag-aware producer partitioner: it routes records of one topic away from the partitions
//! one chosen consumer group is falling behind on.
//!
//! Three parts, each with one job:
//! - [`machine`]: the per-partition Good / Slow / OK state machine and the routing table it
//!   yields (pure, tested with a simulated clock);
//! - [`config`]: settings with defaults and `LAGBALANCE_PARTITIONER_*` variables;
//! - this module: [`LagPartitioner`], the [`Partitioner`] the producer calls per record, and
//!   its refresher task, which reads the group's lag once per interval (one OffsetFetch and one
//!   ListOffsets per partition leader, under a timeout) and publishes a new routing table.
//!
//! ```no_run
//! # async fn demo() -> lagbalance::Result<()> {
//! use std::sync::Arc;
//! use lagbalance::lag_partitioner::{LagPartitioner, LagPartitionerConfig};
//! use lagbalance::producer::{Producer, ProducerConfig};
//! use lagbalance::{Client, ClientConfig};
//!
//! let client = Client::new(ClientConfig::new("127.0.0.1:9092"))?;
//! let partitioner = LagPartitioner::start(client.clone(), LagPartitionerConfig::from_env()?)?;
//! let producer = Producer::with_partitioner(client, ProducerConfig::default(), Arc::new(partitioner))?;
//! # Ok(()) }
//! ```
//!
//! Fail-open everywhere: when readings fail for `stale_after`, and when every partition is
//! behind, every partition is Good (unkeyed records spread evenly, keyed ones go home); until
//! the first reading the producer's default partitioning applies.

pub mod config;
pub mod machine;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::admin::PartitionOffsets;
use crate::cluster::Client;
use crate::error::Result;
use crate::partitioner::Partitioner;

pub use config::{ConfigError, LagPartitionerConfig};
pub use machine::{LagStates, MachineSettings, PartitionState, Routing, Transition};

/// Turns successive offset readings of one topic into lags by the one lag rule
/// ([`crate::lag`]): it keeps each partition's log end between readings, so an answer staler
/// than the one before does not make lag flicker down.
#[derive(Clone, Debug, Default)]
pub struct LagReader {
    log_end: Vec<i64>,
}

impl LagReader {
    /// Lag per partition index (`None`: no committed offset, or a partition the reading did
    /// not cover; the state machine keeps such a partition's state). Negative or out-of-range
    /// partition numbers are ignored.
    pub fn lags(&mut self, offsets: &[PartitionOffsets]) -> Vec<Option<i64>> {
        // Partition ids come from metadata; cap the table so a nonsense id cannot allocate.
        const MAX_PARTITIONS: usize = 1 << 20;
        let n = offsets
            .iter()
            .filter_map(|o| usize::try_from(o.partition).ok())
            .filter(|p| *p < MAX_PARTITIONS)
            .map(|p| p + 1)
            .max()
            .unwrap_or(0);
        self.log_end.resize(n, 0);
        let mut out = vec![None; n];
        for o in offsets {
            let Some(i) = usize::try_from(o.partition).ok().filter(|i| *i < n) else {
                continue;
            };
            let reading = o.reading(Some(self.log_end[i]));
            self.log_end[i] = reading.log_end;
            out[i] = reading.lag;
        }
        out
    }
}

/// What the refresher last saw, for metrics, logs and tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionerStatus {
    /// Successful readings.
    pub refreshes: u64,
    /// Failed or timed-out readings.
    pub failures: u64,
    pub last_error: Option<String>,
    /// Whether the states were reset because no reading succeeded for `stale_after`.
    pub failed_open: bool,
    pub states: Vec<PartitionState>,
    /// Lag per partition at the last good reading.
    pub lags: Vec<Option<i64>>,
    /// State changes so far.
    pub transitions: u64,
}

struct Inner {
    topic: String,
    route_keyed: bool,
    routing: RwLock<Arc<Routing>>,
    ticket: AtomicU64,
    status: Mutex<PartitionerStatus>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut t) = self.task.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }
}

/// The lag-aware partitioner. Cheap to clone; the refresher stops when the last clone is
/// dropped.
#[derive(Clone)]
pub struct LagPartitioner {
    inner: Arc<Inner>,
}

impl LagPartitioner {
    /// Validate `config` and start the refresher on the current tokio runtime.
    pub fn start(client: Client, config: LagPartitionerConfig) -> Result<LagPartitioner> {
        config.validate()?;
        let inner = Arc::new(Inner {
            topic: config.topic.clone(),
            route_keyed: config.route_keyed,
            routing: RwLock::new(Arc::new(Routing::even(0))),
            ticket: AtomicU64::new(0),
            status: Mutex::new(PartitionerStatus::default()),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(refresh_loop(client, config, Arc::downgrade(&inner)));
        if let Ok(mut t) = inner.task.lock() {
            *t = Some(task);
        }
        Ok(LagPartitioner { inner })
    }

    /// The routing table in force.
    pub fn routing(&self) -> Arc<Routing> {
        self.inner
            .routing
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|_| Arc::new(Routing::even(0)))
    }

    pub fn status(&self) -> PartitionerStatus {
        self.inner
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    pub fn topic(&self) -> &str {
        &self.inner.topic
    }
}

impl Partitioner for LagPartitioner {
    fn partition(&self, topic: &str, key: Option<&[u8]>, num_partitions: i32) -> Option<i32> {
        if topic != self.inner.topic {
            return None;
        }
        let routing = self.inner.routing.read().ok()?;
        // No reading yet, or a table for another partition count (the topic grew since the
        // last reading): the default partitioning applies.
        if routing.len() != usize::try_from(num_partitions).ok()? {
            return None;
        }
        match key {
            // All Good: every key is home anyway; skip the hashing.
            Some(k) if self.inner.route_keyed && !routing.is_even() => Some(routing.pick_keyed(k)),
            Some(_) => None,
            // Unkeyed records are spread per record, also when all partitions are Good: the
            // default sticky partition moves on only when a batch fills, which at modest rates
            // would pin a topic's unkeyed traffic to one partition for a long time.
            None => Some(routing.pick_unkeyed(self.inner.ticket.fetch_add(1, Ordering::Relaxed))),
        }
    }
}

async fn refresh_loop(client: Client, config: LagPartitionerConfig, weak: Weak<Inner>) {
    let mut machine = LagStates::new(config.machine());
    let mut reader = LagReader::default();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(config.interval);
    // A slow reading must not be followed by a burst of catch-up readings.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // The timeout bounds a reading's cost; the ticker runs one at a time.
        let reading = tokio::time::timeout(
            config.fetch_timeout,
            client.topic_offsets(&config.group, &config.topic),
        )
        .await;
        // Nobody left to route for: stop.
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let now_ms = started.elapsed().as_millis().min(u64::MAX as u128) as u64;
        let mut lags = None;
        let error = match reading {
            Ok(Ok(offsets)) => {
                lags = Some(reader.lags(&offsets));
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "lag reading of group {} took longer than {:?}",
                config.group, config.fetch_timeout
            )),
        };
        let transitions = match &lags {
            Some(l) => machine.observe(now_ms, l),
            None => machine.observe_failure(now_ms),
        };
        for t in &transitions {
            tracing::info!(
                topic = %config.topic,
                group = %config.group,
                partition = t.partition,
                from = t.from.name(),
                to = t.to.name(),
                lag = t.lag,
                "partition state changed"
            );
        }
        if let Some(e) = &error {
            tracing::warn!(group = %config.group, topic = %config.topic, error = %e,
                failed_open = machine.failed_open(), "lag reading failed");
        }
        let routing = Arc::new(machine.routing());
        if let Ok(mut r) = inner.routing.write() {
            *r = routing;
        }
        if let Ok(mut s) = inner.status.lock() {
            match lags {
                Some(l) => {
                    s.refreshes += 1;
                    s.lags = l;
                    s.last_error = None;
                }
                None => {
                    s.failures += 1;
                    s.last_error = error;
                }
            }
            s.failed_open = machine.failed_open();
            s.states = machine.states();
            s.transitions += transitions.len() as u64;
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_reader_keeps_the_largest_log_end() {
        let mut r = LagReader::default();
        let po = |partition, log_end, committed| PartitionOffsets {
            partition,
            log_end,
            committed,
        };
        assert_eq!(
            r.lags(&[po(0, 10, Some(4)), po(1, 5, None), po(2, 3, Some(7))]),
            vec![Some(6), None, Some(0)]
        );
        // A staler answer does not make lag flicker down; a commit past it still counts.
        assert_eq!(
            r.lags(&[po(0, 8, Some(5)), po(1, 5, Some(5)), po(2, 3, Some(7))]),
            vec![Some(5), Some(0), Some(0)]
        );
        // Hostile partition numbers are ignored.
        assert_eq!(
            r.lags(&[po(-1, 9, Some(0)), po(0, 12, Some(12))]),
            vec![Some(0)]
        );
        assert!(r.lags(&[po(i32::MAX, 1, Some(0))]).is_empty());
    }
}
