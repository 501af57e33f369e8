//! The real agent binary against real brokers, through `examples/overhead.rs` (on Kafka): one
//! group member owning every partition with known lag, a control listener standing in for the
//! app. The example fails unless the agent's `/metrics` shows exactly that lag with the control
//! channel connected; here we also check the numbers it prints. And a hand-made group on tansu
//! whose slow member's agent alone acts.

use std::path::PathBuf;
use std::process::Command;

/// A broker from `scripts/test-broker ARGS` (`up`: the shared Kafka; `start --tansu`: a tansu
/// of our own, stopped on drop). A test that finds none fails.
struct Broker {
    bootstrap: String,
    own_id: Option<String>,
}

impl Broker {
    fn start(args: &[&str]) -> Broker {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-broker");
        let out = Command::new(&script)
            .args(args)
            .output()
            .expect("test-broker runs");
        assert!(
            out.status.success(),
            "scripts/test-broker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        Broker {
            bootstrap: value("LAGBALANCE_BOOTSTRAP").expect("a bootstrap address"),
            own_id: (args[0] == "start")
                .then(|| value("LAGBALANCE_BROKER_ID"))
                .flatten(),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(id) = &self.own_id {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-broker");
            let _ = Command::new(script).args(["stop", id]).status();
        }
    }
}

#[test]
fn agent_measures_a_real_group_and_feeds_its_app() {
    let broker = Broker::start(&["up"]);
    let bootstrap = broker.bootstrap.clone();

    // `cargo test` builds the examples next to the test binaries' directory.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples/overhead"))
        .unwrap();
    assert!(example.exists(), "{} not built", example.display());
    let out = Command::new(&example)
        .args([&bootstrap, "8", "6"])
        .output()
        .expect("example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> f64 {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(name.split_whitespace().count()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name:?} in {stdout}"))
    };
    assert_eq!(field("member lag"), 48.0, "8 partitions x (10 - 4)");
    assert_eq!(field("poll errors"), 0.0);
    assert!(field("polls") >= 2.0);
    assert!(field("capacity samples sent") >= 2.0, "{stdout}");
}

mod slow_member {
    //! Two members on tansu, one far behind, each with its agent and a stand-in app: only the
    //! slow member's app is asked to rejoin, once.

    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use lagbalance::admin::OffsetMap;
    use lagbalance::control::{serve, AppIdentity, ControlCommand, ControlConfig};
    use lagbalance::{Client, ClientConfig};
    use lagbalance_integration::raw_member::{fill, join, keep_alive, sync};

    fn agent(bootstrap: &str, group: &str, control: std::net::SocketAddr) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lagbalance-agent"));
        for (k, _) in std::env::vars() {
            if k.starts_with("LAGBALANCE_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("LAGBALANCE_BOOTSTRAP", bootstrap)
            .env("LAGBALANCE_GROUP", group)
            .env("LAGBALANCE_INTERVAL", "200ms")
            .env("LAGBALANCE_SUSTAIN", "2")
            .env("LAGBALANCE_LAG_FLOOR", "100")
            .env("LAGBALANCE_COOLDOWN", "60s")
            .env("LAGBALANCE_MODE", "rejoin")
            .env("LAGBALANCE_EWMA_WINDOW", "0s")
            .env("LAGBALANCE_CONTROL_ADDR", control.to_string())
            .env("LAGBALANCE_HTTP_ADDR", "127.0.0.1:0")
            .env("LAGBALANCE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent starts")
    }

    struct Kill(Vec<Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    pub async fn run(bootstrap: &str) {
        let tag = std::process::id();
        let (topic, group) = (format!("slow-{tag}"), format!("slow-g-{tag}"));
        let c = Client::new(ClientConfig::new(bootstrap)).unwrap();
        c.create_topic(&topic, 4, 1).await.unwrap();
        fill(&c, &topic, 4, 200).await.unwrap();

        // Form the group: A, then B, then A rejoins as leader and hands out the plan.
        let a = join(&c, &group, &topic, "").await.unwrap().member_id;
        let gen = join(&c, &group, &topic, &a).await.unwrap().generation;
        sync(&c, &group, &a, gen, &[(a.clone(), vec![])])
            .await
            .unwrap();
        let b = join(&c, &group, &topic, "").await.unwrap().member_id;
        join(&c, &group, &topic, &b).await.unwrap();
        let joined = join(&c, &group, &topic, &a).await.unwrap();
        assert_eq!(joined.error, 0);
        let gen = joined.generation;
        let tp = |p| (topic.clone(), p);
        let plan = vec![
            (a.clone(), vec![tp(0), tp(1)]),
            (b.clone(), vec![tp(2), tp(3)]),
        ];
        sync(&c, &group, &a, gen, &plan).await.unwrap();
        sync(&c, &group, &b, gen, &[]).await.unwrap();
        // A is caught up, B is 200 behind on each of its partitions.
        let offsets: OffsetMap = (0..4)
            .map(|p| ((topic.clone(), p), if p < 2 { 200 } else { 0 }))
            .collect();
        c.offset_commit(&group, gen, &a, None, &offsets)
            .await
            .unwrap();
        let hb = keep_alive(
            c.clone(),
            group.clone(),
            gen,
            vec![a.clone(), b.clone()],
            Duration::from_millis(500),
        );

        // The stand-in apps, and one agent each.
        let mut apps = Vec::new();
        let mut agents = Kill(Vec::new());
        for (m, parts) in &plan {
            let (handle, rx) = serve(ControlConfig::loopback(0)).await.unwrap();
            handle.set_identity(Some(AppIdentity {
                group: group.clone(),
                member_id: m.clone(),
                instance_id: None,
                generation: gen,
                partitions: parts.clone(),
            }));
            agents.0.push(agent(bootstrap, &group, handle.local_addr()));
            apps.push((handle, rx, Vec::<ControlCommand>::new()));
        }
        let actions = |cmds: &[ControlCommand]| {
            cmds.iter()
                .filter(|c| !matches!(c, ControlCommand::Capacity(_)))
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (_, rx, seen) in apps.iter_mut() {
                while let Ok(cmd) = rx.try_recv() {
                    seen.push(cmd);
                }
            }
            if actions(&apps[1].2) > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the slow member's agent never acted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let acted_at = Instant::now();
        // Watch 10 more intervals: nothing else happens (single actor, cooldown).
        while acted_at.elapsed() < Duration::from_secs(2) {
            for (_, rx, seen) in apps.iter_mut() {
                while let Ok(cmd) = rx.try_recv() {
                    seen.push(cmd);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        hb.abort();
        let cmds_a = &apps[0].2;
        let cmds_b = &apps[1].2;
        assert_eq!(
            actions(cmds_a),
            0,
            "the caught-up member's agent acted: {cmds_a:?}"
        );
        assert_eq!(actions(cmds_b), 1, "{cmds_b:?}");
        let rejoin = cmds_b
            .iter()
            .find(|c| !matches!(c, ControlCommand::Capacity(_)))
            .unwrap();
        assert!(
            matches!(rejoin, ControlCommand::Rejoin { reason } if reason.contains("lag 400")),
            "{rejoin:?}"
        );
        assert!(
            cmds_a
                .iter()
                .any(|c| matches!(c, ControlCommand::Capacity(_))),
            "both apps get CPU samples"
        );
    }
}

#[test]
fn on_tansu_only_the_slow_members_agent_asks_its_app_to_rejoin() {
    // tansu: its JoinGroup answers at once (no barrier), which the hand-made group below needs.
    let broker = Broker::start(&["start", "--tansu"]);
    let bootstrap = broker.bootstrap.clone();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(slow_member::run(&bootstrap));
}
