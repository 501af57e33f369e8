//! The agent's end of the control channel: one connection to the consumer's listener, one
//! request at a time.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::protocol::{encode_line, read_line, trim_line, DEFAULT_MAX_LINE};
use super::{ControlError, Op, Reply, Request};

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
            max_line: DEFAULT_MAX_LINE,
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
        let line = encode_line(&req).map_err(|e| ControlError::Protocol(e.to_string()))?;
        let max = self.max_line;
        let fut = async {
            self.writer.write_all(&line).await.map_err(io)?;
            let mut buf = Vec::new();
            let n = read_line(&mut self.reader, max, &mut buf)
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
