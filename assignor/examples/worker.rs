//! Example worker used by the demo, the end-to-end tests and the benchmarks. Its flags are in
//! [`USAGE`] (`worker --help`).
//!
//! `--cost-us` simulates per-record work: `busy` (default) spins the CPU for that long per
//! record, so the worker's capacity really is bounded by its core, like a CPU-bound consumer;
//! `sleep` sleeps the accumulated cost once per batch (an I/O-bound consumer).
//! `--audit` writes JSON lines: one per ownership change
//! `{"ts_ms":..,"member":..,"event":"assigned|revoked|lost","partitions":[[topic,p],..]}` and
//! one per record `{"ts_ms":..,"handed_ms":..,"member":..,"event":"consumed","topic":..,"partition":..,"offset":..}`
//! (`handed_ms`: when `poll` returned the record, `ts_ms`: when its work was done),
//! and `started` / `stopping` lines when it starts and when it begins a clean shutdown,
//! so `integration`'s audit checker can prove no double ownership and no loss. Lines are flushed
//! after every batch and around every callback, before offsets are committed.
//! `--assignor` may repeat; the order is the preference order. SIGTERM / Ctrl-C close cleanly.
//! SIGUSR1 multiplies the per-record cost by `--slow-factor` (default 3): the host got slower
//! under a running group, the case the sidecar agent exists for. SIGUSR2 restores `--cost-us`
//! (the neighbour left), so a test can make a member's capacity oscillate.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lagbalance::consumer::{OnOwnershipChange, OwnershipChange};
use lagbalance::settings::wants_help;
use lagbalance::{Consumer, ConsumerConfig, NamedPartition};

const USAGE: &str = "\
usage: worker --bootstrap HOST:PORT --group G --topic T [--assignor NAME ...] [--cost-us N]
              [--cost-mode busy|sleep] [--duration-s N] [--instance-id ID] [--name NAME]
              [--audit PATH] [--commit-interval-ms N] [--session-timeout-ms N]
              [--heartbeat-interval-ms N] [--slow-factor N] [--no-capacity-rejoin]

A consumer-group member for the demo, the end-to-end tests and the benchmarks.

  --bootstrap HOST:PORT       Kafka bootstrap servers (required)
  --group G                   consumer group (required)
  --topic T                   topic to consume (required)
  --assignor NAME             lagbalance, cooperative-sticky or range; repeat in preference order
  --cost-us N                 simulated work per record, microseconds (default 0)
  --cost-mode busy|sleep      spin the CPU per record (default) or sleep once per batch
  --duration-s N              stop after N seconds (default: run until SIGTERM / Ctrl-C)
  --instance-id ID            group.instance.id (static membership)
  --name NAME                 client.id and the name in logs (default worker-PID)
  --audit PATH                write ownership changes and consumed records as JSON lines
  --commit-interval-ms N      auto.commit.interval.ms
  --session-timeout-ms N      session.timeout.ms (heartbeat.interval.ms follows at a third)
  --heartbeat-interval-ms N   heartbeat.interval.ms
  --slow-factor N             SIGUSR1 multiplies the per-record cost by N (default 3);
                              SIGUSR2 restores --cost-us
  --no-capacity-rejoin        lagbalance.capacity.rejoin=false: never rejoin with capacity news
                              by itself (leave capacity-driven rounds to the agent)
  -h, --help                  print this and exit

LAGBALANCE_CONTROL_ADDR / LAGBALANCE_CONTROL_TOKEN enable the sidecar agent's control channel.
LAGBALANCE_SECURITY_PROTOCOL, LAGBALANCE_SSL_* and LAGBALANCE_SASL_* set TLS and SASL as for the agent.
";

#[derive(Debug)]
struct Args {
    bootstrap: String,
    group: String,
    topic: String,
    assignors: Vec<String>,
    cost_us: u64,
    sleep_cost: bool,
    duration: Option<Duration>,
    instance_id: Option<String>,
    name: String,
    audit: Option<String>,
    commit_interval_ms: Option<u64>,
    session_timeout_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    /// On SIGUSR1 the per-record cost is multiplied by this (a noisy neighbour arrives).
    slow_factor: u64,
    capacity_rejoin: bool,
}

/// A bad command line: the reason and the usage on stderr, exit code 2.
fn usage(msg: &str) -> ! {
    eprintln!("worker: {msg}\n\n{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        bootstrap: String::new(),
        group: String::new(),
        topic: String::new(),
        assignors: Vec::new(),
        cost_us: 0,
        sleep_cost: false,
        duration: None,
        instance_id: None,
        name: format!("worker-{}", std::process::id()),
        audit: None,
        commit_interval_ms: None,
        session_timeout_ms: None,
        heartbeat_interval_ms: None,
        slow_factor: 3,
        capacity_rejoin: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if wants_help(&args) {
        print!("{USAGE}");
        std::process::exit(0);
    }
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let num = |v: String, f: &str| {
            v.parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("{f} needs a number, got '{v}'")))
        };
        match flag.as_str() {
            "--bootstrap" => a.bootstrap = val(),
            "--group" => a.group = val(),
            "--topic" => a.topic = val(),
            "--assignor" => a.assignors.push(val()),
            "--cost-us" => a.cost_us = num(val(), "--cost-us"),
            "--cost-mode" => {
                a.sleep_cost = match val().as_str() {
                    "busy" => false,
                    "sleep" => true,
                    other => usage(&format!("--cost-mode must be busy or sleep, got '{other}'")),
                }
            }
            "--duration-s" => a.duration = Some(Duration::from_secs(num(val(), "--duration-s"))),
            "--instance-id" => a.instance_id = Some(val()),
            "--name" => a.name = val(),
            "--slow-factor" => a.slow_factor = num(val(), "--slow-factor"),
            "--no-capacity-rejoin" => a.capacity_rejoin = false,
            "--audit" => a.audit = Some(val()),
            "--commit-interval-ms" => {
                a.commit_interval_ms = Some(num(val(), "--commit-interval-ms"))
            }
            "--session-timeout-ms" => {
                a.session_timeout_ms = Some(num(val(), "--session-timeout-ms"))
            }
            "--heartbeat-interval-ms" => {
                a.heartbeat_interval_ms = Some(num(val(), "--heartbeat-interval-ms"))
            }
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if a.bootstrap.is_empty() || a.group.is_empty() || a.topic.is_empty() {
        usage("--bootstrap, --group and --topic are required");
    }
    a
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The audit log (or nothing), shared by the poll loop and the rebalance listener.
#[derive(Clone)]
struct Audit {
    out: Option<Arc<Mutex<BufWriter<File>>>>,
    member: String,
}

impl Audit {
    fn line(&self, v: serde_json::Value) {
        if let Some(out) = &self.out {
            if let Ok(mut w) = out.lock() {
                let _ = writeln!(w, "{v}");
            }
        }
    }
    fn flush(&self) {
        if let Some(out) = &self.out {
            if let Ok(mut w) = out.lock() {
                let _ = w.flush();
            }
        }
    }
    fn event(&self, event: &str) {
        self.line(serde_json::json!({
            "ts_ms": now_ms() as u64, "member": self.member, "event": event,
        }));
        self.flush();
    }
    fn ownership(&self, event: &str, partitions: &[(String, i32)]) {
        self.line(serde_json::json!({
            "ts_ms": now_ms() as u64, "member": self.member, "event": event,
            "partitions": partitions.iter().map(|(t, p)| serde_json::json!([t, p])).collect::<Vec<_>>(),
        }));
        self.flush();
        eprintln!("[{}] {event} {partitions:?}", self.member);
    }
}

fn spin(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Plain text when stderr is a log file: the harness reads these logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let audit = Audit {
        out: args.audit.as_ref().map(|p| {
            let f = File::create(p).unwrap_or_else(|e| usage(&format!("cannot create {p}: {e}")));
            Arc::new(Mutex::new(BufWriter::new(f)))
        }),
        member: args.name.clone(),
    };
    let mut config = ConsumerConfig::new(&args.bootstrap, &args.group);
    config.set("auto.offset.reset", "earliest").expect("valid");
    if !args.assignors.is_empty() {
        if let Err(e) = config.set("partition.assignment.strategy", &args.assignors.join(",")) {
            usage(&e.to_string());
        }
    }
    if let Some(id) = &args.instance_id {
        config.set("group.instance.id", id).expect("valid");
    }
    if let Some(ms) = args.commit_interval_ms {
        config
            .set("auto.commit.interval.ms", &ms.to_string())
            .expect("valid");
    }
    if let Some(ms) = args.session_timeout_ms {
        config
            .set("session.timeout.ms", &ms.to_string())
            .expect("valid");
        config
            .set("heartbeat.interval.ms", &(ms / 3).max(100).to_string())
            .expect("valid");
    }
    if let Some(ms) = args.heartbeat_interval_ms {
        if let Err(e) = config.set("heartbeat.interval.ms", &ms.to_string()) {
            usage(&e.to_string());
        }
    }
    config.set("client.id", &args.name).expect("valid");
    if !args.capacity_rejoin {
        config
            .set("lagbalance.capacity.rejoin", "false")
            .expect("valid");
    }
    // TLS and SASL from the agent's variables, so a pod configures both alike.
    for (var, key) in lagbalance::security::ENV_VARS {
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => {
                if let Err(e) = config.set(key, &value) {
                    // The error names the property; a refused password is not echoed.
                    usage(&format!("{var}: {e}"));
                }
            }
            _ => {}
        }
    }
    let mut consumer = match Consumer::new(config, {
        let audit = audit.clone();
        Box::new(OnOwnershipChange(
            move |change: OwnershipChange, partitions: &[NamedPartition]| {
                audit.ownership(change.as_str(), partitions)
            },
        ))
    }) {
        Ok(c) => c,
        Err(e) => usage(&e.to_string()),
    };
    // A sidecar agent may steer us through LAGBALANCE_CONTROL_ADDR (fail-open without one).
    match consumer.enable_control().await {
        Ok(Some(addr)) => eprintln!("[{}] control channel on {addr}", args.name),
        Ok(None) => {}
        Err(e) => eprintln!("[{}] control channel off: {e}", args.name),
    }
    consumer.subscribe(&[args.topic.as_str()]);
    // The audit counts a member live from `started` to `stopping` (or its last line).
    audit.event("started");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    let started = Instant::now();
    let mut total = 0u64;
    let mut last_report = Instant::now();
    let mut last_role = (false, -1);
    let mut cost = Duration::from_micros(args.cost_us);
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .expect("signal handler");
    let mut usr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
        .expect("signal handler");
    loop {
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let batch = tokio::select! {
            r = consumer.poll(Duration::from_millis(500)) => r,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = usr1.recv() => {
                cost *= args.slow_factor.max(1) as u32;
                eprintln!("[{}] slowed down: {} µs per record", args.name, cost.as_micros());
                continue;
            }
            _ = usr2.recv() => {
                cost = Duration::from_micros(args.cost_us);
                eprintln!("[{}] back to speed: {} µs per record", args.name, cost.as_micros());
                continue;
            }
        };
        let handed_ms = now_ms() as u64;
        let records = match batch {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                eprintln!("[{}] poll: {e}", args.name);
                continue;
            }
            Err(e) => {
                eprintln!("[{}] fatal: {e}", args.name);
                audit.flush();
                std::process::exit(1);
            }
        };
        for r in &records {
            if !cost.is_zero() && !args.sleep_cost {
                spin(cost);
            }
            audit.line(serde_json::json!({
                "ts_ms": now_ms() as u64, "handed_ms": handed_ms, "member": args.name,
                "event": "consumed", "topic": r.topic, "partition": r.partition, "offset": r.offset,
            }));
        }
        if args.sleep_cost && !records.is_empty() {
            tokio::time::sleep(cost * records.len() as u32).await;
        }
        audit.flush();
        total += records.len() as u64;
        // Record leadership changes: tests need to know who leads (see integration/src/workers.rs).
        let id = consumer.identity();
        if (id.leader, id.generation) != last_role {
            last_role = (id.leader, id.generation);
            audit.line(serde_json::json!({
                "ts_ms": now_ms() as u64, "member": args.name, "event": "role",
                "leader": id.leader, "generation": id.generation,
            }));
            audit.flush();
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let lag: i64 = consumer.lag().values().sum();
            eprintln!(
                "[{}] consumed {total}, owns {} partitions, lag {lag}, generation {}",
                args.name,
                consumer.assignment().len(),
                consumer.identity().generation
            );
        }
    }
    eprintln!("[{}] closing after {total} records", args.name);
    audit.event("stopping");
    if let Err(e) = consumer.close(Duration::from_secs(10)).await {
        eprintln!("[{}] close: {e}", args.name);
    }
    audit.flush();
}
