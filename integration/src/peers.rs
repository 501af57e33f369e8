//! Group members from other client libraries that write the audit lines of our worker
//! (`assignor/examples/worker.rs`), so a mixed group can be audited: the Java `KafkaConsumer`
//! (`integration/peers/java`), kafka-python and confluent-kafka (`integration/peers/python_peer.py`).
//! `integration/peers/build` builds them once into the user cache; each test process runs it
//! once, and a test that needs a peer fails (never skips) when it cannot.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

use crate::workers::MemberProcess;

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
pub type Peer = MemberProcess<Client>;

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
        cmd.args(["--bootstrap", bootstrap, "--group", group, "--topic", topic]);
        MemberProcess::start(cmd, client, name, extra, dir)
            .with_context(|| format!("starting {client:?} peer {name}"))
    }
}
