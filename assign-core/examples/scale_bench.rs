//! Scale benchmark for the assignors.
//!
//! ```text
//! cargo run --release -p lagbalance-assign --example scale_bench -- \
//!     [--assignor cooperative-sticky|range] [--sizes 10000x100,100000x1000,1000000x2000] \
//!     [--topics N]
//! ```
//!
//! Each size is `PARTITIONSxMEMBERS`, spread over `--topics` topics of equal size (default
//! `clamp(partitions / 10 000, 1, 100)`; Kafka's large test uses 500 × 2 000 partitions), every
//! member subscribed to all of them. Two scenarios per size:
//! - `fresh`: nobody owns anything (first assignment);
//! - `sticky`: every member owns a balanced prior assignment, then one member leaves (the
//!   common steady-state rebalance; exercises ownership resolution and the keep-up-to-quota
//!   path), with the leader's previous plan passed in;
//! - `stale`: like `sticky`, but every member's metadata predates the leader's previous plan
//!   (a broker without a join barrier), so the leader's memory decides every owner;
//! - `unequal`: like `sticky`, but member `i` subscribes only to topics `t` with
//!   `(t + i) % 4 != 0` (with one topic that is everyone, i.e. equal), to time the general
//!   path; the prior assignment it starts from is not balanced for those subscriptions;
//! - `unequal-fresh`: those subscriptions with nothing owned (all of the general path's
//!   placement work).
//!
//! Every (size, scenario) runs in a fresh child process (`--single`) so peak RSS (`VmHWM`)
//! belongs to that run alone. Output is a markdown table.

use std::process::Command;
use std::time::Instant;

use lagbalance_assign::cooperative::to_issued;
use lagbalance_assign::{
    Assignor, CooperativeStickyAssignor, GroupView, MemberView, Plan, RangeAssignor, TopicInfo, Tp,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut assignor = "cooperative-sticky".to_string();
    let mut sizes = "10000x100,100000x1000,1000000x2000".to_string();
    let mut single: Option<(String, String)> = None;
    let mut topics: Option<usize> = None;
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned();
        match (args[i].as_str(), value) {
            ("--help" | "-h", _) => {
                println!("{USAGE}");
                return;
            }
            ("--assignor", Some(v)) => assignor = v,
            ("--sizes", Some(v)) => sizes = v,
            ("--topics", Some(v)) => topics = Some(v.parse().unwrap_or_else(|_| usage())),
            ("--single", Some(v)) => {
                let scenario = args.get(i + 2).cloned().unwrap_or_else(|| usage());
                single = Some((v, scenario));
                i += 1;
            }
            _ => usage(),
        }
        i += 2;
    }
    if let Some((size, scenario)) = single {
        run_single(&assignor, &size, &scenario, topics);
        return;
    }

    println!("| assignor | partitions × members | topics | scenario | assign (ms) | withheld | partitions per member | RSS before assign (MiB) | peak RSS (MiB) |");
    println!("|---|---|---|---|---:|---:|---|---:|---:|");
    let exe = std::env::current_exe().expect("current exe");
    for size in sizes.split(',').filter(|s| !s.is_empty()) {
        for scenario in ["fresh", "sticky", "stale", "unequal", "unequal-fresh"] {
            let mut cmd = Command::new(&exe);
            cmd.args(["--assignor", &assignor, "--single", size, scenario]);
            if let Some(t) = topics {
                cmd.args(["--topics", &t.to_string()]);
            }
            let out = cmd.output().expect("spawn child");
            let line = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                eprintln!(
                    "{size} {scenario} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            print!("{line}");
        }
    }
}

const USAGE: &str = "usage: scale_bench [--assignor cooperative-sticky|range] [--sizes PxM,...] \
                     [--topics N] [--single PxM fresh|sticky|stale|unequal]";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2)
}

fn parse_size(size: &str) -> (usize, usize) {
    let (p, m) = size.split_once('x').unwrap_or_else(|| usage());
    match (p.parse(), m.parse()) {
        (Ok(p), Ok(m)) if m > 0 => (p, m),
        _ => usage(),
    }
}

fn run_single(assignor: &str, size: &str, scenario: &str, topics: Option<usize>) {
    let (partitions, members) = parse_size(size);
    let topics = topics
        .unwrap_or((partitions / 10_000).clamp(1, 100))
        .clamp(1, partitions.max(1));
    let per_topic = partitions / topics;
    let mut view = GroupView {
        generation: 10,
        topics: (0..topics)
            .map(|t| TopicInfo {
                name: format!("topic-{t:03}"),
                partitions: per_topic as i32,
            })
            .collect(),
        members: (0..members)
            .map(|i| MemberView {
                member_id: format!("member-{i:05}"),
                topics: (0..topics as u32).collect(),
                generation: -1,
                ..MemberView::default()
            })
            .collect(),
        stats: None,
        now_ms: 0,
    };
    let total = per_topic * topics;
    if scenario.starts_with("unequal") && topics > 1 {
        for (i, m) in view.members.iter_mut().enumerate() {
            m.topics.retain(|&t| (t as usize + i) % 4 != 0);
        }
    }
    let mut previous = None;
    if scenario == "sticky" || scenario == "stale" || scenario == "unequal" {
        // Prior balanced assignment: member i owns every partition p with p % members == i.
        let mut prior = Plan {
            assignments: vec![Vec::new(); members],
            user_data: vec![None; members],
        };
        for p in 0..total {
            prior.assignments[p % members]
                .push(Tp::new((p / per_topic) as u32, (p % per_topic) as i32));
        }
        let mut before = view.clone();
        before.generation = 9;
        previous = Some(to_issued(&before, &prior));
        for (m, mut list) in view.members.iter_mut().zip(prior.assignments) {
            // A member revokes partitions of topics it does not subscribe to before joining.
            list.retain(|tp| m.topics.contains(&tp.topic));
            m.owned = list;
            // Metadata from after the previous plan (9), or from before it when stale.
            m.generation = if scenario == "stale" { 8 } else { 9 };
        }
        view.members.remove(members / 2);
    }
    let rss_before = status_kib("VmRSS:");

    let mut a: Box<dyn Assignor> = match assignor {
        "range" => Box::new(RangeAssignor),
        "cooperative-sticky" => Box::new(CooperativeStickyAssignor),
        _ => usage(),
    };
    let start = Instant::now();
    let plan = a.assign(&view, previous.as_ref()).expect("assign");
    let ms = start.elapsed().as_secs_f64() * 1000.0;

    let assigned: usize = plan.assignments.iter().map(Vec::len).sum();
    let min = plan.assignments.iter().map(Vec::len).min().unwrap_or(0);
    let max = plan.assignments.iter().map(Vec::len).max().unwrap_or(0);
    println!(
        "| {} | {} × {} | {} | {} | {:.1} | {} | {}..{} | {:.0} | {:.0} |",
        assignor,
        total,
        view.members.len(),
        topics,
        scenario,
        ms,
        total - assigned,
        min,
        max,
        rss_before as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0,
    );
}

/// A `kB` field of `/proc/self/status` (0 where unavailable, e.g. not Linux).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
