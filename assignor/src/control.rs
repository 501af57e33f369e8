//! The loopback control channel between a consumer and its sidecar agent.
//!
//! The **consumer** (the app) owns a tiny TCP listener on `127.0.0.1`; the **agent** connects to
//! it. Each side writes newline-delimited JSON: one [`Request`] per line from the agent, one
//! [`Reply`] per line back, in order. The app turns requests into [`ControlCommand`]s on a
//! bounded `tokio::sync::mpsc` channel and answers every request with the member's current
//! [`MemberIdentity`], which the consumer publishes through [`ControlHandle::set_identity`].
//!
//! ```text
//! agent → {"op":"hello","token":"s3cret"}
//! app   ← {"ok":true,"identity":{"group":"orders","member_id":"c-1-…","instance_id":"pod-0","generation":7}}
//! agent → {"op":"leave","cooldown_ms":30000,"reason":"lag 9000 > 3× peer median 1200","token":"s3cret"}
//! app   ← {"ok":true,"identity":{…}}
//! agent → {"op":"capacity","cpu_used_cores":0.8,"cpu_limit_cores":2.0,"measured_at_ms":1700000000000}
//! app   ← {"ok":true,"identity":{…}}
//! agent → not json
//! app   ← {"ok":false,"error":"bad request: expected ident at line 1 column 2"}   (connection kept)
//! ```
//!
//! Why the app listens and the agent dials: the agent is the component that comes and goes
//! (restarts, upgrades, can be absent); the app's listener just waits. Nothing the consumer does
//! depends on a peer being connected, so the channel is **fail-open**: with no agent the receiver
//! simply never yields a command.
//!
//! Safety rails, because anything on the host can dial a loopback port:
//! - binding a non-loopback address is refused unless [`ControlConfig::allow_non_loopback`] is
//!   set, and then a token is required;
//! - with a token configured, every request must carry it; a wrong or missing token gets an
//!   `unauthorized` reply and the connection is closed. The comparison takes the same time
//!   whatever the guess (both sides are hashed to fixed-size digests first), so the token
//!   cannot be found byte by byte, nor its length, from reply times;
//! - a connection that does not complete a request line within
//!   [`ControlConfig::idle_timeout`] is closed, so idle or trickling peers cannot hold the
//!   [`ControlConfig::max_connections`] slots and lock the agent out;
//! - `leave` and `rejoin` requests are accepted at most once per
//!   [`ControlConfig::min_membership_interval`]; the excess is answered with an error naming
//!   the limit. This is the consumer's own storm guard: a buggy or hostile peer (or several
//!   agents) cannot bounce the member in and out of its group, whatever guard the agent has;
//! - lines are capped at [`ControlConfig::max_line`] bytes (an over-long line closes the
//!   connection, the stream cannot be resynchronised), connections at
//!   [`ControlConfig::max_connections`];
//! - a `leave` cooldown is clamped to [`ControlConfig::max_cooldown`], so a misbehaving peer
//!   cannot park the consumer outside its group;
//! - commands are queued with `try_send`: a full queue is answered `busy`, never awaited, so a
//!   slow consumer never blocks the listener and a chatty agent cannot grow memory.
//!
//! Enabling it in a consumer is one call:
//!
//! ```no_run
//! # async fn demo() -> Result<(), lagbalance::control::ControlError> {
//! use lagbalance::control::{serve, ControlCommand, ControlConfig, MemberIdentity};
//! let (handle, mut commands) = serve(ControlConfig::loopback(9470)).await?;
//! handle.set_identity(Some(MemberIdentity {
//!     group: "orders".into(),
//!     member_id: "consumer-1-abc".into(),
//!     instance_id: Some("pod-0".into()),
//!     generation: 3,
//!     partitions: vec![("orders".into(), 0), ("orders".into(), 1)],
//! }));
//! while let Some(cmd) = commands.recv().await {
//!     match cmd {
//!         ControlCommand::Leave { cooldown, reason } => { /* LeaveGroup, sleep cooldown, rejoin */ }
//!         ControlCommand::Rejoin { reason } => { /* rejoin with fresh user data */ }
//!         ControlCommand::Capacity(sample) => { /* sample.apply_to(&mut member_stats) */ }
//!     }
//! }
//! # Ok(()) }
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::assign::model::MemberStats;

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

/// CPU measured by the agent for the pod. Fold into [`MemberStats`] with
/// [`CapacitySample::apply_to`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacitySample {
    /// Cores in use (finite, ≥ 0) or `None`.
    #[serde(default)]
    pub cpu_used_cores: Option<f64>,
    /// Core limit of the pod (finite, > 0) or `None`.
    #[serde(default)]
    pub cpu_limit_cores: Option<f64>,
    /// Agent's wall clock, milliseconds since the Unix epoch.
    #[serde(default)]
    pub measured_at_ms: u64,
}

impl CapacitySample {
    /// Drop values that are not plausible numbers (NaN, infinite, negative, zero limit).
    pub fn sanitised(mut self) -> Self {
        self.cpu_used_cores = self.cpu_used_cores.filter(|c| c.is_finite() && *c >= 0.0);
        self.cpu_limit_cores = self.cpu_limit_cores.filter(|c| c.is_finite() && *c > 0.0);
        self
    }

    /// Copy the CPU figures into the stats the member publishes in its subscription.
    /// Unknown values leave the member's own figures untouched.
    pub fn apply_to(&self, stats: &mut MemberStats) {
        if let Some(u) = self.cpu_used_cores {
            stats.cpu_used_cores = Some(u);
        }
        if let Some(l) = self.cpu_limit_cores {
            stats.cpu_limit_cores = Some(l);
        }
    }
}

/// Who the consumer currently is in its group; published by the consumer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberIdentity {
    pub group: String,
    pub member_id: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Current generation, −1 when not in a generation.
    #[serde(default = "minus_one")]
    pub generation: i32,
    /// Partitions currently assigned to this member. The agent needs them where the broker's
    /// DescribeGroups hides assignments (tansu 0.6.0 returns empty member blobs).
    #[serde(default)]
    pub partitions: Vec<(String, i32)>,
}

fn minus_one() -> i32 {
    -1
}

/// One request line from the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Shared token, required when the listener has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(flatten)]
    pub op: Op,
}

/// The operation of a [`Request`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Only ask for the identity.
    Hello,
    Leave {
        cooldown_ms: u64,
        #[serde(default)]
        reason: String,
    },
    Rejoin {
        #[serde(default)]
        reason: String,
    },
    Capacity(CapacitySample),
}

/// One reply line from the consumer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// The member's identity as the consumer last published it (`None` before it joined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<MemberIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Failures of the control channel.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control channel: refusing to bind non-loopback address {0} (set allow_non_loopback and a token to allow it)")]
    NonLoopback(SocketAddr),
    #[error("control channel: a non-loopback bind requires a token")]
    TokenRequired,
    #[error("control channel: invalid {var} value {value:?}: {reason}")]
    BadEnv {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("control channel i/o on {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("control channel protocol: {0}")]
    Protocol(String),
    #[error("control channel: the consumer refused: {0}")]
    Refused(String),
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
            max_line: 64 * 1024,
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
        let bind: SocketAddr = addr.trim().parse().map_err(|e| ControlError::BadEnv {
            var: ENV_CONTROL_ADDR,
            value: addr.clone(),
            reason: format!("expected ip:port such as 127.0.0.1:{DEFAULT_CONTROL_PORT} ({e})"),
        })?;
        let mut cfg = ControlConfig::loopback(bind.port());
        cfg.bind = bind;
        cfg.token = get(ENV_CONTROL_TOKEN).filter(|t| !t.is_empty());
        if let Some(ms) = get(ENV_CONTROL_MIN_INTERVAL_MS).filter(|v| !v.trim().is_empty()) {
            let parsed: u64 = ms.trim().parse().map_err(|e| ControlError::BadEnv {
                var: ENV_CONTROL_MIN_INTERVAL_MS,
                value: ms.clone(),
                reason: format!("expected milliseconds ({e})"),
            })?;
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
    identity: watch::Sender<Option<MemberIdentity>>,
    task: JoinHandle<()>,
}

impl ControlHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Publish the member's identity (call after every successful join / generation change;
    /// `None` when out of the group).
    pub fn set_identity(&self, identity: Option<MemberIdentity>) {
        self.identity.send_replace(identity);
    }

    /// A sender the consumer can keep instead of the handle (e.g. inside its membership task).
    pub fn identity_sender(&self) -> watch::Sender<Option<MemberIdentity>> {
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
    identity: watch::Receiver<Option<MemberIdentity>>,
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

fn error_reply(identity: Option<MemberIdentity>, msg: impl Into<String>) -> Reply {
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
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.flush().await
}

/// Constant-time token check. Both tokens are hashed to SHA-256 digests and the digests are
/// compared by folding the XOR of every byte, with no early return: the time depends neither
/// on where the first differing byte is nor on the expected token's length (a plain
/// length check would tell a guesser the length, a plain byte loop the matching prefix).
fn token_matches(expected: &str, got: Option<&str>) -> bool {
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
        let mut limited = (&mut reader).take(max as u64 + 1);
        let read = limited.read_until(b'\n', &mut line);
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

fn trim_line(line: &[u8]) -> &[u8] {
    let mut s = line;
    while let [rest @ .., b'\n' | b'\r' | b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Answer one request line; `true` = close the connection after replying.
fn handle_line(text: &[u8], shared: &Shared, identity: Option<MemberIdentity>) -> (Reply, bool) {
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

/// The agent's end: one connection to the consumer's listener, one request at a time.
pub struct ControlClient {
    addr: SocketAddr,
    token: Option<String>,
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    max_line: usize,
}

impl ControlClient {
    /// Connect to `addr` (must be loopback) within `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ControlError> {
        if !addr.ip().is_loopback() {
            return Err(ControlError::NonLoopback(addr));
        }
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ControlError::Io {
                addr,
                source: std::io::ErrorKind::TimedOut.into(),
            })?
            .map_err(|source| ControlError::Io { addr, source })?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Ok(ControlClient {
            addr,
            token,
            reader: BufReader::new(r),
            writer: w,
            max_line: 64 * 1024,
        })
    }

    /// Send `op` and wait up to `timeout` for the reply. A reply with `ok: false` is returned as
    /// is (the caller decides); transport and parse failures are errors.
    pub async fn request(&mut self, op: Op, timeout: Duration) -> Result<Reply, ControlError> {
        let addr = self.addr;
        let io = |source| ControlError::Io { addr, source };
        let req = Request {
            token: self.token.clone(),
            op,
        };
        let mut line =
            serde_json::to_vec(&req).map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push(b'\n');
        let max = self.max_line;
        let fut = async {
            self.writer.write_all(&line).await.map_err(io)?;
            let mut buf = Vec::new();
            let n = (&mut self.reader)
                .take(max as u64 + 1)
                .read_until(b'\n', &mut buf)
                .await
                .map_err(io)?;
            if n == 0 {
                return Err(ControlError::Io {
                    addr,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            if buf.last() != Some(&b'\n') {
                return Err(ControlError::Protocol("reply too long or truncated".into()));
            }
            serde_json::from_slice::<Reply>(trim_line(&buf))
                .map_err(|e| ControlError::Protocol(format!("bad reply: {e}")))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ControlError::Io {
                addr,
                source: std::io::ErrorKind::TimedOut.into(),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    const T: Duration = Duration::from_secs(5);

    struct Raw {
        reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
        writer: tokio::net::tcp::OwnedWriteHalf,
    }

    impl Raw {
        async fn connect(addr: SocketAddr) -> Raw {
            let s = TcpStream::connect(addr).await.unwrap();
            let (r, w) = s.into_split();
            Raw {
                reader: BufReader::new(r),
                writer: w,
            }
        }
        /// Send raw bytes, read one reply line (`None` on EOF).
        async fn send(&mut self, bytes: &[u8]) -> Option<Reply> {
            self.writer.write_all(bytes).await.unwrap();
            self.read().await
        }
        async fn read(&mut self) -> Option<Reply> {
            let mut line = String::new();
            let n = tokio::time::timeout(T, self.reader.read_line(&mut line))
                .await
                .expect("reply within deadline")
                .unwrap_or(0);
            (n > 0).then(|| serde_json::from_str(&line).expect("reply is JSON"))
        }
    }

    fn ident() -> MemberIdentity {
        MemberIdentity {
            group: "g".into(),
            member_id: "m-1".into(),
            instance_id: Some("pod-0".into()),
            generation: 4,
            partitions: vec![("t".into(), 0)],
        }
    }

    #[tokio::test]
    async fn commands_flow_and_identity_is_answered() {
        let mut cfg = ControlConfig::loopback(0);
        cfg.min_membership_interval = Duration::ZERO;
        let (handle, mut rx) = serve(cfg).await.unwrap();
        let mut c = ControlClient::connect(handle.local_addr(), None, T)
            .await
            .unwrap();
        let r = c.request(Op::Hello, T).await.unwrap();
        assert!(r.ok);
        assert_eq!(
            r.identity, None,
            "no identity before the consumer publishes one"
        );
        handle.set_identity(Some(ident()));
        let r = c
            .request(
                Op::Leave {
                    cooldown_ms: 1500,
                    reason: "slow".into(),
                },
                T,
            )
            .await
            .unwrap();
        assert!(r.ok);
        assert_eq!(r.identity, Some(ident()));
        assert_eq!(
            rx.recv().await,
            Some(ControlCommand::Leave {
                cooldown: Duration::from_millis(1500),
                reason: "slow".into()
            })
        );
        c.request(Op::Rejoin { reason: "x".into() }, T)
            .await
            .unwrap();
        assert_eq!(
            rx.recv().await,
            Some(ControlCommand::Rejoin { reason: "x".into() })
        );
        c.request(
            Op::Capacity(CapacitySample {
                cpu_used_cores: Some(f64::NAN),
                cpu_limit_cores: Some(2.0),
                measured_at_ms: 9,
            }),
            T,
        )
        .await
        .unwrap();
        let Some(ControlCommand::Capacity(s)) = rx.recv().await else {
            panic!("expected capacity")
        };
        assert_eq!(s.cpu_used_cores, None, "NaN sanitised away");
        let mut stats = MemberStats::default();
        s.apply_to(&mut stats);
        assert_eq!(stats.cpu_limit_cores, Some(2.0));
    }

    #[tokio::test]
    async fn bad_json_gets_an_error_and_the_connection_stays() {
        let (handle, mut rx) = serve(ControlConfig::loopback(0)).await.unwrap();
        let mut raw = Raw::connect(handle.local_addr()).await;
        for bad in [
            &b"not json\n"[..],
            b"{\"op\":\"explode\"}\n",
            b"{\"op\":\"leave\",\"cooldown_ms\":-5}\n",
            b"\xff\xfe\n",
            b"[1,2,3]\n",
        ] {
            let r = raw.send(bad).await.expect("a reply, not a closed socket");
            assert!(!r.ok, "{bad:?}");
            assert!(r.error.unwrap().starts_with("bad request"));
        }
        // Same connection still works.
        let r = raw
            .send(b"{\"op\":\"rejoin\",\"reason\":\"after garbage\"}\r\n")
            .await
            .unwrap();
        assert!(r.ok);
        assert_eq!(
            rx.recv().await,
            Some(ControlCommand::Rejoin {
                reason: "after garbage".into()
            })
        );
    }

    #[tokio::test]
    async fn wrong_token_is_refused_and_closed() {
        let (handle, mut rx) = serve(ControlConfig::loopback(0).with_token("s3cret"))
            .await
            .unwrap();
        handle.set_identity(Some(ident()));
        let mut raw = Raw::connect(handle.local_addr()).await;
        let r = raw
            .send(b"{\"op\":\"rejoin\",\"token\":\"guess\"}\n")
            .await
            .unwrap();
        assert!(!r.ok);
        assert_eq!(r.error.as_deref(), Some("unauthorized"));
        assert_eq!(r.identity, None, "nothing leaks to an unauthorised peer");
        assert_eq!(raw.read().await, None, "connection closed");
        // Missing token: same.
        let mut raw = Raw::connect(handle.local_addr()).await;
        let r = raw.send(b"{\"op\":\"hello\"}\n").await.unwrap();
        assert_eq!(r.error.as_deref(), Some("unauthorized"));
        assert!(rx.try_recv().is_err(), "no command from refused peers");
        // Right token works.
        let mut c = ControlClient::connect(handle.local_addr(), Some("s3cret".into()), T)
            .await
            .unwrap();
        let r = c.request(Op::Hello, T).await.unwrap();
        assert!(r.ok);
        assert_eq!(r.identity, Some(ident()));
    }

    #[tokio::test]
    async fn the_default_listener_is_loopback_only() {
        let cfg = ControlConfig::loopback(0);
        assert!(!cfg.allow_non_loopback);
        assert!(cfg.token.is_none());
        let (h, _rx) = serve(cfg).await.unwrap();
        assert_eq!(h.local_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[tokio::test]
    async fn non_loopback_bind_is_refused() {
        let mut cfg = ControlConfig::loopback(0);
        cfg.bind = "0.0.0.0:0".parse().unwrap();
        assert!(matches!(
            serve(cfg.clone()).await,
            Err(ControlError::NonLoopback(_))
        ));
        cfg.allow_non_loopback = true;
        assert!(matches!(
            serve(cfg.clone()).await,
            Err(ControlError::TokenRequired)
        ));
        cfg.token = Some("t".into());
        let (h, _rx) = serve(cfg).await.expect("explicitly allowed with a token");
        assert!(h.local_addr().ip().is_unspecified());
        // The agent side refuses to dial a non-loopback address too.
        assert!(matches!(
            ControlClient::connect("10.0.0.1:9".parse().unwrap(), None, T).await,
            Err(ControlError::NonLoopback(_))
        ));
    }

    #[tokio::test]
    async fn long_lines_close_busy_queue_answers_and_cooldown_is_clamped() {
        let mut cfg = ControlConfig::loopback(0);
        cfg.max_line = 64;
        cfg.queue = 1;
        cfg.max_cooldown = Duration::from_secs(10);
        cfg.min_membership_interval = Duration::ZERO;
        let (handle, mut rx) = serve(cfg).await.unwrap();
        let mut raw = Raw::connect(handle.local_addr()).await;
        let r = raw
            .send(b"{\"op\":\"leave\",\"cooldown_ms\":99999999}\n")
            .await
            .unwrap();
        assert!(r.ok);
        let r = raw.send(b"{\"op\":\"rejoin\"}\n").await.unwrap();
        assert_eq!(r.error.as_deref(), Some("busy: command queue full"));
        assert_eq!(
            rx.recv().await,
            Some(ControlCommand::Leave {
                cooldown: Duration::from_secs(10),
                reason: String::new()
            })
        );
        let mut long = vec![b'x'; 200];
        long.push(b'\n');
        let r = raw.send(&long).await.unwrap();
        assert!(r.error.unwrap().contains("longer than"));
        assert_eq!(raw.read().await, None);
    }

    #[test]
    fn config_from_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(ControlConfig::from_vars(vars(&[])).unwrap().is_none());
        let cfg = ControlConfig::from_vars(vars(&[(ENV_CONTROL_ADDR, "127.0.0.1:0")]))
            .unwrap()
            .unwrap();
        assert_eq!(cfg.min_membership_interval, Duration::from_secs(10));
        assert_eq!(cfg.idle_timeout, Duration::from_secs(60));
        let cfg = ControlConfig::from_vars(vars(&[
            (ENV_CONTROL_ADDR, "127.0.0.1:9470"),
            (ENV_CONTROL_TOKEN, "t"),
            (ENV_CONTROL_MIN_INTERVAL_MS, "0"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(cfg.min_membership_interval, Duration::ZERO);
        assert_eq!(cfg.token.as_deref(), Some("t"));
        let e = ControlConfig::from_vars(vars(&[
            (ENV_CONTROL_ADDR, "127.0.0.1:9470"),
            (ENV_CONTROL_MIN_INTERVAL_MS, "soon"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains(ENV_CONTROL_MIN_INTERVAL_MS), "{e}");
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(token_matches("s3cret", Some("s3cret")));
        for wrong in [
            "",
            "s",
            "s3cre",
            "s3cret ",
            "s3cres",
            "S3cret",
            "s3cret-and-more",
            "x",
        ] {
            assert!(!token_matches("s3cret", Some(wrong)), "{wrong:?}");
        }
        assert!(
            !token_matches("s3cret", None),
            "a missing token never matches"
        );
        assert!(!token_matches("", None));
        assert!(token_matches("", Some("")));
        // Non-ASCII and long tokens compare like any other bytes.
        let long = "ü".repeat(10_000);
        assert!(token_matches(&long, Some(&long)));
        assert!(!token_matches(&long, Some(&long[..long.len() - 2])));
    }

    #[tokio::test]
    async fn idle_connections_are_closed_and_free_their_slots() {
        let mut cfg = ControlConfig::loopback(0);
        cfg.max_connections = 2;
        cfg.idle_timeout = Duration::from_millis(400);
        let (handle, _rx) = serve(cfg).await.unwrap();
        let addr = handle.local_addr();
        let opened = tokio::time::Instant::now();
        // One silent peer, one that trickles half a request and stops.
        let mut silent = Raw::connect(addr).await;
        let mut trickle = Raw::connect(addr).await;
        trickle.writer.write_all(b"{\"op\":").await.unwrap();
        // Both slots are taken: a third peer is turned away.
        let mut third = Raw::connect(addr).await;
        let r = third.read().await.expect("a refusal");
        assert_eq!(r.error.as_deref(), Some("too many connections"));
        // The idle ones are closed with a reply naming the reason…
        for raw in [&mut silent, &mut trickle] {
            let r = raw.read().await.expect("an idle notice before the close");
            assert!(r.error.unwrap().contains("idle_timeout"));
            assert_eq!(raw.read().await, None, "closed");
        }
        assert!(
            opened.elapsed() >= Duration::from_millis(400),
            "closed early"
        );
        // …and the agent gets in again.
        let mut c = ControlClient::connect(addr, None, T).await.unwrap();
        assert!(c.request(Op::Hello, T).await.unwrap().ok);
        // A peer that keeps talking is not idle, however long it stays.
        let started = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_millis(1000) {
            assert!(c.request(Op::Hello, T).await.unwrap().ok);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn leave_and_rejoin_are_rate_limited_by_the_consumer() {
        let mut cfg = ControlConfig::loopback(0);
        cfg.min_membership_interval = Duration::from_millis(500);
        let (handle, mut rx) = serve(cfg).await.unwrap();
        handle.set_identity(Some(ident()));
        let mut a = ControlClient::connect(handle.local_addr(), None, T)
            .await
            .unwrap();
        let mut b = ControlClient::connect(handle.local_addr(), None, T)
            .await
            .unwrap();
        let accepted = tokio::time::Instant::now();
        assert!(
            a.request(Op::Rejoin { reason: "1".into() }, T)
                .await
                .unwrap()
                .ok
        );
        // From any connection, leave or rejoin: refused with the limit named.
        for (c, op) in [
            (&mut a, Op::Rejoin { reason: "2".into() }),
            (
                &mut b,
                Op::Leave {
                    cooldown_ms: 1,
                    reason: "3".into(),
                },
            ),
        ] {
            let r = c.request(op, T).await.unwrap();
            assert!(!r.ok);
            let e = r.error.unwrap();
            assert!(e.contains("rate limited") && e.contains("500ms"), "{e}");
            assert!(e.contains("min_membership_interval"), "{e}");
            assert_eq!(r.identity, Some(ident()), "the peer is authorised");
        }
        // Other requests are not limited.
        assert!(b.request(Op::Hello, T).await.unwrap().ok);
        assert!(
            b.request(Op::Capacity(CapacitySample::default()), T)
                .await
                .unwrap()
                .ok
        );
        // Accepted again once the interval has passed (and not before).
        loop {
            let r = b
                .request(Op::Rejoin { reason: "4".into() }, T)
                .await
                .unwrap();
            if r.ok {
                break;
            }
            assert!(accepted.elapsed() < T, "never accepted again: {r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(accepted.elapsed() >= Duration::from_millis(500));
        let mut got = Vec::new();
        while let Ok(cmd) = rx.try_recv() {
            got.push(cmd);
        }
        let membership: Vec<_> = got
            .into_iter()
            .filter(|c| !matches!(c, ControlCommand::Capacity(_)))
            .collect();
        assert_eq!(
            membership,
            vec![
                ControlCommand::Rejoin { reason: "1".into() },
                ControlCommand::Rejoin { reason: "4".into() }
            ]
        );
    }

    #[tokio::test]
    async fn fail_open_when_the_consumer_dropped_its_receiver() {
        let (handle, rx) = serve(ControlConfig::loopback(0)).await.unwrap();
        drop(rx);
        let mut c = ControlClient::connect(handle.local_addr(), None, T)
            .await
            .unwrap();
        let r = c
            .request(Op::Rejoin { reason: "r".into() }, T)
            .await
            .unwrap();
        assert!(!r.ok);
        // And an agent dialling a port nobody listens on gets an error, not a hang.
        let addr = handle.local_addr();
        drop(handle);
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match ControlClient::connect(addr, None, T).await {
                Err(ControlError::Io { .. }) => break,
                Ok(mut c) => {
                    // Listener task is being aborted; an accepted-but-dead connection must
                    // end in an error too.
                    if c.request(Op::Hello, Duration::from_millis(200))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "listener never stopped"
            );
            tokio::task::yield_now().await;
        }
    }
}
