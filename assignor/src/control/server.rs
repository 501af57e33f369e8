//! The consumer's end of the control channel: the listener the agent dials, with its settings
//! and safety rails (see the [module docs](super)). It turns the agent's requests into
//! [`ControlCommand`]s for the consumer and answers each with the identity the consumer
//! published.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use super::protocol::{encode_line, read_line, trim_line, DEFAULT_MAX_LINE};
use super::{AppIdentity, CapacitySample, ControlError, Op, Reply, Request};
use crate::settings::{self, SettingError};

/// Environment variable with the control address the consumer listens on (`host:port`).
pub const ENV_CONTROL_ADDR: &str = "LAGBALANCE_CONTROL_ADDR";
/// Environment variable with the shared token (optional).
pub const ENV_CONTROL_TOKEN: &str = "LAGBALANCE_CONTROL_TOKEN";
/// Environment variable overriding [`ControlConfig::min_membership_interval`], in
/// milliseconds (`0`: no limit — for tests that drive rebalances themselves).
pub const ENV_CONTROL_MIN_INTERVAL_MS: &str = "LAGBALANCE_CONTROL_MIN_INTERVAL_MS";
/// Default port of the control channel.
pub const DEFAULT_CONTROL_PORT: u16 = 9470;

/// What the agent asks the consumer to do.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlCommand {
    /// Leave the group voluntarily (LeaveGroup), stay out for `cooldown`, then rejoin.
    Leave { cooldown: Duration, reason: String },
    /// Rejoin now with fresh subscription user data, so the leader re-plans with current lag
    /// and capacity.
    Rejoin { reason: String },
    /// A CPU sample of the pod, for the subscription user data.
    Capacity(CapacitySample),
}

/// Settings of the consumer's control listener.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    pub bind: SocketAddr,
    /// Shared secret every request must carry; `None` accepts any local peer.
    pub token: Option<String>,
    /// Allow binding a non-loopback address (requires a token). Off by default.
    pub allow_non_loopback: bool,
    /// Longest accepted request line, bytes.
    pub max_line: usize,
    /// Concurrent agent connections accepted.
    pub max_connections: usize,
    /// Commands buffered for the consumer before new ones are answered `busy`.
    pub queue: usize,
    /// Upper bound on a `leave` cooldown.
    pub max_cooldown: Duration,
    /// A connection that completes no request line for this long is closed (and a reply the
    /// peer does not read within it is abandoned). Keeps the connection slots free for the
    /// real agent; the agent reconnects on its next interval.
    pub idle_timeout: Duration,
    /// At most one `leave` or `rejoin` is accepted per this interval (zero: no limit); the
    /// excess is answered with an error naming the limit.
    pub min_membership_interval: Duration,
}

impl ControlConfig {
    /// Listen on `127.0.0.1:port` (0 = any free port) with no token.
    pub fn loopback(port: u16) -> Self {
        ControlConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            token: None,
            allow_non_loopback: false,
            max_line: DEFAULT_MAX_LINE,
            max_connections: 4,
            queue: 16,
            max_cooldown: Duration::from_secs(600),
            // Twelve of the agent's default 5 s intervals.
            idle_timeout: Duration::from_secs(60),
            // Well below the agent's own cooldown (2 min by default, 20 s in the tests):
            // an agent that behaves never meets it.
            min_membership_interval: Duration::from_secs(10),
        }
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// From `LAGBALANCE_CONTROL_ADDR` (`host:port`), `LAGBALANCE_CONTROL_TOKEN` and
    /// `LAGBALANCE_CONTROL_MIN_INTERVAL_MS`. `Ok(None)` when the address is unset or empty:
    /// the channel is off.
    pub fn from_env() -> Result<Option<Self>, ControlError> {
        Self::from_vars(|var| std::env::var(var).ok())
    }

    /// [`Self::from_env`] over any source of variables.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ControlError> {
        let addr = match get(ENV_CONTROL_ADDR) {
            Some(a) if !a.trim().is_empty() => a,
            _ => return Ok(None),
        };
        let bad_env = |var: &'static str| {
            move |e: SettingError| ControlError::BadEnv {
                var,
                value: e.value,
                reason: e.allowed,
            }
        };
        let bind = settings::socket_addr(ENV_CONTROL_ADDR, &addr, false)
            .map_err(bad_env(ENV_CONTROL_ADDR))?;
        let mut cfg = ControlConfig::loopback(bind.port());
        cfg.bind = bind;
        cfg.token = get(ENV_CONTROL_TOKEN).filter(|t| !t.is_empty());
        if let Some(ms) = get(ENV_CONTROL_MIN_INTERVAL_MS).filter(|v| !v.trim().is_empty()) {
            let parsed = settings::integer(ENV_CONTROL_MIN_INTERVAL_MS, &ms, 0, u64::MAX)
                .map_err(bad_env(ENV_CONTROL_MIN_INTERVAL_MS))?;
            cfg.min_membership_interval = Duration::from_millis(parsed);
        }
        Ok(Some(cfg))
    }

    fn check(&self) -> Result<(), ControlError> {
        if !self.bind.ip().is_loopback() {
            if !self.allow_non_loopback {
                return Err(ControlError::NonLoopback(self.bind));
            }
            if self.token.is_none() {
                return Err(ControlError::TokenRequired);
            }
        }
        Ok(())
    }
}

/// The consumer's end of a running control listener. Dropping it stops the listener.
pub struct ControlHandle {
    local_addr: SocketAddr,
    identity: watch::Sender<Option<AppIdentity>>,
    task: JoinHandle<()>,
}

impl ControlHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Publish the member's identity (call after every successful join / generation change;
    /// `None` when out of the group).
    pub fn set_identity(&self, identity: Option<AppIdentity>) {
        self.identity.send_replace(identity);
    }

    /// A sender the consumer can keep instead of the handle (e.g. inside its membership task).
    pub fn identity_sender(&self) -> watch::Sender<Option<AppIdentity>> {
        self.identity.clone()
    }

    /// Stop listening now (also done on drop).
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start the consumer's listener. Returns the handle (identity setter, address) and the stream
/// of commands. Never fails after binding: per-connection errors are logged and only affect
/// that connection.
pub async fn serve(
    config: ControlConfig,
) -> Result<(ControlHandle, mpsc::Receiver<ControlCommand>), ControlError> {
    config.check()?;
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| ControlError::Io {
            addr: config.bind,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ControlError::Io {
        addr: config.bind,
        source,
    })?;
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    let (id_tx, id_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        config,
        commands: tx,
        identity: id_rx,
        last_membership: Mutex::new(None),
    });
    let task = tokio::spawn(accept_loop(listener, shared));
    Ok((
        ControlHandle {
            local_addr,
            identity: id_tx,
            task,
        },
        rx,
    ))
}

struct Shared {
    config: ControlConfig,
    commands: mpsc::Sender<ControlCommand>,
    identity: watch::Receiver<Option<AppIdentity>>,
    /// When the last `leave` / `rejoin` was accepted (for `min_membership_interval`).
    last_membership: Mutex<Option<Instant>>,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control channel: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let _ = write_reply(&mut stream, &error_reply(None, "too many connections")).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &shared).await {
                tracing::debug!(%peer, error = %e, "control channel: connection ended");
            }
            drop(permit);
        });
    }
}

fn error_reply(identity: Option<AppIdentity>, msg: impl Into<String>) -> Reply {
    Reply {
        ok: false,
        identity,
        error: Some(msg.into()),
    }
}

async fn write_reply(
    stream: &mut (impl AsyncWriteExt + Unpin),
    reply: &Reply,
) -> std::io::Result<()> {
    let line = encode_line(reply).map_err(std::io::Error::other)?;
    stream.write_all(&line).await?;
    stream.flush().await
}

/// Constant-time token check. Both tokens are hashed to SHA-256 digests and the digests are
/// compared by folding the XOR of every byte, with no early return: the time depends neither
/// on where the first differing byte is nor on the expected token's length (a plain
/// length check would tell a guesser the length, a plain byte loop the matching prefix).
pub(super) fn token_matches(expected: &str, got: Option<&str>) -> bool {
    let Some(got) = got else { return false };
    let a = ring::digest::digest(&ring::digest::SHA256, expected.as_bytes());
    let b = ring::digest::digest(&ring::digest::SHA256, got.as_bytes());
    let diff = a
        .as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box: keep the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Write a reply, giving up after `limit` (a peer that never reads must not pin the task).
async fn write_reply_within(
    stream: &mut (impl AsyncWriteExt + Unpin),
    reply: &Reply,
    limit: Duration,
) -> std::io::Result<()> {
    tokio::time::timeout(limit, write_reply(stream, reply))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

async fn serve_connection(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let max = shared.config.max_line.max(16);
    let idle = shared.config.idle_timeout;
    let mut line = Vec::new();
    loop {
        line.clear();
        // The whole line must arrive within `idle`: silence and trickling alike end here.
        let read = read_line(&mut reader, max, &mut line);
        let n = match tokio::time::timeout(idle, read).await {
            Ok(n) => n?,
            Err(_) => {
                let reply = error_reply(
                    None,
                    format!("idle: no complete request within {idle:?} (idle_timeout); closing"),
                );
                let _ = write_reply_within(&mut write, &reply, idle).await;
                return Ok(());
            }
        };
        if n == 0 {
            return Ok(());
        }
        // No newline and over the limit: the stream cannot be resynchronised. (No newline
        // within the limit means EOF mid-line: that line is answered below.)
        if line.last() != Some(&b'\n') && line.len() > max {
            let reply = error_reply(None, format!("line longer than {max} bytes"));
            write_reply_within(&mut write, &reply, idle).await?;
            return Ok(());
        }
        let text = trim_line(&line);
        if text.is_empty() {
            continue;
        }
        let identity = shared.identity.borrow().clone();
        let (reply, close) = handle_line(text, shared, identity);
        write_reply_within(&mut write, &reply, idle).await?;
        if close {
            return Ok(());
        }
    }
}

/// Answer one request line; `true` = close the connection after replying.
fn handle_line(text: &[u8], shared: &Shared, identity: Option<AppIdentity>) -> (Reply, bool) {
    let req: Request = match serde_json::from_slice(text) {
        Ok(r) => r,
        Err(e) => return (error_reply(identity, format!("bad request: {e}")), false),
    };
    if let Some(expected) = &shared.config.token {
        if !token_matches(expected, req.token.as_deref()) {
            return (error_reply(None, "unauthorized"), true);
        }
    }
    let cmd = match req.op {
        Op::Hello => None,
        Op::Leave {
            cooldown_ms,
            reason,
        } => Some(ControlCommand::Leave {
            cooldown: Duration::from_millis(cooldown_ms).min(shared.config.max_cooldown),
            reason,
        }),
        Op::Rejoin { reason } => Some(ControlCommand::Rejoin { reason }),
        Op::Capacity(s) => Some(ControlCommand::Capacity(s.sanitised())),
    };
    if let Some(cmd) = cmd {
        let membership = matches!(
            cmd,
            ControlCommand::Leave { .. } | ControlCommand::Rejoin { .. }
        );
        // Held across the check and the send, so two connections cannot both slip through.
        let mut last = shared
            .last_membership
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let min = shared.config.min_membership_interval;
        if membership {
            if let Some(wait) = last.and_then(|t| min.checked_sub(t.elapsed())) {
                if !wait.is_zero() {
                    let msg = format!(
                        "rate limited: at most one leave/rejoin per {min:?} \
                         (min_membership_interval); next accepted in {wait:?}"
                    );
                    return (error_reply(identity, msg), false);
                }
            }
        }
        match shared.commands.try_send(cmd) {
            Ok(()) => {
                if membership {
                    *last = Some(Instant::now());
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                return (error_reply(identity, "busy: command queue full"), false)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return (
                    error_reply(identity, "consumer is not accepting commands"),
                    false,
                )
            }
        }
    }
    (
        Reply {
            ok: true,
            identity,
            error: None,
        },
        false,
    )
}
