//! A dedicated producer in front of the model group: it either keeps the scenario's own
//! per-partition rates (even spread for uniform weights; the keys' hash for hot partitions)
//! or routes through the **real** lag-aware partitioner state machine
//! (`lagbalance::lag_partitioner::machine`), fed the group's per-partition lag every refresh
//! interval, exactly as the partitioner's refresher feeds it.
//!
//! Fluid routing, matching `Routing::pick_unkeyed` / `pick_keyed` on average:
//! - unkeyed: the total rate is split by the routing shares (Good 1, OK `probe_share`, Slow 0);
//! - keyed (lag-aware keyed routing opted in): a partition keeps its own keys' rate × its home
//!   fraction (Good 1, OK `probe_share`, Slow 0); the rest of every key's rate is spread evenly
//!   over the Good partitions (each key's alternate is a hash over the Good partitions).

use lagbalance::lag_partitioner::{LagStates, MachineSettings, PartitionState, Routing};

/// How the producer spreads records.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProducerMode {
    /// The scenario's rates unchanged.
    Even,
    /// The lag-aware partitioner.
    LagAware,
}

impl ProducerMode {
    pub fn name(self) -> &'static str {
        match self {
            ProducerMode::Even => "even spread",
            ProducerMode::LagAware => "lag-aware partitioner",
        }
    }
}

/// The producer of a scenario.
#[derive(Clone, Debug)]
pub struct ProducerSpec {
    /// Keyed records (with lag-aware keyed routing) or unkeyed ones.
    pub keyed: bool,
    /// Partitioner settings; lags are fed in thousandths of a record ([`LAG_UNIT`]) because
    /// the model's rates are a few records per second.
    pub settings: MachineSettings,
    pub interval_s: f64,
}

/// Lag is handed to the state machine in this many units per record.
pub const LAG_UNIT: f64 = 1000.0;

pub struct ProducerModel {
    spec: ProducerSpec,
    machine: LagStates,
    routing: Routing,
    next_refresh: f64,
    /// Records written off the partition the scenario's rates would have put them on.
    pub redirected: f64,
    pub total: f64,
    pub transitions: usize,
}

impl ProducerModel {
    pub fn new(spec: ProducerSpec, partitions: usize) -> Self {
        ProducerModel {
            machine: LagStates::new(spec.settings.clone()),
            routing: Routing::even(partitions),
            spec,
            next_refresh: 0.0,
            redirected: 0.0,
            total: 0.0,
            transitions: 0,
        }
    }

    /// At refresh times, feed the machine the lag of every partition.
    pub fn refresh(&mut self, t: f64, lags: impl Iterator<Item = f64>) {
        if t < self.next_refresh {
            return;
        }
        self.next_refresh = t + self.spec.interval_s;
        let lags: Vec<Option<i64>> = lags
            .map(|l| Some((l.max(0.0) * LAG_UNIT).round() as i64))
            .collect();
        let now_ms = (t * 1000.0).round() as u64;
        self.transitions += self.machine.observe(now_ms, &lags).len();
        self.routing = self.machine.routing();
    }

    /// Turn the scenario's per-partition rates into the rates the producer writes.
    pub fn route(&mut self, rates: &mut [f64]) {
        if self.routing.len() != rates.len() || self.routing.is_even() {
            self.total += rates.iter().sum::<f64>();
            return;
        }
        let before = rates.to_vec();
        if self.spec.keyed {
            let share = self.spec.settings.probe_share;
            let states = self.routing.states();
            let good = states
                .iter()
                .filter(|s| **s == PartitionState::Good)
                .count() as f64;
            let mut moved = 0.0;
            for (r, s) in rates.iter_mut().zip(states) {
                let home = match s {
                    PartitionState::Good => 1.0,
                    PartitionState::Ok => share,
                    PartitionState::Slow => 0.0,
                };
                moved += *r * (1.0 - home);
                *r *= home;
            }
            for (r, s) in rates.iter_mut().zip(states) {
                if *s == PartitionState::Good {
                    *r += moved / good;
                }
            }
        } else {
            let total: f64 = rates.iter().sum();
            for (r, s) in rates.iter_mut().zip(self.routing.shares()) {
                *r = total * s;
            }
        }
        let total: f64 = before.iter().sum();
        let diff: f64 = before
            .iter()
            .zip(rates.iter())
            .map(|(a, b)| (a - b).abs())
            .sum();
        self.total += total;
        self.redirected += diff / 2.0;
    }
}
