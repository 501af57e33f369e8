//! The agent link: the consumer's end of the sidecar agent's control channel. It forwards the
//! agent's commands (rejoin, leave, CPU samples) to the driver as they arrive and publishes
//! who the member is and what it owns.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::driver::ToGroup;
use crate::control::{AppIdentity, CapacitySample, ControlCommand, ControlConfig, ControlHandle};
use crate::error::{Error, Result};
use crate::group::Input;

/// A running control listener and the task forwarding its commands.
pub(super) struct AgentLink {
    handle: ControlHandle,
    published: Option<AppIdentity>,
    /// The agent's latest CPU sample, for the next [`lagbalance_assign::MemberStats`].
    cpu: Arc<Mutex<Option<CapacitySample>>>,
    /// Hands the agent's commands to the driver (see [`forward`]).
    forwarder: JoinHandle<()>,
}

impl AgentLink {
    /// Start listening as `config` says; the agent's commands go to the driver via `to_group`.
    pub(super) async fn start(
        config: ControlConfig,
        to_group: mpsc::UnboundedSender<ToGroup>,
    ) -> Result<AgentLink> {
        let (handle, commands) = crate::control::serve(config)
            .await
            .map_err(|e| Error::Config(format!("control channel: {e}")))?;
        let cpu = Arc::new(Mutex::new(None));
        let forwarder = tokio::spawn(forward(commands, to_group, cpu.clone()));
        Ok(AgentLink {
            handle,
            published: None,
            cpu,
            forwarder,
        })
    }

    /// The address the agent should connect to.
    pub(super) fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Tell the agent who we are and what we own (cheap when nothing changed).
    pub(super) fn publish(&mut self, now: Option<AppIdentity>) {
        if now != self.published {
            self.handle.set_identity(now.clone());
            self.published = now;
        }
    }

    /// The agent's latest CPU sample, if it sent one.
    pub(super) fn cpu(&self) -> Option<CapacitySample> {
        self.cpu.lock().ok().and_then(|s| s.clone())
    }
}

impl Drop for AgentLink {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

/// Serve the agent's commands as they arrive, not at the application's next `poll`: a member
/// whose host got slow spends seconds per batch, which is when its agent asks it to rejoin
/// (a worker at 6 ms per record acted 2.7 s late). Rejoin and leave go straight to the driver,
/// whose user data comes from the stats the consumer last published (every 5 s).
async fn forward(
    mut commands: mpsc::Receiver<ControlCommand>,
    to_group: mpsc::UnboundedSender<ToGroup>,
    cpu: Arc<Mutex<Option<CapacitySample>>>,
) {
    while let Some(cmd) = commands.recv().await {
        let input = match cmd {
            ControlCommand::Leave { cooldown, reason } => {
                tracing::info!(%reason, ?cooldown, "agent asked us to leave and rejoin");
                super::leave_and_rejoin_input(cooldown, reason)
            }
            ControlCommand::Rejoin { reason } => {
                tracing::info!(%reason, "agent asked for a rebalance");
                Input::RequestRejoin(reason)
            }
            ControlCommand::Capacity(sample) => {
                if let Ok(mut slot) = cpu.lock() {
                    *slot = Some(sample);
                }
                continue;
            }
        };
        if to_group.send(ToGroup::Input(input)).is_err() {
            return;
        }
    }
}
