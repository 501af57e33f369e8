//! The agent's side of the control channel: a lazily (re)connected
//! [`lagbalance::control::ControlClient`]. Every failure just drops the connection; the next
//! interval tries again. The app never depends on us (fail-open).

use std::net::SocketAddr;
use std::time::Duration;

use lagbalance::control::{AppIdentity, ControlClient, ControlError, Op, Reply};

pub struct AppLink {
    addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
    conn: Option<ControlClient>,
    /// Identity from the last successful reply.
    pub identity: Option<AppIdentity>,
}

impl AppLink {
    pub fn new(addr: SocketAddr, token: Option<String>, timeout: Duration) -> Self {
        AppLink {
            addr,
            token,
            timeout,
            conn: None,
            identity: None,
        }
    }

    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Send `op`; on success update the identity from the reply.
    pub async fn send(&mut self, op: Op) -> Result<Reply, ControlError> {
        if self.conn.is_none() {
            self.conn =
                Some(ControlClient::connect(self.addr, self.token.clone(), self.timeout).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(ControlError::Protocol("not connected".into()));
        };
        match conn.request(op, self.timeout).await {
            Ok(reply) => {
                if reply.error.as_deref() == Some("unauthorized") {
                    self.conn = None;
                    return Err(ControlError::Refused(
                        "unauthorized (check LAGBALANCE_CONTROL_TOKEN)".into(),
                    ));
                }
                self.identity = reply.identity.clone();
                Ok(reply)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}
