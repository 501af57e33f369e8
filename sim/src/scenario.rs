//! Scenario presets: the model group each strategy is run against.

use std::collections::BTreeMap;

use lagbalance::lag_partitioner::MachineSettings;
use lagbalance_agent::config::{Config as AgentConfig, ConfigError};
use lagbalance_assign::lagbalance::LagBalanceSettings;

use crate::producer::{ProducerSpec, LAG_UNIT};

/// The model group's id, as its members and agents name it.
pub const GROUP: &str = "sim";

/// Relative partition weights (before time modulation).
#[derive(Clone, Debug)]
pub enum Weights {
    Uniform,
    /// Weight of the partition of rank `k` (1-based, ranks shuffled over partitions) is `k^-s`.
    Zipf {
        s: f64,
    },
    /// Listed partitions carry `factor` × the weight of the others.
    Hot {
        hot: Vec<usize>,
        factor: f64,
    },
}

/// How rates vary over time. Every modulation has mean 1 over time, so `load` stays the mean
/// input as a fraction of capacity.
#[derive(Clone, Debug)]
pub enum Modulation {
    None,
    /// Each partition flips independently between normal and burst (× `factor`), with
    /// exponentially distributed burst and gap lengths.
    Bursty {
        factor: f64,
        mean_burst_s: f64,
        mean_gap_s: f64,
    },
    /// Whole-group sinusoid `1 + amplitude·sin(2πt/period)`.
    Diurnal {
        amplitude: f64,
        period_s: f64,
    },
    /// `count` partitions, drawn at random, are hot (× `factor`); a new set every `period_s`.
    MovingHot {
        count: usize,
        factor: f64,
        period_s: f64,
    },
}

/// Per-record processing cost: each partition's mean cost is drawn once.
#[derive(Clone, Debug)]
pub enum Cost {
    Constant,
    /// Log-normal with mean 1.
    LogNormal {
        sigma: f64,
    },
}

/// A consumer: its true speed (work units/s; 1.0 = one core processing unit-cost records at
/// 1 record/s per unit) — hidden from the assignors — and speed changes over time.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    pub speed: f64,
    /// `(time_s, new speed factor relative to `speed`)`.
    pub changes: Vec<(f64, f64)>,
}

impl ConsumerSpec {
    pub fn new(speed: f64) -> Self {
        ConsumerSpec {
            speed,
            changes: Vec::new(),
        }
    }

    pub fn speed_at(&self, t: f64) -> f64 {
        let mut f = 1.0;
        for &(at, factor) in &self.changes {
            if t >= at {
                f = factor;
            }
        }
        self.speed * f
    }
}

/// The agent beside every member: the simulator runs the agent's own decision code
/// (`lagbalance_agent::decide::Decider`: outlier rule, election, cooldown, hourly budget), one
/// per member, polling the model group as the agent polls DescribeGroups, OffsetFetch and
/// ListOffsets. One model record is [`LAG_UNIT`] offsets.
#[derive(Clone, Debug)]
pub struct Agents {
    /// `LAGBALANCE_LAG_FLOOR` in seconds of one member's fair share of the input, so that the
    /// floor scales with the model's rates (the variable itself counts records).
    pub floor_s: f64,
    /// Further settings as an operator sets them, over the agent's defaults.
    pub env: Vec<(String, String)>,
}

impl Agents {
    /// How the report names these agents' settings.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "the agent's defaults, lag floor {} s of a member's fair share",
            self.floor_s
        );
        for (k, v) in &self.env {
            s.push_str(&format!(", {k}={v}"));
        }
        s
    }
}

#[derive(Clone, Debug)]
pub struct Triggers {
    /// A rebalance every this often whatever the lag, when no round is running. Nothing in the
    /// product rebalances on a timer; tests use it to compare rounds alone.
    pub periodic_s: Option<f64>,
    /// `None`: no agents, so no lag-triggered rebalances.
    pub agents: Option<Agents>,
}

/// Cost of rebalancing.
#[derive(Clone, Debug)]
pub struct RebalanceCost {
    /// Duration of one JoinGroup/SyncGroup round. Under eager every partition is paused for
    /// it; under cooperative members keep consuming during the round.
    pub round_s: f64,
    /// Extra pause of a partition that changed consumer (offset fetch, cache warm-up).
    pub move_pause_s: f64,
}

/// How members measure themselves. The model knows every true figure; a real member only
/// samples its own throughput now and then, with error, and the leader plans with the last
/// sample the member published.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Relative error of each sample: its throughput (and so the capacity it implies) and each
    /// per-partition rate are multiplied by an independent factor uniform in
    /// `[1 − noise, 1 + noise]`.
    pub noise: f64,
    /// Members sample every this many seconds, each on its own phase, and a join reports the
    /// latest sample, so what the leader sees is up to one period old. 0: sampled at the join.
    pub period_s: f64,
}

impl Measurement {
    /// Exact figures, measured at the join.
    pub const EXACT: Measurement = Measurement {
        noise: 0.0,
        period_s: 0.0,
    };
    /// ±10 % per sample, published every 5 s (the client's stats period).
    pub const REALISTIC: Measurement = Measurement {
        noise: 0.10,
        period_s: 5.0,
    };

    /// How often members sample themselves. Exact members publish nothing between joins but
    /// still watch their capacity on the client's stats period.
    pub fn sample_period_s(&self) -> f64 {
        if self.period_s > 0.0 {
            self.period_s
        } else {
            Self::REALISTIC.period_s
        }
    }
}

/// Seeds a scenario is evaluated over unless told otherwise: `1..=DEFAULT_SEEDS`.
pub const DEFAULT_SEEDS: u64 = 5;

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub description: &'static str,
    pub duration_s: f64,
    pub dt_s: f64,
    /// `(topic name, partitions)`, names sorted.
    pub topics: Vec<(String, usize)>,
    pub weights: Weights,
    pub modulation: Modulation,
    pub cost: Cost,
    pub consumers: Vec<ConsumerSpec>,
    /// Mean input as a fraction of the initial total capacity, for the detailed run.
    pub load: f64,
    pub rebalance: RebalanceCost,
    pub triggers: Triggers,
    /// Members measure themselves over this trailing window.
    pub measure_window_s: f64,
    /// The leader's EWMA window for partition rates.
    pub rate_window_s: f64,
    pub settings: LagBalanceSettings,
    /// Time of the event the scenario is about (noisy-neighbour), for the recovery metric.
    pub event_s: Option<f64>,
    /// Seed of one run: workload randomness and measurement noise.
    pub seed: u64,
    pub measurement: Measurement,
    /// The dedicated producer of the partitioner scenarios (`None`: rates as given).
    pub producer: Option<ProducerSpec>,
}

impl Scenario {
    pub fn partitions(&self) -> usize {
        self.topics.iter().map(|t| t.1).sum()
    }

    pub fn total_capacity(&self) -> f64 {
        self.consumers.iter().map(|c| c.speed).sum()
    }

    /// Mean input per member at `load`, records/s.
    pub fn fair_rate(&self, load: f64) -> f64 {
        load * self.total_capacity() / self.consumers.len().max(1) as f64
    }

    /// The agents' configuration at `load` (their lag floor scales with the input); `None`
    /// without agents; an error names a setting the agent rejects.
    pub fn agent_config(&self, load: f64) -> Result<Option<AgentConfig>, ConfigError> {
        let Some(agents) = self.triggers.agents.as_ref() else {
            return Ok(None);
        };
        let floor = (agents.floor_s * self.fair_rate(load) * LAG_UNIT).round() as u64;
        let mut env: BTreeMap<String, String> = [
            ("LAGBALANCE_BOOTSTRAP", "sim:9092".to_string()),
            ("LAGBALANCE_GROUP", GROUP.to_string()),
            ("LAGBALANCE_LAG_FLOOR", floor.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in &agents.env {
            env.insert(k.to_string(), v.to_string());
        }
        AgentConfig::from_sources(&env, &[]).map(Some)
    }

    /// Most triggered rebalances the agents can cause in any hour: every member's budget.
    pub fn group_budget_per_hour(&self) -> usize {
        match self.agent_config(self.load) {
            Ok(Some(c)) => c.budget_per_hour as usize * self.consumers.len(),
            _ => 0,
        }
    }

    /// The same scenario with another seed.
    pub fn with_seed(&self, seed: u64) -> Scenario {
        Scenario {
            seed,
            ..self.clone()
        }
    }

    /// The same scenario, shorter (tests), keeping events at the same fraction of the run.
    pub fn shortened(&self, factor: f64) -> Scenario {
        let mut s = self.clone();
        s.duration_s *= factor;
        s.event_s = s.event_s.map(|e| e * factor);
        for c in &mut s.consumers {
            for ch in &mut c.changes {
                ch.0 *= factor;
            }
        }
        s
    }
}

fn topics(n: usize, per_topic: usize) -> Vec<(String, usize)> {
    (0..n)
        .map(|i| (format!("topic-{i:02}"), per_topic))
        .collect()
}

fn default_triggers() -> Triggers {
    Triggers {
        periodic_s: None,
        agents: Some(Agents {
            floor_s: 10.0,
            env: Vec::new(),
        }),
    }
}

fn base(name: &'static str, description: &'static str) -> Scenario {
    Scenario {
        name,
        description,
        duration_s: 1800.0,
        dt_s: 1.0,
        topics: topics(1, 30),
        weights: Weights::Uniform,
        modulation: Modulation::None,
        cost: Cost::Constant,
        consumers: Vec::new(),
        load: 0.7,
        rebalance: RebalanceCost {
            round_s: 3.0,
            move_pause_s: 5.0,
        },
        triggers: default_triggers(),
        measure_window_s: 30.0,
        rate_window_s: 60.0,
        settings: LagBalanceSettings::default(),
        event_s: None,
        seed: 1,
        measurement: Measurement::REALISTIC,
        producer: None,
    }
}

pub const NAMES: [&str; 5] = [
    "agoda",
    "hermes",
    "hot-partitions",
    "noisy-neighbour",
    "oscillating",
];

pub fn by_name(name: &str) -> Option<Scenario> {
    Some(match name {
        "agoda" => Scenario {
            topics: topics(1, 30),
            consumers: [20.0, 20.0, 10.0].into_iter().map(ConsumerSpec::new).collect(),
            load: 0.9,
            ..base(
                "agoda",
                "3 consumers with capacities 20/20/10, 30 partitions, uniform rates",
            )
        },
        "hermes" => Scenario {
            topics: topics(4, 30),
            weights: Weights::Zipf { s: 0.6 },
            consumers: [1.0, 0.8, 0.5]
                .iter()
                .flat_map(|&s| std::iter::repeat_n(s, 4))
                .map(ConsumerSpec::new)
                .collect(),
            load: 0.7,
            ..base(
                "hermes",
                "12 consumers on 3 hardware generations (1.0/0.8/0.5), 120 partitions (4 topics, Zipf rates), 70 % load",
            )
        },
        "hot-partitions" => Scenario {
            topics: topics(1, 40),
            weights: Weights::Hot {
                hot: vec![3, 11, 19, 27, 35],
                factor: 10.0,
            },
            consumers: (0..8).map(|_| ConsumerSpec::new(1.0)).collect(),
            load: 0.85,
            ..base(
                "hot-partitions",
                "40 partitions of which 5 (every 8th) carry 10x the rate, 8 equal consumers, 85 % load",
            )
        },
        "noisy-neighbour" => Scenario {
            topics: topics(1, 60),
            modulation: Modulation::Bursty {
                factor: 2.0,
                mean_burst_s: 20.0,
                mean_gap_s: 180.0,
            },
            cost: Cost::LogNormal { sigma: 0.2 },
            consumers: (0..6)
                .map(|i| ConsumerSpec {
                    speed: 1.0,
                    changes: if i == 2 { vec![(900.0, 0.5)] } else { Vec::new() },
                })
                .collect(),
            load: 0.7,
            event_s: Some(900.0),
            ..base(
                "noisy-neighbour",
                "6 equal consumers, 60 partitions (bursty rates, log-normal record cost); consumer 2 slows 2x at mid-run, 70 % load",
            )
        },
        "oscillating" => Scenario {
            // Four hours: the budget is per rolling hour, so in a one-hour run every agent
            // starts with a full budget and the slope test's window (the last quarter) is the
            // stretch after the group has spent it. The fourth hour is the steady state, and it
            // holds 15 redraws of the hot set, against under 4 in the last quarter of an hour.
            duration_s: 4.0 * 3600.0,
            topics: topics(1, 48),
            modulation: Modulation::MovingHot {
                count: 8,
                factor: 6.0,
                period_s: 240.0,
            },
            consumers: (0..8).map(|_| ConsumerSpec::new(1.0)).collect(),
            load: 0.7,
            // One action per agent per hour: at most 8 triggered rebalances an hour.
            triggers: Triggers {
                agents: Some(Agents {
                    floor_s: 10.0,
                    env: vec![("LAGBALANCE_BUDGET_PER_HOUR".into(), "1".into())],
                }),
                ..default_triggers()
            },
            ..base(
                "oscillating",
                "8 equal consumers, 48 partitions; 8 random partitions run 6x hot and the hot set changes every 4 minutes, for four hours; 70 % load; rebalance budget 8/h",
            )
        },
        _ => return None,
    })
}

/// Presets run with a dedicated producer (`lagbalance-sim --scenario partitioner`).
pub const PRODUCER_NAMES: [&str; 2] = ["agoda", "hot-partitions"];

/// `name` with its dedicated producer: unkeyed records for `agoda` (uniform rates),
/// keyed records with lag-aware keyed routing for `hot-partitions` (the hot partitions are hot
/// keys). The partitioner closes a partition at 10 s of its mean input at the nominal load,
/// refreshes every 2 s, observes and probes for 10 s each, probe share 0.1, at most half the
/// partitions closed: the library's defaults with the threshold scaled to the model's rates.
pub fn with_producer(name: &str) -> Option<Scenario> {
    if !PRODUCER_NAMES.contains(&name) {
        return None;
    }
    let mut sc = by_name(name)?;
    let mean_rate = sc.load * sc.total_capacity() / sc.partitions() as f64;
    sc.producer = Some(ProducerSpec {
        keyed: name == "hot-partitions",
        settings: MachineSettings {
            slow_lag: (10.0 * mean_rate * LAG_UNIT).round().max(1.0) as u64,
            ..MachineSettings::default()
        },
        interval_s: 2.0,
    });
    Some(sc)
}
