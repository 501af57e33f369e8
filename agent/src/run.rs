//! The agent's loop: poll, compute the view, decide, act, publish metrics.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use lagbalance::control::{CapacitySample, Op};
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::Config;
use crate::ctl::AppLink;
use crate::decide::{Action, Decider};
use crate::hostmetrics::{CpuProbe, SelfProbe};
use crate::http;
use crate::metrics::{AgentState, TriggerResult};
use crate::poll;
use crate::storm::Hold;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Run until SIGTERM / Ctrl-C.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let state: http::Shared = Arc::new(Mutex::new(AgentState {
        group: cfg.group.clone(),
        mode: cfg.mode.to_string(),
        ..AgentState::default()
    }));
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("binding LAGBALANCE_HTTP_ADDR {}", cfg.http_addr))?;
    let http_task = tokio::spawn(http::serve(listener, state.clone()));
    tracing::info!(group = %cfg.group, mode = %cfg.mode, http = %cfg.http_addr, control = %cfg.control_addr, dry_run = cfg.dry_run, "agent started");

    let op_timeout = (cfg.interval * 2).clamp(Duration::from_secs(2), Duration::from_secs(30));
    let client = poll::client(&cfg.bootstrap, op_timeout, &cfg.security)?;
    let mut link = AppLink::new(
        cfg.control_addr,
        cfg.control_token.clone(),
        Duration::from_secs(2),
    );
    let mut decider = Decider::new(&cfg);
    let mut cpu = CpuProbe::new(&cfg.cgroup_dir, cfg.cpu_limit);
    let mut me_probe = SelfProbe::default();
    let start = Instant::now();
    let mut last_ok: Option<Instant> = None;

    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        let now_ms = start.elapsed().as_millis() as u64;

        // 1. Feed the app a CPU sample; this also refreshes our member's identity.
        let reading = cpu.sample();
        let sample = CapacitySample {
            cpu_used_cores: reading.used_cores,
            cpu_limit_cores: reading.limit_cores,
            measured_at_ms: wall_ms(),
        };
        if let Err(e) = link.send(Op::Capacity(sample)).await {
            tracing::debug!(error = %e, "control channel unavailable (the app consumes normally)");
        }

        // 2. Poll the group.
        let t0 = Instant::now();
        let own = decider.own(link.identity.as_ref()).cloned();
        let own_topics: Vec<String> = own
            .as_ref()
            .map(|i| i.partitions.iter().map(|(t, _)| t.clone()).collect())
            .unwrap_or_default();
        let snap = tokio::time::timeout(
            op_timeout * 3,
            poll::snapshot(&client, &cfg.group, now_ms, &own_topics),
        )
        .await;
        let poll_s = t0.elapsed().as_secs_f64();
        let snap = match snap {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), "group poll failed");
                record_failure(&state, &last_ok, cfg.interval, poll_s, &link);
                continue;
            }
            Err(_) => {
                tracing::warn!(after_s = poll_s, "group poll timed out");
                record_failure(&state, &last_ok, cfg.interval, poll_s, &link);
                continue;
            }
        };
        last_ok = Some(Instant::now());

        // 3. Decide, then act.
        let d = decider.step(now_ms, snap, own.as_ref());
        if d.rebalance_observed {
            tracing::info!(state = %d.view.state, generation = d.view.generation_hint, "rebalance observed");
        }
        if d.elected {
            if let Err(h) = &d.hold {
                tracing::debug!(hold = ?h, streak = d.own_streak, "outlier, holding");
            }
        }
        let triggered = match d.action.clone() {
            None => None,
            Some(Action::DryRun { reason }) => {
                tracing::info!(%reason, mode = %cfg.mode, "outlier: would act (dry run)");
                Some(TriggerResult::DryRun)
            }
            Some(action) => {
                let (op, reason) = match action {
                    Action::Leave {
                        cooldown_ms,
                        reason,
                    } => (
                        Op::Leave {
                            cooldown_ms,
                            reason: reason.clone(),
                        },
                        reason,
                    ),
                    Action::Rejoin { reason } | Action::DryRun { reason } => (
                        Op::Rejoin {
                            reason: reason.clone(),
                        },
                        reason,
                    ),
                };
                match link.send(op).await {
                    Ok(r) if r.ok => {
                        tracing::info!(%reason, mode = %cfg.mode, "outlier: asked the app to rebalance");
                        decider.acted(now_ms);
                        Some(TriggerResult::Ok)
                    }
                    Ok(r) => {
                        tracing::warn!(
                            error = r.error.unwrap_or_default(),
                            "app refused the action"
                        );
                        Some(TriggerResult::Failed)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not reach the app to act");
                        Some(TriggerResult::Failed)
                    }
                }
            }
        };

        // 4. Publish.
        let agent_usage = me_probe.sample();
        let cooldown_remaining_s = match d.hold {
            Err(Hold::Cooldown { until_ms }) => until_ms.saturating_sub(now_ms) as f64 / 1000.0,
            _ => 0.0,
        };
        let budget_used = decider.triggers_last_hour(now_ms) as u64;
        if let Ok(mut s) = state.lock() {
            s.polls.attempts += 1;
            s.polls.last_seconds = poll_s;
            s.ready = true;
            s.rebalancing = matches!(d.hold, Err(Hold::Rebalancing));
            s.view = Some(d.view);
            s.scores = d.scores;
            s.me = d.me;
            s.own_streak = d.own_streak;
            s.elected = d.elected;
            s.cooldown_remaining_s = cooldown_remaining_s;
            s.budget_remaining = (cfg.budget_per_hour as u64).saturating_sub(budget_used);
            s.rebalances_seen = decider.rebalances_seen();
            s.control_connected = link.connected();
            s.pod_cpu = Some(reading);
            s.agent_usage = agent_usage;
            if let Some(result) = triggered {
                s.triggers.record(result);
            }
        }
    }
    tracing::info!("agent stopping");
    http_task.abort();
    Ok(())
}

fn record_failure(
    state: &http::Shared,
    last_ok: &Option<Instant>,
    interval: Duration,
    poll_s: f64,
    link: &AppLink,
) {
    if let Ok(mut s) = state.lock() {
        s.polls.attempts += 1;
        s.polls.errors += 1;
        s.polls.last_seconds = poll_s;
        s.ready = last_ok.is_some_and(|t| t.elapsed() < interval * 3);
        s.control_connected = link.connected();
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
