//! Worker processes (`assignor/examples/worker.rs`) for end-to-end tests, and waiting on the
//! group's state as the coordinator reports it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A group member that writes `--audit` lines (`assignor/examples/worker.rs`): a [`Worker`] or a
/// [`crate::peers::Peer`] (both a [`MemberProcess`]). What the audit-reading helpers below
/// take, so they serve mixed groups.
pub trait Audited {
    fn name(&self) -> &str;
    fn audit(&self) -> &Path;
}

/// A child process that stops on SIGTERM (bounded) or SIGKILL; killed when dropped.
pub struct Process {
    name: String,
    child: Option<Child>,
}

impl Process {
    pub fn new(name: &str, child: Child) -> Process {
        Process {
            name: name.to_owned(),
            child: Some(child),
        }
    }

    /// Start `cmd` with no input, its output discarded and its stderr written to `log`.
    pub fn spawn_logged(name: &str, mut cmd: Command, log: &Path) -> Result<Process> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        Ok(Process::new(name, child))
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Send `sig` (as `kill` spells it, e.g. `-TERM`).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} already gone", self.name))?;
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill {sig} {pid} failed");
        }
        Ok(())
    }

    /// SIGTERM, then wait (bounded) for a clean exit (status 0).
    pub fn terminate(&mut self, limit: Duration) -> Result<()> {
        self.signal("-TERM")?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                if !status.success() {
                    bail!("{} exited with {status}", self.name);
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        bail!("{} did not exit within {limit:?} of SIGTERM", self.name)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGSTOP: frozen, sessions run out while it holds partitions.
    pub fn pause(&self) -> Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT after [`Process::pause`].
    pub fn resume(&self) -> Result<()> {
        self.signal("-CONT")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A group member in its own process that writes `--audit` lines, run by client `C`: our
/// [`Worker`] or a [`crate::peers::Peer`] from another client library.
pub struct MemberProcess<C> {
    pub name: String,
    pub client: C,
    pub audit: PathBuf,
    pub log: PathBuf,
    process: Process,
}

impl<C> Audited for MemberProcess<C> {
    fn name(&self) -> &str {
        &self.name
    }
    fn audit(&self) -> &Path {
        &self.audit
    }
}

impl<C> MemberProcess<C> {
    /// Start `cmd` as member `name`: `cmd` names the broker, group and topic (`--bootstrap`,
    /// `--group`, `--topic`); every member then takes `--name` and `--audit`, then `extra`. Its
    /// audit and stderr go to `dir/<name>.jsonl` and `dir/<name>.log`.
    pub(crate) fn start(
        mut cmd: Command,
        client: C,
        name: &str,
        extra: &[&str],
        dir: &Path,
    ) -> Result<MemberProcess<C>> {
        let audit = dir.join(format!("{name}.jsonl"));
        let log = dir.join(format!("{name}.log"));
        cmd.args(["--name", name])
            .arg("--audit")
            .arg(&audit)
            .args(extra);
        let process = Process::spawn_logged(name, cmd, &log)?;
        Ok(MemberProcess {
            name: name.to_owned(),
            client,
            audit,
            log,
            process,
        })
    }

    /// The last `n` lines of its log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A member is its process: SIGTERM (a clean exit: revoke with commit, LeaveGroup unless
/// static), SIGKILL (no LeaveGroup, no commit), SIGSTOP/SIGCONT.
impl<C> std::ops::Deref for MemberProcess<C> {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl<C> std::ops::DerefMut for MemberProcess<C> {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// Our client (`assignor/examples/worker.rs`), the one a [`Worker`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lagbalance;

/// A running worker process.
pub type Worker = MemberProcess<Lagbalance>;

impl Worker {
    /// Start a worker with extra environment variables (e.g. `LAGBALANCE_CONTROL_ADDR`); its
    /// audit and stderr go to `dir/<name>.jsonl` and `dir/<name>.log`.
    pub fn spawn(
        bootstrap: &str,
        group: &str,
        topic: &str,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        dir: &Path,
    ) -> Result<Worker> {
        let mut cmd = Command::new(crate::bin_path::example("worker")?);
        cmd.args(["--bootstrap", bootstrap, "--group", group, "--topic", topic])
            .envs(env.iter().copied());
        MemberProcess::start(cmd, Lagbalance, name, extra, dir).context("starting worker")
    }

    /// SIGUSR1: the worker multiplies its per-record cost by its `--slow-factor`.
    pub fn slow_down(&self) -> Result<()> {
        self.process.signal("-USR1")
    }

    /// SIGUSR2: the worker goes back to its `--cost-us`.
    pub fn speed_up(&self) -> Result<()> {
        self.process.signal("-USR2")
    }

    /// The control listener the worker reported in its log (`control channel on ADDR`), waiting
    /// up to `limit` for it.
    pub async fn control_addr(&self, limit: Duration) -> Result<std::net::SocketAddr> {
        let deadline = Instant::now() + limit;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split("control channel on ").nth(1))
            {
                return addr.trim().parse().context("control address");
            }
            if Instant::now() >= deadline {
                bail!("{} reported no control channel within {limit:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether the member last reported itself as the group's leader (its audit's `role` lines).
pub fn is_leader<M: Audited + ?Sized>(w: &M) -> bool {
    std::fs::read_to_string(w.audit())
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["event"] == "role")
                .and_then(|v| v["leader"].as_bool())
        })
        .unwrap_or(false)
}

/// Partitions per worker name.
pub type Ownership = BTreeMap<String, BTreeSet<(String, i32)>>;

/// What each member owns now, replayed from its audit log.
pub fn owned_by_audit<M: Audited + ?Sized>(workers: &[&M]) -> Ownership {
    let mut out = BTreeMap::new();
    for w in workers {
        let mut owned = BTreeSet::new();
        if let Ok(text) = std::fs::read_to_string(w.audit()) {
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let parts = || {
                    v["partitions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| Some((p[0].as_str()?.to_owned(), p[1].as_i64()? as i32)))
                };
                match v["event"].as_str() {
                    Some("assigned") => owned.extend(parts()),
                    Some("revoked") | Some("lost") => {
                        for tp in parts() {
                            owned.remove(&tp);
                        }
                    }
                    _ => {}
                }
            }
        }
        out.insert(w.name().to_owned(), owned);
    }
    out
}

/// Wait until the running `workers` own all `partitions` between them, disjointly, each at
/// least one, and nothing has changed for `settle` (the cooperative follow-up rounds are done).
/// Reads the workers' own audit logs: what the members really hold, not what the broker says.
/// With `even`, also wait until partition counts differ by at most one. A mixed group of
/// workers and peers is passed as `&[&dyn Audited]`.
pub async fn wait_balanced<M: Audited + ?Sized>(
    workers: &[&M],
    partitions: i32,
    even: bool,
    settle: Duration,
    limit: Duration,
) -> Result<Ownership> {
    let deadline = Instant::now() + limit;
    let mut stable_since: Option<(Instant, Ownership)> = None;
    let mut last = BTreeMap::new();
    while Instant::now() < deadline {
        let now = owned_by_audit(workers);
        let total: usize = now.values().map(BTreeSet::len).sum();
        let union: BTreeSet<&(String, i32)> = now.values().flatten().collect();
        let counts = || now.values().map(BTreeSet::len);
        let spread = counts().max().unwrap_or(0) - counts().min().unwrap_or(0);
        let good = total == partitions as usize
            && union.len() == total
            && now.values().all(|s| !s.is_empty())
            && (!even || spread <= 1);
        match &stable_since {
            Some((since, seen)) if good && *seen == now => {
                if since.elapsed() >= settle {
                    return Ok(now);
                }
            }
            _ if good => stable_since = Some((Instant::now(), now.clone())),
            _ => stable_since = None,
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<&str> = workers.iter().map(|w| w.name()).collect();
    bail!("{names:?} not balanced within {limit:?}; last seen: {last:?}")
}
