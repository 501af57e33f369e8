//! The per-partition Good / Slow / OK state machine, sans-IO: the refresher hands in one
//! reading of every partition's lag with a clock reading, and gets back the routing table the
//! producer's hot path uses. No sockets, no timers: tests drive it with a simulated clock.
//!
//! ```text
//!            lag > slow_lag (and under the closed cap)
//!   ┌──────┐ ─────────────────────────────────────────► ┌──────┐
//!   │ Good │                                            │ Slow │ ◄─┐
//!   └──────┘ ◄───────────┐                              └──────┘   │ lag > slow_lag, or
//!      ▲                 │ probe_period over and lag       │       │ probe_period over and
//!      │                 │ not grown since the probe began │       │ lag grew
//!      │              ┌──────┐  closed ≥ observe and       │       │
//!      │              │  OK  │ ◄── lag ≤ slow_lag / 2 ─────┘       │
//!      │              └──────┘ ────────────────────────────────────┘
//!      └── fail-open: no reading for stale_after, or every partition above slow_lag
//! ```

use crate::partitioner::{murmur2, partition_for_key};

/// State of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartitionState {
    /// Open: receives its even share.
    Good,
    /// Closed: receives nothing.
    Slow,
    /// Half-open: receives `probe_share` × a Good partition's share while it proves that its
    /// lag keeps falling.
    Ok,
}

impl PartitionState {
    pub fn name(self) -> &'static str {
        match self {
            PartitionState::Good => "good",
            PartitionState::Slow => "slow",
            PartitionState::Ok => "ok",
        }
    }
}

/// The knobs the state machine needs (times in milliseconds of the caller's clock).
#[derive(Clone, Debug, PartialEq)]
pub struct MachineSettings {
    /// Lag (records) above which a Good partition is closed.
    pub slow_lag: u64,
    /// Least time a partition stays Slow before it may be probed.
    pub observe_ms: u64,
    /// How long a probe lasts before it is judged.
    pub probe_period_ms: u64,
    /// An OK partition's share of records relative to a Good one, in (0, 1].
    pub probe_share: f64,
    /// Most partitions (fraction of the topic) Slow or OK at once.
    pub max_closed_ratio: f64,
    /// Keep the last states this long after the last good reading, then fail open.
    pub stale_after_ms: u64,
}

impl Default for MachineSettings {
    fn default() -> Self {
        MachineSettings {
            slow_lag: 1000,
            observe_ms: 10_000,
            probe_period_ms: 10_000,
            probe_share: 0.1,
            max_closed_ratio: 0.5,
            stale_after_ms: 30_000,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Part {
    state: PartitionState,
    /// When it entered `state`.
    since_ms: u64,
    /// Lag when its probe began (OK only).
    probe_start_lag: i64,
}

impl Part {
    fn good(now_ms: u64) -> Part {
        Part {
            state: PartitionState::Good,
            since_ms: now_ms,
            probe_start_lag: 0,
        }
    }
}

/// One state change, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub partition: i32,
    pub from: PartitionState,
    pub to: PartitionState,
    pub lag: Option<i64>,
}

/// The per-partition states of one topic as seen through one consumer group's lag.
#[derive(Clone, Debug)]
pub struct LagStates {
    settings: MachineSettings,
    parts: Vec<Part>,
    last_success_ms: Option<u64>,
    failed_open: bool,
}

impl LagStates {
    pub fn new(settings: MachineSettings) -> Self {
        LagStates {
            settings,
            parts: Vec::new(),
            last_success_ms: None,
            failed_open: false,
        }
    }

    pub fn settings(&self) -> &MachineSettings {
        &self.settings
    }

    pub fn states(&self) -> Vec<PartitionState> {
        self.parts.iter().map(|p| p.state).collect()
    }

    pub fn state(&self, partition: i32) -> Option<PartitionState> {
        usize::try_from(partition)
            .ok()
            .and_then(|i| self.parts.get(i))
            .map(|p| p.state)
    }

    /// Whether the last call to [`LagStates::observe_failure`] failed open (every partition
    /// back to Good because no reading came for `stale_after`).
    pub fn failed_open(&self) -> bool {
        self.failed_open
    }

    /// Most partitions of `n` that may be Slow or OK at once: at least one stays Good, so the
    /// producer always has somewhere to write.
    fn max_closed(&self, n: usize) -> usize {
        let cap = (n as f64 * self.settings.max_closed_ratio).floor();
        (cap.max(0.0) as usize).min(n.saturating_sub(1))
    }

    /// Lag at or under which a Slow partition may be probed: half the closing threshold, so a
    /// partition hovering at the threshold does not flap open and shut on every reading.
    fn reopen_lag(&self) -> i64 {
        (self.settings.slow_lag / 2) as i64
    }

    /// Feed one reading: `lags[p]` is partition `p`'s lag, `None` when unknown (no committed
    /// offset: where the group starts is up to its `auto.offset.reset`). The topic has
    /// `lags.len()` partitions; new ones start Good. Returns the state changes.
    pub fn observe(&mut self, now_ms: u64, lags: &[Option<i64>]) -> Vec<Transition> {
        let n = lags.len();
        let mut out = Vec::new();
        self.parts.truncate(n);
        while self.parts.len() < n {
            self.parts.push(Part::good(now_ms));
        }
        self.last_success_ms = Some(now_ms);
        self.failed_open = false;
        let s = self.settings.clone();
        let slow_lag = i64::try_from(s.slow_lag).unwrap_or(i64::MAX);
        let reopen = self.reopen_lag();

        // Everyone behind is a group without headroom, not a slow partition: closing some
        // would only pile their input onto partitions that are just as far behind.
        let known: Vec<i64> = lags.iter().flatten().copied().collect();
        if n > 1 && known.len() == n && known.iter().all(|l| *l > slow_lag) {
            return self.all_good(now_ms, |i| lags[i]);
        }

        let mut candidates: Vec<(i64, usize)> = Vec::new();
        for (i, (part, lag)) in self.parts.iter_mut().zip(lags).enumerate() {
            let Some(lag) = *lag else { continue };
            let lag = lag.max(0);
            let from = part.state;
            let age = now_ms.saturating_sub(part.since_ms);
            match part.state {
                PartitionState::Good => {
                    if lag > slow_lag {
                        candidates.push((lag, i));
                    }
                }
                PartitionState::Slow => {
                    if age >= s.observe_ms && lag <= reopen {
                        part.state = PartitionState::Ok;
                        part.since_ms = now_ms;
                        part.probe_start_lag = lag;
                    }
                }
                PartitionState::Ok => {
                    // A reading is a snapshot that includes records the consumer already
                    // fetched but has not committed yet; a drained partition therefore shows
                    // a little lag. Growth within a tenth of the threshold counts as flat.
                    let tolerance = (s.slow_lag / 10) as i64;
                    if lag > slow_lag {
                        part.state = PartitionState::Slow;
                        part.since_ms = now_ms;
                    } else if age >= s.probe_period_ms {
                        part.state = if lag <= part.probe_start_lag.saturating_add(tolerance) {
                            PartitionState::Good
                        } else {
                            PartitionState::Slow
                        };
                        part.since_ms = now_ms;
                    }
                }
            }
            if part.state != from {
                out.push(Transition {
                    partition: i as i32,
                    from,
                    to: part.state,
                    lag: Some(lag),
                });
            }
        }

        // Close the worst first, up to the cap.
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let cap = self.max_closed(n);
        // The topic shrank under its closed partitions: reopen the ones nearest to Good
        // (probing first, then the least lag) so the cap and one open partition still hold.
        let mut over: Vec<(bool, i64, usize)> = self
            .parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state != PartitionState::Good)
            .map(|(i, p)| (p.state == PartitionState::Slow, lags[i].unwrap_or(0), i))
            .collect();
        if over.len() > cap {
            over.sort();
            for &(_, _, i) in over.iter().take(over.len() - cap) {
                out.push(Transition {
                    partition: i as i32,
                    from: self.parts[i].state,
                    to: PartitionState::Good,
                    lag: lags[i],
                });
                self.parts[i] = Part::good(now_ms);
            }
        }
        let closed = self
            .parts
            .iter()
            .filter(|p| p.state != PartitionState::Good)
            .count();
        for (lag, i) in candidates.into_iter().take(cap.saturating_sub(closed)) {
            let part = &mut self.parts[i];
            part.state = PartitionState::Slow;
            part.since_ms = now_ms;
            out.push(Transition {
                partition: i as i32,
                from: PartitionState::Good,
                to: PartitionState::Slow,
                lag: Some(lag),
            });
        }
        out
    }

    /// A reading failed at `now_ms`. The last states hold for `stale_after` after the last
    /// good reading; after that every partition is Good again (fail open: even spread).
    /// Returns the state changes.
    pub fn observe_failure(&mut self, now_ms: u64) -> Vec<Transition> {
        let stale = self
            .last_success_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= self.settings.stale_after_ms);
        if !stale {
            return Vec::new();
        }
        self.failed_open = true;
        self.all_good(now_ms, |_| None)
    }

    /// Every partition Good from `now_ms`; the changes, each with `lag(partition)`.
    fn all_good(&mut self, now_ms: u64, lag: impl Fn(usize) -> Option<i64>) -> Vec<Transition> {
        let mut out = Vec::new();
        for (i, part) in self.parts.iter_mut().enumerate() {
            if part.state != PartitionState::Good {
                out.push(Transition {
                    partition: i as i32,
                    from: part.state,
                    to: PartitionState::Good,
                    lag: lag(i),
                });
                *part = Part::good(now_ms);
            }
        }
        out
    }

    /// The routing table for the current states.
    pub fn routing(&self) -> Routing {
        Routing::new(self.states(), self.settings.probe_share)
    }
}

/// Where records go, given the states: an immutable table the producer reads per record.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    states: Vec<PartitionState>,
    /// Cumulative weights (Good 1, OK `probe_share`, Slow 0).
    cumulative: Vec<f64>,
    /// Good partitions, ascending.
    good: Vec<i32>,
    probe_share: f64,
    /// Every partition Good: the producer's default partitioning applies unchanged.
    even: bool,
}

/// Weyl-sequence step (2⁶⁴ / golden ratio): ticket k maps to frac(k·φ), which visits [0, 1)
/// evenly over any short run of tickets, so weighted shares hold within a few dozen records
/// without a lock or per-topic counters.
const WEYL: u64 = 0x9e37_79b9_7f4a_7c15;

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Routing {
    /// Every one of `n` partitions Good.
    pub fn even(n: usize) -> Routing {
        Routing::new(vec![PartitionState::Good; n], 0.1)
    }

    pub fn new(states: Vec<PartitionState>, probe_share: f64) -> Routing {
        let probe_share = if probe_share.is_finite() {
            probe_share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let mut good: Vec<i32> = states
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == PartitionState::Good)
            .map(|(i, _)| i as i32)
            .collect();
        let mut states = states;
        // The machine keeps one partition Good; a table built otherwise (by hand) must still
        // route somewhere: fall back to even spread.
        if good.is_empty() {
            states.iter_mut().for_each(|s| *s = PartitionState::Good);
            good = (0..states.len() as i32).collect();
        }
        let mut acc = 0.0;
        let cumulative = states
            .iter()
            .map(|s| {
                acc += match s {
                    PartitionState::Good => 1.0,
                    PartitionState::Ok => probe_share,
                    PartitionState::Slow => 0.0,
                };
                acc
            })
            .collect();
        let even = good.len() == states.len();
        Routing {
            states,
            cumulative,
            good,
            probe_share,
            even,
        }
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Whether every partition is Good.
    pub fn is_even(&self) -> bool {
        self.even
    }

    pub fn states(&self) -> &[PartitionState] {
        &self.states
    }

    /// Each partition's share of unkeyed records.
    pub fn shares(&self) -> Vec<f64> {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let mut prev = 0.0;
        self.cumulative
            .iter()
            .map(|c| {
                let w = c - prev;
                prev = *c;
                if total > 0.0 {
                    w / total
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Partition for the unkeyed record with sequence number `ticket`.
    pub fn pick_unkeyed(&self, ticket: u64) -> i32 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        if total <= 0.0 {
            return 0;
        }
        let target = unit(ticket.wrapping_mul(WEYL)) * total;
        let i = self.cumulative.partition_point(|c| *c <= target);
        i.min(self.cumulative.len() - 1) as i32
    }

    /// Partition for a keyed record. Its home (`murmur2`) partition when that is Good; when
    /// Slow, a Good partition chosen by a second hash of the key (the same one for every
    /// record of the key while the states last); when OK, home for a `probe_share` fraction
    /// of keys, the alternate for the rest.
    pub fn pick_keyed(&self, key: &[u8]) -> i32 {
        let n = self.states.len() as i32;
        let home = partition_for_key(key, n);
        let state = self
            .states
            .get(home as usize)
            .copied()
            .unwrap_or(PartitionState::Good);
        // A second, independent hash: fmix64 of murmur2, so keys sharing a home partition
        // spread over the alternates instead of all landing on the same one.
        let mut h = murmur2(key) as u32 as u64 ^ 0x5851_f42d_4c95_7f2d;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        let alternate = || self.good[(h % self.good.len() as u64) as usize];
        match state {
            PartitionState::Good => home,
            PartitionState::Slow => alternate(),
            PartitionState::Ok => {
                if unit(h.rotate_left(29)) < self.probe_share {
                    home
                } else {
                    alternate()
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
