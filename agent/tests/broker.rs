//! The real agent binary against a real broker (tansu), through `examples/overhead.rs`: one
//! group member owning every partition with known lag, a control listener standing in for the
//! app. The example fails unless the agent's `/metrics` shows exactly that lag with the control
//! channel connected; here we also check the numbers it prints.
//!
//! Skipped (with a note) when tansu is not installed (`scripts/test-broker install`).

use std::path::PathBuf;
use std::process::Command;

struct Broker {
    script: PathBuf,
    port: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Stop only ours (the script stops every broker without a port).
        let _ = Command::new(&self.script)
            .args(["stop", &self.port])
            .status();
    }
}

fn tansu_installed() -> bool {
    if let Some(bin) = std::env::var_os("LAGBALANCE_TANSU_BIN") {
        return PathBuf::from(bin).exists();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    cache.is_some_and(|c| c.join("lagbalance/tansu-0.6.0/bin/tansu").exists())
}

#[test]
fn agent_measures_a_real_group_and_feeds_its_app() {
    if !tansu_installed() {
        eprintln!("skipped: tansu not installed (scripts/test-broker install)");
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-broker");
    let out = Command::new(&script)
        .arg("start")
        .output()
        .expect("test-broker runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let port = bootstrap.rsplit(':').next().unwrap_or_default().to_owned();
    let _broker = Broker { script, port };

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
