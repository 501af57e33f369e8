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
    /// The last window handed out records: this one runs on from its start.
    worked_last_window: bool,
}

impl Meter {
    pub(super) fn new(now: Instant) -> Self {
        Meter {
            window_start: now,
            records: 0,
            per_partition: BTreeMap::new(),
            backlogged: false,
            busy: Duration::ZERO,
            returned_at: None,
            worked_last_window: false,
        }
    }

    /// The application called `poll`: the time since the previous `poll` returned was spent
    /// processing.
    pub(super) fn poll_entered(&mut self, now: Instant) {
        if let Some(t) = self.returned_at.take() {
            self.busy += now.saturating_duration_since(t);
        }
    }

    /// `poll` returned to the application.
    pub(super) fn poll_returned(&mut self, now: Instant) {
        self.returned_at = Some(now);
    }

    /// `records` were handed to the application. `backlogged`: records are still waiting for
    /// it after this batch (buffered, or known on the broker past the fetch position), so it is
    /// the bottleneck and what it processes is what it can process (the capacity estimator
    /// trusts such samples at once).
    pub(super) fn handed_out(
        &mut self,
        now: Instant,
        records: &[ConsumerRecord],
        backlogged: bool,
    ) {
        if self.records == 0 && !records.is_empty() && !self.worked_last_window {
            // Work begins after idleness: the window starts with it. Idle time says nothing
            // about capacity, and a window half idle made the first sample after input began
            // read as half the member's capacity (a backlogged member's sample is trusted at
            // once), so the leader moved twice the work it should off the slowest member.
            self.window_start = now;
            self.busy = Duration::ZERO;
        }
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
    pub(super) fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.window_start) >= PUBLISH_EVERY
    }

    /// The stats of the window that ends now (and start the next one). `lag` is the member's
    /// lag per owned partition; `cpu`, the agent's latest sample, overrides the CPU figures.
    pub(super) fn take_stats(
        &mut self,
        now: Instant,
        lag: &BTreeMap<NamedPartition, i64>,
        cpu: Option<CapacitySample>,
    ) -> MemberStats {
        let elapsed = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64()
            .max(1e-3);
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
        self.window_start = now;
        self.worked_last_window = self.records > 0;
        self.records = 0;
        self.busy = Duration::ZERO;
        self.per_partition.clear();
        if let Some(cpu) = cpu {
            cpu.apply_to(&mut stats);
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<ConsumerRecord> {
        (0..n)
            .map(|i| ConsumerRecord {
                topic: "t".into(),
                partition: (i % 2) as i32,
                offset: i as i64,
                timestamp: 0,
                key: None,
                value: None,
                headers: Vec::new(),
            })
            .collect()
    }

    /// One pass of the application: `poll` hands out `n` records at `at`, the application
    /// works on them for `work`.
    fn pass(m: &mut Meter, at: Instant, n: usize, work: Duration) -> Instant {
        m.poll_entered(at);
        m.handed_out(at, &records(n), true);
        m.poll_returned(at);
        at + work
    }

    /// A window idle until input begins is measured from the first records: the rate and
    /// busy fraction are those of the work, not diluted by the wait before it.
    #[test]
    fn a_window_starts_at_the_first_records_after_idleness() {
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        let mut at = t0 + Duration::from_secs(20);
        for _ in 0..5 {
            at = pass(&mut m, at, 250, Duration::from_secs(1));
        }
        m.poll_entered(at);
        assert!(m.due(at));
        let s = m.take_stats(at, &BTreeMap::new(), None);
        assert!((s.processed_rate - 250.0).abs() < 1e-6, "{s:?}");
        assert_eq!(s.busy_fraction, Some(1.0));
        assert!(s.backlogged);
    }

    /// A member that keeps working keeps its windows back to back: time it waits in `poll`
    /// between two windows' records belongs to the next window (its idle share is real).
    #[test]
    fn a_working_member_keeps_its_windows_back_to_back() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut m = Meter::new(t0);
        let at = pass(&mut m, t0, 100, Duration::from_secs(5));
        m.poll_entered(at);
        let first = m.take_stats(at, &BTreeMap::new(), None);
        assert!((first.processed_rate - 20.0).abs() < 1e-6, "{first:?}");
        // In `poll` from 5 s to 10 s, then one second's work on 100 records.
        m.handed_out(s(10), &records(100), false);
        m.poll_returned(s(10));
        m.poll_entered(s(11));
        let second = m.take_stats(s(11), &BTreeMap::new(), None);
        assert!(
            (second.processed_rate - 100.0 / 6.0).abs() < 1e-6,
            "{second:?}"
        );
        let busy = second.busy_fraction.unwrap();
        assert!((busy - 1.0 / 6.0).abs() < 1e-6, "{busy}");
    }
}
