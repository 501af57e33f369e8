//! Self-measurement: what this member processes (records per second, per partition), how busy
//! the application is, and whether it is the bottleneck. The consumer publishes the result as
//! the [`MemberStats`] in its subscription user data, from which the leader estimates each
//! member's capacity.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lagbalance_assign::{MemberStats, NamedPartition, PartitionLoad};

use crate::control::CapacitySample;
use crate::records::ConsumerRecord;

/// How long one measuring window lasts before its stats are published.
const PUBLISH_EVERY: Duration = Duration::from_secs(5);

/// Measures what the member processes, window by window.
pub(super) struct Meter {
    window_start: Instant,
    records: u64,
    /// Records handed out per partition in this window (→ per-partition processing rate).
    per_partition: BTreeMap<NamedPartition, u64>,
    backlogged: bool,
    /// Time the application spent outside `poll` in this window: its processing time, which
    /// says how saturated the member is even when the work is I/O and the CPU stays idle.
    busy: Duration,
    returned_at: Option<Instant>,
}

impl Meter {
    pub(super) fn new() -> Self {
        Meter {
            window_start: Instant::now(),
            records: 0,
            per_partition: BTreeMap::new(),
            backlogged: false,
            busy: Duration::ZERO,
            returned_at: None,
        }
    }

    /// The application called `poll`: the time since the previous `poll` returned was spent
    /// processing.
    pub(super) fn poll_entered(&mut self) {
        if let Some(t) = self.returned_at.take() {
            self.busy += t.elapsed();
        }
    }

    /// `poll` returned to the application.
    pub(super) fn poll_returned(&mut self) {
        self.returned_at = Some(Instant::now());
    }

    /// `records` were handed to the application. `backlogged`: records are still waiting for
    /// it after this batch (buffered, or known on the broker past the fetch position), so it is
    /// the bottleneck and what it processes is what it can process (the capacity estimator
    /// trusts such samples at once).
    pub(super) fn handed_out(&mut self, records: &[ConsumerRecord], backlogged: bool) {
        for r in records {
            *self
                .per_partition
                .entry((r.topic.clone(), r.partition))
                .or_default() += 1;
        }
        self.records += records.len() as u64;
        self.backlogged = backlogged;
    }

    /// A `poll` ran out of time with nothing to hand out: the application is not behind.
    pub(super) fn caught_up(&mut self) {
        self.backlogged = false;
    }

    /// Whether the current window is long enough to publish.
    pub(super) fn due(&self) -> bool {
        self.window_start.elapsed() >= PUBLISH_EVERY
    }

    /// The stats of the window that ends now (and start the next one). `lag` is the member's
    /// lag per owned partition; `cpu`, the agent's latest sample, overrides the CPU figures.
    pub(super) fn take_stats(
        &mut self,
        lag: &BTreeMap<NamedPartition, i64>,
        cpu: Option<CapacitySample>,
    ) -> MemberStats {
        let elapsed = self.window_start.elapsed().as_secs_f64().max(1e-3);
        let mut stats = MemberStats {
            processed_rate: self.records as f64 / elapsed,
            backlogged: self.backlogged,
            cpu_used_cores: None,
            cpu_limit_cores: None,
            busy_fraction: Some((self.busy.as_secs_f64() / elapsed).min(1.0)),
            partitions: lag
                .iter()
                .map(|(tp, l)| {
                    let done = self.per_partition.get(tp).copied().unwrap_or(0);
                    PartitionLoad {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        lag: *l as f64,
                        rate: done as f64 / elapsed,
                    }
                })
                .collect(),
            measured_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        self.window_start = Instant::now();
        self.records = 0;
        self.busy = Duration::ZERO;
        self.per_partition.clear();
        if let Some(cpu) = cpu {
            cpu.apply_to(&mut stats);
        }
        stats
    }
}
