//! Worker processes (`assignor/examples/worker.rs`) for end-to-end tests, and waiting on the
//! group's state as the coordinator reports it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lagbalance::group::codec::decode_assignment;
use lagbalance::Client;

/// A running worker process.
pub struct Worker {
    pub name: String,
    pub audit: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Worker {
    /// Start a worker; its audit and stderr go to `dir/<name>.jsonl` and `dir/<name>.log`.
    pub fn spawn(bootstrap: &str, group: &str, topic: &str, name: &str, extra: &[&str], dir: &Path) -> Result<Worker> {
        let bin = crate::bin_path::example("worker")?;
        let audit = dir.join(format!("{name}.jsonl"));
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(bin)
            .args(["--bootstrap", bootstrap, "--group", group, "--topic", topic, "--name", name])
            .arg("--audit")
            .arg(&audit)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting worker")?;
        Ok(Worker {
            name: name.to_owned(),
            audit,
            log,
            child: Some(child),
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let pid = self.pid().context("worker already gone")?;
        let ok = Command::new("kill").args([sig, &pid.to_string()]).status()?.success();
        if !ok {
            bail!("kill {sig} {pid} failed");
        }
        Ok(())
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn terminate(&mut self, limit: Duration) -> Result<()> {
        self.signal("-TERM")?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
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

    /// SIGKILL: no LeaveGroup, no commit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pause(&self) -> Result<()> {
        self.signal("-STOP")
    }

    pub fn resume(&self) -> Result<()> {
        self.signal("-CONT")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Assignment per member (by client id = worker name) as DescribeGroups reports it.
pub async fn group_assignment(client: &Client, group: &str) -> Result<(String, BTreeMap<String, Vec<(String, i32)>>)> {
    let g = client.describe_group(group).await?;
    let mut out = BTreeMap::new();
    for m in g.members {
        let a = decode_assignment(&m.assignment).unwrap_or_default();
        out.insert(m.client_id.clone(), a.partitions);
    }
    Ok((g.state, out))
}

/// Wait until the group is stable with exactly `members` (by worker name), all `partitions`
/// of the topic assigned once, and every member holding at least one.
pub async fn wait_balanced(
    client: &Client,
    group: &str,
    members: &[&str],
    partitions: i32,
    limit: Duration,
) -> Result<BTreeMap<String, Vec<(String, i32)>>> {
    let deadline = Instant::now() + limit;
    let want: BTreeSet<&str> = members.iter().copied().collect();
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok((state, a)) = group_assignment(client, group).await {
            let names: BTreeSet<&str> = a.keys().map(String::as_str).collect();
            let all: Vec<&(String, i32)> = a.values().flatten().collect();
            let unique: BTreeSet<&&(String, i32)> = all.iter().collect();
            let ok = state == "Stable"
                && names == want
                && all.len() == partitions as usize
                && unique.len() == all.len()
                && a.values().all(|v| !v.is_empty());
            if ok {
                return Ok(a);
            }
            last = format!("state {state}, assignment {a:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("group {group} not balanced over {members:?} within {limit:?}; last seen: {last}")
}
