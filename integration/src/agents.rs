//! Sidecar agent processes (`lagbalance-agent`) for end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::workers::Process;

/// The line an agent logs when it asked its app to rebalance (`agent/src/run.rs`).
pub const ACTED: &str = "outlier: asked the app to rebalance";

/// A running agent process; killed when dropped.
pub struct Agent {
    pub name: String,
    pub log: PathBuf,
    process: Process,
}

impl Agent {
    /// Start an agent watching `group` for the app listening on `control`; its JSON log goes to
    /// `dir/<name>-agent.log`. `env` overrides or adds `LAGBALANCE_*` settings.
    pub fn spawn(
        bootstrap: &str,
        group: &str,
        control: std::net::SocketAddr,
        name: &str,
        env: &[(&str, String)],
        dir: &Path,
    ) -> Result<Agent> {
        let bin = crate::bin_path::binary("lagbalance-agent")?;
        let log = dir.join(format!("{name}-agent.log"));
        let mut cmd = Command::new(bin);
        cmd.env("LAGBALANCE_BOOTSTRAP", bootstrap)
            .env("LAGBALANCE_GROUP", group)
            .env("LAGBALANCE_CONTROL_ADDR", control.to_string())
            .env("LAGBALANCE_HTTP_ADDR", "127.0.0.1:0")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let process =
            Process::spawn_logged(name, cmd, &log).context("starting lagbalance-agent")?;
        Ok(Agent {
            name: name.to_owned(),
            log,
            process,
        })
    }

    /// How many times this agent asked its app to rebalance so far.
    pub fn actions(&self) -> usize {
        self.action_lines().len()
    }

    /// The log lines of the agent's actions (each with its reason).
    pub fn action_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .map(|t| {
                t.lines()
                    .filter(|l| l.contains(ACTED))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGKILL: the agent vanishes without a word.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}
