//! Group members from other client libraries that write the audit lines of our worker
//! (`assignor/examples/worker.rs`), so a mixed group can be audited: the Java `KafkaConsumer`
//! (`integration/peers/java`), kafka-python and confluent-kafka (`integration/peers/python_peer.py`).
//! `integration/peers/build` builds them once into the user cache; each test process runs it
//! once, and a test that needs a peer fails (never skips) when it cannot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

use crate::workers::{Audited, Process};

/// The client library a peer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// `org.apache.kafka:kafka-clients` 4.1.1, classic protocol.
    Java,
    /// kafka-python (pure Python).
    KafkaPython,
    /// confluent-kafka (librdkafka).
    Confluent,
}

/// Run `integration/peers/build` (once per process) and return what it printed
/// (`LAGBALANCE_PEER_*` → value). Its full output is in the error when it fails.
pub fn build() -> Result<&'static BTreeMap<String, String>> {
    static BUILT: OnceLock<Result<BTreeMap<String, String>, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| run_build().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

fn run_build() -> Result<BTreeMap<String, String>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/build");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{stdout}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

fn built(key: &str) -> Result<&'static str> {
    build()?
        .get(key)
        .map(String::as_str)
        .with_context(|| format!("integration/peers/build printed no {key}"))
}

/// A running peer process: `--audit` lines to `audit`, its client's logs to `log`.
pub struct Peer {
    pub name: String,
    pub client: Client,
    pub audit: PathBuf,
    pub log: PathBuf,
    process: Process,
}

impl Audited for Peer {
    fn name(&self) -> &str {
        &self.name
    }
    fn audit(&self) -> &Path {
        &self.audit
    }
}

impl Peer {
    /// Start a peer; its audit and logs go to `dir/<name>.jsonl` and `dir/<name>.log`.
    /// `extra`: `--assignor NAME`, `--session-timeout-ms N`, `--instance-id ID`, `--delay-ms N`
    /// (per record), `--commit-interval-ms N`, and (Java only) `--group-protocol consumer` for a
    /// KIP-848 member.
    pub fn spawn(
        client: Client,
        bootstrap: &str,
        group: &str,
        topic: &str,
        name: &str,
        extra: &[&str],
        dir: &Path,
    ) -> Result<Peer> {
        let mut cmd = match client {
            Client::Java => {
                let mut c = Command::new("java");
                // Small and quick to start: a consumer needs neither a big heap nor C2.
                c.args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
                    .args(["-cp", built("LAGBALANCE_PEER_JAVA_CP")?])
                    .arg(built("LAGBALANCE_PEER_JAVA_MAIN")?);
                c
            }
            Client::KafkaPython | Client::Confluent => {
                let mut c = Command::new(built("LAGBALANCE_PEER_PYTHON")?);
                let lib = if client == Client::Confluent {
                    "confluent"
                } else {
                    "kafka-python"
                };
                c.arg(built("LAGBALANCE_PEER_PYTHON_SCRIPT")?)
                    .args(["--client", lib]);
                c
            }
        };
        let audit = dir.join(format!("{name}.jsonl"));
        let log = dir.join(format!("{name}.log"));
        let child = cmd
            .args(["--bootstrap", bootstrap, "--group", group, "--topic", topic])
            .args(["--name", name])
            .arg("--audit")
            .arg(&audit)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {client:?} peer {name}"))?;
        Ok(Peer {
            name: name.to_owned(),
            client,
            audit,
            log,
            process: Process::new(name, child),
        })
    }

    /// The last `n` lines of its log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A peer is its process, like [`crate::workers::Worker`].
impl std::ops::Deref for Peer {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Peer {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}
