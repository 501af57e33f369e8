//! The discrete-time group model.
//!
//! Fluid model, one step every `dt`: each partition receives `rate·dt` records (they become
//! visible to the consumer the next step, like a poll loop), and each consumer spends its
//! work budget `speed·dt` on its active partitions, shared equally (water-filling: a partition
//! that needs less gives the rest to the others), as a consumer polling its partitions in turn.
//!
//! The assignors see only what a real group shows them: members publish their own
//! measurements (throughput, busy CPU, backlog flag, per-partition rates), sampled now and then
//! and with error ([`Measurement`](crate::scenario::Measurement)), through the real
//! `subscription_user_data`; the leader adds lag and smoothed rates per partition
//! (`GroupView::stats`, as ListOffsets + committed offsets would give it), and true consumer
//! speeds stay hidden. Rebalances follow the protocol: under eager, every partition is
//! revoked when the round starts; under cooperative, members keep consuming, revoke what the
//! plan takes away, and rejoin at once for a follow-up round that hands the withheld
//! partitions over.
//!
//! The leader is the one production runs: every round goes through
//! [`Leader::plan`](lagbalance_assign::leader::Leader::plan) with the members' subscriptions as
//! a cooperative client would send them (owned partitions, the generation they were synced in,
//! user data), so every withholding rule applies and every plan is validated. A plan that asks
//! for a follow-up round gets one. Not modelled: the round a client's leader also runs at the
//! plan's `liveness_deadline` (a session timeout after it hands partitions to followers, to
//! confirm that they took them up); members here always sync what they are given, so that
//! round would only give the assignor another turn.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use lagbalance::control::AppIdentity;
use lagbalance::group::codec::{encode_subscription, Subscription, CONSUMER_PROTOCOL_VERSION};
use lagbalance::group::{capacity_news_calls_for_rejoin, MemberConfig};
use lagbalance::NamedPartition;
use lagbalance_agent::decide::{Action, Decider};
use lagbalance_agent::view::{MemberInfo, Snapshot, ViewTracker};
use lagbalance_assign::leader::{Leader, Member as JoinedMember, Round};
use lagbalance_assign::model::{Assignor, MemberStats, PartitionLoad};

use crate::producer::{ProducerMode, ProducerModel, LAG_UNIT};
use crate::scenario::{Cost, Modulation, Scenario, Weights, GROUP};
use crate::strategies::Strategy;
use lagbalance_assign::rng::Rng;

/// Per-step consumer measurement kept for the trailing measurement window.
#[derive(Clone, Copy, Debug, Default)]
struct StepStat {
    records: f64,
    work: f64,
    budget: f64,
    backlogged: bool,
}

struct Member {
    id: String,
    assignor: Box<dyn Assignor>,
    /// Flat partition indices it owns (sorted).
    owned: Vec<usize>,
    generation: i32,
    window: VecDeque<StepStat>,
    /// The latest sample the member took of itself (`None` before the first).
    published: Option<MemberStats>,
    /// The user data it last joined with.
    sent_user_data: Option<bytes::Bytes>,
    /// When it last rejoined with capacity news (ms).
    capacity_rejoin_at: Option<u64>,
    next_sample: f64,
}

/// Why a rebalance starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// Every member's first join.
    Join,
    /// An agent's action or the scenario's timer.
    Triggered,
    /// A saturated member with a new capacity estimate rejoined by itself, as the client does
    /// (`lagbalance.capacity.rejoin`).
    CapacityNews,
}

/// The agents beside the members: each member's own decider. They poll at the same instants,
/// so they see the same group and one tracker computes the view they all decide on.
struct Agents {
    tracker: ViewTracker,
    deciders: Vec<Decider>,
    interval_s: f64,
    next_poll: f64,
}

struct Partition {
    topic: u32,
    index: i32,
    base_rate: f64,
    cost: f64,
    arrived: f64,
    /// Arrived before this step (what a consumer can see).
    visible: f64,
    consumed: f64,
    owner: Option<usize>,
    pause_until: f64,
    last_consumer: Option<usize>,
    released_at: f64,
    last_move_at: f64,
    rate_ewma: f64,
    processed_ewma: f64,
    burst: bool,
    /// Cumulative arrivals at the end of every step (latency computation).
    cum: Vec<f64>,
    /// Index into `cum` of the oldest not-yet-consumed step (monotone).
    cursor: usize,
}

/// Everything a run reports.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    pub strategy: String,
    pub load: f64,
    pub bounded: bool,
    /// Slope of total lag over the last quarter, records/s.
    pub lag_slope: f64,
    /// Mean input rate over the last quarter, records/s.
    pub input_rate: f64,
    pub lag_p50: f64,
    pub lag_p99: f64,
    pub lag_max: f64,
    pub latency_p99_s: f64,
    /// Triggered rebalances, including the initial join.
    pub rebalances: usize,
    /// Join/sync rounds (cooperative follow-ups included).
    pub rounds: usize,
    pub moves: usize,
    /// Moves of a partition that had already moved less than the stabilisation window ago.
    pub double_moves: usize,
    /// Most triggered rebalances (by agents or the timer) in any rolling hour.
    pub max_rebalances_per_hour: usize,
    /// Rebalances members started themselves when saturated with a new capacity estimate.
    pub capacity_rejoins: usize,
    /// Plans [`Leader::plan`](lagbalance_assign::leader::Leader::plan) made and validated: one
    /// per round.
    pub plans_validated: usize,
    /// Mean CPU utilisation per consumer over the last quarter.
    pub util_mean: Vec<f64>,
    pub util_spread_pp: f64,
    /// Seconds from the event until group lag was back under its pre-event level.
    pub recovery_s: Option<f64>,
    /// Whether the event pushed group lag above its pre-event level at all.
    pub disturbed: bool,
    pub pre_event_lag: Option<f64>,
    /// Sampled series for plots: time (s), total lag, per-consumer utilisation.
    pub series_t: Vec<f64>,
    pub series_lag: Vec<f64>,
    pub series_util: Vec<Vec<f64>>,
    /// Dedicated-producer runs: fraction of records written off the partition the scenario's
    /// rates would have put them on, and the partitioner's state changes.
    pub redirected: f64,
    pub transitions: usize,
    /// Over the last quarter, the highest ratio of a consumer's input (work arriving on its
    /// partitions) to its true speed: above 1 that consumer cannot keep up.
    pub peak_demand: f64,
}

pub struct Sim<'a> {
    sc: &'a Scenario,
    strategy: Strategy,
    cooperative: bool,
    /// Topic names with partition counts, as metadata gives them to the leader.
    topic_counts: Vec<(String, i32)>,
    /// Topic name → flat index of its partition 0 in `parts`.
    topic_offset: HashMap<String, usize>,
    parts: Vec<Partition>,
    members: Vec<Member>,
    rng: Rng,
    /// Measurement error has its own stream, so that noise never changes the workload.
    noise_rng: Rng,
    hot_mask: Vec<bool>,
    hot_period: Option<usize>,
    t: f64,
    step: usize,
    generation: i32,
    /// The leader's memory (the leader is consumer-00, the first member id).
    leader: Leader,
    round_at: Option<f64>,
    trigger_times: Vec<f64>,
    next_periodic: f64,
    agents: Option<Agents>,
    total_weight_cost: f64,
    scale: f64,
    result: RunResult,
    latencies: Vec<(f64, f64)>,
    lag_series: Vec<f64>,
    input_series: Vec<f64>,
    util_acc: Vec<f64>,
    util_n: usize,
    sample_acc: Vec<f64>,
    sample_lag: f64,
    sample_n: usize,
    producer: Option<ProducerModel>,
    /// Per consumer, over the last quarter: work arrived on its partitions, and its budget.
    demand_acc: Vec<f64>,
    capacity_acc: Vec<f64>,
}

const SAMPLE_S: f64 = 10.0;

/// Mixed into the seed of the measurement-noise stream.
const NOISE_SALT: u64 = 0x6E6F_6973_655F_7273;

impl<'a> Sim<'a> {
    pub fn new(sc: &'a Scenario, strategy: Strategy, load: f64) -> Self {
        let mut rng = Rng::new(sc.seed);
        let n = sc.partitions();
        // Weights.
        let mut w: Vec<f64> = match &sc.weights {
            Weights::Uniform => vec![1.0; n],
            Weights::Zipf { s } => {
                let mut ranks: Vec<usize> = (1..=n).collect();
                rng.shuffle(&mut ranks);
                ranks.iter().map(|&k| (k as f64).powf(-s)).collect()
            }
            Weights::Hot { hot, factor } => {
                let mut w = vec![1.0; n];
                for &h in hot {
                    if h < n {
                        w[h] = *factor;
                    }
                }
                w
            }
        };
        if let Modulation::MovingHot { count, factor, .. } = &sc.modulation {
            // Time-averaged weight of the moving block is folded in by `modulation`; base stays 1.
            let _ = (count, factor);
            w.iter_mut().for_each(|x| *x = 1.0);
        }
        let costs: Vec<f64> = (0..n)
            .map(|_| match sc.cost {
                Cost::Constant => 1.0,
                Cost::LogNormal { sigma } => rng.lognormal_mean1(sigma),
            })
            .collect();
        let mut parts = Vec::with_capacity(n);
        for (t, (_, count)) in sc.topics.iter().enumerate() {
            for i in 0..*count {
                let p = parts.len();
                parts.push(Partition {
                    topic: t as u32,
                    index: i as i32,
                    base_rate: w[p],
                    cost: costs[p],
                    arrived: 0.0,
                    visible: 0.0,
                    consumed: 0.0,
                    owner: None,
                    pause_until: 0.0,
                    last_consumer: None,
                    released_at: 0.0,
                    last_move_at: f64::NEG_INFINITY,
                    rate_ewma: f64::NAN,
                    processed_ewma: 0.0,
                    burst: false,
                    cum: Vec::new(),
                    cursor: 0,
                });
            }
        }
        let m = sc.consumers.len();
        let members = (0..m)
            .map(|i| Member {
                id: format!("consumer-{i:02}"),
                assignor: strategy.make(&sc.settings),
                owned: Vec::new(),
                generation: -1,
                window: VecDeque::new(),
                published: None,
                sent_user_data: None,
                capacity_rejoin_at: None,
                // Members' clocks are not aligned: each samples on its own phase.
                next_sample: sc.measurement.sample_period_s() * i as f64
                    / sc.consumers.len() as f64,
            })
            .collect::<Vec<_>>();
        let cooperative = members[0].assignor.cooperative();
        let topic_counts = sc
            .topics
            .iter()
            .map(|(name, p)| (name.clone(), *p as i32))
            .collect();
        let mut topic_offset = HashMap::new();
        let mut offset = 0;
        for (name, p) in &sc.topics {
            topic_offset.insert(name.clone(), offset);
            offset += *p;
        }
        let mut sim = Sim {
            sc,
            strategy,
            cooperative,
            topic_counts,
            topic_offset,
            parts,
            members,
            rng,
            noise_rng: Rng::new(sc.seed ^ NOISE_SALT),
            hot_mask: Vec::new(),
            hot_period: None,
            t: 0.0,
            step: 0,
            generation: 1,
            leader: Leader::new(),
            round_at: None,
            trigger_times: Vec::new(),
            next_periodic: sc.triggers.periodic_s.unwrap_or(f64::INFINITY),
            // A scenario's agent settings are checked where it is built (`lagbalance-sim`
            // reports them as a usage error); here they are code.
            agents: sc
                .agent_config(load)
                .unwrap_or_else(|e| panic!("{}: agent settings: {e}", sc.name))
                .map(|cfg| Agents {
                    tracker: ViewTracker::new(cfg.ewma_window.as_millis() as u64),
                    deciders: (0..m).map(|_| Decider::new(&cfg)).collect(),
                    interval_s: cfg.interval.as_secs_f64(),
                    next_poll: 0.0,
                }),
            total_weight_cost: 0.0,
            scale: 0.0,
            result: RunResult {
                strategy: strategy.name().to_string(),
                load,
                ..RunResult::default()
            },
            latencies: Vec::new(),
            lag_series: Vec::new(),
            input_series: Vec::new(),
            util_acc: vec![0.0; m],
            util_n: 0,
            sample_acc: vec![0.0; m],
            sample_lag: 0.0,
            sample_n: 0,
            producer: None,
            demand_acc: vec![0.0; m],
            capacity_acc: vec![0.0; m],
        };
        // records/s per unit weight so that mean work input = load × total capacity.
        sim.total_weight_cost = sim.parts.iter().map(|p| sim.mean_weight(p) * p.cost).sum();
        sim.scale = load * sc.total_capacity() / sim.total_weight_cost;
        sim
    }

    /// Time-averaged weight of a partition (its modulation has mean 1, except the moving hot
    /// block, which spends `count / n` of the time on each partition).
    fn mean_weight(&self, p: &Partition) -> f64 {
        match &self.sc.modulation {
            Modulation::MovingHot { count, factor, .. } => {
                let n = self.parts.len() as f64;
                1.0 + (*count as f64 / n) * (factor - 1.0)
            }
            _ => p.base_rate,
        }
    }

    fn rate_multiplier(&mut self, p: usize) -> f64 {
        let t = self.t;
        match &self.sc.modulation {
            Modulation::None => 1.0,
            Modulation::Diurnal {
                amplitude,
                period_s,
            } => 1.0 + amplitude * (2.0 * std::f64::consts::PI * t / period_s).sin(),
            Modulation::Bursty {
                factor,
                mean_burst_s,
                mean_gap_s,
            } => {
                let dt = self.sc.dt_s;
                let (factor, b, g) = (*factor, *mean_burst_s, *mean_gap_s);
                let u = self.rng.unit();
                let part = &mut self.parts[p];
                if part.burst {
                    if u < dt / b {
                        part.burst = false;
                    }
                } else if u < dt / g {
                    part.burst = true;
                }
                // Normalise so the long-run mean is 1.
                let pi = b / (b + g);
                let mean = 1.0 + pi * (factor - 1.0);
                (if part.burst { factor } else { 1.0 }) / mean
            }
            Modulation::MovingHot {
                count,
                factor,
                period_s,
            } => {
                let period = (t / period_s) as usize;
                if self.hot_period != Some(period) {
                    // A new hot set each period, drawn from its own seed so it does not depend
                    // on how many random numbers anything else consumed.
                    let mut r = Rng::new(
                        self.sc.seed ^ (period as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
                    );
                    let mut idx: Vec<usize> = (0..self.parts.len()).collect();
                    r.shuffle(&mut idx);
                    self.hot_mask = vec![false; self.parts.len()];
                    for &i in idx.iter().take(*count) {
                        self.hot_mask[i] = true;
                    }
                    self.hot_period = Some(period);
                }
                if self.hot_mask[p] {
                    *factor
                } else {
                    1.0
                }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        (self.t * 1000.0).round() as u64
    }

    /// Run the whole scenario.
    pub fn run(mut self, detailed: bool) -> RunResult {
        let steps = (self.sc.duration_s / self.sc.dt_s).round() as usize;
        let dt = self.sc.dt_s;
        let warm = steps / 4;
        let last_quarter = steps - steps / 4;
        let pre_event_from = self
            .sc
            .event_s
            .map(|e| ((e - 300.0) / dt).max(0.0) as usize);
        let event_step = self.sc.event_s.map(|e| (e / dt) as usize);
        let mut pre_event_max: f64 = 0.0;
        let mut ma_window: VecDeque<f64> = VecDeque::new();
        let mut ma_sum = 0.0;
        // Initial join of every member.
        self.trigger(Cause::Join);
        for step in 0..steps {
            self.step = step;
            self.t = step as f64 * dt;
            self.sample_members();
            if let Some(at) = self.round_at {
                if self.t >= at {
                    self.complete_round();
                }
            }
            if let Some(pm) = &mut self.producer {
                pm.refresh(self.t, self.parts.iter().map(|p| p.arrived - p.consumed));
            }
            let input = self.arrivals(detailed, step >= last_quarter);
            let utils = self.consume(dt, detailed && step >= warm);
            let lag: f64 = self.parts.iter().map(|p| p.arrived - p.consumed).sum();
            self.lag_series.push(lag);
            self.input_series.push(input / dt);
            if step >= last_quarter {
                for (a, u) in self.util_acc.iter_mut().zip(&utils) {
                    *a += u;
                }
                self.util_n += 1;
            }
            if let (Some(from), Some(ev)) = (pre_event_from, event_step) {
                // Recovery is judged on a 30 s moving average so that one burst neither hides
                // nor fakes it: the event must first push the average above its pre-event
                // maximum ("disturbed"); recovery is when it is back at or under that level.
                ma_window.push_back(lag);
                ma_sum += lag;
                if ma_window.len() as f64 * dt > 30.0 {
                    ma_sum -= ma_window.pop_front().unwrap_or(0.0);
                }
                let ma = ma_sum / ma_window.len() as f64;
                if step >= from && step < ev {
                    pre_event_max = pre_event_max.max(ma);
                }
                if step >= ev && self.result.recovery_s.is_none() {
                    if ma > pre_event_max {
                        self.result.disturbed = true;
                    } else if self.result.disturbed {
                        self.result.recovery_s = Some((step - ev) as f64 * dt);
                    }
                }
            }
            if detailed {
                for (a, u) in self.sample_acc.iter_mut().zip(&utils) {
                    *a += u;
                }
                self.sample_lag += lag;
                self.sample_n += 1;
                if self.sample_n as f64 * dt >= SAMPLE_S {
                    let k = self.sample_n as f64;
                    self.result.series_t.push(self.t);
                    self.result.series_lag.push(self.sample_lag / k);
                    self.result
                        .series_util
                        .push(self.sample_acc.iter().map(|a| a / k).collect());
                    self.sample_acc.iter_mut().for_each(|a| *a = 0.0);
                    self.sample_lag = 0.0;
                    self.sample_n = 0;
                }
            }
            self.check_triggers();
        }
        if event_step.is_some() {
            self.result.pre_event_lag = Some(pre_event_max);
        }
        self.finish(warm, last_quarter)
    }

    /// Add this step's arrivals; returns records arrived.
    fn arrivals(&mut self, detailed: bool, last_quarter: bool) -> f64 {
        let dt = self.sc.dt_s;
        let alpha = 1.0 - (-dt / self.sc.rate_window_s).exp();
        let mut total = 0.0;
        let mut rates: Vec<f64> = (0..self.parts.len())
            .map(|p| self.rate_multiplier(p) * self.scale * self.parts[p].base_rate)
            .collect();
        if let Some(pm) = &mut self.producer {
            pm.route(&mut rates);
        }
        if last_quarter {
            for (mi, member) in self.members.iter().enumerate() {
                self.demand_acc[mi] += member
                    .owned
                    .iter()
                    .map(|&p| rates[p] * self.parts[p].cost)
                    .sum::<f64>();
                self.capacity_acc[mi] += self.sc.consumers[mi].speed_at(self.t);
            }
        }
        for (p, rate) in rates.into_iter().enumerate() {
            let part = &mut self.parts[p];
            part.visible = part.arrived;
            let a = rate * dt;
            part.arrived += a;
            total += a;
            part.rate_ewma = if part.rate_ewma.is_nan() {
                rate
            } else {
                part.rate_ewma + alpha * (rate - part.rate_ewma)
            };
            if detailed {
                part.cum.push(part.arrived);
            }
        }
        total
    }

    /// Every consumer works on its active partitions; returns per-consumer utilisation.
    fn consume(&mut self, dt: f64, record_latency: bool) -> Vec<f64> {
        let alpha = 1.0 - (-dt / self.sc.measure_window_s).exp();
        let t = self.t;
        let mut utils = vec![0.0; self.members.len()];
        let mut processed = vec![0.0; self.parts.len()];
        for (mi, member) in self.members.iter_mut().enumerate() {
            let speed = self.sc.consumers[mi].speed_at(t);
            let budget = speed * dt;
            // Demands in work units.
            let mut active: Vec<(usize, f64)> = member
                .owned
                .iter()
                .copied()
                .filter(|&p| self.parts[p].pause_until <= t)
                .map(|p| {
                    let part = &self.parts[p];
                    (p, (part.visible - part.consumed).max(0.0) * part.cost)
                })
                .collect();
            active.sort_by(|a, b| a.1.total_cmp(&b.1));
            let mut left = budget;
            let mut k = active.len();
            let mut work = 0.0;
            let mut backlog = false;
            for &(p, demand) in &active {
                let share = left / k as f64;
                let give = demand.min(share);
                if demand > share + 1e-9 {
                    backlog = true;
                }
                left -= give;
                k -= 1;
                work += give;
                processed[p] = give / self.parts[p].cost;
            }
            utils[mi] = if budget > 0.0 { work / budget } else { 0.0 };
            member.window.push_back(StepStat {
                records: active.iter().map(|&(p, _)| processed[p]).sum(),
                work,
                budget,
                backlogged: backlog,
            });
            let max_len = (self.sc.measure_window_s / dt).round().max(1.0) as usize;
            while member.window.len() > max_len {
                member.window.pop_front();
            }
        }
        for (p, part) in self.parts.iter_mut().enumerate() {
            let x = processed[p];
            if x > 0.0 && record_latency {
                // Latency of the middle record of this batch: now − when it arrived.
                let mid = part.consumed + x / 2.0;
                while part.cursor + 1 < part.cum.len() && part.cum[part.cursor] < mid {
                    part.cursor += 1;
                }
                let arrived_step = part.cursor as f64;
                self.latencies.push(((t - arrived_step * dt).max(dt), x));
            }
            part.consumed += x;
            part.processed_ewma += alpha * (x / dt - part.processed_ewma);
        }
        utils
    }

    /// Members whose sampling time has come measure themselves.
    fn sample_members(&mut self) {
        // Exact members report what they measure at the join, but they watch their capacity on
        // the client's stats period like everyone else.
        let publish = self.sc.measurement.period_s > 0.0;
        let period = self.sc.measurement.sample_period_s();
        for mi in 0..self.members.len() {
            if self.t >= self.members[mi].next_sample {
                let stats = self.measure(mi);
                self.rejoin_on_capacity_news(mi, &stats);
                let m = &mut self.members[mi];
                if publish {
                    m.published = Some(stats);
                }
                while m.next_sample <= self.t {
                    m.next_sample += period;
                }
            }
        }
    }

    /// The client's rule, [`capacity_news_calls_for_rejoin`], for a member in a stable group.
    fn rejoin_on_capacity_news(&mut self, mi: usize, stats: &MemberStats) {
        let now_ms = self.now_ms();
        let m = &mut self.members[mi];
        if self.round_at.is_some() || m.generation < 0 {
            return;
        }
        if capacity_news_calls_for_rejoin(
            m.assignor.as_mut(),
            stats,
            m.sent_user_data.as_ref(),
            m.capacity_rejoin_at,
            now_ms,
        ) {
            m.capacity_rejoin_at = Some(now_ms);
            self.trigger(Cause::CapacityNews);
        }
    }

    /// What member `mi` reports at a join: its latest sample, or a fresh one when members
    /// sample at the join.
    fn reported_stats(&mut self, mi: usize) -> MemberStats {
        if self.sc.measurement.period_s > 0.0 {
            self.members[mi].published.clone().unwrap_or_default()
        } else {
            self.measure(mi)
        }
    }

    /// One sample of member `mi`: its true figures with the scenario's measurement error.
    fn measure(&mut self, mi: usize) -> MemberStats {
        let mut stats = self.member_stats(mi);
        let noise = self.sc.measurement.noise;
        let mut factor = || 1.0 + noise * (2.0 * self.noise_rng.unit() - 1.0);
        stats.processed_rate *= factor();
        for p in &mut stats.partitions {
            p.rate *= factor();
        }
        stats
    }

    /// Member `mi`'s true figures over its trailing measurement window.
    fn member_stats(&self, mi: usize) -> MemberStats {
        let m = &self.members[mi];
        let dt = self.sc.dt_s;
        let span = m.window.len() as f64 * dt;
        let records: f64 = m.window.iter().map(|s| s.records).sum();
        let work: f64 = m.window.iter().map(|s| s.work).sum();
        let budget: f64 = m.window.iter().map(|s| s.budget).sum();
        let backlogged = !m.window.is_empty() && m.window.iter().all(|s| s.backlogged);
        MemberStats {
            processed_rate: if span > 0.0 { records / span } else { 0.0 },
            backlogged,
            // One core per consumer; busy fraction of it is what a cgroup meter reports.
            cpu_used_cores: Some(if budget > 0.0 { work / budget } else { 0.0 }),
            cpu_limit_cores: Some(1.0),
            busy_fraction: None,
            partitions: m
                .owned
                .iter()
                .map(|&p| {
                    let part = &self.parts[p];
                    PartitionLoad {
                        topic: self.sc.topics[part.topic as usize].0.clone(),
                        partition: part.index,
                        lag: part.arrived - part.consumed,
                        rate: part.processed_ewma,
                    }
                })
                .collect(),
            measured_at_ms: self.now_ms(),
        }
    }

    /// Start a rebalance (if none is running).
    fn trigger(&mut self, cause: Cause) {
        if self.round_at.is_some() {
            return;
        }
        self.result.rebalances += 1;
        match cause {
            Cause::Join => {}
            Cause::Triggered => self.trigger_times.push(self.t),
            Cause::CapacityNews => self.result.capacity_rejoins += 1,
        }
        if !self.cooperative {
            // Eager: everyone revokes everything before rejoining.
            for mi in 0..self.members.len() {
                let owned = std::mem::take(&mut self.members[mi].owned);
                for p in owned {
                    self.parts[p].owner = None;
                    self.parts[p].released_at = self.t;
                }
            }
        }
        self.round_at = Some(self.t + self.sc.rebalance.round_s);
    }

    fn complete_round(&mut self) {
        self.round_at = None;
        self.result.rounds += 1;
        let now_ms = self.now_ms();
        let topics: Vec<String> = self.sc.topics.iter().map(|(t, _)| t.clone()).collect();
        let mut members = Vec::with_capacity(self.members.len());
        for mi in 0..self.members.len() {
            let stats = self.reported_stats(mi);
            let user_data = self.members[mi].assignor.subscription_user_data(&stats);
            self.members[mi].sent_user_data = user_data.clone();
            let m = &self.members[mi];
            let subscription = Subscription {
                topics: topics.clone(),
                user_data,
                owned: m.owned.iter().map(|&p| self.partition_name(p)).collect(),
                generation: m.generation,
                rack: None,
            };
            let metadata = encode_subscription(&subscription).unwrap_or_else(|e| {
                panic!("{}: subscription of {}: {e}", self.strategy.name(), m.id)
            });
            members.push(JoinedMember {
                member_id: m.id.clone(),
                instance_id: None,
                metadata,
                subscription: Some(lagbalance_assign::leader::Subscription {
                    version: CONSUMER_PROTOCOL_VERSION,
                    topics: subscription.topics,
                    owned: subscription.owned,
                    generation: subscription.generation,
                    user_data: subscription.user_data,
                    rack: None,
                }),
            });
        }
        let stats: Option<Vec<PartitionLoad>> = (self.t >= 10.0).then(|| {
            self.parts
                .iter()
                .map(|p| PartitionLoad {
                    topic: self.sc.topics[p.topic as usize].0.clone(),
                    partition: p.index,
                    lag: p.arrived - p.consumed,
                    rate: p.rate_ewma,
                })
                .collect()
        });
        // The leader is the first member (member ids sort, so always consumer-00).
        let leader_id = self.members[0].id.clone();
        let protocol = self.members[0].assignor.name().to_owned();
        let config = MemberConfig::default();
        let round = Round {
            group_id: GROUP,
            leader_id: &leader_id,
            generation: self.generation,
            protocol: &protocol,
            members: &members,
            topics: &self.topic_counts,
            stats: stats.as_deref(),
            now_ms,
            session_timeout_ms: config.session_timeout_ms,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
        };
        let plan = self
            .leader
            .plan(&round, std::slice::from_mut(&mut self.members[0].assignor))
            .unwrap_or_else(|e| panic!("{} at t={}: {e}", self.strategy.name(), self.t));
        // `plan` validated it.
        self.result.plans_validated += 1;
        let by_id: HashMap<&str, &[(String, i32)]> = plan
            .assignments
            .iter()
            .map(|a| (a.member_id.as_str(), a.partitions.as_slice()))
            .collect();
        let planned: Vec<Vec<usize>> = self
            .members
            .iter()
            .map(|m| {
                by_id
                    .get(m.id.as_str())
                    .copied()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|(t, p)| Some(self.topic_offset.get(t)? + *p as usize))
                    .collect()
            })
            .collect();

        let mut any_revoked = false;
        let window_s = self.sc.settings.stabilisation_window_ms as f64 / 1000.0;
        for (mi, mut new) in planned.into_iter().enumerate() {
            new.sort_unstable();
            let old = std::mem::take(&mut self.members[mi].owned);
            for &p in &old {
                if new.binary_search(&p).is_err() {
                    any_revoked = true;
                    self.parts[p].owner = None;
                    self.parts[p].released_at = self.t;
                }
            }
            for &p in &new {
                let part = &mut self.parts[p];
                if part.owner == Some(mi) {
                    continue;
                }
                assert!(
                    part.owner.is_none(),
                    "partition {p} handed to two consumers"
                );
                part.owner = Some(mi);
                if part.last_consumer != Some(mi) {
                    if part.last_consumer.is_some() {
                        self.result.moves += 1;
                        if part.released_at - part.last_move_at < window_s {
                            self.result.double_moves += 1;
                        }
                        part.last_move_at = part.released_at;
                    }
                    part.pause_until = self.t + self.sc.rebalance.move_pause_s;
                }
                part.last_consumer = Some(mi);
            }
            self.members[mi].owned = new;
            self.members[mi].generation = self.generation;
        }
        if std::env::var_os("LAGBALANCE_SIM_TRACE").is_some() {
            let counts: Vec<usize> = self.members.iter().map(|m| m.owned.len()).collect();
            let lags: Vec<f64> = self
                .members
                .iter()
                .map(|m| {
                    m.owned
                        .iter()
                        .map(|&p| self.parts[p].arrived - self.parts[p].consumed)
                        .sum::<f64>()
                        .round()
                })
                .collect();
            eprintln!(
                "t={:>6.0} {} gen={} counts={counts:?} lag={lags:?}",
                self.t,
                self.strategy.name(),
                self.generation
            );
        }
        self.generation += 1;
        if (self.cooperative && any_revoked) || plan.follow_up {
            // KIP-429: a member that revoked something rejoins at once; the follow-up round
            // hands the withheld partitions to their new owners. A plan that kept something
            // back with nobody revoking asks its leader for that round itself.
            self.round_at = Some(self.t + self.sc.rebalance.round_s);
        }
    }

    fn check_triggers(&mut self) {
        if let Some(p) = self.sc.triggers.periodic_s {
            if self.t >= self.next_periodic {
                self.next_periodic += p;
                self.trigger(Cause::Triggered);
            }
        }
        if self.agents.as_ref().is_none_or(|a| self.t < a.next_poll) {
            return;
        }
        let snapshot = self.snapshot();
        let now_ms = self.now_ms();
        let Some(agents) = &mut self.agents else {
            return;
        };
        agents.next_poll += agents.interval_s;
        let view = Arc::new(agents.tracker.update(&snapshot));
        let mut acted = false;
        for (decider, member) in agents.deciders.iter_mut().zip(&snapshot.members) {
            // What the member's app tells its agent about itself.
            let identity = AppIdentity {
                group: GROUP.to_string(),
                member_id: member.member_id.clone(),
                instance_id: None,
                generation: member.generation,
                partitions: member.partitions.clone(),
            };
            let decision = decider.decide(now_ms, Arc::clone(&view), Some(&identity));
            match decision.action {
                // The model's members always rejoin at once; leaving is not modelled.
                Some(Action::Rejoin { .. } | Action::Leave { .. }) => {
                    decider.acted(now_ms);
                    acted = true;
                }
                Some(Action::DryRun { .. }) | None => {}
            }
        }
        if acted {
            self.trigger(Cause::Triggered);
        }
    }

    fn partition_name(&self, p: usize) -> NamedPartition {
        let part = &self.parts[p];
        (self.sc.topics[part.topic as usize].0.clone(), part.index)
    }

    /// What DescribeGroups, OffsetFetch and ListOffsets would answer now: members with their
    /// assignments and generations, consumed offsets as committed, arrivals as the log end.
    fn snapshot(&self) -> Snapshot {
        let names: Vec<NamedPartition> = (0..self.parts.len())
            .map(|p| self.partition_name(p))
            .collect();
        let offsets = |f: fn(&Partition) -> f64| -> BTreeMap<NamedPartition, i64> {
            names
                .iter()
                .zip(&self.parts)
                .map(|(name, part)| (name.clone(), (f(part) * LAG_UNIT) as i64))
                .collect()
        };
        Snapshot {
            at_ms: self.now_ms(),
            state: if self.round_at.is_some() {
                "PreparingRebalance"
            } else {
                "Stable"
            }
            .to_string(),
            protocol: self.members[0].assignor.name().to_owned(),
            members: self
                .members
                .iter()
                .map(|m| MemberInfo {
                    member_id: m.id.clone(),
                    partitions: m.owned.iter().map(|&p| names[p].clone()).collect(),
                    generation: m.generation,
                    ..MemberInfo::default()
                })
                .collect(),
            committed: offsets(|p| p.consumed),
            log_end: offsets(|p| p.arrived),
            assignments_visible: true,
        }
    }

    fn finish(mut self, warm: usize, last_quarter: usize) -> RunResult {
        let dt = self.sc.dt_s;
        let n = self.lag_series.len();
        // Bounded lag: least-squares slope of total lag over the last quarter of the run.
        let ys = &self.lag_series[last_quarter..n];
        let k = ys.len() as f64;
        let xm = (k - 1.0) / 2.0;
        let ym = ys.iter().sum::<f64>() / k;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, y) in ys.iter().enumerate() {
            let dx = i as f64 - xm;
            sxy += dx * (y - ym);
            sxx += dx * dx;
        }
        let slope = if sxx > 0.0 { sxy / sxx / dt } else { 0.0 };
        let input = self.input_series[last_quarter..n].iter().sum::<f64>() / k;
        self.result.lag_slope = slope;
        self.result.input_rate = input;
        self.result.bounded = slope <= BOUNDED_SLOPE * input;

        let mut lags: Vec<f64> = self.lag_series[warm..].to_vec();
        lags.sort_by(f64::total_cmp);
        self.result.lag_p50 = percentile(&lags, 0.50);
        self.result.lag_p99 = percentile(&lags, 0.99);
        self.result.lag_max = lags.last().copied().unwrap_or(0.0);
        if !self.latencies.is_empty() {
            self.latencies.sort_by(|a, b| a.0.total_cmp(&b.0));
            let total: f64 = self.latencies.iter().map(|l| l.1).sum();
            let mut acc = 0.0;
            for &(lat, w) in &self.latencies {
                acc += w;
                if acc >= 0.99 * total {
                    self.result.latency_p99_s = lat;
                    break;
                }
            }
        }
        let un = self.util_n.max(1) as f64;
        self.result.util_mean = self.util_acc.iter().map(|a| a / un).collect();
        self.result.util_spread_pp = spread(&self.result.util_mean) * 100.0;
        let mut worst = 0;
        for (i, &t0) in self.trigger_times.iter().enumerate() {
            let c = self.trigger_times[i..]
                .iter()
                .take_while(|&&t| t < t0 + 3600.0)
                .count();
            worst = worst.max(c);
        }
        self.result.max_rebalances_per_hour = worst;
        if let Some(pm) = &self.producer {
            self.result.redirected = if pm.total > 0.0 {
                pm.redirected / pm.total
            } else {
                0.0
            };
            self.result.transitions = pm.transitions;
        }
        self.result.peak_demand = self
            .demand_acc
            .iter()
            .zip(&self.capacity_acc)
            .filter(|(_, c)| **c > 0.0)
            .map(|(d, c)| d / c)
            .fold(0.0, f64::max);
        self.result
    }
}

/// Lag counts as bounded when its least-squares slope over the last quarter of the run is at
/// most this fraction of the input rate (i.e. at most 0.5 % of arriving records pile up).
pub const BOUNDED_SLOPE: f64 = 0.005;

/// Largest minus smallest of `xs` (−∞ for none).
fn spread(xs: &[f64]) -> f64 {
    let max = xs.iter().cloned().fold(f64::MIN, f64::max);
    let min = xs.iter().cloned().fold(f64::MAX, f64::min);
    max - min
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// One run of `strategy` at `load` (fraction of total capacity).
pub fn run(sc: &Scenario, strategy: Strategy, load: f64, detailed: bool) -> RunResult {
    Sim::new(sc, strategy, load).run(detailed)
}

/// One run with the scenario's dedicated producer spreading records by `mode`.
pub fn run_with_producer(
    sc: &Scenario,
    strategy: Strategy,
    mode: ProducerMode,
    load: f64,
    detailed: bool,
) -> RunResult {
    let mut sim = Sim::new(sc, strategy, load);
    if let (ProducerMode::LagAware, Some(spec)) = (mode, &sc.producer) {
        sim.producer = Some(ProducerModel::new(spec.clone(), sc.partitions()));
    }
    let mut r = sim.run(detailed);
    r.strategy = format!("{} + {}", mode.name(), strategy.name());
    r
}

/// [`max_sustainable`] with the dedicated producer.
pub fn max_sustainable_with_producer(
    sc: &Scenario,
    strategy: Strategy,
    mode: ProducerMode,
) -> Sustainable {
    scan(|load| run_with_producer(sc, strategy, mode, load, false).bounded)
}

/// The highest load (fraction of total initial capacity) with bounded lag, from a grid scan
/// ([`scan`]).
pub fn max_sustainable(sc: &Scenario, strategy: Strategy) -> Sustainable {
    scan(|load| run(sc, strategy, load, false).bounded)
}

/// What a sustainable-load scan found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sustainable {
    /// The highest grid load that is bounded with every lower grid load bounded too; 0 when
    /// the lowest is not.
    pub load: f64,
    /// Grid loads above `load` that are bounded all the same: boundedness is not monotonic in
    /// load there, so `load` is the figure to trust and these are flagged.
    pub bounded_above: Vec<f64>,
}

/// Coarse grid of the scan, in percent of capacity.
const GRID_PERCENT: std::ops::RangeInclusive<u32> = 5..=125;
const COARSE_STEP: u32 = 5;

/// Scan loads on a grid: every 5 % from 5 % to 125 %, then every 1 % between the highest
/// coarse load below which everything was bounded and the next coarse load. Each load is a
/// separate run, and nothing guarantees that a run bounded at one load is bounded at every
/// lower one, so the whole grid is run rather than bisected.
pub fn scan(bounded: impl Fn(f64) -> bool) -> Sustainable {
    let load = |pct: u32| f64::from(pct) / 100.0;
    let coarse: Vec<(u32, bool)> = GRID_PERCENT
        .step_by(COARSE_STEP as usize)
        .map(|pct| (pct, bounded(load(pct))))
        .collect();
    let fine_from = coarse.iter().take_while(|c| c.1).last().map(|c| c.0);
    let fine: Vec<(u32, bool)> = match fine_from {
        Some(from) if from < *GRID_PERCENT.end() => (from + 1..from + COARSE_STEP)
            .map(|pct| (pct, bounded(load(pct))))
            .collect(),
        _ => Vec::new(),
    };
    let mut grid = [coarse, fine].concat();
    grid.sort_unstable_by_key(|g| g.0);
    let limit = grid.iter().take_while(|g| g.1).last().map_or(0, |g| g.0);
    Sustainable {
        load: load(limit),
        bounded_above: grid
            .iter()
            .filter(|g| g.0 > limit && g.1)
            .map(|g| load(g.0))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_a_monotone_limit_to_the_percent() {
        let s = scan(|load| load <= 0.731);
        assert_eq!(s.load, 0.73);
        assert!(s.bounded_above.is_empty());
        assert_eq!(scan(|_| true).load, 1.25);
        assert_eq!(scan(|_| false).load, 0.0);
    }

    #[test]
    fn scan_reports_the_contiguous_limit_and_flags_bounded_loads_above_it() {
        let s = scan(|load| load <= 0.62 || (0.795..0.805).contains(&load));
        assert_eq!(s.load, 0.62);
        assert_eq!(s.bounded_above, vec![0.8]);
        // A hole below the top counts: 50 % unbounded caps the limit below it.
        let s = scan(|load| (load - 0.5).abs() > 1e-9 && load <= 0.9);
        assert_eq!(s.load, 0.49);
        assert!(s.bounded_above.contains(&0.55) && s.bounded_above.contains(&0.9));
    }
}
