//! The real binary rejects bad settings: exit code ≠ 0, the variable named on stderr.

use std::process::{Command, Output};

fn agent(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lagbalance-agent"));
    // Only what the test sets: no LAGBALANCE_* from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("LAGBALANCE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("LAGBALANCE_BOOTSTRAP", "127.0.0.1:1")
        .env("LAGBALANCE_GROUP", "g")
        // Never bind the default ports from a test.
        .env("LAGBALANCE_HTTP_ADDR", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("binary runs")
}

fn assert_rejected(env: &[(&str, &str)], args: &[&str], var: &str, value: &str) {
    let out = agent(env, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{env:?} {args:?} accepted: {stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(var), "stderr must name {var}: {stderr}");
    assert!(
        stderr.contains(value),
        "stderr must quote {value:?}: {stderr}"
    );
}

#[test]
fn negative_interval() {
    assert_rejected(
        &[("LAGBALANCE_INTERVAL", "-5s")],
        &[],
        "LAGBALANCE_INTERVAL",
        "-5s",
    );
}

#[test]
fn ratio_below_one() {
    assert_rejected(
        &[("LAGBALANCE_LAG_RATIO", "0.5")],
        &[],
        "LAGBALANCE_LAG_RATIO",
        "0.5",
    );
    assert_rejected(&[], &["--lag-ratio", "0.2"], "LAGBALANCE_LAG_RATIO", "0.2");
}

#[test]
fn unparsable_duration() {
    assert_rejected(
        &[("LAGBALANCE_COOLDOWN", "soonish")],
        &[],
        "LAGBALANCE_COOLDOWN",
        "soonish",
    );
    assert_rejected(
        &[],
        &["run", "--interval=5parsecs"],
        "LAGBALANCE_INTERVAL",
        "5parsecs",
    );
}

#[test]
fn unknown_mode() {
    let out = agent(&[("LAGBALANCE_MODE", "explode")], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_rejected(
        &[("LAGBALANCE_MODE", "explode")],
        &[],
        "LAGBALANCE_MODE",
        "explode",
    );
    assert!(
        stderr.contains("leave, rejoin"),
        "says what is allowed: {stderr}"
    );
}

#[test]
fn missing_group_and_unknown_flag() {
    assert_rejected(&[("LAGBALANCE_GROUP", "")], &[], "LAGBALANCE_GROUP", "");
    let out = agent(&[], &["--frobnicate", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--frobnicate"));
}

#[test]
fn help_lists_every_variable() {
    let out = agent(&[], &["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for var in [
        "LAGBALANCE_INTERVAL",
        "LAGBALANCE_MODE",
        "LAGBALANCE_BUDGET_PER_HOUR",
    ] {
        assert!(text.contains(var), "{text}");
    }
}

#[test]
fn help_works_with_every_command_and_next_to_any_flag() {
    for args in [
        &["-h"][..],
        &["help"],
        &["run", "--help"],
        &["--group", "g", "--help"],
        &["--frobnicate", "-h"],
    ] {
        let out = agent(&[], args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(text.starts_with("usage:"), "{args:?}: {text}");
        assert!(text.contains("LAGBALANCE_INTERVAL"), "{args:?}: {text}");
    }
    for args in [
        &["status", "--help"][..],
        &["status", "-h"],
        &["status", "--group", "--help"],
    ] {
        let out = agent(&[], args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            text.starts_with("usage: lagbalance-agent status"),
            "{args:?}: {text}"
        );
    }
}
