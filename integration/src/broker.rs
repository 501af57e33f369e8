//! The test brokers: Apache Kafka (the reference, single node or a loopback cluster) and tansu
//! (a second broker without a JoinGroup barrier), all started by `scripts/test-broker` on
//! 127.0.0.1.
//!
//! [`TestBroker::start`] gives a test the broker of the run: the one named by
//! `LAGBALANCE_BOOTSTRAP`, else the kind named by `LAGBALANCE_TEST_BROKER` (`kafka` — the
//! default, the user's shared Kafka 4.1.1 started once and reused — `kafka-3.9.1` or `tansu`).
//! Tests that stop, kill or reconfigure a broker start their own with [`TestBroker::start_own`]
//! or [`TestBroker::start_kind`]; it is stopped when the value is dropped.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lagbalance::wire::{Connection, ConnectionConfig};

/// The environment variable naming an already running broker (`host:port`).
pub const BOOTSTRAP_ENV: &str = "LAGBALANCE_BOOTSTRAP";
/// The environment variable choosing the kind of broker [`TestBroker::start`] uses.
pub const KIND_ENV: &str = "LAGBALANCE_TEST_BROKER";

/// Which broker a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// Apache Kafka of the given release (`4.1.1` or `3.9.1`), KRaft.
    Kafka(&'static str),
    /// tansu 0.6.0, in-memory storage.
    Tansu,
}

impl BrokerKind {
    /// The reference broker: Apache Kafka 4.1.1.
    pub const KAFKA: BrokerKind = BrokerKind::Kafka("4.1.1");
    /// The 3.x line many clusters still run.
    pub const KAFKA_3: BrokerKind = BrokerKind::Kafka("3.9.1");

    /// The kind named by `LAGBALANCE_TEST_BROKER` (Kafka 4.1.1 when unset).
    pub fn from_env() -> Result<BrokerKind> {
        match std::env::var(KIND_ENV).as_deref() {
            Err(_) | Ok("") | Ok("kafka") | Ok("kafka-4.1.1") => Ok(BrokerKind::KAFKA),
            Ok("kafka-3.9.1") => Ok(BrokerKind::KAFKA_3),
            Ok("tansu") => Ok(BrokerKind::Tansu),
            Ok(other) => bail!("{KIND_ENV}={other}: expected kafka, kafka-3.9.1 or tansu"),
        }
    }

    /// A short name for test output.
    pub fn label(&self) -> String {
        match self {
            BrokerKind::Kafka(v) => format!("kafka-{v}"),
            BrokerKind::Tansu => "tansu-0.6.0".to_owned(),
        }
    }

    /// What a report says the broker was.
    pub fn description(&self) -> String {
        match self {
            BrokerKind::Kafka(v) => format!("Apache Kafka {v} (single-node KRaft)"),
            BrokerKind::Tansu => "tansu 0.6.0 (in-memory)".to_owned(),
        }
    }

    /// What a benchmark or demo run against: the broker at `bootstrap` if one was named, else
    /// the kind `LAGBALANCE_TEST_BROKER` names.
    pub fn describe_run(bootstrap: Option<&str>) -> String {
        match (bootstrap, BrokerKind::from_env()) {
            (Some(b), _) => format!("the broker at {b}"),
            (None, Ok(kind)) => kind.description(),
            (None, Err(e)) => e.to_string(),
        }
    }

    /// Whether the broker has a JoinGroup barrier and full DescribeGroups answers.
    pub fn is_kafka(&self) -> bool {
        matches!(self, BrokerKind::Kafka(_))
    }
}

/// A broker for one test.
pub struct TestBroker {
    /// PLAINTEXT bootstrap, every node.
    pub bootstrap: String,
    /// `None` when the broker came from `LAGBALANCE_BOOTSTRAP`.
    pub kind: Option<BrokerKind>,
    /// The endpoints `scripts/test-broker` printed (`LAGBALANCE_KAFKA_SASL_PLAINTEXT`, …).
    endpoints: BTreeMap<String, String>,
    /// The `scripts/test-broker` instance to stop on drop (not the shared one).
    owned_id: Option<String>,
    /// A tansu started directly (for [`TansuOptions`]).
    child: Option<Child>,
    /// Where the broker logs.
    pub log: Option<PathBuf>,
}

/// `scripts/test-broker` of this checkout.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-broker")
}

/// Run `scripts/test-broker ARGS` and parse the `KEY=VALUE` lines it prints.
fn run_script(args: &[&str]) -> Result<BTreeMap<String, String>> {
    let out = Command::new(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script().display()))?;
    if !out.status.success() {
        bail!(
            "scripts/test-broker {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(parse_endpoints(&String::from_utf8_lossy(&out.stdout)))
}

/// How many times a broker start is tried. A start binds ports the script found free a moment
/// earlier, and another process on the machine can take one in between: the node exits, the
/// script removes the instance, and a new start draws new ports.
const START_ATTEMPTS: usize = 3;

/// `run_script` for a command that starts a broker (`up`, `start …`), tried up to
/// [`START_ATTEMPTS`] times; every failed attempt is printed.
fn start_script(args: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut attempt = 1;
    loop {
        match run_script(args) {
            Err(e) if attempt < START_ATTEMPTS => {
                eprintln!("{e:#}\n(attempt {attempt} of {START_ATTEMPTS}; starting again)");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// `KEY=VALUE` lines, values optionally in double quotes.
pub fn parse_endpoints(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// Path of the tansu binary: `LAGBALANCE_TANSU_BIN`, or where `scripts/test-broker install`
/// puts it.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LAGBALANCE_TANSU_BIN") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("lagbalance/tansu-0.6.0/bin/tansu")
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl TestBroker {
    /// The broker of this run: `LAGBALANCE_BOOTSTRAP`, or the kind `LAGBALANCE_TEST_BROKER`
    /// names (the shared Kafka 4.1.1 by default).
    pub async fn start() -> Result<TestBroker> {
        match std::env::var(BOOTSTRAP_ENV) {
            Ok(b) if !b.is_empty() => {
                let broker = TestBroker {
                    bootstrap: b,
                    kind: None,
                    endpoints: BTreeMap::new(),
                    owned_id: None,
                    child: None,
                    log: None,
                };
                broker.wait_ready(Duration::from_secs(30)).await?;
                Ok(broker)
            }
            _ => Self::start_kind(BrokerKind::from_env()?).await,
        }
    }

    /// A broker of the given kind: the user's shared Kafka 4.1.1 (started once, kept running),
    /// or a fresh instance of anything else, stopped on drop.
    pub async fn start_kind(kind: BrokerKind) -> Result<TestBroker> {
        if kind == BrokerKind::KAFKA {
            let endpoints = start_script(&["up"])?;
            Self::from_endpoints(endpoints, Some(kind), false).await
        } else {
            Self::start_own_kind(kind, 1).await
        }
    }

    /// A fresh broker of the default kind (for tests that stop it), stopped on drop.
    pub async fn start_own() -> Result<TestBroker> {
        Self::start_own_kind(BrokerKind::from_env()?, 1).await
    }

    /// A fresh broker of `kind`; `nodes` > 1 makes a Kafka cluster on loopback.
    pub async fn start_own_kind(kind: BrokerKind, nodes: u32) -> Result<TestBroker> {
        let nodes = nodes.to_string();
        let endpoints = match kind {
            BrokerKind::Kafka(v) => start_script(&["start", "--kafka", v, "--nodes", &nodes])?,
            BrokerKind::Tansu => start_script(&["start", "--tansu"])?,
        };
        Self::from_endpoints(endpoints, Some(kind), true).await
    }

    /// A fresh Kafka with the `StandardAuthorizer` on (`admin` is a super user).
    pub async fn start_kafka_with_authorizer() -> Result<TestBroker> {
        let endpoints = start_script(&["start", "--authorizer"])?;
        Self::from_endpoints(endpoints, Some(BrokerKind::KAFKA), true).await
    }

    async fn from_endpoints(
        endpoints: BTreeMap<String, String>,
        kind: Option<BrokerKind>,
        owned: bool,
    ) -> Result<TestBroker> {
        let bootstrap = endpoints
            .get(BOOTSTRAP_ENV)
            .cloned()
            .context("scripts/test-broker printed no LAGBALANCE_BOOTSTRAP")?;
        let broker = TestBroker {
            bootstrap,
            kind,
            owned_id: owned
                .then(|| endpoints.get("LAGBALANCE_BROKER_ID").cloned())
                .flatten(),
            log: endpoints.get("LAGBALANCE_KAFKA_LOG").map(PathBuf::from),
            endpoints,
            child: None,
        };
        broker.wait_ready(Duration::from_secs(60)).await?;
        Ok(broker)
    }

    /// Start our own tansu with extra options (authentication, a different advertised port).
    pub async fn start_own_with(options: &TansuOptions) -> Result<TestBroker> {
        let bin = tansu_bin();
        if !bin.exists() {
            bail!(
                "tansu not found at {} — run `scripts/test-broker install`",
                bin.display()
            );
        }
        let mut last_err = None;
        // A port picked free can be taken before tansu binds it: try a few.
        for _ in 0..5 {
            let port = free_port()?;
            let url = format!("tcp://127.0.0.1:{port}");
            let advertised = match options.advertised_port {
                Some(p) => format!("tcp://127.0.0.1:{p}"),
                None => url.clone(),
            };
            let log = std::env::temp_dir().join(format!("lagbalance-tansu-{port}.log"));
            let log_file = std::fs::File::create(&log)?;
            let child = Command::new(&bin)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &advertised,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .args(options.authentication.then_some("--authentication"))
                .env_remove("CLUSTER_ID")
                .env_remove("LISTENER_URL")
                .env_remove("ADVERTISED_LISTENER_URL")
                .env_remove("STORAGE_ENGINE")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut broker = TestBroker {
                bootstrap: format!("127.0.0.1:{port}"),
                kind: Some(BrokerKind::Tansu),
                endpoints: BTreeMap::new(),
                owned_id: None,
                child: Some(child),
                log: Some(log),
            };
            match broker.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return Ok(broker),
                Err(e) => {
                    broker.stop();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("tansu did not start")))
    }

    /// Wait until the broker answers ApiVersions, or fail after `limit`.
    pub async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let config = ConnectionConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let first = self.bootstrap.split(',').next().unwrap_or_default();
        loop {
            match Connection::connect(first, config.clone()).await {
                Ok(c) => {
                    c.close();
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => {
                    bail!("broker {} not ready after {limit:?}: {e}", self.bootstrap)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// One of the endpoints `scripts/test-broker` printed, e.g. `LAGBALANCE_KAFKA_SASL_SSL`.
    pub fn endpoint(&self, key: &str) -> Result<&str> {
        self.endpoints
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("this broker ({:?}) has no {key}", self.kind))
    }

    /// The label tests print: the kind, or `external`.
    pub fn label(&self) -> String {
        self.kind
            .map_or_else(|| "external".to_owned(), |k| k.label())
    }

    /// Node id → PLAINTEXT address, for a Kafka started here.
    pub fn nodes(&self) -> BTreeMap<i32, String> {
        self.endpoints
            .get("LAGBALANCE_KAFKA_NODES")
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|n| n.split_once('='))
                    .filter_map(|(id, addr)| Some((id.parse().ok()?, addr.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `kill -9` one node of a Kafka started here.
    pub fn kill_node(&self, node: i32) -> Result<()> {
        let id = self.owned_id.as_deref().context("not a broker of ours")?;
        run_script(&["kill", id, &node.to_string()]).map(|_| ())
    }

    /// Start a killed node again (same ports and storage).
    pub fn restart_node(&self, node: i32) -> Result<()> {
        let id = self.owned_id.as_deref().context("not a broker of ours")?;
        run_script(&["restart", id, &node.to_string()]).map(|_| ())
    }

    /// Whether this harness owns (and can stop) the broker.
    pub fn is_own(&self) -> bool {
        self.child.is_some() || self.owned_id.is_some()
    }

    /// Stop our broker (no-op for a shared or external one).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(id) = self.owned_id.take() {
            let _ = Command::new(script())
                .args(["stop", &id])
                .stdin(Stdio::null())
                .status();
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Extra settings for [`TestBroker::start_own_with`].
#[derive(Clone, Debug, Default)]
pub struct TansuOptions {
    /// `--authentication`: every request but ApiVersions and the SASL ones needs a SASL login.
    pub authentication: bool,
    /// Advertise this loopback port in metadata instead of the listener's (a proxy in front).
    pub advertised_port: Option<u16>,
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh directory under the system's temporary directory, named [`unique`]ly after `prefix`,
/// for a run's logs and audit files.
pub fn unique_temp_dir(prefix: &str) -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_parsed_with_and_without_quotes() {
        let e = parse_endpoints("LAGBALANCE_BOOTSTRAP=127.0.0.1:1,127.0.0.1:2\nLAGBALANCE_KAFKA_NODES=\"1=a:1 2=b:2\"\n");
        assert_eq!(e["LAGBALANCE_BOOTSTRAP"], "127.0.0.1:1,127.0.0.1:2");
        assert_eq!(e["LAGBALANCE_KAFKA_NODES"], "1=a:1 2=b:2");
    }
}
