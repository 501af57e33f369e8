//! The lag sampler: a background task that measures each subscribed partition's lag (log end −
//! committed, by [`crate::lag`]) and incoming rate every few seconds, for the leader's
//! lagbalance plan.
//!
//! It runs off the rebalance path: measuring lag while assigning delays the SyncGroup the
//! whole group waits for, and on tansu 0.6.0 group requests stall during a rebalance.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lagbalance_assign::{NamedPartition, PartitionLoad};
use tokio::task::JoinHandle;

use super::translate::partition_counts;
use crate::admin::OffsetSpec;
use crate::cluster::Client;
use crate::error::Result;
use crate::lag;

/// How often the lag sampler measures.
const LAG_SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How old a sample the leader still uses.
const LAG_SAMPLE_MAX_AGE: Duration = Duration::from_secs(30);

/// Samples lag of the subscribed topics in the background; the driver owns one.
pub(super) struct LagSampler {
    client: Client,
    group: String,
    latest: Arc<Mutex<LagSnapshot>>,
    task: Option<JoinHandle<()>>,
}

/// The latest background lag measurement.
#[derive(Default)]
struct LagSnapshot {
    taken: Option<Instant>,
    /// The leader's lag input: lag and incoming records/s per partition (the rate is NaN until
    /// two samples exist).
    lag: Vec<PartitionLoad>,
    /// Log-end offsets of the last sample, for the next rate.
    ends: Option<(Instant, BTreeMap<NamedPartition, i64>)>,
}

impl LagSampler {
    pub(super) fn new(client: Client, group: String) -> Self {
        LagSampler {
            client,
            group,
            latest: Default::default(),
            task: None,
        }
    }

    /// Sample `topics` from now on, replacing what was sampled before (none: stop).
    pub(super) fn start(&mut self, topics: Vec<String>) {
        self.stop();
        if topics.is_empty() {
            return;
        }
        let client = self.client.clone();
        let group = self.group.clone();
        let cache = self.latest.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let known = cache
                    .lock()
                    .ok()
                    .and_then(|c| c.ends.as_ref().map(|(_, ends)| ends.clone()))
                    .unwrap_or_default();
                let sample = tokio::time::timeout(
                    LAG_SAMPLE_EVERY * 2,
                    measure_lag(&client, &group, &topics, &known),
                )
                .await;
                match sample {
                    Ok(Ok(samples)) => {
                        if let Ok(mut c) = cache.lock() {
                            let now = Instant::now();
                            c.lag = partition_loads(c.ends.as_ref(), now, &samples);
                            c.taken = Some(now);
                            c.ends =
                                Some((now, samples.into_iter().map(|s| (s.tp, s.end)).collect()));
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "lag sample failed"),
                    Err(_) => tracing::debug!("lag sample timed out"),
                }
                tokio::time::sleep(LAG_SAMPLE_EVERY).await;
            }
        }));
    }

    /// Stop sampling.
    pub(super) fn stop(&mut self) {
        if let Some(old) = self.task.take() {
            old.abort();
        }
    }

    /// The latest sample, unless it is older than [`LAG_SAMPLE_MAX_AGE`] (a stale sample
    /// would steer the plan by load that is gone).
    pub(super) fn fresh_loads(&self) -> Option<Vec<PartitionLoad>> {
        self.latest.lock().ok().and_then(|c| {
            let fresh = c.taken.is_some_and(|t| t.elapsed() <= LAG_SAMPLE_MAX_AGE);
            fresh.then(|| c.lag.clone())
        })
    }
}

/// The sampler ends with its owner: a consumer dropped without `close` aborts the driver,
/// and a detached sampler would go on querying the cluster for a group nobody serves.
impl Drop for LagSampler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One partition as the lag sampler saw it.
#[derive(Clone, Debug, PartialEq)]
struct PartitionSample {
    tp: NamedPartition,
    end: i64,
    lag: f64,
}

/// The leader's lag input: the rate is the log end's growth since the previous sample (NaN without
/// one, or if the log end went backwards).
fn partition_loads(
    previous: Option<&(Instant, BTreeMap<NamedPartition, i64>)>,
    now: Instant,
    samples: &[PartitionSample],
) -> Vec<PartitionLoad> {
    samples
        .iter()
        .map(|s| {
            let rate = previous
                .and_then(|(then, ends)| {
                    let dt = now.checked_duration_since(*then)?.as_secs_f64();
                    let before = *ends.get(&s.tp)?;
                    (dt > 0.0 && s.end >= before).then(|| (s.end - before) as f64 / dt)
                })
                .unwrap_or(f64::NAN);
            PartitionLoad {
                topic: s.tp.0.clone(),
                partition: s.tp.1,
                lag: s.lag,
                rate,
            }
        })
        .collect()
}

/// Lag and log end of every partition of `topics`, measured now by the one lag rule
/// ([`crate::lag`]) from the group's committed offsets, ListOffsets(latest) and the log ends
/// `known` from the previous sample. A partition the group never committed counts as lag 0
/// for the plan.
async fn measure_lag(
    client: &Client,
    group: &str,
    topics: &[String],
    known: &BTreeMap<NamedPartition, i64>,
) -> Result<Vec<PartitionSample>> {
    let topics = partition_counts(client, topics).await?;
    // Name the partitions: tansu 0.6.0 answers an all-topics OffsetFetch v7 with a null
    // array that no client can read (docs/tansu-quirks.md).
    let wanted: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
        .collect();
    let committed = client.offset_fetch(group, Some(&wanted)).await?;
    let mut stats = Vec::new();
    for (t, _) in &topics {
        for (p, end) in client.list_offsets(t, &[], OffsetSpec::Latest).await? {
            let tp = (t.clone(), p);
            let reading = lag::read(
                Some(end),
                committed.get(&tp).copied(),
                known.get(&tp).copied(),
            );
            stats.push(PartitionSample {
                tp,
                end: reading.log_end,
                lag: reading.lag.unwrap_or(0) as f64,
            });
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(p: i32, end: i64, lag: f64) -> PartitionSample {
        PartitionSample {
            tp: ("t".into(), p),
            end,
            lag,
        }
    }

    #[test]
    fn incoming_rate_comes_from_two_samples_of_the_log_end() {
        let t0 = Instant::now();
        let first = partition_loads(None, t0, &[sample(0, 100, 5.0)]);
        assert!(first[0].rate.is_nan(), "no rate from one sample");
        assert_eq!(first[0].lag, 5.0);
        let ends: BTreeMap<NamedPartition, i64> =
            [(("t".into(), 0), 100), (("t".into(), 1), 50)].into();
        let rows = partition_loads(
            Some(&(t0, ends)),
            t0 + Duration::from_secs(2),
            &[sample(0, 300, 7.0), sample(1, 40, 0.0), sample(2, 9, 0.0)],
        );
        let expected = PartitionLoad {
            topic: "t".into(),
            partition: 0,
            lag: 7.0,
            rate: 100.0,
        };
        assert_eq!(rows[0], expected, "200 records in 2 s");
        assert!(
            rows[1].rate.is_nan(),
            "a log end that went backwards gives no rate"
        );
        assert!(
            rows[2].rate.is_nan(),
            "a partition not seen before gives no rate"
        );
    }
}
