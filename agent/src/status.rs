//! `lagbalance-agent status --group G --bootstrap B`: a members table like
//! `kafka-consumer-groups --describe`, from two polls `--sample` apart (rates need two).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::config::{parse_duration, ConfigError};
use crate::outlier::{score, OutlierSettings, Score};
use crate::poll;
use crate::view::{GroupLagView, ViewTracker};

/// What `lagbalance-agent status --help` prints.
pub const USAGE: &str = "\
usage: lagbalance-agent status --group G --bootstrap B [--topic T,...] [--sample 2s] [--partitions]

Lists the group's members like `kafka-consumer-groups --describe`, with rates from two polls
--sample apart, and the agent's outlier score of each.

  --group G        consumer group (or LAGBALANCE_GROUP)
  --bootstrap B    Kafka bootstrap servers, host:port[,host:port...] (or LAGBALANCE_BOOTSTRAP)
  --topic T,...    topics to measure besides those DescribeGroups reveals (needed on tansu);
                   may be repeated
  --sample D       time between the two polls, up to 60s (default 2s; 0s = one poll, no rates)
  --partitions     also list every partition
  -h, --help       print this and exit

TLS and SASL come from the agent's LAGBALANCE_SECURITY_PROTOCOL, LAGBALANCE_SSL_* and
LAGBALANCE_SASL_* variables (see `lagbalance-agent --help`).
";

#[derive(Clone, Debug, PartialEq)]
pub struct StatusArgs {
    pub group: String,
    pub bootstrap: String,
    pub sample: Duration,
    pub partitions: bool,
    /// Topics to measure besides those DescribeGroups reveals (needed on tansu).
    pub topics: Vec<String>,
    /// TLS / SASL, from the same `LAGBALANCE_SECURITY_PROTOCOL`, `LAGBALANCE_SSL_*` and
    /// `LAGBALANCE_SASL_*` variables the agent reads.
    pub security: lagbalance::security::SecurityConfig,
}

fn bad(var: &str, flag: &str, value: &str, allowed: &str) -> ConfigError {
    ConfigError {
        var: var.into(),
        flag: flag.into(),
        value: value.into(),
        allowed: allowed.into(),
    }
}

impl StatusArgs {
    pub fn parse(env: &BTreeMap<String, String>, args: &[String]) -> Result<Self, ConfigError> {
        let mut group = env.get("LAGBALANCE_GROUP").cloned().unwrap_or_default();
        let mut bootstrap = env.get("LAGBALANCE_BOOTSTRAP").cloned().unwrap_or_default();
        let mut sample = Duration::from_secs(2);
        let mut partitions = false;
        let mut topics = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (a.as_str(), None),
            };
            if name == "--partitions" {
                partitions = true;
                continue;
            }
            let value = match inline.or_else(|| it.next().cloned()) {
                Some(v) => v,
                None => {
                    return Err(bad(
                        "",
                        "",
                        &format!("{name} needs a value"),
                        "see `lagbalance-agent status --help`",
                    ))
                }
            };
            match name {
                "--group" => group = value,
                "--bootstrap" => bootstrap = value,
                "--topic" => topics.extend(
                    value
                        .split(',')
                        .map(|t| t.trim().to_owned())
                        .filter(|t| !t.is_empty()),
                ),
                "--sample" => {
                    sample = parse_duration(&value)
                        .ok()
                        .filter(|d| *d <= Duration::from_secs(60))
                        .ok_or_else(|| bad("", "--sample", &value, "a duration up to 60s"))?
                }
                _ => {
                    return Err(bad(
                        "",
                        "",
                        &format!("unknown argument {a:?}"),
                        "status takes --group, --bootstrap, --topic, --sample, --partitions",
                    ))
                }
            }
        }
        if group.trim().is_empty() {
            return Err(bad("LAGBALANCE_GROUP", "--group", &group, "required"));
        }
        if bootstrap.trim().is_empty() {
            return Err(bad(
                "LAGBALANCE_BOOTSTRAP",
                "--bootstrap",
                &bootstrap,
                "required",
            ));
        }
        Ok(StatusArgs {
            security: crate::config::security_from_env(env)?,
            topics,
            group,
            bootstrap,
            sample,
            partitions,
        })
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "-".into(),
    }
}

/// Render the members table (pure).
pub fn table(group: &str, view: &GroupLagView, scores: &[Score], partitions: bool) -> String {
    let mut rows: Vec<[String; 9]> = vec![[
        "MEMBER".into(),
        "HOST".into(),
        "PARTITIONS".into(),
        "LAG".into(),
        "RATE/s".into(),
        "CAPACITY/s".into(),
        "CPU".into(),
        "SCORE".into(),
        "OUTLIER".into(),
    ]];
    for (m, s) in view
        .members
        .iter()
        .zip(scores.iter().chain(std::iter::repeat(&Score::default())))
    {
        let reported = m.info.reported.as_ref();
        let cpu = match (
            reported.and_then(|r| r.cpu_used_cores),
            reported.and_then(|r| r.cpu_limit_cores),
        ) {
            (Some(u), Some(l)) => format!("{u:.2}/{l:.2}"),
            (None, Some(l)) => format!("-/{l:.2}"),
            _ => "-".into(),
        };
        rows.push([
            m.info.member_id.clone(),
            m.info.host.clone(),
            m.info.partitions.len().to_string(),
            m.lag.to_string(),
            format!("{:.1}", m.processing_rate),
            fmt_opt(reported.and_then(|r| r.capacity), 1),
            cpu,
            if s.z.is_finite() {
                format!("{:.2}x z={:.1}", s.ratio, s.z)
            } else {
                format!("{:.2}x z=inf", s.ratio)
            },
            if s.outlier { "yes".into() } else { "no".into() },
        ]);
    }
    let mut widths = [0usize; 9];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    if !view.assignments_visible && !view.members.is_empty() {
        out.push_str("note: the broker hides member assignments (tansu 0.6.0 DescribeGroups); per-member lag is unknown; pass --topic to measure the group's lag as unattributed\n");
    }
    let _ = write!(
        out,
        "GROUP {group}  STATE {}  MEMBERS {}  TOTAL-LAG {}  UNATTRIBUTED-LAG {}\n\n",
        view.state,
        view.members.len(),
        view.total_lag(),
        view.unattributed_lag
    );
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let _ = write!(line, "{c:<w$}  ", w = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if partitions {
        out.push_str("\nTOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  MEMBER\n");
        for p in &view.partitions {
            let owner = view.owner_id(p).unwrap_or("-");
            let _ = writeln!(
                out,
                "{}  {}  {}  {}  {}  {}",
                p.tp.0,
                p.tp.1,
                p.committed.map(|c| c.to_string()).unwrap_or("-".into()),
                p.log_end,
                p.lag,
                owner
            );
        }
    }
    out
}

pub async fn run(args: StatusArgs) -> anyhow::Result<String> {
    let client = poll::client(&args.bootstrap, Duration::from_secs(15), &args.security)?;
    let mut tracker = ViewTracker::new(0);
    let start = tokio::time::Instant::now();
    let first = poll::snapshot(&client, &args.group, 0, &args.topics).await?;
    let mut view = tracker.update(&first);
    if !args.sample.is_zero() {
        tokio::time::sleep(args.sample).await;
        let second = poll::snapshot(
            &client,
            &args.group,
            start.elapsed().as_millis() as u64,
            &args.topics,
        )
        .await?;
        view = tracker.update(&second);
    }
    let scores = score(&view, &OutlierSettings::default());
    Ok(table(&args.group, &view, &scores, args.partitions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::tests::member;
    use crate::view::{Snapshot, ViewTracker};

    #[test]
    fn table_lists_every_member_with_its_score() {
        let mut snap = Snapshot {
            state: "Stable".into(),
            members: vec![member("a", &[("t", 0)]), member("b", &[("t", 1)])],
            assignments_visible: true,
            ..Snapshot::default()
        };
        snap.log_end.insert(("t".into(), 0), 100);
        snap.log_end.insert(("t".into(), 1), 50_000);
        snap.committed.insert(("t".into(), 0), 90);
        snap.committed.insert(("t".into(), 1), 0);
        let view = ViewTracker::new(0).update(&snap);
        let scores = score(&view, &OutlierSettings::default());
        let t = table("orders", &view, &scores, true);
        assert!(
            t.starts_with("GROUP orders  STATE Stable  MEMBERS 2  TOTAL-LAG 50010"),
            "{t}"
        );
        let b = t.lines().find(|l| l.starts_with("b ")).expect("row for b");
        assert!(b.contains("50000") && b.ends_with("yes"), "{b}");
        assert!(t.contains("t  1  0  50000  50000  b"), "{t}");
        let args: Vec<String> = ["--group", "g", "--bootstrap", "h:1", "--sample=0s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = StatusArgs::parse(&BTreeMap::new(), &args).unwrap();
        assert_eq!(a.sample, Duration::ZERO);
        assert_eq!(
            StatusArgs::parse(&BTreeMap::new(), &[]).unwrap_err().var,
            "LAGBALANCE_GROUP"
        );
    }
}
