//! The group consumer: a thin async driver around the sans-IO
//! [`Membership`](crate::group::Membership) machine plus the [`Fetcher`].
//!
//! A background task owns the membership: it sends the requests the machine asks for,
//! heartbeats, and feeds answers back. Partition callbacks (revoke / assign / lost) are handed to
//! [`Consumer::poll`] and run there, in the application's task, between batches of records — as
//! in Java's consumer — so a revoked partition's records can never be processed after its
//! `on_revoked` returns. The machine holds the next JoinGroup until those callbacks are done.
//!
//! One file per job:
//! - this file: the application-facing [`Consumer`], its listener and identity types;
//! - `config`: [`ConsumerConfig`], its Kafka-named properties and the assignor factory;
//! - `driver`: the background task around the membership machine;
//! - `translate`: machine requests to Kafka messages and answers back;
//! - `meter`: self-measurement (processing rate, busy fraction) for the user data;
//! - `lag_sampler`: background lag measurement for the leader's plan;
//! - `agent_link`: the consumer's end of the sidecar agent's control channel.

mod agent_link;
mod config;
mod driver;
mod lag_sampler;
mod meter;
mod translate;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lagbalance_assign::{MemberStats, NamedPartition};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admin::OffsetMap;
use crate::cluster::Client;
use crate::error::{BrokerCode, Error, Result};
use crate::fetcher::Fetcher;
use crate::group::{GroupFatal, Input, Output};
use crate::lag;
use crate::records::ConsumerRecord;

use agent_link::AgentLink;
pub use config::{make_assignor, ConsumerConfig};
use driver::{Driver, Event, Shared, ToGroup};
use meter::Meter;

/// Told about partition ownership changes, inside [`Consumer::poll`].
pub trait RebalanceListener: Send {
    /// Partitions given to this member (may be empty).
    fn on_assigned(&mut self, _partitions: &[NamedPartition]) {}
    /// Partitions taken away; their offsets were committed first when auto-commit is on.
    fn on_revoked(&mut self, _partitions: &[NamedPartition]) {}
    /// Partitions that already belong to someone else (we were fenced): no commit happened.
    fn on_lost(&mut self, _partitions: &[NamedPartition]) {}
}

/// A listener that does nothing.
pub struct NoopListener;
impl RebalanceListener for NoopListener {}

/// Which way ownership changed, for a listener that treats the three alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnershipChange {
    Assigned,
    Revoked,
    Lost,
}

impl OwnershipChange {
    /// `assigned`, `revoked` or `lost`.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnershipChange::Assigned => "assigned",
            OwnershipChange::Revoked => "revoked",
            OwnershipChange::Lost => "lost",
        }
    }
}

/// A listener that hands every ownership change to one closure, e.g. to log or audit it.
///
/// ```
/// use lagbalance::consumer::{OnOwnershipChange, OwnershipChange};
/// use lagbalance::{NamedPartition, RebalanceListener};
///
/// let listener = OnOwnershipChange(|change: OwnershipChange, partitions: &[NamedPartition]| {
///     eprintln!("{} {partitions:?}", change.as_str());
/// });
/// let _boxed: Box<dyn RebalanceListener> = Box::new(listener);
/// ```
pub struct OnOwnershipChange<F>(pub F);

impl<F> RebalanceListener for OnOwnershipChange<F>
where
    F: FnMut(OwnershipChange, &[NamedPartition]) + Send,
{
    fn on_assigned(&mut self, partitions: &[NamedPartition]) {
        (self.0)(OwnershipChange::Assigned, partitions)
    }
    fn on_revoked(&mut self, partitions: &[NamedPartition]) {
        (self.0)(OwnershipChange::Revoked, partitions)
    }
    fn on_lost(&mut self, partitions: &[NamedPartition]) {
        (self.0)(OwnershipChange::Lost, partitions)
    }
}

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
    pub last_error: Option<BrokerCode>,
    pub errors: u64,
    /// How often each error code was seen, `(code, count)` for at most
    /// [`MAX_DISTINCT_ERRORS`] distinct codes: a transient error stays on record after the
    /// next one (say a keepalive heartbeat's) replaced it as `last_error`.
    pub error_codes: Vec<(BrokerCode, u64)>,
}

impl GroupIdentity {
    /// How often error `code` was seen.
    pub fn error_count(&self, code: impl Into<BrokerCode>) -> u64 {
        let code = code.into();
        self.error_codes
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(0, |(_, n)| *n)
    }
}

/// How many distinct error codes [`GroupIdentity::error_codes`] keeps.
pub const MAX_DISTINCT_ERRORS: usize = 64;

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
    owned: BTreeSet<NamedPartition>,
    /// Owned partitions whose start position is not known yet (committed-offset lookup failed).
    unpositioned: BTreeSet<NamedPartition>,
    /// Next offset the application has not seen, per owned partition.
    consumed: BTreeMap<NamedPartition, i64>,
    committed: BTreeMap<NamedPartition, i64>,
    buffer: VecDeque<ConsumerRecord>,
    next_auto_commit: Instant,
    fatal: Option<GroupFatal>,
    meter: Meter,
    /// The agent's control channel, when enabled (see [`Consumer::enable_control`]).
    control: Option<AgentLink>,
}

/// The driver's input for "leave the group, stay out for `cooldown`, rejoin" (asked by the
/// application or by the agent).
fn leave_and_rejoin_input(cooldown: Duration, reason: String) -> Input {
    Input::LeaveAndRejoin {
        cooldown_ms: u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX),
        reason,
    }
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
        let shared = Arc::new(Shared::new(GroupIdentity {
            generation: -1,
            instance_id: config.group.instance_id.clone(),
            ..Default::default()
        }));
        let driver = Driver::new(
            client.clone(),
            &config,
            assignors,
            events_tx,
            shared.clone(),
        );
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
            meter: Meter::new(Instant::now()),
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
        let link = AgentLink::start(config, self.to_group.clone()).await?;
        let addr = link.local_addr();
        self.control = Some(link);
        Ok(addr)
    }

    /// Tell the agent who we are and what we own (cheap when nothing changed).
    fn serve_control(&mut self) {
        if self.control.is_none() {
            return;
        }
        let id = self.identity();
        let now = (!id.member_id.is_empty()).then(|| crate::control::AppIdentity {
            group: self.config.group.group_id.clone(),
            member_id: id.member_id.clone(),
            instance_id: id.instance_id.clone(),
            generation: id.generation,
            partitions: self.owned.iter().cloned().collect(),
        });
        if let Some(link) = self.control.as_mut() {
            link.publish(now);
        }
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
    pub fn assignment(&self) -> &BTreeSet<NamedPartition> {
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
    pub fn pause(&mut self, partitions: &[NamedPartition]) {
        for (t, p) in partitions {
            self.fetcher.set_paused(t, *p, true);
        }
    }

    pub fn resume(&mut self, partitions: &[NamedPartition]) {
        for (t, p) in partitions {
            self.fetcher.set_paused(t, *p, false);
        }
    }

    /// Records the application has not been handed yet, per owned partition: from the next
    /// offset it has not seen to the high watermark of the last fetch. Records fetched but
    /// still buffered count: measured from the fetch position instead, a member that fetches
    /// far ahead of what it processes (the fetcher drains the log in one round trip, the
    /// application takes seconds per batch) looked caught up while it was thousands behind.
    ///
    /// Read by the one lag rule ([`crate::lag`]): the log end is the high watermark, or the
    /// fetch position if records were fetched beyond it; the position is the next offset the
    /// application will be handed, the one it has not seen or the fetch position if that was
    /// moved back below it. Partitions without a high watermark or fetch position are left out.
    pub fn lag(&self) -> BTreeMap<NamedPartition, i64> {
        self.fetcher
            .assigned()
            .filter_map(|(tp, st)| {
                let fetched = st.position?;
                let next = self
                    .consumed
                    .get(tp)
                    .map_or(fetched, |&seen| seen.min(fetched));
                let reading = lag::read(Some(st.high_watermark?), Some(next), Some(fetched));
                Some((tp.clone(), reading.lag?))
            })
            .collect()
    }

    /// Records for the application, waiting at most `timeout`. Rebalance callbacks run here.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        self.meter.poll_entered(Instant::now());
        let out = self.poll_inner(timeout).await;
        self.meter.poll_returned(Instant::now());
        out
    }

    async fn poll_inner(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.send(Input::Polled);
            // Read before draining the events: see `Shared::hand_out_until`.
            let hand_out_until = self.shared.hand_out_until();
            self.run_callbacks().await?;
            self.serve_control();
            self.position_new_partitions().await;
            self.maybe_auto_commit().await;
            self.maybe_publish_stats();
            // Past it our session may have expired (say the process was frozen): hand out
            // nothing until the driver has heard from the coordinator or given the partitions up.
            let now = Instant::now();
            let owned_for_sure = hand_out_until.is_none_or(|t| now < t);
            if !self.buffer.is_empty() && owned_for_sure {
                return Ok(self.hand_out());
            }
            if now >= deadline {
                self.meter.caught_up();
                return Ok(Vec::new());
            }
            let fetchable = owned_for_sure && self.owned.len() > self.unpositioned.len();
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
            self.consumed
                .insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        let backlogged =
            !self.buffer.is_empty() || self.fetcher.assigned().any(|(_, st)| st.lag() > Some(0));
        self.meter.handed_out(Instant::now(), &out, backlogged);
        out
    }

    /// Handle every pending group event without waiting.
    async fn run_callbacks(&mut self) -> Result<()> {
        while let Ok(ev) = self.events.try_recv() {
            self.apply_event(ev).await?;
        }
        match &self.fatal {
            Some(why) => Err(Error::Group(why.clone())),
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
                return Err(Error::Group(why));
            }
            Event::Closed => {}
        }
        Ok(())
    }

    fn forget(&mut self, partitions: &[NamedPartition]) {
        let gone: BTreeSet<&NamedPartition> = partitions.iter().collect();
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

    async fn revoke(&mut self, partitions: Vec<NamedPartition>, commit: bool) {
        // Records fetched but not handed out are not consumed: drop them before committing.
        let gone: BTreeSet<&NamedPartition> = partitions.iter().collect();
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

    async fn assign(&mut self, partitions: Vec<NamedPartition>) {
        for tp in &partitions {
            self.owned.insert(tp.clone());
            self.unpositioned.insert(tp.clone());
        }
        self.listener.on_assigned(&partitions);
        self.position_new_partitions().await;
    }

    fn lose(&mut self, partitions: Vec<NamedPartition>) {
        self.listener.on_lost(&partitions);
        self.forget(&partitions);
    }

    /// Start fetching newly assigned partitions at their committed offsets.
    async fn position_new_partitions(&mut self) {
        if self.unpositioned.is_empty() {
            return;
        }
        let wanted: Vec<NamedPartition> = self.unpositioned.iter().cloned().collect();
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
        let parts: Vec<NamedPartition> = self.owned.iter().cloned().collect();
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
                        error: code,
                        generation: identity.generation,
                    }));
                }
                tracing::warn!(error = %e, "async commit failed");
            }
        });
    }

    fn pending_offsets(&self, partitions: &[NamedPartition]) -> OffsetMap {
        partitions
            .iter()
            .filter_map(|tp| {
                let o = *self.consumed.get(tp)?;
                (self.committed.get(tp) != Some(&o)).then(|| (tp.clone(), o))
            })
            .collect()
    }

    async fn commit_partitions(&mut self, partitions: &[NamedPartition]) -> Result<()> {
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
                        error: code,
                        generation: identity.generation,
                    });
                }
                Err(e)
            }
        }
    }

    /// What this member measured since the last report.
    fn measure(&mut self) -> MemberStats {
        let lag = self.lag();
        let cpu = self.control.as_ref().and_then(AgentLink::cpu);
        self.meter.take_stats(Instant::now(), &lag, cpu)
    }

    fn maybe_publish_stats(&mut self) {
        if self.meter.due(Instant::now()) {
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
