//! The loopback control channel between a consumer and its sidecar agent.
//!
//! The **consumer** (the app) owns a tiny TCP listener on `127.0.0.1`; the **agent** connects to
//! it. Each side writes newline-delimited JSON: one [`Request`] per line from the agent, one
//! [`Reply`] per line back, in order. The app turns requests into [`ControlCommand`]s on a
//! bounded `tokio::sync::mpsc` channel and answers every request with the member's current
//! [`AppIdentity`], which the consumer publishes through [`ControlHandle::set_identity`].
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
//! use lagbalance::control::{serve, AppIdentity, ControlCommand, ControlConfig};
//! let (handle, mut commands) = serve(ControlConfig::loopback(9470)).await?;
//! handle.set_identity(Some(AppIdentity {
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
//!
//! One file per job: `protocol` (the messages and their line framing), `server` (the
//! consumer's listener and its settings), `client` (the agent's connection).

mod client;
mod protocol;
mod server;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

pub use client::ControlClient;
pub use protocol::{AppIdentity, CapacitySample, Op, Reply, Request};
pub use server::{
    serve, ControlCommand, ControlConfig, ControlHandle, DEFAULT_CONTROL_PORT, ENV_CONTROL_ADDR,
    ENV_CONTROL_MIN_INTERVAL_MS, ENV_CONTROL_TOKEN,
};

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
