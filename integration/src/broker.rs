//! Starting, probing and stopping a tansu broker on 127.0.0.1.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lagbalance::wire::{Connection, ConnectionConfig};

/// The environment variable naming an already running broker (`host:port`).
pub const BOOTSTRAP_ENV: &str = "LAGBALANCE_BOOTSTRAP";

/// A broker for one test: either the one named by `LAGBALANCE_BOOTSTRAP`, or our own tansu.
pub struct TestBroker {
    pub bootstrap: String,
    child: Option<Child>,
    pub log: Option<PathBuf>,
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
    /// The broker from `LAGBALANCE_BOOTSTRAP`, or a fresh tansu of our own.
    pub async fn start() -> Result<TestBroker> {
        match std::env::var(BOOTSTRAP_ENV) {
            Ok(b) if !b.is_empty() => {
                let broker = TestBroker {
                    bootstrap: b,
                    child: None,
                    log: None,
                };
                broker.wait_ready(Duration::from_secs(30)).await?;
                Ok(broker)
            }
            _ => Self::start_own().await,
        }
    }

    /// Always start our own tansu (for tests that stop the broker).
    pub async fn start_own() -> Result<TestBroker> {
        Self::start_own_with(&TansuOptions::default()).await
    }

    /// Start our own tansu with extra options (authentication, a different advertised port).
    pub async fn start_own_with(options: &TansuOptions) -> Result<TestBroker> {
        let bin = tansu_bin();
        if !bin.exists() {
            bail!(
                "tansu not found at {} — run `scripts/test-broker install` (or set {BOOTSTRAP_ENV})",
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
        loop {
            match Connection::connect(&self.bootstrap, config.clone()).await {
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

    /// Whether this harness owns (and can stop) the broker process.
    pub fn is_own(&self) -> bool {
        self.child.is_some()
    }

    /// Kill our broker process (no-op for an external one).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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
