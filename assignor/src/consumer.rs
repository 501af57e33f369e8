//! The group consumer: a thin async driver around the sans-IO [`Membership`] machine plus the
//! [`Fetcher`].
//!
//! A background task owns the membership: it sends the requests the machine asks for,
//! heartbeats, and feeds answers back. Partition callbacks (revoke / assign / lost) are handed to
//! [`Consumer::poll`] and run there, in the application's task, between batches of records — as
//! in Java's consumer — so a revoked partition's records can never be processed after its
//! `on_revoked` returns. The machine holds the next JoinGroup until those callbacks are done.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use lagbalance_assign::{
    Assignor, CooperativeStickyAssignor, LagBalanceAssignor, MemberStats, RangeAssignor,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admin::{OffsetMap, OffsetSpec};
use crate::cluster::{Client, ClientConfig, Lane};
use crate::error::{Error, Result};
use crate::fetcher::{FetchConfig, Fetcher, OffsetReset};
use crate::group::machine::{JoinedMember, Tp};
use crate::group::{Input, MemberConfig, Membership, Output, Request, Response};
use crate::records::ConsumerRecord;

/// Consumer settings, named after the Java client's (see [`ConsumerConfig::set`]).
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub client: ClientConfig,
    pub group: MemberConfig,
    pub fetch: FetchConfig,
    /// `partition.assignment.strategy`, in preference order.
    pub assignors: Vec<String>,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval: Duration,
    /// `max.poll.records`.
    pub max_poll_records: usize,
}

impl ConsumerConfig {
    /// Defaults for `bootstrap.servers` and `group.id`; offers `[lagbalance,
    /// cooperative-sticky]`, so a group with older members still works (it runs
    /// cooperative-sticky until every member offers lagbalance).
    pub fn new(bootstrap: &str, group_id: &str) -> Self {
        ConsumerConfig {
            client: ClientConfig::new(bootstrap),
            group: MemberConfig {
                group_id: group_id.to_owned(),
                ..Default::default()
            },
            fetch: FetchConfig::default(),
            assignors: vec!["lagbalance".into(), "cooperative-sticky".into()],
            auto_commit_interval: Duration::from_secs(5),
            max_poll_records: 500,
        }
    }

    /// Set one property by its Kafka name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        let ms = |v: &str| -> Result<u64> {
            v.parse::<u64>().map_err(|_| {
                Error::Config(format!("{key} = '{v}' is not a number of milliseconds"))
            })
        };
        match key {
            "bootstrap.servers" => self.client.bootstrap = ClientConfig::new(value).bootstrap,
            "client.id" => self.client.connection.client_id = value.to_owned(),
            "group.id" => self.group.group_id = value.to_owned(),
            "group.instance.id" => {
                self.group.instance_id = (!value.is_empty()).then(|| value.to_owned())
            }
            "client.rack" => self.group.rack = (!value.is_empty()).then(|| value.to_owned()),
            "session.timeout.ms" => self.group.session_timeout_ms = ms(value)?,
            "heartbeat.interval.ms" => self.group.heartbeat_interval_ms = ms(value)?,
            "max.poll.interval.ms" => self.group.max_poll_interval_ms = ms(value)?,
            "retry.backoff.ms" => {
                self.group.retry_backoff_ms = ms(value)?;
                self.client.retry_backoff = Duration::from_millis(ms(value)?);
            }
            "retry.backoff.max.ms" => {
                self.group.retry_backoff_max_ms = ms(value)?;
                self.client.retry_backoff_max = Duration::from_millis(ms(value)?);
            }
            "request.timeout.ms" => {
                self.client.connection.request_timeout = Duration::from_millis(ms(value)?)
            }
            "auto.commit.interval.ms" => {
                self.auto_commit_interval = Duration::from_millis(ms(value)?)
            }
            "fetch.max.wait.ms" => self.fetch.max_wait = Duration::from_millis(ms(value)?),
            "enable.auto.commit" => {
                self.group.auto_commit = match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(Error::Config(format!(
                            "{key} must be true or false, not '{value}'"
                        )))
                    }
                }
            }
            "auto.offset.reset" => self.fetch.auto_offset_reset = OffsetReset::parse(value)?,
            "max.poll.records" => {
                self.max_poll_records = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Error::Config(format!("{key} must be a positive number")))?
            }
            "partition.assignment.strategy" => {
                let names: Vec<String> = value
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                for n in &names {
                    make_assignor(n)?;
                }
                if names.is_empty() {
                    return Err(Error::Config(format!("{key} names no assignor")));
                }
                self.assignors = names;
            }
            k if crate::security::is_security_key(k) => {
                self.client.connection.security.set(k, value)?;
            }
            other => {
                return Err(Error::Config(format!(
                    "unknown consumer property '{other}'"
                )))
            }
        }
        Ok(self)
    }
}

/// Build a built-in assignor by protocol name.
pub fn make_assignor(name: &str) -> Result<Box<dyn Assignor>> {
    Ok(match name {
        "lagbalance" => Box::new(LagBalanceAssignor::default()),
        "cooperative-sticky" => Box::new(CooperativeStickyAssignor),
        "range" => Box::new(RangeAssignor),
        other => {
            return Err(Error::Config(format!(
                "unknown assignor '{other}' (built in: lagbalance, cooperative-sticky, range)"
            )))
        }
    })
}

/// Told about partition ownership changes, inside [`Consumer::poll`].
pub trait RebalanceListener: Send {
    /// Partitions given to this member (may be empty).
    fn on_assigned(&mut self, _partitions: &[Tp]) {}
    /// Partitions taken away; their offsets were committed first when auto-commit is on.
    fn on_revoked(&mut self, _partitions: &[Tp]) {}
    /// Partitions that already belong to someone else (we were fenced): no commit happened.
    fn on_lost(&mut self, _partitions: &[Tp]) {}
}

/// A listener that does nothing.
pub struct NoopListener;
impl RebalanceListener for NoopListener {}

/// Membership and generation as the background task last saw them (for commits).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupIdentity {
    pub member_id: String,
    pub generation: i32,
    pub instance_id: Option<String>,
    pub leader: bool,
    pub protocol: Option<String>,
    /// The last error code a group request (or a commit) answered with, and how many there
    /// were: what went wrong, for logs and metrics.
    pub last_error: Option<i16>,
    pub errors: u64,
    /// How often each error code was seen, `(code, count)` for at most
    /// [`MAX_DISTINCT_ERRORS`] distinct codes: a transient error stays on record after the
    /// next one (say a keepalive heartbeat's) replaced it as `last_error`.
    pub error_codes: Vec<(i16, u64)>,
}

impl GroupIdentity {
    /// How often error `code` was seen.
    pub fn error_count(&self, code: i16) -> u64 {
        self.error_codes
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(0, |(_, n)| *n)
    }
}

/// How many distinct error codes [`GroupIdentity::error_codes`] keeps.
pub const MAX_DISTINCT_ERRORS: usize = 64;

/// One batch of partition callbacks from the machine; acknowledged as a whole.
enum Event {
    Callbacks(Vec<Output>),
    Fatal(String),
    Closed,
}

/// Messages into the background task.
enum ToGroup {
    Input(Input),
    Stop,
}

struct Shared {
    identity: Mutex<GroupIdentity>,
}

/// A consumer-group member. Call [`Consumer::poll`] in a loop.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    fetcher: Fetcher,
    listener: Box<dyn RebalanceListener>,
    to_group: mpsc::UnboundedSender<ToGroup>,
    events: mpsc::UnboundedReceiver<Event>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    owned: BTreeSet<Tp>,
    /// Owned partitions whose start position is not known yet (committed-offset lookup failed).
    unpositioned: BTreeSet<Tp>,
    /// Next offset the application has not seen, per owned partition.
    consumed: BTreeMap<Tp, i64>,
    committed: BTreeMap<Tp, i64>,
    buffer: VecDeque<ConsumerRecord>,
    next_auto_commit: Instant,
    fatal: Option<String>,
    meter: Meter,
    /// The agent's control channel, when enabled (see [`Consumer::enable_control`]).
    control: Option<Control>,
}

/// The consumer's end of the agent's control channel.
struct Control {
    handle: crate::control::ControlHandle,
    published: Option<crate::control::MemberIdentity>,
    /// The agent's latest CPU sample, for the next [`MemberStats`].
    cpu: Arc<Mutex<Option<crate::control::CapacitySample>>>,
    /// Hands the agent's commands to the group task (see [`forward_control`]).
    forwarder: JoinHandle<()>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

/// Serve the agent's commands as they arrive, not at the application's next `poll`: a member
/// whose host got slow spends seconds per batch, which is when its agent asks it to rejoin
/// (a worker at 6 ms per record acted 2.7 s late). Rejoin and leave go straight to the group
/// task, whose user data comes from the stats the consumer last published (every 5 s).
async fn forward_control(
    mut commands: mpsc::Receiver<crate::control::ControlCommand>,
    to_group: mpsc::UnboundedSender<ToGroup>,
    cpu: Arc<Mutex<Option<crate::control::CapacitySample>>>,
) {
    use crate::control::ControlCommand;
    while let Some(cmd) = commands.recv().await {
        let input = match cmd {
            ControlCommand::Leave { cooldown, reason } => {
                tracing::info!(%reason, ?cooldown, "agent asked us to leave and rejoin");
                leave_and_rejoin_input(cooldown, reason)
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

fn leave_and_rejoin_input(cooldown: Duration, reason: String) -> Input {
    Input::LeaveAndRejoin {
        cooldown_ms: u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX),
        reason,
    }
}

/// Measures what the member processes, for its subscription user data.
struct Meter {
    window_start: Instant,
    records: u64,
    /// Records handed out per partition in this window (→ per-partition processing rate).
    per_partition: BTreeMap<Tp, u64>,
    backlogged: bool,
    /// Time the application spent outside `poll` in this window: its processing time, which
    /// says how saturated the member is even when the work is I/O and the CPU stays idle.
    busy: Duration,
    returned_at: Option<Instant>,
}

impl Consumer {
    /// Create a consumer; nothing is sent until [`Self::subscribe`].
    pub fn new(config: ConsumerConfig, listener: Box<dyn RebalanceListener>) -> Result<Consumer> {
        if config.group.group_id.is_empty() {
            return Err(Error::Config("group.id is required".into()));
        }
        let assignors = config
            .assignors
            .iter()
            .map(|n| make_assignor(n))
            .collect::<Result<Vec<_>>>()?;
        if assignors.is_empty() {
            return Err(Error::Config(
                "partition.assignment.strategy is empty".into(),
            ));
        }
        let client = Client::new(config.client.clone())?;
        let (to_group, rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            identity: Mutex::new(GroupIdentity {
                generation: -1,
                instance_id: config.group.instance_id.clone(),
                ..Default::default()
            }),
        });
        let membership = Membership::new(config.group.clone(), assignors, 0);
        let driver = Driver {
            client: client.clone(),
            machine: membership,
            epoch: Instant::now(),
            events: events_tx,
            shared: shared.clone(),
            answers: mpsc::unbounded_channel(),
            join_timeout: Duration::from_millis(config.group.max_poll_interval_ms)
                + config.client.connection.request_timeout,
            group_id: config.group.group_id.clone(),
            lag: Default::default(),
            sampler: None,
            offers_lagbalance: config.assignors.iter().any(|a| a == "lagbalance"),
        };
        let task = tokio::spawn(driver.run(rx));
        Ok(Consumer {
            fetcher: Fetcher::new(client.clone(), config.fetch.clone()),
            client,
            listener,
            to_group,
            events,
            shared,
            task,
            owned: BTreeSet::new(),
            unpositioned: BTreeSet::new(),
            consumed: BTreeMap::new(),
            committed: BTreeMap::new(),
            buffer: VecDeque::new(),
            next_auto_commit: Instant::now() + config.auto_commit_interval,
            fatal: None,
            control: None,
            meter: Meter {
                window_start: Instant::now(),
                records: 0,
                per_partition: BTreeMap::new(),
                backlogged: false,
                busy: Duration::ZERO,
                returned_at: None,
            },
            config,
        })
    }

    fn send(&self, input: Input) {
        let _ = self.to_group.send(ToGroup::Input(input));
    }

    /// Listen for a sidecar agent on the loopback control channel configured by
    /// `LAGBALANCE_CONTROL_ADDR` / `LAGBALANCE_CONTROL_TOKEN` (no-op when unset). The agent can
    /// then ask this consumer to rejoin or leave, and feed it CPU samples; the consumer tells
    /// it who it is and what it owns. Fail-open: without an agent nothing changes.
    pub async fn enable_control(&mut self) -> Result<Option<std::net::SocketAddr>> {
        let config = crate::control::ControlConfig::from_env()
            .map_err(|e| Error::Config(format!("control channel: {e}")))?;
        match config {
            Some(config) => self.enable_control_with(config).await.map(Some),
            None => Ok(None),
        }
    }

    /// [`Self::enable_control`] with the listener configured in code instead of the
    /// environment. Returns the address the agent should connect to.
    pub async fn enable_control_with(
        &mut self,
        config: crate::control::ControlConfig,
    ) -> Result<std::net::SocketAddr> {
        let (handle, commands) = crate::control::serve(config)
            .await
            .map_err(|e| Error::Config(format!("control channel: {e}")))?;
        let addr = handle.local_addr();
        let cpu = Arc::new(Mutex::new(None));
        let forwarder = tokio::spawn(forward_control(
            commands,
            self.to_group.clone(),
            cpu.clone(),
        ));
        self.control = Some(Control {
            handle,
            published: None,
            cpu,
            forwarder,
        });
        Ok(addr)
    }

    /// Tell the agent who we are and what we own (cheap when nothing changed).
    fn serve_control(&mut self) {
        let Some(mut control) = self.control.take() else {
            return;
        };
        let id = self.identity();
        let now = (!id.member_id.is_empty()).then(|| crate::control::MemberIdentity {
            group: self.config.group.group_id.clone(),
            member_id: id.member_id.clone(),
            instance_id: id.instance_id.clone(),
            generation: id.generation,
            partitions: self.owned.iter().cloned().collect(),
        });
        if now != control.published {
            control.handle.set_identity(now.clone());
            control.published = now;
        }
        self.control = Some(control);
    }

    /// Subscribe to `topics` (replacing the previous subscription).
    pub fn subscribe(&mut self, topics: &[&str]) {
        self.send(Input::Subscribe(
            topics.iter().map(|t| t.to_string()).collect(),
        ));
    }

    /// Ask the group to rebalance, with fresh user data (capacity, lag) in our subscription.
    pub fn request_rebalance(&mut self, reason: &str) {
        let stats = self.measure();
        self.send(Input::Stats(stats));
        self.send(Input::RequestRejoin(reason.to_owned()));
    }

    /// Voluntarily leave the group (committing and revoking first), and rejoin after `cooldown`.
    pub fn leave_and_rejoin(&mut self, cooldown: Duration, reason: &str) {
        self.send(leave_and_rejoin_input(cooldown, reason.to_owned()));
    }

    /// The partitions this member owns now.
    pub fn assignment(&self) -> &BTreeSet<Tp> {
        &self.owned
    }

    /// Member id, generation and role as last seen.
    pub fn identity(&self) -> GroupIdentity {
        self.shared
            .identity
            .lock()
            .map(|i| i.clone())
            .unwrap_or_default()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stop fetching `partitions` until [`Self::resume`].
    pub fn pause(&mut self, partitions: &[Tp]) {
        for (t, p) in partitions {
            self.fetcher.set_paused(t, *p, true);
        }
    }

    pub fn resume(&mut self, partitions: &[Tp]) {
        for (t, p) in partitions {
            self.fetcher.set_paused(t, *p, false);
        }
    }

    /// Records the application has not been handed yet, per owned partition: from the next
    /// offset it has not seen to the high watermark of the last fetch. Records fetched but
    /// still buffered count: measured from the fetch position instead, a member that fetches
    /// far ahead of what it processes (the fetcher drains the log in one round trip, the
    /// application takes seconds per batch) looked caught up while it was thousands behind.
    pub fn lag(&self) -> BTreeMap<Tp, i64> {
        self.fetcher
            .assigned()
            .filter_map(|(tp, st)| {
                let fetch_lag = st.lag()?;
                let buffered = match (self.consumed.get(tp), st.position) {
                    (Some(&seen), Some(fetched)) => (fetched - seen).max(0),
                    _ => 0,
                };
                Some((tp.clone(), fetch_lag + buffered))
            })
            .collect()
    }

    /// Records for the application, waiting at most `timeout`. Rebalance callbacks run here.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if let Some(t) = self.meter.returned_at.take() {
            self.meter.busy += t.elapsed();
        }
        let out = self.poll_inner(timeout).await;
        self.meter.returned_at = Some(Instant::now());
        out
    }

    async fn poll_inner(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.send(Input::Polled);
            self.run_callbacks().await?;
            self.serve_control();
            self.position_new_partitions().await;
            self.maybe_auto_commit().await;
            self.maybe_publish_stats();
            if !self.buffer.is_empty() {
                return Ok(self.hand_out());
            }
            let now = Instant::now();
            if now >= deadline {
                self.meter.backlogged = false;
                return Ok(Vec::new());
            }
            let fetchable = self.owned.len() > self.unpositioned.len();
            if !fetchable {
                // Nothing to fetch: wait for the group (bounded, so timers keep running).
                let wait = (deadline - now).min(Duration::from_millis(100));
                if let Ok(Some(ev)) = tokio::time::timeout(wait, self.events.recv()).await {
                    self.apply_event(ev).await?;
                }
                continue;
            }
            match self.fetcher.fetch().await {
                Ok(records) => {
                    self.buffer.extend(
                        records
                            .into_iter()
                            .filter(|r| self.owned.contains(&(r.topic.clone(), r.partition))),
                    );
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(error = %e, "fetch failed; retrying");
                    tokio::time::sleep(
                        self.config
                            .client
                            .retry_backoff
                            .min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn hand_out(&mut self) -> Vec<ConsumerRecord> {
        let n = self.buffer.len().min(self.config.max_poll_records);
        let out: Vec<ConsumerRecord> = self.buffer.drain(..n).collect();
        for r in &out {
            let tp = (r.topic.clone(), r.partition);
            *self.meter.per_partition.entry(tp.clone()).or_default() += 1;
            self.consumed.insert(tp, r.offset + 1);
        }
        self.meter.records += out.len() as u64;
        // Records still waiting for the application after this batch (buffered, or known on
        // the broker past our fetch position): it is the bottleneck, so what it processes is
        // what it can process (the capacity estimator trusts such samples at once).
        self.meter.backlogged =
            !self.buffer.is_empty() || self.fetcher.assigned().any(|(_, st)| st.lag() > Some(0));
        out
    }

    /// Handle every pending group event without waiting.
    async fn run_callbacks(&mut self) -> Result<()> {
        while let Ok(ev) = self.events.try_recv() {
            self.apply_event(ev).await?;
        }
        match &self.fatal {
            Some(why) => Err(Error::Config(format!("consumer group failure: {why}"))),
            None => Ok(()),
        }
    }

    async fn apply_event(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Callbacks(outputs) => {
                for o in outputs {
                    match o {
                        Output::Revoke { partitions, commit } => {
                            self.revoke(partitions, commit).await
                        }
                        Output::Assign { partitions, .. } => self.assign(partitions).await,
                        Output::Lost { partitions } => self.lose(partitions),
                        _ => {}
                    }
                }
                self.send(Input::CallbacksDone);
            }
            Event::Fatal(why) => {
                self.fatal = Some(why.clone());
                return Err(Error::Config(format!("consumer group failure: {why}")));
            }
            Event::Closed => {}
        }
        Ok(())
    }

    fn forget(&mut self, partitions: &[Tp]) {
        let gone: BTreeSet<&Tp> = partitions.iter().collect();
        self.buffer
            .retain(|r| !gone.contains(&(r.topic.clone(), r.partition)));
        for tp in partitions {
            self.owned.remove(tp);
            self.unpositioned.remove(tp);
            self.consumed.remove(tp);
            self.committed.remove(tp);
            self.fetcher.unassign(&tp.0, tp.1);
        }
    }

    async fn revoke(&mut self, partitions: Vec<Tp>, commit: bool) {
        // Records fetched but not handed out are not consumed: drop them before committing.
        let gone: BTreeSet<&Tp> = partitions.iter().collect();
        self.buffer
            .retain(|r| !gone.contains(&(r.topic.clone(), r.partition)));
        if commit {
            if let Err(e) = self.commit_partitions(&partitions).await {
                tracing::warn!(error = %e, "commit before revoke failed");
            }
        }
        self.listener.on_revoked(&partitions);
        self.forget(&partitions);
    }

    async fn assign(&mut self, partitions: Vec<Tp>) {
        for tp in &partitions {
            self.owned.insert(tp.clone());
            self.unpositioned.insert(tp.clone());
        }
        self.listener.on_assigned(&partitions);
        self.position_new_partitions().await;
    }

    fn lose(&mut self, partitions: Vec<Tp>) {
        self.listener.on_lost(&partitions);
        self.forget(&partitions);
    }

    /// Start fetching newly assigned partitions at their committed offsets.
    async fn position_new_partitions(&mut self) {
        if self.unpositioned.is_empty() {
            return;
        }
        let wanted: Vec<Tp> = self.unpositioned.iter().cloned().collect();
        match self
            .client
            .offset_fetch(&self.config.group.group_id, Some(&wanted))
            .await
        {
            Ok(committed) => {
                for tp in wanted {
                    let offset = committed.get(&tp).copied();
                    self.fetcher.assign(&tp.0, tp.1, offset);
                    if let Some(o) = offset {
                        self.committed.insert(tp.clone(), o);
                    }
                    self.unpositioned.remove(&tp);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read committed offsets yet"),
        }
    }

    async fn maybe_auto_commit(&mut self) {
        if !self.config.group.auto_commit || Instant::now() < self.next_auto_commit {
            return;
        }
        self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
        if let Err(e) = self.commit().await {
            tracing::debug!(error = %e, "auto-commit failed");
        }
    }

    /// Commit the positions the application has consumed, for every owned partition.
    pub async fn commit(&mut self) -> Result<()> {
        let parts: Vec<Tp> = self.owned.iter().cloned().collect();
        self.commit_partitions(&parts).await
    }

    /// Commit in the background; the result is only logged.
    pub fn commit_async(&mut self) {
        let offsets = self.pending_offsets(&self.owned.iter().cloned().collect::<Vec<_>>());
        if offsets.is_empty() {
            return;
        }
        let client = self.client.clone();
        let identity = self.identity();
        let group = self.config.group.group_id.clone();
        let to_group = self.to_group.clone();
        for (tp, o) in &offsets {
            self.committed.insert(tp.clone(), *o);
        }
        tokio::spawn(async move {
            if let Err(e) = client
                .offset_commit(
                    &group,
                    identity.generation,
                    &identity.member_id,
                    identity.instance_id.as_deref(),
                    &offsets,
                )
                .await
            {
                if let Some(code) = e.broker_code() {
                    let _ = to_group.send(ToGroup::Input(Input::CommitFailed {
                        error: code.0,
                        generation: identity.generation,
                    }));
                }
                tracing::warn!(error = %e, "async commit failed");
            }
        });
    }

    fn pending_offsets(&self, partitions: &[Tp]) -> OffsetMap {
        partitions
            .iter()
            .filter_map(|tp| {
                let o = *self.consumed.get(tp)?;
                (self.committed.get(tp) != Some(&o)).then(|| (tp.clone(), o))
            })
            .collect()
    }

    async fn commit_partitions(&mut self, partitions: &[Tp]) -> Result<()> {
        let offsets = self.pending_offsets(partitions);
        if offsets.is_empty() {
            return Ok(());
        }
        let identity = self.identity();
        let result = self
            .client
            .offset_commit(
                &self.config.group.group_id,
                identity.generation,
                &identity.member_id,
                identity.instance_id.as_deref(),
                &offsets,
            )
            .await;
        match result {
            Ok(()) => {
                self.committed.extend(offsets);
                Ok(())
            }
            Err(e) => {
                if let Some(code) = e.broker_code() {
                    self.send(Input::CommitFailed {
                        error: code.0,
                        generation: identity.generation,
                    });
                }
                Err(e)
            }
        }
    }

    /// What this member measured since the last report.
    fn measure(&mut self) -> MemberStats {
        let elapsed = self.meter.window_start.elapsed().as_secs_f64().max(1e-3);
        let lag = self.lag();
        let stats = MemberStats {
            processed_rate: self.meter.records as f64 / elapsed,
            backlogged: self.meter.backlogged,
            cpu_used_cores: None,
            cpu_limit_cores: None,
            busy_fraction: Some((self.meter.busy.as_secs_f64() / elapsed).min(1.0)),
            partitions: lag
                .iter()
                .map(|(tp, l)| {
                    let done = self.meter.per_partition.get(tp).copied().unwrap_or(0);
                    (tp.0.clone(), tp.1, *l as f64, done as f64 / elapsed)
                })
                .collect(),
            measured_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        self.meter.window_start = Instant::now();
        self.meter.records = 0;
        self.meter.busy = Duration::ZERO;
        self.meter.per_partition.clear();
        let mut stats = stats;
        let cpu = self
            .control
            .as_ref()
            .and_then(|c| c.cpu.lock().ok().and_then(|s| s.clone()));
        if let Some(cpu) = cpu {
            cpu.apply_to(&mut stats);
        }
        stats
    }

    fn maybe_publish_stats(&mut self) {
        if self.meter.window_start.elapsed() >= Duration::from_secs(5) {
            let stats = self.measure();
            self.send(Input::Stats(stats));
        }
    }

    /// Commit (if auto-commit), revoke everything, leave the group and stop, within `timeout`.
    pub async fn close(mut self, timeout: Duration) -> Result<()> {
        self.send(Input::Close);
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            match tokio::time::timeout(remaining, self.events.recv()).await {
                Ok(Some(Event::Closed)) | Ok(None) | Err(_) => break,
                Ok(Some(ev)) => {
                    let _ = self.apply_event(ev).await;
                }
            }
        }
        let _ = self.to_group.send(ToGroup::Stop);
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.task).await;
        self.task.abort();
        Ok(())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The background task: runs the membership machine against the coordinator.
struct Driver {
    client: Client,
    machine: Membership,
    epoch: Instant,
    events: mpsc::UnboundedSender<Event>,
    shared: Arc<Shared>,
    answers: (mpsc::UnboundedSender<Input>, mpsc::UnboundedReceiver<Input>),
    join_timeout: Duration,
    group_id: String,
    /// Lag per partition sampled in the background, for the leader's plan.
    lag: Arc<Mutex<LagSnapshot>>,
    sampler: Option<JoinHandle<()>>,
    offers_lagbalance: bool,
}

/// The latest background lag measurement.
#[derive(Default)]
struct LagSnapshot {
    taken: Option<Instant>,
    /// (topic, partition, lag, incoming records/s — NaN until two samples exist).
    lag: Vec<(String, i32, f64, f64)>,
    /// Log-end offsets of the last sample, for the next rate.
    ends: Option<(Instant, BTreeMap<Tp, i64>)>,
}

/// How often the lag sampler measures, and how old a sample the leader still uses.
const LAG_SAMPLE_EVERY: Duration = Duration::from_secs(5);
const LAG_SAMPLE_MAX_AGE: Duration = Duration::from_secs(30);

impl Driver {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<ToGroup>) {
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
                        if let Some(s) = self.sampler.take() {
                            s.abort();
                        }
                        return;
                    }
                },
                Some(answer) = self.answers.1.recv() => answer,
                _ = tokio::time::sleep(Duration::from_millis(wake)) => Input::Tick,
            };
            if let Input::Subscribe(topics) = &input {
                self.start_lag_sampler(topics.clone());
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

    /// Sample lag (log end − committed) of `topics` every few seconds, off the rebalance
    /// path: measuring it while assigning delays the SyncGroup the whole group waits for, and
    /// on tansu 0.6.0 group requests stall during a rebalance.
    fn start_lag_sampler(&mut self, topics: Vec<String>) {
        if let Some(old) = self.sampler.take() {
            old.abort();
        }
        if topics.is_empty() || !self.machine_offers_lagbalance() {
            return;
        }
        let client = self.client.clone();
        let group = self.group_id.clone();
        let cache = self.lag.clone();
        self.sampler = Some(tokio::spawn(async move {
            loop {
                let sample = tokio::time::timeout(
                    LAG_SAMPLE_EVERY * 2,
                    measure_lag(&client, &group, &topics),
                )
                .await;
                match sample {
                    Ok(Ok(samples)) => {
                        if let Ok(mut c) = cache.lock() {
                            let now = Instant::now();
                            c.lag = lag_rows(c.ends.as_ref(), now, &samples);
                            c.taken = Some(now);
                            c.ends =
                                Some((now, samples.into_iter().map(|s| (s.tp, s.end)).collect()));
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "lag sample failed"),
                    Err(_) => tracing::debug!("lag sample timed out"),
                }
                tokio::time::sleep(LAG_SAMPLE_EVERY).await;
            }
        }));
    }

    fn machine_offers_lagbalance(&self) -> bool {
        self.offers_lagbalance
    }

    /// Metadata (and the latest lag sample, for lagbalance) for the leader's plan.
    fn leader_inputs(&self, id: u64, topics: Vec<String>) {
        let client = self.client.clone();
        let answers = self.answers.0.clone();
        let stats = if self.machine.protocol() == Some("lagbalance") {
            self.lag.lock().ok().and_then(|c| {
                let fresh = c.taken.is_some_and(|t| t.elapsed() <= LAG_SAMPLE_MAX_AGE);
                fresh.then(|| c.lag.clone())
            })
        } else {
            None
        };
        tokio::spawn(async move {
            let input = match gather_leader_inputs(&client, &topics, stats).await {
                Ok((topics, stats)) => Input::LeaderInputs { id, topics, stats },
                Err(e) => failure(id, &e),
            };
            let _ = answers.send(input);
        });
    }
}

/// The machine's input for a failed request: a refusal (credentials, certificate, missing
/// ACL) stops the member, since repeating cannot help; anything else is retried.
fn failure(id: u64, e: &Error) -> Input {
    let reason = e.to_string();
    if e.is_refusal() {
        Input::RequestRefused { id, reason }
    } else {
        Input::RequestFailed { id, reason }
    }
}

/// The error code an input carries, if any.
fn error_in(input: &Input) -> Option<i16> {
    let code = match input {
        Input::Response { response, .. } => match response {
            Response::Join { error, .. }
            | Response::Sync { error, .. }
            | Response::Heartbeat { error }
            | Response::Leave { error }
            | Response::CoordinatorError { error } => *error,
            Response::Coordinator { .. } => 0,
        },
        Input::CommitFailed { error, .. } => *error,
        _ => 0,
    };
    (code != 0).then_some(code)
}

type LeaderInputs = (Vec<(String, i32)>, Option<Vec<(String, i32, f64, f64)>>);

async fn gather_leader_inputs(
    client: &Client,
    topics: &[String],
    stats: Option<Vec<(String, i32, f64, f64)>>,
) -> Result<LeaderInputs> {
    let meta = client.refresh_metadata(topics).await?;
    let counts: Vec<(String, i32)> = topics
        .iter()
        .filter_map(|t| meta.topics.get(t).map(|p| (t.clone(), p.len() as i32)))
        .collect();
    Ok((counts, stats))
}

/// One partition as the lag sampler saw it.
#[derive(Clone, Debug, PartialEq)]
struct PartitionSample {
    tp: Tp,
    end: i64,
    lag: f64,
}

/// The leader's `(topic, partition, lag, incoming rate)` rows: the rate is the log end's growth
/// since the previous sample (NaN without one, or if the log end went backwards).
fn lag_rows(
    previous: Option<&(Instant, BTreeMap<Tp, i64>)>,
    now: Instant,
    samples: &[PartitionSample],
) -> Vec<(String, i32, f64, f64)> {
    samples
        .iter()
        .map(|s| {
            let rate = previous
                .and_then(|(then, ends)| {
                    let dt = now.checked_duration_since(*then)?.as_secs_f64();
                    let before = *ends.get(&s.tp)?;
                    (dt > 0.0 && s.end >= before).then(|| (s.end - before) as f64 / dt)
                })
                .unwrap_or(f64::NAN);
            (s.tp.0.clone(), s.tp.1, s.lag, rate)
        })
        .collect()
}

/// Lag (log end − committed) and log end of every partition of `topics`, measured now.
async fn measure_lag(
    client: &Client,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionSample>> {
    let meta = client.refresh_metadata(topics).await?;
    let topics: Vec<(String, i32)> = topics
        .iter()
        .filter_map(|t| meta.topics.get(t).map(|p| (t.clone(), p.len() as i32)))
        .collect();
    // Name the partitions: tansu 0.6.0 answers an all-topics OffsetFetch v7 with a null
    // array that no client can read (docs/tansu-quirks.md).
    let wanted: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
        .collect();
    let committed = client.offset_fetch(group, Some(&wanted)).await?;
    let mut stats = Vec::new();
    for (t, _) in &topics {
        for (p, end) in client.list_offsets(t, &[], OffsetSpec::Latest).await? {
            // tansu's ListOffsets(latest) can trail the log end (docs/tansu-quirks.md): never
            // let that make lag negative.
            let c = committed.get(&(t.clone(), p)).copied().unwrap_or(end);
            stats.push(PartitionSample {
                tp: (t.clone(), p),
                end,
                lag: (end - c).max(0) as f64,
            });
        }
    }
    Ok(stats)
}

/// Where the error code sits in a non-flexible group response body: after the throttle time
/// from v1 on, first in v0.
fn error_offset(version: i16) -> usize {
    if version >= 1 {
        4
    } else {
        0
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// Turn a machine request into the wire request at the negotiated version and back.
async fn send_request(
    client: &Client,
    coordinator: Option<String>,
    group: &str,
    request: Request,
    join_timeout: Duration,
) -> Result<Response> {
    if let Request::FindCoordinator = request {
        let conn = client.any_broker().await?;
        let (_, resp) = client
            .send(&conn, ApiKey::FindCoordinator, |_| {
                FindCoordinatorRequest::default()
                    .with_key(s(group))
                    .with_key_type(0)
            })
            .await?;
        if resp.error_code != 0 || resp.node_id.0 < 0 {
            let error = if resp.error_code != 0 {
                resp.error_code
            } else {
                15
            };
            return Ok(Response::CoordinatorError { error });
        }
        return Ok(Response::Coordinator {
            node_id: resp.node_id.0,
            addr: format!("{}:{}", resp.host.as_str(), resp.port),
        });
    }
    let addr = coordinator.ok_or_else(|| Error::NoBrokerAvailable("coordinator unknown".into()))?;
    let lane = match request {
        Request::Heartbeat { .. } => Lane::Heartbeat,
        _ => Lane::Group,
    };
    let conn = client.connection_on(&addr, lane).await?;
    let gid = GroupId(s(group));
    match request {
        Request::FindCoordinator => unreachable!("handled above"),
        Request::Join {
            member_id,
            instance_id,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocols,
            reason,
        } => {
            let version = conn.version(ApiKey::JoinGroup)?;
            if instance_id.is_some() && version < 5 {
                return Err(Error::Config(
                    "static membership needs JoinGroup v5+".into(),
                ));
            }
            let mut req = JoinGroupRequest::default()
                .with_group_id(gid)
                .with_session_timeout_ms(session_timeout_ms)
                .with_member_id(s(&member_id))
                .with_protocol_type(s("consumer"))
                .with_protocols(
                    protocols
                        .into_iter()
                        .map(|(name, metadata)| {
                            JoinGroupRequestProtocol::default()
                                .with_name(s(&name))
                                .with_metadata(metadata)
                        })
                        .collect(),
                );
            if version >= 1 {
                req.rebalance_timeout_ms = rebalance_timeout_ms;
            }
            if version >= 5 {
                req.group_instance_id = instance_id.map(|i| s(&i));
            }
            if version >= 8 {
                req.reason = Some(s(&reason));
            }
            let resp = conn
                .send_salvaging_error(&req, version, join_timeout, error_offset(version), |code| {
                    JoinGroupResponse::default().with_error_code(code)
                })
                .await?;
            Ok(Response::Join {
                error: resp.error_code,
                generation: resp.generation_id,
                protocol: resp.protocol_name.map(|p| p.to_string()),
                leader: resp.leader.to_string(),
                member_id: resp.member_id.to_string(),
                members: resp
                    .members
                    .into_iter()
                    .map(|m| JoinedMember {
                        member_id: m.member_id.to_string(),
                        instance_id: m.group_instance_id.map(|i| i.to_string()),
                        metadata: m.metadata,
                    })
                    .collect(),
            })
        }
        Request::Sync {
            generation,
            member_id,
            instance_id,
            protocol,
            assignments,
        } => {
            let version = conn.version(ApiKey::SyncGroup)?;
            let mut req = SyncGroupRequest::default()
                .with_group_id(gid)
                .with_generation_id(generation)
                .with_member_id(s(&member_id))
                .with_assignments(
                    assignments
                        .into_iter()
                        .map(|(m, a)| {
                            SyncGroupRequestAssignment::default()
                                .with_member_id(s(&m))
                                .with_assignment(a)
                        })
                        .collect(),
                );
            if version >= 3 {
                req.group_instance_id = instance_id.map(|i| s(&i));
            }
            if version >= 5 {
                req.protocol_type = Some(s("consumer"));
                req.protocol_name = Some(s(&protocol));
            }
            let resp = conn
                .send_salvaging_error(&req, version, join_timeout, error_offset(version), |code| {
                    SyncGroupResponse::default().with_error_code(code)
                })
                .await?;
            Ok(Response::Sync {
                error: resp.error_code,
                assignment: resp.assignment,
            })
        }
        Request::Heartbeat {
            generation,
            member_id,
            instance_id,
        } => {
            let version = conn.version(ApiKey::Heartbeat)?;
            let mut req = HeartbeatRequest::default()
                .with_group_id(gid)
                .with_generation_id(generation)
                .with_member_id(s(&member_id));
            if version >= 3 {
                req.group_instance_id = instance_id.map(|i| s(&i));
            }
            let timeout = client.config().connection.request_timeout;
            let resp = conn
                .send_salvaging_error(&req, version, timeout, error_offset(version), |code| {
                    HeartbeatResponse::default().with_error_code(code)
                })
                .await?;
            Ok(Response::Heartbeat {
                error: resp.error_code,
            })
        }
        Request::Leave {
            member_id,
            instance_id,
            reason,
        } => {
            let version = conn.version(ApiKey::LeaveGroup)?;
            let mut req = LeaveGroupRequest::default().with_group_id(gid);
            if version >= 3 {
                let mut m = MemberIdentity::default()
                    .with_member_id(s(&member_id))
                    .with_group_instance_id(instance_id.map(|i| s(&i)));
                if version >= 5 {
                    m.reason = Some(s(&reason));
                }
                req.members = vec![m];
            } else {
                req.member_id = s(&member_id);
            }
            let resp = conn.send(&req, version).await?;
            Ok(Response::Leave {
                error: resp.error_code,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(p: i32, end: i64, lag: f64) -> PartitionSample {
        PartitionSample {
            tp: ("t".into(), p),
            end,
            lag,
        }
    }

    #[test]
    fn incoming_rate_comes_from_two_samples_of_the_log_end() {
        let t0 = Instant::now();
        let first = lag_rows(None, t0, &[sample(0, 100, 5.0)]);
        assert!(first[0].3.is_nan(), "no rate from one sample");
        assert_eq!(first[0].2, 5.0);
        let ends: BTreeMap<Tp, i64> = [(("t".into(), 0), 100), (("t".into(), 1), 50)].into();
        let rows = lag_rows(
            Some(&(t0, ends)),
            t0 + Duration::from_secs(2),
            &[sample(0, 300, 7.0), sample(1, 40, 0.0), sample(2, 9, 0.0)],
        );
        assert_eq!(rows[0], ("t".into(), 0, 7.0, 100.0), "200 records in 2 s");
        assert!(
            rows[1].3.is_nan(),
            "a log end that went backwards gives no rate"
        );
        assert!(
            rows[2].3.is_nan(),
            "a partition not seen before gives no rate"
        );
    }
}
