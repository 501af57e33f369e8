//! One TCP connection to one broker: requests multiplexed by correlation id, several in
//! flight, each with its own timeout; the connection fails every pending request with a clear
//! error when it breaks, and never hangs a caller.
//!
//! The byte stream is plain TCP or TLS over it (`security.protocol` SSL / SASL_SSL); SASL
//! authentication runs right after version negotiation, before the connection is handed out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::frame::{self, split_frame};
use super::versions::{api_versions_request, interpret_api_versions, BrokerVersions, Negotiation};
use crate::error::{Error, Result};
use crate::security::{self, SecurityConfig};

/// Settings of one connection.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_frame: usize,
    /// TLS and SASL (`security.protocol` and friends).
    pub security: SecurityConfig,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: "lagbalance".into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_frame: frame::DEFAULT_MAX_FRAME,
            security: SecurityConfig::default(),
        }
    }
}

type Reply = oneshot::Sender<Result<Bytes>>;

/// Requests awaiting their response, and why the connection died once it has.
#[derive(Default)]
struct Pending {
    waiting: HashMap<i32, Reply>,
    closed: Option<Error>,
}

impl Pending {
    /// Mark the connection dead and fail everyone still waiting with the reason.
    fn close(&mut self, reason: Error) {
        if self.closed.is_none() {
            tracing::debug!(%reason, "connection closed");
            self.closed = Some(reason);
        }
        let reason = self.closed.clone().expect("set above");
        for (_, reply) in self.waiting.drain() {
            let _ = reply.send(Err(reason.clone()));
        }
    }

    /// The error a new request on this connection gets, if it is dead.
    fn dead(&self) -> Option<Error> {
        self.closed.clone()
    }
}

/// A connected, version-negotiated broker connection. Cheap to share behind an `Arc`.
pub struct Connection {
    addr: String,
    config: ConnectionConfig,
    versions: BrokerVersions,
    next_correlation: AtomicI32,
    outgoing: mpsc::UnboundedSender<Bytes>,
    pending: Arc<Mutex<Pending>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// When the SASL session the broker granted (KIP-368) is about to end: from then on the
    /// connection counts as closed for new requests, so the pool opens (and authenticates) a
    /// fresh one instead of re-authenticating this one.
    expires_at: Option<std::time::Instant>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Connection {
    /// Connect to `addr` (`host:port`), set up TLS if configured, negotiate API versions and
    /// authenticate with SASL if configured. The connect timeout covers TCP and TLS.
    pub async fn connect(addr: &str, config: ConnectionConfig) -> Result<Connection> {
        let io_err = |source| Error::Io {
            addr: addr.to_owned(),
            source: Arc::new(source),
        };
        let timed_out = || Error::Timeout {
            what: format!("connect to {addr}"),
            after: config.connect_timeout,
        };
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        // Before any I/O, so a bad setting is not mistaken for an unreachable broker.
        let tls = if config.security.protocol.tls() {
            Some((
                security::TlsSetup::build(&config.security)?,
                security::server_name(addr)?,
            ))
        } else {
            None
        };
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        match tls {
            None => {
                let (read_half, write_half) = stream.into_split();
                Self::start(addr, config, read_half, write_half).await
            }
            Some((setup, name)) => {
                let connector = tokio_rustls::TlsConnector::from(setup.config);
                let stream = tokio::time::timeout_at(deadline, connector.connect(name, stream))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| security::tls_error(addr, e))?;
                let (read_half, write_half) = tokio::io::split(stream);
                Self::start(addr, config, read_half, write_half).await
            }
        }
    }

    /// Run the reader and writer over the connected stream, then negotiate and authenticate.
    async fn start<R, W>(
        addr: &str,
        config: ConnectionConfig,
        read_half: R,
        write_half: W,
    ) -> Result<Connection>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (outgoing, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(
            read_half,
            addr.to_owned(),
            config.max_frame,
            pending.clone(),
        ));
        let writer = tokio::spawn(write_loop(write_half, addr.to_owned(), rx, pending.clone()));
        let mut conn = Connection {
            addr: addr.to_owned(),
            config,
            versions: BrokerVersions::default(),
            next_correlation: AtomicI32::new(1),
            outgoing,
            pending,
            reader,
            writer,
            expires_at: None,
        };
        conn.versions = conn.negotiate().await?;
        if conn.config.security.protocol.sasl() {
            let security = conn.config.security.clone();
            let started = std::time::Instant::now();
            if let Some(ms) = security::authenticate(&conn, &security).await? {
                // Leave a tenth of the session (at most a minute) to finish what is in flight.
                let life = Duration::from_millis(ms as u64);
                let margin = (life / 10).min(Duration::from_secs(60));
                conn.expires_at = started.checked_add(life - margin);
            }
        }
        Ok(conn)
    }

    async fn negotiate(&self) -> Result<BrokerVersions> {
        let mut version = 3;
        loop {
            let req = api_versions_request(version);
            let body = self
                .round_trip_raw(&req, version, self.config.request_timeout)
                .await?;
            // The ApiVersions response header is always v0 (KIP-511), so only the
            // correlation id precedes the body.
            match interpret_api_versions(body.slice(4..), version)? {
                Negotiation::Done(v) => return Ok(v),
                Negotiation::RetryWith(v) => version = v,
            }
        }
    }

    /// Address this connection was made to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Versions the broker announced.
    pub fn versions(&self) -> &BrokerVersions {
        &self.versions
    }

    /// Whether the connection is known to be dead, or its SASL session is about to expire
    /// (then requests already sent still get their answers, but new ones belong on a fresh
    /// connection).
    pub fn is_closed(&self) -> bool {
        if self
            .expires_at
            .is_some_and(|at| std::time::Instant::now() >= at)
        {
            return true;
        }
        self.pending
            .lock()
            .map(|p| p.closed.is_some())
            .unwrap_or(true)
    }

    /// The version of `api` we will use with this broker.
    pub fn version(&self, api: ApiKey) -> Result<i16> {
        self.versions.pick(api, &self.addr)
    }

    /// Send `req` at `version` and wait for its response (request timeout applies).
    pub async fn send<R: Request>(&self, req: &R, version: i16) -> Result<R::Response> {
        self.send_with_timeout(req, version, self.config.request_timeout)
            .await
    }

    /// Like [`Self::send`] with an explicit timeout (e.g. Fetch adds its `max_wait`).
    pub async fn send_with_timeout<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        let frame = self.round_trip_raw(req, version, timeout).await?;
        frame::decode_response::<R>(frame, version)
    }

    /// Like [`Self::send_with_timeout`], but when the body does not decode, fall back to the
    /// error code at `error_at` (its byte offset in the body): some peers (librdkafka's mock
    /// cluster) send error responses whose other fields are not valid, and the error is the
    /// part that matters. `make` builds a response carrying just that code.
    pub async fn send_salvaging_error<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
        error_at: usize,
        make: impl FnOnce(i16) -> R::Response,
    ) -> Result<R::Response> {
        let frame = self.round_trip_raw(req, version, timeout).await?;
        match frame::decode_response::<R>(frame.clone(), version) {
            Ok(r) => Ok(r),
            Err(e) => {
                // Non-flexible group responses have a v0 header: the correlation id only.
                let at = 4 + error_at;
                match frame.get(at..at + 2) {
                    Some(b) if i16::from_be_bytes([b[0], b[1]]) != 0 => {
                        let code = i16::from_be_bytes([b[0], b[1]]);
                        tracing::debug!(error = %e, code, "salvaged the error code of an undecodable response");
                        Ok(make(code))
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Send a request that gets no response (Produce with acks = 0).
    pub fn send_oneway<R: Request>(&self, req: &R, version: i16) -> Result<()> {
        let correlation = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let bytes = frame::encode_request(req, version, correlation, &self.config.client_id)?;
        self.check_open()?;
        self.outgoing
            .send(bytes)
            .map_err(|_| Error::ConnectionClosed {
                addr: self.addr.clone(),
            })
    }

    fn check_open(&self) -> Result<()> {
        let closed = self
            .pending
            .lock()
            .map(|p| p.closed.is_some())
            .unwrap_or(true);
        if closed {
            Err(Error::ConnectionClosed {
                addr: self.addr.clone(),
            })
        } else {
            Ok(())
        }
    }

    async fn round_trip_raw<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Bytes> {
        let correlation = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let bytes = frame::encode_request(req, version, correlation, &self.config.client_id)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().map_err(|_| Error::Shutdown)?;
            if let Some(e) = pending.dead() {
                return Err(e);
            }
            // Registered before the bytes are queued, so the reader always finds it.
            pending.waiting.insert(correlation, tx);
        }
        if self.outgoing.send(bytes).is_err() {
            self.forget(correlation);
            return Err(Error::ConnectionClosed {
                addr: self.addr.clone(),
            });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ConnectionClosed {
                addr: self.addr.clone(),
            }),
            Err(_) => {
                self.forget(correlation);
                Err(Error::Timeout {
                    what: format!("{:?} request to {}", frame::api_key(R::KEY)?, self.addr),
                    after: timeout,
                })
            }
        }
    }

    fn forget(&self, correlation: i32) {
        if let Ok(mut p) = self.pending.lock() {
            p.waiting.remove(&correlation);
        }
    }

    /// Close the connection; pending requests fail with `ConnectionClosed`.
    pub fn close(&self) {
        if let Ok(mut p) = self.pending.lock() {
            p.close(Error::ConnectionClosed {
                addr: self.addr.clone(),
            });
        }
        self.reader.abort();
        self.writer.abort();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut half: W,
    addr: String,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    pending: Arc<Mutex<Pending>>,
) {
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = half.write_all(&bytes).await {
            if let Ok(mut p) = pending.lock() {
                p.close(Error::Io {
                    addr: addr.clone(),
                    source: Arc::new(e),
                });
            }
            return;
        }
    }
    let _ = half.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut half: R,
    addr: String,
    max_frame: usize,
    pending: Arc<Mutex<Pending>>,
) {
    let reason = match read_frames(&mut half, &addr, max_frame, &pending).await {
        Ok(()) => Error::ConnectionClosed { addr },
        Err(e) => e,
    };
    if let Ok(mut p) = pending.lock() {
        p.close(reason);
    }
}

/// Read frames until EOF or error, handing each to the request waiting for it.
async fn read_frames<R: AsyncRead + Unpin>(
    half: &mut R,
    addr: &str,
    max_frame: usize,
    pending: &Mutex<Pending>,
) -> Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(frame) = split_frame(&mut buf, max_frame)? {
            let correlation = frame::peek_correlation_id(&frame)?;
            let reply = pending
                .lock()
                .map_err(|_| Error::Shutdown)?
                .waiting
                .remove(&correlation);
            match reply {
                Some(reply) => {
                    let _ = reply.send(Ok(frame));
                }
                // Its caller timed out and left; the answer is no longer wanted.
                None => tracing::debug!(correlation, "response for a forgotten request"),
            }
        }
        // Grow by at most 1 MiB at a time: a large announced frame is only paid for as its
        // bytes actually arrive.
        if let Some(len) = super::frame::frame_len_hint(&buf, max_frame)? {
            let want = (4 + len).saturating_sub(buf.len()).min(1 << 20);
            buf.reserve(want);
        } else {
            buf.reserve(64 * 1024);
        }
        let n = half.read_buf(&mut buf).await.map_err(|source| Error::Io {
            addr: addr.to_owned(),
            source: Arc::new(source),
        })?;
        if n == 0 {
            if !buf.is_empty() {
                return Err(Error::malformed(
                    "response frame",
                    format!(
                        "{addr} closed the connection inside a frame ({} bytes pending)",
                        buf.len()
                    ),
                ));
            }
            return Ok(());
        }
    }
}
