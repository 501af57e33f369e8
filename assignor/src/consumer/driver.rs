//! The driver: the background task that runs the sans-IO [`Membership`] machine against the
//! group coordinator. It feeds the machine its inputs (application commands, broker answers,
//! timer ticks), sends the requests the machine asks for (see [`super::translate`]), and hands
//! partition callbacks to the application-facing [`super::Consumer`], which runs them in its
//! `poll`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lagbalance_assign::Assignor;
use tokio::sync::mpsc;

use super::lag_sampler::LagSampler;
use super::translate::{failure, partition_counts, send_request};
use super::{ConsumerConfig, GroupIdentity, MAX_DISTINCT_ERRORS};
use crate::cluster::Client;
use crate::error::BrokerCode;
use crate::group::{GroupFatal, Input, JoinAnswer, Membership, Output, Request, Response};

/// What the driver tells the consumer. Callbacks come as one batch from the machine and are
/// acknowledged as a whole.
pub(super) enum Event {
    Callbacks(Vec<Output>),
    Fatal(GroupFatal),
    Closed,
}

/// Messages into the driver.
pub(super) enum ToGroup {
    Input(Input),
    Stop,
}

/// State the driver publishes for the consumer to read.
pub(super) struct Shared {
    pub(super) identity: Mutex<GroupIdentity>,
    /// [`Membership::owned_valid_until`] as an instant: no record may be handed to the
    /// application after it. Published after the step's events are sent, so a consumer that
    /// reads it and then drains its events has seen every callback that came before it.
    hand_out_until: Mutex<Option<Instant>>,
}

impl Shared {
    pub(super) fn new(identity: GroupIdentity) -> Shared {
        Shared {
            identity: Mutex::new(identity),
            hand_out_until: Mutex::new(None),
        }
    }

    pub(super) fn hand_out_until(&self) -> Option<Instant> {
        self.hand_out_until.lock().ok().and_then(|t| *t)
    }
}

/// The background task's state.
pub(super) struct Driver {
    client: Client,
    machine: Membership,
    epoch: Instant,
    events: mpsc::UnboundedSender<Event>,
    shared: Arc<Shared>,
    answers: (mpsc::UnboundedSender<Input>, mpsc::UnboundedReceiver<Input>),
    join_timeout: Duration,
    group_id: String,
    /// Lag per partition sampled in the background, for the leader's plan.
    lag: LagSampler,
    offers_lagbalance: bool,
}

impl Driver {
    pub(super) fn new(
        client: Client,
        config: &ConsumerConfig,
        assignors: Vec<Box<dyn Assignor>>,
        events: mpsc::UnboundedSender<Event>,
        shared: Arc<Shared>,
    ) -> Driver {
        Driver {
            lag: LagSampler::new(client.clone(), config.group.group_id.clone()),
            client,
            machine: Membership::new(config.group.clone(), assignors, 0),
            epoch: Instant::now(),
            events,
            shared,
            answers: mpsc::unbounded_channel(),
            join_timeout: Duration::from_millis(config.group.max_poll_interval_ms)
                + config.client.connection.request_timeout,
            group_id: config.group.group_id.clone(),
            offers_lagbalance: config.assignors.iter().any(|a| a == "lagbalance"),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Run until told to stop (or the consumer is gone).
    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<ToGroup>) {
        loop {
            let wake = self
                .machine
                .next_timer()
                .map(|t| t.saturating_sub(self.now()))
                .unwrap_or(1_000)
                .clamp(1, 1_000);
            let input = tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(ToGroup::Input(i)) => i,
                    Some(ToGroup::Stop) | None => {
                        self.lag.stop();
                        return;
                    }
                },
                Some(answer) = self.answers.1.recv() => answer,
                _ = tokio::time::sleep(Duration::from_millis(wake)) => Input::Tick,
            };
            if let Input::Subscribe(topics) = &input {
                if self.offers_lagbalance {
                    self.lag.start(topics.clone());
                }
            }
            if let Some(code) = error_in(&input) {
                if let Ok(mut id) = self.shared.identity.lock() {
                    id.last_error = Some(code);
                    id.errors += 1;
                    let codes = &mut id.error_codes;
                    if let Some((_, n)) = codes.iter_mut().find(|(c, _)| *c == code) {
                        *n += 1;
                    } else if codes.len() < MAX_DISTINCT_ERRORS {
                        codes.push((code, 1));
                    }
                }
            }
            let now = self.now();
            if !matches!(input, Input::Tick | Input::Polled) {
                tracing::debug!(?input, phase = ?self.machine.phase(), "group input");
            }
            self.machine.handle(now, input);
            self.publish_identity();
            let mut callbacks = Vec::new();
            while let Some(out) = self.machine.poll_output() {
                tracing::debug!(output = ?out, "group output");
                match out {
                    Output::Send { id, request } => self.dispatch(id, request),
                    Output::LeaderInputsNeeded { id, topics } => self.leader_inputs(id, topics),
                    Output::Fatal(why) => {
                        if !callbacks.is_empty() {
                            let _ = self
                                .events
                                .send(Event::Callbacks(std::mem::take(&mut callbacks)));
                        }
                        let _ = self.events.send(Event::Fatal(why));
                    }
                    Output::Closed => {
                        let _ = self.events.send(Event::Closed);
                    }
                    cb @ (Output::Revoke { .. } | Output::Assign { .. } | Output::Lost { .. }) => {
                        callbacks.push(cb)
                    }
                }
            }
            if !callbacks.is_empty() {
                let _ = self.events.send(Event::Callbacks(callbacks));
            }
            self.publish_hand_out_until();
        }
    }

    fn publish_hand_out_until(&self) {
        let until = self
            .machine
            .owned_valid_until()
            .map(|ms| self.epoch + Duration::from_millis(ms));
        if let Ok(mut t) = self.shared.hand_out_until.lock() {
            *t = until;
        }
    }

    fn publish_identity(&self) {
        if let Ok(mut id) = self.shared.identity.lock() {
            id.member_id = self.machine.member_id().to_owned();
            id.generation = self.machine.generation();
            id.leader = self.machine.is_leader();
            id.protocol = self.machine.protocol().map(str::to_owned);
        }
    }

    fn dispatch(&self, id: u64, request: Request) {
        let client = self.client.clone();
        let coordinator = self.machine.coordinator().map(|c| c.1.clone());
        let answers = self.answers.0.clone();
        let group = self.group_id.clone();
        let join_timeout = self.join_timeout;
        tokio::spawn(async move {
            let input =
                match send_request(&client, coordinator, &group, request, join_timeout).await {
                    Ok(response) => Input::Response { id, response },
                    Err(e) => failure(id, &e),
                };
            let _ = answers.send(input);
        });
    }

    /// Metadata (and the latest lag sample, for lagbalance) for the leader's plan.
    fn leader_inputs(&self, id: u64, topics: Vec<String>) {
        let client = self.client.clone();
        let answers = self.answers.0.clone();
        let stats = if self.machine.protocol() == Some("lagbalance") {
            self.lag.fresh_loads()
        } else {
            None
        };
        tokio::spawn(async move {
            let input = match partition_counts(&client, &topics).await {
                Ok(topics) => Input::LeaderInputs { id, topics, stats },
                Err(e) => failure(id, &e),
            };
            let _ = answers.send(input);
        });
    }
}

/// The error code an input carries, if any.
fn error_in(input: &Input) -> Option<BrokerCode> {
    let code = match input {
        Input::Response { response, .. } => match response {
            Response::Join(JoinAnswer { error, .. })
            | Response::Sync { error, .. }
            | Response::Heartbeat { error }
            | Response::Leave { error }
            | Response::CoordinatorError { error } => *error,
            Response::Coordinator { .. } => BrokerCode::NONE,
        },
        Input::CommitFailed { error, .. } => *error,
        _ => BrokerCode::NONE,
    };
    (!code.is_ok()).then_some(code)
}
