//! Release-mode benchmark: assignment time and peak memory of the `lagbalance` assignor, with
//! `cooperative-sticky` on the same groups for comparison.
//!
//! ```text
//! cargo run --release -p lagbalance-assign --example lagbalance_bench
//! ```
//!
//! Each size runs in a fresh child process (this binary re-executed with `--child`) so the
//! peak resident memory (VmHWM from /proc/self/status) belongs to that size alone. A child
//! measures two calls: a fresh group (nobody owns anything) and the next generation, where
//! every member owns what it was given, rates have shifted, and one member has joined — the
//! sticky path with withholding.
//!
//! The group mirrors Kafka's large test: topics of 2 000 partitions each, every member
//! subscribed to every topic, partition rates skewed, member capacities 50–150 records/s.

use std::process::Command;
use std::time::Instant;

use lagbalance_assign::lagbalance::LagBalanceAssignor;
use lagbalance_assign::model::{Assignor, GroupView, MemberView, PartitionStats, Plan, TopicInfo};
use lagbalance_assign::rng::Rng;
use lagbalance_assign::userdata::MemberUserData;
use lagbalance_assign::CooperativeStickyAssignor;

const SIZES: [(usize, usize); 3] = [(10_000, 100), (100_000, 1_000), (1_000_000, 2_000)];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: lagbalance_bench\n\nTimes the lagbalance and cooperative-sticky assignors \
             on groups of {SIZES:?} (partitions, members), each size in a child process."
        );
        return;
    }
    if args.len() == 5 && args[1] == "--child" {
        let partitions: usize = args[2].parse().expect("partitions");
        let members: usize = args[3].parse().expect("members");
        child(partitions, members, &args[4]);
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    println!("| assignor | partitions × members | fresh assign | next generation (+1 member) | revoked | peak RSS (VmHWM) |");
    println!("|---|---|---:|---:|---:|---:|");
    for assignor in ["lagbalance", "cooperative-sticky"] {
        for (p, m) in SIZES {
            let out = Command::new(&exe)
                .args(["--child", &p.to_string(), &m.to_string(), assignor])
                .output()
                .expect("run child");
            if !out.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                panic!("child for {assignor} {p} × {m} failed");
            }
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

fn member(i: usize, topics: usize, rng: &mut Rng) -> MemberView {
    let capacity = 50.0 + 100.0 * rng.unit();
    let ud = MemberUserData {
        version: 1,
        capacity: Some(capacity),
        ..MemberUserData::default()
    };
    MemberView {
        member_id: format!("member-{i:05}"),
        topics: (0..topics as u32).collect(),
        generation: -1,
        user_data: Some(ud.encode()),
        ..MemberView::default()
    }
}

fn child(partitions: usize, members: usize, which: &str) {
    let per_topic = 2_000.min(partitions);
    let topics = partitions.div_ceil(per_topic);
    let mut rng = Rng::new(1);
    let topic_infos: Vec<TopicInfo> = (0..topics)
        .map(|t| TopicInfo {
            name: format!("topic-{t:04}"),
            partitions: per_topic as i32,
        })
        .collect();
    let n = topics * per_topic;
    // Skewed rates: a heavy tail of hot partitions (Pareto-like).
    let rate = |rng: &mut Rng| 1.0 / (0.02 + rng.unit()).powf(1.2);
    let stats = PartitionStats {
        lag: (0..n).map(|_| (rng.unit() * 100.0).floor()).collect(),
        rate: (0..n).map(|_| rate(&mut rng)).collect(),
    };
    let view = GroupView {
        generation: 1,
        topics: topic_infos,
        members: (0..members).map(|i| member(i, topics, &mut rng)).collect(),
        stats: Some(stats),
        now_ms: 1_000_000,
    };
    // The machine may be shared (2 cores): run the sequence three times and keep the fastest,
    // which is the least disturbed measurement of the same deterministic work.
    let base = view;
    let (mut fresh, mut sticky, mut moved) = (f64::MAX, f64::MAX, 0);
    for _ in 0..3 {
        let mut view = base.clone();
        let mut rng = Rng::new(2);
        let mut assignor: Box<dyn Assignor> = match which {
            "cooperative-sticky" => Box::new(CooperativeStickyAssignor),
            _ => Box::new(LagBalanceAssignor::default()),
        };
        let t0 = Instant::now();
        let plan = assignor.assign(&view, None).expect("fresh plan");
        fresh = fresh.min(t0.elapsed().as_secs_f64());
        assert_eq!(
            plan.assignments.iter().map(Vec::len).sum::<usize>(),
            n,
            "every partition assigned"
        );

        // Next generation: owners = plan, rates drift ±20 %, one member joins.
        adopt(&mut view, &plan);
        if let Some(st) = view.stats.as_mut() {
            for r in st.rate.iter_mut() {
                *r *= 0.8 + 0.4 * rng.unit();
            }
        }
        view.members.push(member(members, topics, &mut rng));
        view.now_ms += 300_000;
        let t1 = Instant::now();
        let plan2 = assignor.assign(&view, None).expect("sticky plan");
        sticky = sticky.min(t1.elapsed().as_secs_f64());
        // Partitions an owner loses this round (withheld transfers and plain revocations).
        moved = view
            .members
            .iter()
            .zip(&plan2.assignments)
            .map(|(m, list)| {
                m.owned
                    .iter()
                    .filter(|tp| list.binary_search(tp).is_err())
                    .count()
            })
            .sum();
    }
    println!(
        "| {which} | {partitions} × {members} | {:.1} ms | {:.1} ms | {moved} | {} |",
        fresh * 1e3,
        sticky * 1e3,
        vm_hwm()
    );
}

fn adopt(view: &mut GroupView, plan: &Plan) {
    for (m, list) in view.members.iter_mut().zip(&plan.assignments) {
        m.owned = list.clone();
        m.generation = view.generation;
    }
    view.generation += 1;
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "n/a".into())
}
