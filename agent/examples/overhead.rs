//! Agent overhead at N partitions (default 1 000) and a 5 s interval, against a real broker.
//!
//! ```sh
//! eval "$(scripts/test-broker start)"
//! cargo build --release -p lagbalance-agent --bins --examples
//! target/release/examples/overhead "$LAGBALANCE_BOOTSTRAP" [PARTITIONS=1000] [SECONDS=60]
//! scripts/test-broker stop "$LAGBALANCE_BROKER_ID"
//! ```
//!
//! Sets up a topic with N partitions and records on each, one group member (raw
//! JoinGroup/SyncGroup/Heartbeat) that owns every partition with committed offsets behind the
//! log end, and a control listener standing in for the app. Then runs the real
//! `lagbalance-agent` binary (the sibling of this example's directory) with `--interval 5s`,
//! waits until its `/metrics` shows the member's lag and the control channel connected, and
//! measures the agent's CPU (utime + stime from /proc) and peak RSS over SECONDS.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lagbalance::admin::OffsetMap;
use lagbalance::control::{serve, AppIdentity, ControlCommand, ControlConfig};
use lagbalance::{Client, ClientConfig};
use lagbalance_integration::raw_member;

/// utime + stime of `pid` in seconds, and its RSS in bytes.
fn proc_usage(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("stat format")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after ")": state(0) … utime(11) stime(12).
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((ticks / 100.0, rss_kb * 1024))
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(out)
}

fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

const USAGE: &str = "usage: overhead HOST:PORT [PARTITIONS=1000] [SECONDS=60]  (-h, --help: this)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if lagbalance::settings::wants_help(&args[1..]) {
        println!("{USAGE}");
        return Ok(());
    }
    let broker = args.get(1).context(USAGE)?.clone();
    let partitions: i32 = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let seconds: u64 = args.get(3).map(|a| a.parse()).transpose()?.unwrap_or(60);
    let tag = std::process::id();
    let topic = format!("overhead-{tag}");
    let group = format!("overhead-g-{tag}");

    let client = Client::new(ClientConfig::new(&broker))?;
    client.create_topic(&topic, partitions, 1).await?;
    raw_member::fill(&client, &topic, partitions, 10).await?;
    let (member_id, generation) =
        raw_member::join_alone(&client, &group, &topic, partitions).await?;
    // Committed 4 of 10 on every partition: lag 6 each.
    let offsets: OffsetMap = (0..partitions).map(|p| ((topic.clone(), p), 4)).collect();
    client
        .offset_commit(&group, generation, &member_id, None, &offsets)
        .await?;
    let hb = raw_member::keep_alive(
        client.clone(),
        group.clone(),
        generation,
        vec![member_id.clone()],
        Duration::from_secs(1),
    );

    // The app's side of the control channel.
    let (handle, mut commands) = serve(ControlConfig::loopback(0)).await?;
    handle.set_identity(Some(AppIdentity {
        group: group.clone(),
        member_id: member_id.clone(),
        instance_id: None,
        generation,
        // tansu hides assignments in DescribeGroups: the app reports its own.
        partitions: (0..partitions).map(|p| (topic.clone(), p)).collect(),
    }));
    let capacity_samples = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(c) = commands.recv().await {
            if matches!(c, ControlCommand::Capacity(_)) {
                n += 1;
            }
        }
        n
    });

    let http = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let exe = std::env::current_exe()?
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("lagbalance-agent"))
        .context("locating the agent binary")?;
    let mut child = Command::new(&exe)
        .env("LAGBALANCE_BOOTSTRAP", &broker)
        .env("LAGBALANCE_GROUP", &group)
        .env("LAGBALANCE_INTERVAL", "5s")
        .env("LAGBALANCE_HTTP_ADDR", &http)
        .env("LAGBALANCE_CONTROL_ADDR", handle.local_addr().to_string())
        .env("LAGBALANCE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let pid = child.id();

    // Wait (with a deadline) until the agent saw the whole group and reached the app.
    let want_lag = 6.0 * partitions as f64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let lag_line = format!("lagbalance_agent_member_lag{{group=\"{group}\",member=\"{member_id}\"");
    let mut last = String::new();
    loop {
        if let Some(m) = http_get(&http, "/metrics").await {
            last = m
                .lines()
                .filter(|l| {
                    l.contains("member_lag{") || l.contains("connected") || l.contains("polls")
                })
                .collect::<Vec<_>>()
                .join("\n");
            if metric(&m, &lag_line) == Some(want_lag)
                && metric(&m, "lagbalance_agent_control_connected") == Some(1.0)
            {
                break;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            bail!("agent never reported lag {want_lag} with the app connected; metrics:\n{last}\nstderr: {err}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (cpu0, _) = proc_usage(pid)?;
    let t0 = Instant::now();
    let mut peak_rss = 0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_rss = peak_rss.max(proc_usage(pid)?.1);
    }
    let (cpu1, rss) = proc_usage(pid)?;
    let wall = t0.elapsed().as_secs_f64();
    let m = http_get(&http, "/metrics").await.unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    hb.abort();
    drop(handle);
    let samples = capacity_samples.await.unwrap_or(0);

    println!("group                 {group} (topic {topic})");
    println!("partitions            {partitions}");
    println!("interval              5s");
    println!("measured for          {wall:.1} s");
    println!(
        "agent CPU             {:.3} % of one core ({:.2} s CPU)",
        (cpu1 - cpu0) / wall * 100.0,
        cpu1 - cpu0
    );
    println!(
        "agent RSS             {:.1} MiB at end, {:.1} MiB peak",
        rss as f64 / 1048576.0,
        peak_rss.max(rss) as f64 / 1048576.0
    );
    println!(
        "polls                 {}",
        metric(&m, "lagbalance_agent_polls_total").unwrap_or(0.0)
    );
    println!(
        "poll errors           {}",
        metric(&m, "lagbalance_agent_poll_errors_total").unwrap_or(0.0)
    );
    println!(
        "last poll duration    {:.1} ms",
        metric(&m, "lagbalance_agent_poll_duration_seconds").unwrap_or(f64::NAN) * 1000.0
    );
    println!(
        "member lag            {}",
        metric(&m, &lag_line).unwrap_or(f64::NAN)
    );
    println!("capacity samples sent {samples}");
    Ok(())
}
