//! The sidecar agents end to end on a real broker: three equal example workers in a `lagbalance`
//! group, each with its own `lagbalance-agent`. Once the group is settled and quiet, one worker's
//! host gets `slow_factor` × slower (SIGUSR1: a noisy neighbour). Records arrive evenly on every
//! partition at a rate the group can take but the slow member's share cannot, so its lag grows
//! — nothing else rebalances the group (by default the workers run with `--no-capacity-rejoin`,
//! so the slow member does not report its new capacity by itself) — until its agent trips and
//! asks it to rejoin with fresh capacity figures; the leader then moves work away from it.
//! Later every agent is killed and the workers must keep consuming. With `oscillate_every` the
//! slow host keeps changing speed instead (the storm case: how many rounds does the group run?).
//!
//! Shared by the acceptance test (`tests/agent_tansu.rs`) and the mode measurement
//! (`examples/agent_modes.rs`). Group lag is measured like the agents measure it: end offsets
//! (here from the producer's acknowledgements, exact on tansu) minus committed offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lagbalance::NamedPartition;
use lagbalance::{Client, ClientConfig};

use crate::agents::Agent;
use crate::audit;
use crate::broker::BrokerKind;
use crate::chaos::max_generation;
use crate::workers::{owned_by_audit, wait_balanced, Worker};
use crate::{unique, unique_temp_dir, TestBroker};

/// What to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// `LAGBALANCE_MODE` of every agent: `rejoin` or `leave`.
    pub mode: String,
    pub partitions: i32,
    /// Records per second, spread evenly over the partitions.
    pub rate: f64,
    /// Per-record cost of the fast workers (sleep mode: I/O-bound work, no CPU).
    pub fast_cost_us: u64,
    /// The slow worker's cost becomes this many times the others'…
    pub slow_factor: u64,
    /// …this long after records start to arrive.
    pub slow_after: Duration,
    /// When set, the slow worker's host then alternates between normal speed and slow every
    /// this long while the agents live (a neighbour that comes and goes): the storm case.
    pub oscillate_every: Option<Duration>,
    /// Whether the workers rejoin with capacity news by themselves (`lagbalance.capacity.rejoin`,
    /// on by default in the client); off leaves capacity-driven rounds to the agents.
    pub capacity_rejoin: bool,
    /// `LAGBALANCE_LAG_FLOOR`: the outlier's lag must exceed it, and the group's lag must get
    /// back below it once work has moved.
    pub lag_floor: i64,
    /// How long records keep arriving with the agents up.
    pub produce_with_agents: Duration,
    /// How long records keep arriving after every agent was killed.
    pub produce_without_agents: Duration,
    /// The broker: this kind, or the run's ([`TestBroker::start`]) when `None`.
    pub broker: Option<BrokerKind>,
    /// Workers and agents reach Kafka over its SASL_SSL listener as SCRAM-SHA-512 user
    /// `alice`, verifying the broker against the test CA (Kafka only); the producer stays on
    /// PLAINTEXT.
    pub sasl_ssl: bool,
    /// `LAGBALANCE_BUDGET_PER_HOUR` of the slow worker's agent (the others keep the default):
    /// 0 stands for an agent that has spent its budget, so a deputy has to act.
    pub slow_agent_budget: Option<u32>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            mode: "rejoin".into(),
            partitions: 12,
            // Fast members take 500/s each, the slow one 166/s: 1166/s in all. An even spread
            // of 750/s gives each 250/s, so the slow one falls behind by ~84 records/s.
            rate: 750.0,
            fast_cost_us: 2_000,
            slow_factor: 3,
            slow_after: Duration::from_secs(10),
            oscillate_every: None,
            capacity_rejoin: false,
            lag_floor: 1_500,
            produce_with_agents: Duration::from_secs(75),
            produce_without_agents: Duration::from_secs(10),
            broker: None,
            sasl_ssl: false,
            slow_agent_budget: None,
        }
    }
}

/// What happened.
#[derive(Debug, Default)]
pub struct Outcome {
    /// From the slowdown to the first agent action.
    pub trigger_after: Option<Duration>,
    /// From the first action until the group's lag was back below the floor.
    pub recovered_after: Option<Duration>,
    /// Highest group lag seen.
    pub peak_lag: i64,
    /// Agent actions, per worker name.
    pub actions: BTreeMap<String, usize>,
    /// Every agent action's log line (with its reason and the view it was decided on).
    pub action_lines: Vec<String>,
    /// The broker the scenario ran on.
    pub broker: String,
    /// Partitions the slow worker owned when it slowed down, and at the end. (Not at the
    /// agent's action: the leader may already have moved some by then, in a round another
    /// member started with the slow member's saturated report in it.)
    pub slow_partitions_before: usize,
    pub slow_partitions_after: usize,
    /// Ownership changes (assigned/revoked/lost callbacks) after the first action.
    pub ownership_changes_after_trigger: usize,
    /// Times the slow worker's speed changed (1 without oscillation).
    pub speed_changes: usize,
    /// Rebalance rounds (group generations) from the first slowdown until the agents died.
    pub rounds_after_slowdown: i32,
    /// Records consumed between the agents' death and the end.
    pub consumed_without_agents: usize,
    /// Group lag over time: (seconds since the group settled under load, lag).
    pub timeline: Vec<(f64, i64)>,
    pub report: audit::Report,
    /// The workers' audits and logs and the agents' logs; the caller removes them.
    pub logs: PathBuf,
}

const SLOW: &str = "c";

/// The password of the SCRAM user the secured scenario's members and agents log in as
/// (`scripts/test-broker` creates it); the scenario checks that no log shows it.
pub const SCRAM_PASSWORD: &str = "alice-secret";

/// Where members and agents connect, and the `LAGBALANCE_*` security variables they share.
fn member_access(
    s: &Scenario,
    broker: &TestBroker,
) -> Result<(String, Vec<(&'static str, String)>)> {
    if !s.sasl_ssl {
        return Ok((broker.bootstrap.clone(), Vec::new()));
    }
    let ca = PathBuf::from(broker.endpoint("LAGBALANCE_KAFKA_TLS_DIR")?).join("ca.pem");
    let ca = ca.to_str().context("UTF-8 CA path")?.to_owned();
    let vars = vec![
        ("LAGBALANCE_SECURITY_PROTOCOL", "SASL_SSL".to_owned()),
        ("LAGBALANCE_SSL_CA_LOCATION", ca),
        ("LAGBALANCE_SASL_MECHANISM", "SCRAM-SHA-512".to_owned()),
        ("LAGBALANCE_SASL_USERNAME", "alice".to_owned()),
        ("LAGBALANCE_SASL_PASSWORD", SCRAM_PASSWORD.to_owned()),
    ];
    Ok((
        broker.endpoint("LAGBALANCE_KAFKA_SASL_SSL")?.to_owned(),
        vars,
    ))
}

/// Run the scenario on a broker of its own and return what happened. Every wait is bounded.
pub async fn run(s: &Scenario) -> Result<Outcome> {
    let broker = match s.broker {
        Some(kind) => TestBroker::start_kind(kind).await?,
        None => TestBroker::start().await?,
    };
    let client = Client::new(ClientConfig::new(&broker.bootstrap))?;
    let topic = unique("agents");
    let group = unique("agents-g");
    client.create_topic(&topic, s.partitions, 1).await?;
    let dir = unique_temp_dir("agent-e2e")?;
    let result = run_in(s, &broker, &client, &topic, &group, &dir).await;
    if result.is_err() {
        eprintln!("agent scenario logs kept in {}", dir.display());
    }
    result.map(|mut out| {
        out.logs = dir;
        out
    })
}

async fn run_in(
    s: &Scenario,
    broker: &TestBroker,
    client: &Client,
    topic: &str,
    group: &str,
    dir: &std::path::Path,
) -> Result<Outcome> {
    // Records arrive round-robin over the partitions at the fixed rate from the start, so the
    // group forms under load (a group formed idle splits by count only); every acknowledged
    // offset goes into the ledger and moves that partition's end offset.
    let ledger: Arc<Mutex<BTreeMap<NamedPartition, BTreeSet<i64>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = tokio::spawn(crate::ledger::produce_until(
        client.clone(),
        topic.to_owned(),
        s.partitions,
        s.rate,
        stop.clone(),
        Some(ledger.clone()),
    ));

    let (bootstrap, security) = member_access(s, broker)?;
    let cost = s.fast_cost_us.to_string();
    let factor = s.slow_factor.to_string();
    let mut workers = Vec::new();
    for name in ["a", "b", SLOW] {
        let args = [
            "--assignor",
            "lagbalance",
            "--cost-mode",
            "sleep",
            "--cost-us",
            cost.as_str(),
            "--slow-factor",
            factor.as_str(),
            "--session-timeout-ms",
            "12000",
            // Every cooperative round on tansu costs its 3 s follower hold plus the time the
            // leader takes to notice (a heartbeat interval); 1 s instead of the derived 4 s
            // takes ~3 s off each of the rounds a move needs.
            "--heartbeat-interval-ms",
            "1000",
            "--commit-interval-ms",
            "200",
        ];
        let mut args = args.to_vec();
        if !s.capacity_rejoin {
            // The slow member would otherwise rejoin with its new capacity by itself within
            // seconds of slowing down, before its lag could trip the agent this tests.
            args.push("--no-capacity-rejoin");
        }
        let mut env = vec![("LAGBALANCE_CONTROL_ADDR", "127.0.0.1:0")];
        env.extend(security.iter().map(|(k, v)| (*k, v.as_str())));
        workers.push(Worker::spawn(
            &bootstrap, group, topic, name, &args, &env, dir,
        )?);
    }
    let refs: Vec<&Worker> = workers.iter().collect();
    wait_balanced(
        &refs,
        s.partitions,
        false,
        Duration::from_secs(4),
        Duration::from_secs(90),
    )
    .await
    .context("the three workers never settled")?;

    let mut agents = Vec::new();
    for w in &workers {
        let control = w.control_addr(Duration::from_secs(10)).await?;
        let mut env = vec![
            ("LAGBALANCE_MODE", s.mode.clone()),
            ("LAGBALANCE_INTERVAL", "1s".into()),
            ("LAGBALANCE_SUSTAIN", "3".into()),
            ("LAGBALANCE_LAG_FLOOR", s.lag_floor.to_string()),
            ("LAGBALANCE_COOLDOWN", "20s".into()),
            ("LAGBALANCE_LEAVE_COOLDOWN", "5s".into()),
            ("LAGBALANCE_EWMA_WINDOW", "5s".into()),
            // Every process of the test shares one cgroup, so each agent would report the
            // whole machine's CPU use (other tests, fuzzers) as its pod's: utilisation near 1
            // for every member and capacities that say nothing. A limit far above the machine
            // makes the CPU share negligible, and the members' measured busy fraction (their
            // time outside poll) is what their capacity is learnt from — as it would be for
            // these I/O-bound workers in pods of their own.
            ("LAGBALANCE_CPU_LIMIT", "256".into()),
        ];
        env.extend(security.iter().cloned());
        if let (SLOW, Some(budget)) = (w.name.as_str(), s.slow_agent_budget) {
            env.push(("LAGBALANCE_BUDGET_PER_HOUR", budget.to_string()));
        }
        agents.push(Agent::spawn(
            &bootstrap, group, control, &w.name, &env, dir,
        )?);
    }

    // The slowdown comes `slow_after` into the settled group; the agents live on for
    // `produce_with_agents` after it.
    let settled = Instant::now();
    let total = s.slow_after + s.produce_with_agents + s.produce_without_agents;

    let mut out = Outcome {
        broker: broker.label(),
        ..Outcome::default()
    };
    let slow_worker = &workers[2];
    let mut trigger_at: Option<Instant> = None;
    let mut slowed_at: Option<Instant> = None;
    let mut agents_killed_at: Option<usize> = None;
    let files: Vec<PathBuf> = workers.iter().map(|w| w.audit.clone()).collect();
    let ownership_changes =
        |files: &[PathBuf]| count_events(files, &["assigned", "revoked", "lost"]);
    let mut changes_at_trigger = 0;
    let mut generation_at_slowdown = 0;
    while settled.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let lag = group_lag(client, group, &ledger).await.unwrap_or(-1);
        out.timeline.push((settled.elapsed().as_secs_f64(), lag));
        out.peak_lag = out.peak_lag.max(lag);
        if slowed_at.is_none() && settled.elapsed() >= s.slow_after {
            out.slow_partitions_before = owned_by_audit(&[slow_worker])
                .get(SLOW)
                .map_or(0, BTreeSet::len);
            generation_at_slowdown = max_generation(&files);
            slow_worker.slow_down()?;
            out.speed_changes = 1;
            slowed_at = Some(Instant::now());
        }
        if let (Some(every), Some(at)) = (s.oscillate_every, slowed_at) {
            let due = at + every * out.speed_changes as u32;
            if agents_killed_at.is_none() && Instant::now() >= due {
                // An odd number of changes so far leaves the host slow.
                if out.speed_changes % 2 == 1 {
                    slow_worker.speed_up()?;
                } else {
                    slow_worker.slow_down()?;
                }
                out.speed_changes += 1;
            }
        }
        let acted = agents.iter().any(|a| a.actions() > 0);
        if acted && trigger_at.is_none() {
            trigger_at = Some(Instant::now());
            out.trigger_after = slowed_at.map(|t| t.elapsed());
            changes_at_trigger = ownership_changes(&files);
        }
        if let Some(t) = trigger_at {
            if out.recovered_after.is_none() && lag >= 0 && lag < s.lag_floor {
                out.recovered_after = Some(t.elapsed());
            }
        }
        if settled.elapsed() >= s.slow_after + s.produce_with_agents && agents_killed_at.is_none() {
            for a in &agents {
                out.actions.insert(a.name.clone(), a.actions());
                out.action_lines.extend(a.action_lines());
            }
            for a in agents.iter_mut() {
                a.kill();
            }
            out.rounds_after_slowdown = max_generation(&files) - generation_at_slowdown;
            agents_killed_at = Some(count_events(&files, &["consumed"]));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let produced: BTreeSet<(NamedPartition, i64)> = producing
        .await
        .context("producer task")??
        .into_iter()
        .collect();
    let file_refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    audit::wait_all_consumed(&file_refs, &produced, Duration::from_secs(60)).await?;
    out.slow_partitions_after = owned_by_audit(&[slow_worker])
        .get(SLOW)
        .map_or(0, BTreeSet::len);
    out.ownership_changes_after_trigger =
        ownership_changes(&files).saturating_sub(changes_at_trigger);
    out.consumed_without_agents =
        count_events(&files, &["consumed"]).saturating_sub(agents_killed_at.unwrap_or(0));
    for w in workers.iter_mut() {
        w.terminate(Duration::from_secs(20))?;
    }
    out.report = audit::check(&files, &produced)?;
    Ok(out)
}

/// Σ over partitions of (end offset − committed offset), end offsets from the ledger.
async fn group_lag(
    client: &Client,
    group: &str,
    ledger: &Mutex<BTreeMap<NamedPartition, BTreeSet<i64>>>,
) -> Result<i64> {
    let ends: BTreeMap<NamedPartition, i64> = match ledger.lock() {
        Ok(l) => l
            .iter()
            .filter_map(|(tp, offs)| Some((tp.clone(), offs.last()? + 1)))
            .collect(),
        Err(_) => bail!("ledger poisoned"),
    };
    // Name the partitions: tansu 0.6.0 answers an all-topics OffsetFetch with bytes our decoder
    // rejects (docs/tansu-quirks.md).
    let partitions: Vec<NamedPartition> = ends.keys().cloned().collect();
    let committed = client.offset_fetch(group, Some(&partitions)).await?;
    Ok(ends
        .iter()
        .map(|(tp, end)| (end - committed.get(tp).copied().unwrap_or(0)).max(0))
        .sum())
}

/// Lines with one of `events` across the audit files.
fn count_events(files: &[PathBuf], events: &[&str]) -> usize {
    let needles: Vec<String> = events
        .iter()
        .map(|e| format!("\"event\":\"{e}\""))
        .collect();
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|t| {
            t.lines()
                .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
                .count()
        })
        .sum()
}
