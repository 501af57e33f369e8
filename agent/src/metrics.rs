//! What `/metrics` exposes, and its Prometheus text rendering (pure).

use std::fmt::Write;
use std::sync::Arc;

use crate::hostmetrics::{CpuReading, ProcessUsage};
use crate::outlier::Score;
use crate::view::GroupLagView;

/// Everything the HTTP endpoints report, updated by the poll loop.
#[derive(Clone, Debug, Default)]
pub struct AgentState {
    pub group: String,
    pub mode: String,
    pub view: Option<Arc<GroupLagView>>,
    pub scores: Vec<Score>,
    /// Our member id, as the app reported it.
    pub me: Option<String>,
    pub own_streak: u32,
    pub elected: bool,
    pub cooldown_remaining_s: f64,
    pub rebalancing: bool,
    pub budget_remaining: u64,
    pub triggers: Triggers,
    pub rebalances_seen: u64,
    pub polls: Polls,
    pub control_connected: bool,
    /// The pod's CPU, from the last poll.
    pub pod_cpu: Option<CpuReading>,
    /// The agent's own footprint, from the last poll.
    pub agent_usage: Option<ProcessUsage>,
    /// Whether the last poll succeeded recently (drives `/readyz`).
    pub ready: bool,
}

/// What became of an action the agent decided on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerResult {
    /// The app accepted it.
    Ok,
    /// The app refused it or could not be reached.
    Failed,
    /// Dry-run mode: logged, not sent.
    DryRun,
}

/// Actions by result (`lagbalance_agent_triggers_total`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Triggers {
    pub ok: u64,
    pub failed: u64,
    pub dry_run: u64,
}

impl Triggers {
    pub fn record(&mut self, result: TriggerResult) {
        *match result {
            TriggerResult::Ok => &mut self.ok,
            TriggerResult::Failed => &mut self.failed,
            TriggerResult::DryRun => &mut self.dry_run,
        } += 1;
    }
}

/// Group polls: how many, how many failed, how long the last took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Polls {
    pub attempts: u64,
    pub errors: u64,
    pub last_seconds: f64,
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn line(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", num(v));
    }
    fn single(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.head(name, kind, help);
        self.line(name, &[], v);
    }
    /// A gauge of one line per member, labelled with the group and the member id.
    fn per_member<'a>(
        &mut self,
        name: &str,
        help: &str,
        group: &str,
        values: impl Iterator<Item = (&'a str, f64)>,
    ) {
        self.head(name, "gauge", help);
        for (member, v) in values {
            self.line(name, &[("group", group), ("member", member)], v);
        }
    }
}

/// Render `s` in the Prometheus text exposition format (0.0.4).
pub fn render(s: &AgentState) -> String {
    let mut o = Out(String::with_capacity(4096));
    let g = s.group.as_str();
    if let Some(v) = &s.view {
        o.head(
            "lagbalance_agent_member_lag",
            "gauge",
            "Records behind the log end, summed over the member's partitions.",
        );
        for m in &v.members {
            o.line(
                "lagbalance_agent_member_lag",
                &[
                    ("group", g),
                    ("member", &m.info.member_id),
                    ("host", &m.info.host),
                ],
                m.lag as f64,
            );
        }
        o.per_member(
            "lagbalance_agent_member_lag_trend",
            "Change of the member's lag, records/s (EWMA); negative = draining.",
            g,
            v.members
                .iter()
                .map(|m| (m.info.member_id.as_str(), m.lag_trend)),
        );
        o.per_member(
            "lagbalance_agent_member_processing_rate",
            "Records/s the member commits (EWMA).",
            g,
            v.members
                .iter()
                .map(|m| (m.info.member_id.as_str(), m.processing_rate)),
        );
        o.per_member(
            "lagbalance_agent_member_time_to_drain_seconds",
            "Time to zero lag at the current trend (+Inf if not shrinking).",
            g,
            v.members.iter().map(|m| {
                (
                    m.info.member_id.as_str(),
                    m.time_to_drain.unwrap_or(f64::INFINITY),
                )
            }),
        );
        o.per_member(
            "lagbalance_agent_member_partitions",
            "Partitions assigned to the member.",
            g,
            v.members
                .iter()
                .map(|m| (m.info.member_id.as_str(), m.info.partitions.len() as f64)),
        );
        o.head(
            "lagbalance_agent_partition_lag",
            "gauge",
            "Records behind the log end per partition.",
        );
        for p in &v.partitions {
            let owner = v.owner_id(p).unwrap_or("");
            let part = p.tp.1.to_string();
            o.line(
                "lagbalance_agent_partition_lag",
                &[
                    ("group", g),
                    ("topic", &p.tp.0),
                    ("partition", &part),
                    ("member", owner),
                ],
                p.lag as f64,
            );
        }
        o.single(
            "lagbalance_agent_uncommitted_partitions",
            "gauge",
            "Owned partitions without a committed offset (counted as lag 0).",
            v.uncommitted as f64,
        );
    }
    o.per_member(
        "lagbalance_agent_outlier_ratio",
        "Member lag divided by the median lag of its peers.",
        g,
        s.scores.iter().map(|sc| (sc.member_id.as_str(), sc.ratio)),
    );
    o.per_member(
        "lagbalance_agent_outlier_zscore",
        "Robust z-score of the member's lag against its peers (MAD).",
        g,
        s.scores.iter().map(|sc| (sc.member_id.as_str(), sc.z)),
    );
    o.per_member(
        "lagbalance_agent_outlier",
        "1 if the member meets the outlier rule in this interval.",
        g,
        s.scores
            .iter()
            .map(|sc| (sc.member_id.as_str(), if sc.outlier { 1.0 } else { 0.0 })),
    );
    o.single(
        "lagbalance_agent_own_outlier_streak",
        "gauge",
        "Consecutive intervals this agent's member has been an outlier.",
        s.own_streak as f64,
    );
    o.single(
        "lagbalance_agent_own_member_elected",
        "gauge",
        "1 if this agent's member is the group's elected (worst) outlier.",
        if s.elected { 1.0 } else { 0.0 },
    );
    o.head(
        "lagbalance_agent_triggers_total",
        "counter",
        "Actions sent to the app, by result.",
    );
    for (result, n) in [
        ("ok", s.triggers.ok),
        ("failed", s.triggers.failed),
        ("dry_run", s.triggers.dry_run),
    ] {
        o.line(
            "lagbalance_agent_triggers_total",
            &[("group", g), ("mode", &s.mode), ("result", result)],
            n as f64,
        );
    }
    o.single(
        "lagbalance_agent_cooldown_active",
        "gauge",
        "1 while the agent holds off after a rebalance or its own action.",
        if s.cooldown_remaining_s > 0.0 || s.rebalancing {
            1.0
        } else {
            0.0
        },
    );
    o.single(
        "lagbalance_agent_cooldown_remaining_seconds",
        "gauge",
        "Seconds until the post-rebalance cooldown ends.",
        s.cooldown_remaining_s,
    );
    o.single(
        "lagbalance_agent_budget_remaining",
        "gauge",
        "Actions left in the rolling hour.",
        s.budget_remaining as f64,
    );
    o.single(
        "lagbalance_agent_rebalances_seen_total",
        "counter",
        "Rebalances observed in the group.",
        s.rebalances_seen as f64,
    );
    o.single(
        "lagbalance_agent_polls_total",
        "counter",
        "Group polls attempted.",
        s.polls.attempts as f64,
    );
    o.single(
        "lagbalance_agent_poll_errors_total",
        "counter",
        "Group polls that failed.",
        s.polls.errors as f64,
    );
    o.single(
        "lagbalance_agent_poll_duration_seconds",
        "gauge",
        "Duration of the last poll.",
        s.polls.last_seconds,
    );
    o.single(
        "lagbalance_agent_control_connected",
        "gauge",
        "1 while connected to the app's control channel.",
        if s.control_connected { 1.0 } else { 0.0 },
    );
    let pod_cpu = s.pod_cpu.as_ref();
    if let Some(c) = pod_cpu.and_then(|r| r.used_cores) {
        o.single(
            "lagbalance_agent_pod_cpu_used_cores",
            "gauge",
            "CPU used by the pod (cgroup), cores.",
            c,
        );
    }
    if let Some(c) = pod_cpu.and_then(|r| r.limit_cores) {
        o.single(
            "lagbalance_agent_pod_cpu_limit_cores",
            "gauge",
            "CPU limit of the pod, cores.",
            c,
        );
    }
    if let Some(usage) = s.agent_usage {
        o.single(
            "lagbalance_agent_process_resident_memory_bytes",
            "gauge",
            "Resident memory of the agent.",
            usage.rss_bytes as f64,
        );
        o.single(
            "lagbalance_agent_process_cpu_cores",
            "gauge",
            "CPU used by the agent, cores.",
            usage.cpu_cores,
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_escaped_labels_and_special_values() {
        let mut s = AgentState {
            group: "g\"1".into(),
            mode: "rejoin".into(),
            ..AgentState::default()
        };
        s.scores.push(Score {
            member_id: "m\n".into(),
            lag: 5,
            peer_median: 0.0,
            peer_mad: 0.0,
            ratio: 5.0,
            z: f64::INFINITY,
            outlier: true,
        });
        let t = render(&s);
        assert!(
            t.contains("lagbalance_agent_outlier_zscore{group=\"g\\\"1\",member=\"m\\n\"} +Inf"),
            "{t}"
        );
        assert!(t.contains("# TYPE lagbalance_agent_triggers_total counter"));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(
                line.rsplit_once(' ').map(|(_, v)| v.is_empty()),
                Some(false),
                "{line}"
            );
        }
    }
}
