//! Consumer-group membership as a sans-IO state machine (classic protocol, KIP-429).
//!
//! The machine takes [`Input`]s — responses, timer ticks, user requests — stamped with the
//! caller's clock in milliseconds, and queues [`Output`]s: requests to send and partition
//! callbacks to run. It never sleeps or touches a socket, so every rule of Kafka's
//! `ConsumerCoordinator` that we mirror is a fast deterministic test (`machine_tests/`, with
//! a simulated coordinator), and the async driver in [`crate::consumer`] is a thin loop
//! around it.
//!
//! Rules, as in docs/design.md §2:
//! - every JoinGroup carries the owned partitions and the generation they belong to;
//! - before joining, partitions are *lost* if the generation or member id was reset, otherwise a
//!   cooperative member keeps them (only partitions of unsubscribed topics are revoked);
//! - after SyncGroup, `revoked = owned − assigned` is revoked (committing first when auto-commit
//!   is on), `added = assigned − owned` is assigned, and any revocation triggers an immediate
//!   rejoin so the leader can hand those partitions out;
//! - the leader validates every plan (no partition both revoked and added in one round) and
//!   remembers what it issued, to survive brokers without a join barrier.
//!
//! The leader's policy — claims, the assignor, every withholding rule, the liveness bound,
//! validation and memory — is [`lagbalance_assign::leader`]: the machine decodes the members'
//! subscriptions, calls [`Leader::plan`] and encodes what it returns. The memory exists only
//! while this member leads (`leading`); what outlives a run as leader is kept in `retired`.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use lagbalance_assign::capacity::saturated;
use lagbalance_assign::leader::{self, Leader, Retired, Round};
use lagbalance_assign::{Assignor, GroupView, MemberStats, NamedPartition, PartitionLoad};

use super::codec::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, Assignment,
    Subscription,
};
use super::fatal::{FencedIn, GroupFatal};
use crate::error::{BrokerCode, RefusalKind};

/// How long cached subscription user data may be reused by later joins; older data is
/// recomputed and sent only if the assignor says the news matters
/// ([`Assignor::user_data_worth_sending`]), so a short age costs no rebalances.
pub const USER_DATA_MAX_AGE_MS: u64 = 5_000;

/// A member rejoins with capacity news of its own at most this often (see
/// [`capacity_news_calls_for_rejoin`]): a storm guard of the member's, whatever the agent does.
pub const CAPACITY_REJOIN_MIN_INTERVAL_MS: u64 = 30_000;

/// The rule of `lagbalance.capacity.rejoin`: whether a member rejoins at once with capacity
/// news of its own, so that the leader can move work off it seconds after it fell behind
/// instead of at the next round someone else happens to start. Its latest sample (`stats`)
/// must say it is saturated: a member with spare capacity never starts a round this way,
/// since moving work to it helps nobody who keeps up. The user data `assignor` makes of the
/// sample must be news against what the member last `sent`, by the assignor's judgement.
/// And its last such rejoin (`last_rejoin_ms`) must be [`CAPACITY_REJOIN_MIN_INTERVAL_MS`]
/// ago, which bounds the rounds one member starts however noisy its samples are.
///
/// The assignor sees the sample only once the first two conditions hold (its estimator keeps
/// state). The membership machine and the simulator both call this.
pub fn capacity_news_calls_for_rejoin(
    assignor: &mut dyn Assignor,
    stats: &MemberStats,
    sent: Option<&Bytes>,
    last_rejoin_ms: Option<u64>,
    now_ms: u64,
) -> bool {
    if !saturated(stats)
        || last_rejoin_ms.is_some_and(|at| now_ms < at + CAPACITY_REJOIN_MIN_INTERVAL_MS)
    {
        return false;
    }
    let fresh = assignor.subscription_user_data(stats);
    assignor.user_data_news(sent, fresh.as_ref())
}

/// In a cooperative group the first heartbeat after a SyncGroup comes a quarter interval
/// later, and this many more follow a quarter interval apart before the cadence resumes.
const SYNC_PROBES: u8 = 1;

/// Settings of the membership, named after the Java consumer's.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub group_id: String,
    /// `group.instance.id` (KIP-345 static membership).
    pub instance_id: Option<String>,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// `max.poll.interval.ms`; also the rebalance timeout sent in JoinGroup, as Java does.
    pub max_poll_interval_ms: u64,
    /// `retry.backoff.ms`: the first pause after a failed coordinator request; it doubles with
    /// every failure in a row up to `retry.backoff.max.ms` (Java's rule, KIP-580).
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// `enable.auto.commit`: commit before revoking.
    pub auto_commit: bool,
    /// `client.rack`.
    pub rack: Option<String>,
    /// `lagbalance.capacity.rejoin`: a saturated member rejoins with capacity news by itself
    /// ([`capacity_news_calls_for_rejoin`]). Off leaves capacity-driven rounds to the agent and to
    /// rounds others start.
    pub capacity_rejoin: bool,
}

impl Default for MemberConfig {
    fn default() -> Self {
        MemberConfig {
            group_id: String::new(),
            instance_id: None,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1_000,
            auto_commit: true,
            rack: None,
            capacity_rejoin: true,
        }
    }
}

/// A request for the driver to send to the coordinator (or any broker for FindCoordinator).
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    FindCoordinator,
    Join {
        member_id: String,
        instance_id: Option<String>,
        session_timeout_ms: i32,
        rebalance_timeout_ms: i32,
        /// `(assignor name, subscription blob)` in preference order.
        protocols: Vec<(String, Bytes)>,
        reason: String,
    },
    Sync {
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        protocol: String,
        /// Leader only: `(member id, assignment blob)`.
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
    },
    Leave {
        member_id: String,
        instance_id: Option<String>,
        reason: String,
    },
}

/// One member in a JoinGroup response (leader only).
#[derive(Clone, Debug, PartialEq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    /// Subscription blob for the chosen protocol.
    pub metadata: Bytes,
}

/// A JoinGroup answer: the generation, the protocol the broker chose, the leader and this
/// member's id, and (for the leader only) every member's subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinAnswer {
    pub error: BrokerCode,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub members: Vec<JoinedMember>,
}

/// A response, already decoded from the wire by the driver. `error` is the broker's error code
/// ([`BrokerCode::NONE`] on success).
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Coordinator {
        node_id: i32,
        addr: String,
    },
    Join(JoinAnswer),
    Sync {
        error: BrokerCode,
        assignment: Bytes,
    },
    Heartbeat {
        error: BrokerCode,
    },
    Leave {
        error: BrokerCode,
    },
    /// FindCoordinator answered with an error (never [`BrokerCode::NONE`]).
    CoordinatorError {
        error: BrokerCode,
    },
}

/// Everything the machine reacts to.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Time passed; check timers.
    Tick,
    /// Set the subscription (topics).
    Subscribe(Vec<String>),
    /// The application polled (resets the `max.poll.interval.ms` timer).
    Polled,
    /// Ask for a rebalance with fresh user data (e.g. new capacity figures).
    RequestRejoin(String),
    /// New self-measurements for the subscription user data.
    Stats(MemberStats),
    /// Voluntarily unsubscribe: revoke everything, LeaveGroup, rejoin after `cooldown_ms`.
    LeaveAndRejoin { cooldown_ms: u64, reason: String },
    /// Commit, revoke and leave for good.
    Close,
    /// The driver ran the partition callbacks it was given.
    CallbacksDone,
    /// The answer to request `id`.
    Response { id: u64, response: Response },
    /// Request `id` failed in transport (connection lost, timeout).
    RequestFailed { id: u64, reason: String },
    /// Request `id` was refused for good: the broker rejected our credentials or certificate
    /// (SASL, TLS) or we are not authorised (`kind` says which). Repeating it cannot help, so
    /// the member stops with this reason instead of backing off and retrying for ever.
    RequestRefused {
        id: u64,
        kind: RefusalKind,
        reason: String,
    },
    /// Leader inputs asked for with [`Output::LeaderInputsNeeded`].
    LeaderInputs {
        id: u64,
        /// Topics that exist, with partition counts.
        topics: Vec<(String, i32)>,
        /// Lag and incoming rate per partition, if sampled (lagbalance plans with them).
        stats: Option<Vec<PartitionLoad>>,
    },
    /// An OffsetCommit failed with this error code; `generation` is the one the commit carried
    /// (the member's generation when it was sent).
    CommitFailed { error: BrokerCode, generation: i32 },
}

/// Everything the machine asks of its driver, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Send {
        id: u64,
        request: Request,
    },
    /// Leader: fetch metadata (and lag) for these topics, then answer with
    /// [`Input::LeaderInputs`].
    LeaderInputsNeeded {
        id: u64,
        topics: Vec<String>,
    },
    /// Stop fetching these partitions; commit them first when `commit` is set.
    Revoke {
        partitions: Vec<NamedPartition>,
        commit: bool,
    },
    /// Start fetching these partitions (may be empty, like Java's callback).
    Assign {
        partitions: Vec<NamedPartition>,
        generation: i32,
    },
    /// These partitions now belong to someone else already: drop them, no commit.
    Lost {
        partitions: Vec<NamedPartition>,
    },
    /// The member cannot continue; [`GroupFatal`] says why (fenced static member, KIP-848
    /// group, an assignor it does not offer, a refusal, …).
    Fatal(GroupFatal),
    /// LeaveGroup finished after [`Input::Close`].
    Closed,
}

/// Where the member is in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not subscribed, cooling down after a voluntary leave, or waiting for a poll after a
    /// poll timeout.
    Idle,
    /// Looking for the coordinator.
    Discovering,
    /// Ready to (re)join.
    NeedJoin,
    Joining,
    /// Leader: waiting for metadata to compute the plan.
    Assigning,
    Syncing,
    Stable,
    Leaving,
    Closed,
}

/// What our last JoinGroup carried (see `Membership::last_join`).
struct SentJoin {
    protocols: Vec<(String, Bytes)>,
    /// The generation its claim carried (−1: we had never synced), and whose plan that was.
    claim_generation: i32,
    claim_leader: String,
    owned: BTreeSet<NamedPartition>,
    user_data: Vec<Option<Bytes>>,
    /// It repeated the JoinGroup before it byte for byte (someone else's rebalance).
    echoed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Find,
    Join,
    Sync,
    Leave,
    LeaderInputs,
}

/// What wakes an idle member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// A non-empty subscription (a new member).
    OnSubscribe,
    /// This time (end of the cooldown after a voluntary leave).
    At(u64),
    /// The next poll (after `max.poll.interval.ms` expired).
    OnPoll,
}

/// What to do once a LeaveGroup completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterLeave {
    Close,
    RejoinAt(u64),
}

/// The membership state machine. See the module docs.
pub struct Membership {
    config: MemberConfig,
    assignors: Vec<Box<dyn Assignor>>,
    phase: Phase,
    /// Phase to resume once the coordinator is found again.
    resume: Phase,
    coordinator: Option<(i32, String)>,
    member_id: String,
    generation: i32,
    protocol: Option<String>,
    leader: String,
    subscription: BTreeSet<String>,
    owned: BTreeSet<NamedPartition>,
    /// Generation at which `owned` was handed to us (KIP-792's "generation of the owned
    /// partitions"): the generation our subscription reports. It only changes when a SyncGroup
    /// succeeds, so a rejoin that changes nothing sends the same bytes as the last one —
    /// which keeps brokers that compare metadata (tansu 0.6.0 bumps the generation on any
    /// change) from rebalancing forever.
    owned_generation: i32,
    /// The leader whose plan `owned_generation` came from.
    owned_leader: String,
    stats: MemberStats,
    /// User data per assignor as last sent; refreshed on request or when older than
    /// [`USER_DATA_MAX_AGE_MS`], not on every join (same reason as `owned_generation`).
    user_data: Vec<Option<Bytes>>,
    user_data_at: Option<u64>,
    refresh_user_data: bool,
    /// When we last rejoined with capacity news of our own.
    capacity_rejoin_at: Option<u64>,
    /// Early heartbeats still to send after the last SyncGroup (see `on_sync`).
    sync_probes: u8,
    /// Follower: our repeated JoinGroup came back in the generation we already had — the
    /// REBALANCE_IN_PROGRESS that sent us was a member expelled without a new generation
    /// (see `on_join`); the leader must hear of it.
    nudge_leader: bool,
    rejoin_reason: Option<String>,
    /// The subscriptions of our last JoinGroup, the owned set and user data they carried and
    /// the leader we knew then; `echo_last_join` asks to send them again unchanged.
    last_join: Option<SentJoin>,
    echo_last_join: bool,
    /// Outputs not yet taken by the driver.
    out: VecDeque<Output>,
    next_id: u64,
    pending: Option<(u64, Pending)>,
    heartbeat_pending: Option<u64>,
    /// The pending heartbeat is a keepalive (see `keepalive_due`), or was sent for a generation
    /// we have since left: its answer says nothing about the current generation, only whether
    /// the coordinator still counts us as alive.
    heartbeat_generation: i32,
    heartbeat_keepalive: bool,
    awaiting_callbacks: bool,
    after_leave: AfterLeave,
    wake: Wake,
    /// Not before this time (backoff after errors, cooldown after a voluntary leave).
    not_before: u64,
    /// Failed coordinator requests in a row (the backoff's exponent).
    failures: u32,
    next_heartbeat: u64,
    last_heartbeat_ok: u64,
    /// Latest time the coordinator is known to have heard from us (send time of a heartbeat
    /// that succeeded; receipt of a JoinGroup/SyncGroup answer). Past
    /// `contact_at + session − heartbeat interval` the coordinator may have expelled us and
    /// handed our partitions on, so we give them up first (see `check_session`).
    contact_at: u64,
    heartbeat_sent_at: u64,
    last_poll: u64,
    /// Leader: the members of the current join, kept until the plan is computed.
    join_members: Vec<JoinedMember>,
    /// The leader's memory while this member leads ([`Leader`]: the plan it issued last, its
    /// liveness clocks, …); `None` while another member leads.
    leading: Option<Leader>,
    /// What the last run as leader left for the next one ([`Leader::retire`]).
    retired: Retired,
    /// Leader: the last plan kept back something only another round can hand out
    /// ([`leader::LeaderPlan::follow_up`]); nobody may revoke anything, so the leader itself
    /// starts that round, a heartbeat interval later.
    follow_up: bool,
    /// Leader: follow-up rounds run back to back; each waits twice as long as the one before.
    follow_ups_in_a_row: u32,
    /// Leader: when the next partition left without a confirmed holder reaches the bound; a
    /// round runs then at the latest.
    liveness_deadline: Option<u64>,
    /// Leader, stable: run a round at this time for the liveness bound.
    liveness_round_at: Option<u64>,
    now: u64,
}

/// The coordinator moved or is not ready: find it again.
fn is_coordinator_error(code: BrokerCode) -> bool {
    code.is(ResponseError::NotCoordinator)
        || code.is(ResponseError::CoordinatorNotAvailable)
        || code.is(ResponseError::CoordinatorLoadInProgress)
}

impl Membership {
    /// A member that offers `assignors` in preference order (the first is preferred).
    pub fn new(config: MemberConfig, assignors: Vec<Box<dyn Assignor>>, now_ms: u64) -> Self {
        Membership {
            config,
            assignors,
            phase: Phase::Idle,
            resume: Phase::NeedJoin,
            coordinator: None,
            member_id: String::new(),
            generation: -1,
            protocol: None,
            leader: String::new(),
            subscription: BTreeSet::new(),
            owned: BTreeSet::new(),
            owned_generation: -1,
            owned_leader: String::new(),
            stats: MemberStats::default(),
            user_data: Vec::new(),
            user_data_at: None,
            refresh_user_data: true,
            capacity_rejoin_at: None,
            sync_probes: 0,
            nudge_leader: false,
            rejoin_reason: None,
            last_join: None,
            echo_last_join: false,
            out: VecDeque::new(),
            next_id: 1,
            pending: None,
            heartbeat_pending: None,
            heartbeat_generation: -1,
            heartbeat_keepalive: false,
            awaiting_callbacks: false,
            after_leave: AfterLeave::Close,
            wake: Wake::OnSubscribe,
            not_before: 0,
            failures: 0,
            next_heartbeat: 0,
            last_heartbeat_ok: now_ms,
            contact_at: now_ms,
            heartbeat_sent_at: now_ms,
            last_poll: now_ms,
            join_members: Vec::new(),
            leading: None,
            retired: Retired::default(),
            follow_up: false,
            follow_ups_in_a_row: 0,
            liveness_deadline: None,
            liveness_round_at: None,
            now: now_ms,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn member_id(&self) -> &str {
        &self.member_id
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }
    pub fn is_leader(&self) -> bool {
        !self.member_id.is_empty() && self.leader == self.member_id
    }
    pub fn owned(&self) -> &BTreeSet<NamedPartition> {
        &self.owned
    }
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
    pub fn coordinator(&self) -> Option<&(i32, String)> {
        self.coordinator.as_ref()
    }
    pub fn config(&self) -> &MemberConfig {
        &self.config
    }

    /// Take the next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the machine next wants a [`Input::Tick`], in the caller's milliseconds.
    pub fn next_timer(&self) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut at = |x: u64| t = Some(t.map_or(x, |t| t.min(x)));
        if self.not_before > self.now {
            at(self.not_before);
        }
        if let (Phase::Idle, Wake::At(w)) = (self.phase, self.wake) {
            at(w);
        }
        if let (Phase::Stable, Some(round)) = (self.phase, self.liveness_round_at) {
            at(round);
        }
        if self.joined() {
            at(self.next_heartbeat);
            at(self.last_heartbeat_ok + self.config.session_timeout_ms);
        } else if self.keepalive_due() {
            at(self.next_heartbeat);
        }
        if let Some(until) = self.owned_valid_until() {
            at(until);
        }
        if !self.owned.is_empty() && self.poll_timer_runs() {
            at(self.last_poll + self.config.max_poll_interval_ms);
        }
        t
    }

    /// Feed one input at time `now_ms`; outputs queue up for [`Self::poll_output`].
    pub fn handle(&mut self, now_ms: u64, input: Input) {
        // Judged before time advances: the window of `owned_valid_until` is computed from the
        // last step, and a process that did not run past it (frozen, or stalled) may have been
        // expired meanwhile — it must not roll the window forward from the moment it wakes. A
        // member SIGSTOPped while its JoinGroup was in flight otherwise served a buffered
        // record on waking, after the coordinator had dropped it (chaos suite, Kafka and
        // tansu). One heartbeat interval of slack keeps a late timer from counting as a pause.
        let lapsed = self
            .owned_valid_until()
            .is_some_and(|until| now_ms > until + self.config.heartbeat_interval_ms);
        self.now = self.now.max(now_ms);
        if self.phase == Phase::Closed {
            // Terminal (closed or fatal): a late answer — say a heartbeat failing with
            // NOT_COORDINATOR — must not start a rediscovery and a rejoin.
            return;
        }
        if lapsed {
            self.expire_session(
                "this process was paused past the time its partitions were valid for; partitions lost",
            );
        }
        match input {
            Input::Tick => {}
            Input::Subscribe(topics) => self.subscribe(topics),
            Input::Polled => {
                self.last_poll = self.now;
                if self.phase == Phase::Idle && self.wake == Wake::OnPoll {
                    self.phase = Phase::NeedJoin;
                }
            }
            Input::RequestRejoin(reason) => {
                self.refresh_user_data = true;
                self.request_rejoin(reason)
            }
            Input::Stats(s) => {
                self.stats = s;
                self.rejoin_on_capacity_news();
            }
            Input::LeaveAndRejoin {
                cooldown_ms,
                reason,
            } => self.begin_leave(AfterLeave::RejoinAt(cooldown_ms), reason),
            Input::Close => self.begin_leave(AfterLeave::Close, "consumer closed".into()),
            Input::CallbacksDone => self.awaiting_callbacks = false,
            Input::Response { id, response } => self.on_response(id, response),
            Input::RequestFailed { id, reason } => self.on_transport_failure(id, reason),
            Input::RequestRefused { id, kind, reason } => self.on_refusal(id, kind, reason),
            Input::LeaderInputs { id, topics, stats } => self.on_leader_inputs(id, topics, stats),
            Input::CommitFailed { error, generation } => self.on_commit_failed(error, generation),
        }
        self.drive();
    }

    fn joined(&self) -> bool {
        self.generation >= 0
            && !self.member_id.is_empty()
            && match self.phase {
                Phase::Assigning | Phase::Syncing | Phase::Stable => true,
                // Still a member of the generation while the revocation callbacks (and their
                // commit) run before the JoinGroup / LeaveGroup goes out: keep heartbeating, as
                // Java does. Otherwise a callback slower than the session timeout gets us
                // expelled and our partitions handed out while we still hold them.
                Phase::NeedJoin | Phase::Leaving => self.pending.is_none(),
                _ => false,
            }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send(&mut self, kind: Pending, request: Request) {
        let id = self.id();
        self.pending = Some((id, kind));
        self.out.push_back(Output::Send { id, request });
    }

    /// Wait before the next coordinator request: `retry.backoff.ms`, doubled for every failure
    /// in a row, at most `retry.backoff.max.ms`. A dead coordinator that FindCoordinator still
    /// names would otherwise be asked for every 100 ms until the cluster notices.
    fn backoff(&mut self) {
        let pause = self
            .config
            .retry_backoff_ms
            .saturating_mul(1 << self.failures.min(16))
            .min(
                self.config
                    .retry_backoff_max_ms
                    .max(self.config.retry_backoff_ms),
            );
        self.failures = self.failures.saturating_add(1);
        self.not_before = self.now + pause;
    }

    fn subscribe(&mut self, topics: Vec<String>) {
        let topics: BTreeSet<String> = topics.into_iter().collect();
        if topics == self.subscription {
            return;
        }
        self.subscription = topics;
        match self.phase {
            Phase::Idle => {
                if self.wake == Wake::OnSubscribe && !self.subscription.is_empty() {
                    self.phase = Phase::NeedJoin;
                }
            }
            Phase::Closed | Phase::Leaving => {}
            _ => self.request_rejoin("subscription changed".into()),
        }
    }

    /// Rejoins with capacity news while stable, by [`capacity_news_calls_for_rejoin`].
    fn rejoin_on_capacity_news(&mut self) {
        if !self.config.capacity_rejoin || self.phase != Phase::Stable {
            return;
        }
        let Some(i) = self.chosen_assignor() else {
            return;
        };
        if capacity_news_calls_for_rejoin(
            self.assignors[i].as_mut(),
            &self.stats,
            self.user_data.get(i).and_then(Option::as_ref),
            self.capacity_rejoin_at,
            self.now,
        ) {
            self.capacity_rejoin_at = Some(self.now);
            self.refresh_user_data = true;
            self.request_rejoin("saturated, with a new capacity estimate".into());
        }
    }

    /// Index of the assignor of the protocol the group chose, if we offered it.
    fn chosen_assignor(&self) -> Option<usize> {
        let chosen = self.protocol.as_deref()?;
        self.assignors.iter().position(|a| a.name() == chosen)
    }

    /// Whether `fresh` user data of assignor `i` says something the leader should plan with
    /// that what we last sent does not (the assignor judges; appearing or vanishing always
    /// does).
    fn worth_sending(&self, i: usize, fresh: &Option<Bytes>) -> bool {
        self.assignors[i].user_data_news(
            self.user_data.get(i).and_then(Option::as_ref),
            fresh.as_ref(),
        )
    }

    fn request_rejoin(&mut self, reason: String) {
        match self.phase {
            Phase::Stable => {
                self.rejoin_reason = Some(reason);
                self.phase = Phase::NeedJoin;
            }
            // Mid-rebalance: rejoin once this round completes.
            Phase::Joining | Phase::Assigning | Phase::Syncing | Phase::Discovering => {
                self.rejoin_reason = Some(reason)
            }
            _ => {}
        }
    }

    /// Forget the member id and generation (the coordinator no longer knows us).
    fn reset_member(&mut self) {
        self.member_id.clear();
        self.generation = -1;
    }

    fn lose_coordinator(&mut self, why: &str) {
        tracing::info!(group = %self.config.group_id, why, "coordinator lost; rediscovering");
        self.coordinator = None;
        if self.phase != Phase::Discovering {
            self.resume = match self.phase {
                Phase::Stable => Phase::Stable,
                Phase::Leaving => Phase::Leaving,
                _ => Phase::NeedJoin,
            };
            self.phase = Phase::Discovering;
        }
        self.pending = None;
        self.heartbeat_pending = None;
        self.backoff();
    }

    /// Decide what to send now.
    fn drive(&mut self) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.check_timers();
        if let (Phase::Idle, Wake::At(w)) = (self.phase, self.wake) {
            if self.now >= w && !self.subscription.is_empty() {
                // The cooldown after a voluntary leave is over.
                self.phase = Phase::NeedJoin;
            }
        }
        if self.pending.is_some() || self.now < self.not_before {
            self.maybe_heartbeat();
            return;
        }
        match self.phase {
            Phase::Discovering => self.send(Pending::Find, Request::FindCoordinator),
            Phase::NeedJoin if self.coordinator.is_none() => {
                self.resume = Phase::NeedJoin;
                self.phase = Phase::Discovering;
                self.send(Pending::Find, Request::FindCoordinator);
            }
            Phase::NeedJoin if !self.awaiting_callbacks => self.join_when_prepared(),
            Phase::Leaving if !self.awaiting_callbacks => self.send_leave(),
            _ => {}
        }
        self.maybe_heartbeat();
    }

    /// `max.poll.interval.ms` applies while stable and while revocation callbacks run before
    /// a rejoin (they run inside the application's poll, as in Java): a member stuck there
    /// keeps heartbeating, so without this bound it would hold its partitions — and the
    /// group's rebalance — forever.
    fn poll_timer_runs(&self) -> bool {
        self.phase == Phase::Stable || (self.phase == Phase::NeedJoin && self.awaiting_callbacks)
    }

    /// When the coordinator may have expired our session, as far as we can tell.
    fn session_deadline(&self) -> u64 {
        let margin = self
            .config
            .heartbeat_interval_ms
            .min(self.config.session_timeout_ms / 3);
        self.contact_at + self.config.session_timeout_ms - margin
    }

    /// Until when the partitions we own are ours for sure: past it the coordinator may have
    /// expired our session and handed them on, so no record of them may reach the application
    /// (the consumer checks this before every hand-out; a process frozen past it must not
    /// serve its buffer on waking). `None` when we own nothing.
    ///
    /// While a JoinGroup or SyncGroup is in flight the coordinator keeps our session, so the
    /// session deadline does not apply — but it may have answered while this process was
    /// frozen, completed the round without us and expired us since. The partitions are then
    /// ours only while we keep running to read that answer: one heartbeat interval past this
    /// step (the keepalive heartbeat wakes the machine at least that often). Without this
    /// bound a member SIGSTOPped mid-join handed out a buffered record on waking, 772 ms after
    /// the partition's new owner had started on it (chaos suite on Kafka).
    pub fn owned_valid_until(&self) -> Option<u64> {
        if self.owned.is_empty() {
            return None;
        }
        let rebalancing = matches!(self.pending, Some((_, Pending::Join | Pending::Sync)));
        Some(if rebalancing {
            self.now + self.config.heartbeat_interval_ms
        } else {
            self.session_deadline()
        })
    }

    /// Give up our partitions once our session may have expired (librdkafka does the same;
    /// Java waits for a fencing error). The coordinator may already have handed them to
    /// someone else; consuming on would break the one-owner rule.
    fn check_session(&mut self) {
        if self
            .owned_valid_until()
            .is_none_or(|until| self.now < until)
        {
            return;
        }
        self.expire_session(
            "no contact with the coordinator for the session timeout; partitions lost",
        );
    }

    /// Give up the partitions and the generation; `why` is logged.
    fn expire_session(&mut self, why: &str) {
        tracing::warn!(group = %self.config.group_id, "{why}");
        self.lose_owned();
        self.generation = -1;
        self.contact_at = self.now;
        if !matches!(self.phase, Phase::Leaving | Phase::Closed | Phase::Idle) {
            self.lose_coordinator("session may have expired");
            self.resume = Phase::NeedJoin;
        }
    }

    fn check_timers(&mut self) {
        self.check_session();
        if self.phase == Phase::Stable
            && self.is_leader()
            && self.liveness_round_at.is_some_and(|at| self.now >= at)
        {
            self.liveness_round_at = None;
            self.request_rejoin(
                "a partition has had no confirmed owner for a session timeout".into(),
            );
        }
        if !self.joined() {
            return;
        }
        if self.now >= self.last_heartbeat_ok + self.config.session_timeout_ms {
            // Java marks the coordinator unknown; the next heartbeat after rediscovery tells
            // whether we are still a member.
            self.last_heartbeat_ok = self.now;
            self.lose_coordinator("session timeout passed without a successful heartbeat");
            return;
        }
        if self.poll_timer_runs() && self.now >= self.last_poll + self.config.max_poll_interval_ms {
            tracing::warn!(group = %self.config.group_id, "max.poll.interval.ms passed without a poll; leaving the group");
            let member_id = self.member_id.clone();
            if self.config.instance_id.is_none() && self.coordinator.is_some() {
                let id = self.id();
                self.out.push_back(Output::Send {
                    id,
                    request: Request::Leave {
                        member_id,
                        instance_id: None,
                        reason: "consumer poll timeout has expired".into(),
                    },
                });
            }
            // We are out of the group now and the partitions may be handed on at once: they
            // are lost (no commit — our generation is gone). The driver runs the callback
            // before it fetches again, i.e. at the next poll; we rejoin then too.
            if !self.owned.is_empty() {
                let lost = self.take_owned();
                self.out.push_back(Output::Lost { partitions: lost });
                self.awaiting_callbacks = true;
            }
            self.owned_generation = -1;
            self.reset_member();
            self.heartbeat_pending = None;
            self.phase = Phase::Idle;
            self.wake = Wake::OnPoll;
        }
    }

    /// Heartbeat while our JoinGroup is in flight. Kafka keeps a joining member alive by itself;
    /// tansu 0.6.0 refreshes a member's session only on heartbeats (not on JoinGroup, which it
    /// may hold 3 s per attempt, nor on SyncGroup), so a member cycling through join and sync
    /// while the group churned was expelled after a session timeout — its partitions given
    /// away while it still consumed them, and its next JoinGroup accepted as a newcomer's
    /// under the same id, without a fencing error. The answer only refreshes our contact time.
    fn probe_interval(&self) -> u64 {
        self.config.heartbeat_interval_ms / 4
    }

    fn keepalive_due(&self) -> bool {
        self.phase == Phase::Joining && !self.member_id.is_empty()
    }

    fn maybe_heartbeat(&mut self) {
        let keepalive = !self.joined() && self.keepalive_due();
        if !(self.joined() || keepalive)
            || self.coordinator.is_none()
            || self.heartbeat_pending.is_some()
        {
            return;
        }
        if self.now < self.next_heartbeat {
            return;
        }
        let id = self.id();
        self.heartbeat_pending = Some(id);
        self.heartbeat_generation = self.generation;
        self.heartbeat_keepalive = keepalive;
        self.heartbeat_sent_at = self.now;
        self.next_heartbeat = if self.sync_probes > 0 {
            self.sync_probes -= 1;
            self.now + self.probe_interval()
        } else {
            self.now + self.config.heartbeat_interval_ms
        };
        self.out.push_back(Output::Send {
            id,
            request: Request::Heartbeat {
                generation: self.generation,
                member_id: self.member_id.clone(),
                instance_id: self.config.instance_id.clone(),
            },
        });
    }

    fn cooperative(&self) -> bool {
        self.assignors.iter().all(|a| a.cooperative())
    }

    /// Java's `onJoinPrepare`. Returns whether the JoinGroup can go now (false while the
    /// driver runs callbacks emitted here).
    fn prepare_join(&mut self) -> bool {
        if self.owned.is_empty() {
            return true;
        }
        if self.generation < 0 || self.member_id.is_empty() {
            self.owned_generation = -1;
            let lost = self.take_owned();
            self.out.push_back(Output::Lost { partitions: lost });
        } else if !self.cooperative() {
            let revoked = self.take_owned();
            self.out.push_back(Output::Revoke {
                partitions: revoked,
                commit: self.config.auto_commit,
            });
        } else {
            let unsubscribed: Vec<NamedPartition> = self
                .owned
                .iter()
                .filter(|(t, _)| !self.subscription.contains(t))
                .cloned()
                .collect();
            if unsubscribed.is_empty() {
                return true;
            }
            for tp in &unsubscribed {
                self.owned.remove(tp);
            }
            self.out.push_back(Output::Revoke {
                partitions: unsubscribed,
                commit: self.config.auto_commit,
            });
        }
        self.awaiting_callbacks = true;
        false
    }

    fn join_when_prepared(&mut self) {
        if self.prepare_join() {
            self.send_join();
        }
    }

    fn subscription_blob(&mut self, assignor: usize) -> Bytes {
        let user_data = self.user_data.get(assignor).cloned().flatten();
        let sub = Subscription {
            topics: self.subscription.iter().cloned().collect(),
            user_data,
            owned: self.owned.iter().cloned().collect(),
            generation: self.owned_generation,
            rack: self.config.rack.clone(),
        };
        // Encoding our own well-formed values cannot fail; an empty blob would be rejected by
        // the leader as malformed rather than crash us.
        encode_subscription(&sub).unwrap_or_default()
    }

    fn send_join(&mut self) {
        let stale = self
            .user_data_at
            .is_none_or(|at| self.now >= at + USER_DATA_MAX_AGE_MS);
        let missing = self.user_data.len() != self.assignors.len();
        if self.refresh_user_data || stale || missing {
            let fresh: Vec<Option<Bytes>> = (0..self.assignors.len())
                .map(|i| self.assignors[i].subscription_user_data(&self.stats))
                .collect();
            if self.refresh_user_data || missing {
                self.user_data = fresh;
            } else {
                // Aged out: keep what we sent unless the assignor says the news matters.
                for (i, new) in fresh.into_iter().enumerate() {
                    if self.worth_sending(i, &new) {
                        self.user_data[i] = new;
                    }
                }
            }
            self.user_data_at = Some(self.now);
            self.refresh_user_data = false;
        }
        let echo = std::mem::take(&mut self.echo_last_join)
            .then_some(self.last_join.as_ref())
            .flatten()
            .filter(|last| {
                // A leader never repeats itself: tansu does not bump the generation for an
                // unchanged subscription, and a SyncGroup for a generation that was already
                // synced returns the assignment stored then, ignoring the leader's new plan —
                // seen: a survivor leading alone kept its half of the partitions for good
                // after the other member's session expired.
                !self.is_leader()
                    && last.claim_generation >= 0
                    && last.claim_leader == self.leader
                    && last.owned == self.owned
                    && last.user_data == self.user_data
            })
            .map(|last| last.protocols.clone());
        let echo_used = echo.is_some();
        let protocols: Vec<(String, Bytes)> = match echo {
            // Someone else's rebalance, and nothing of ours changed: the same bytes as last
            // time. A subscription that differs only in the generation of the (unchanged)
            // owned partitions is still a changed subscription, and on a broker without a join
            // barrier (tansu 0.6.0) every changed subscription bumps the generation for the
            // whole group — each member's rejoin after syncing started the next round, for
            // ever (seen: a round every 4–8 s in a group with nothing to move). Only a claim
            // from a plan of the current leader is repeated: a new leader needs claims no older
            // than its first plan (`withhold_unclaimed_if_history_unknown`; seen: a new leader
            // withholding a partition for good from members repeating older claims). Any
            // change of ours sends fresh bytes too; a
            // claim from before our first sync is never repeated (the leader would take us for
            // a member it knows nothing of, and keep withholding — seen: a stalled group).
            Some(protocols) => protocols,
            None => (0..self.assignors.len())
                .map(|i| {
                    (
                        self.assignors[i].name().to_owned(),
                        self.subscription_blob(i),
                    )
                })
                .collect(),
        };
        self.last_join = Some(SentJoin {
            protocols: protocols.clone(),
            claim_generation: match &self.last_join {
                Some(last) if echo_used => last.claim_generation,
                _ => self.owned_generation,
            },
            claim_leader: match &self.last_join {
                Some(last) if echo_used => last.claim_leader.clone(),
                _ => self.owned_leader.clone(),
            },
            owned: self.owned.clone(),
            user_data: self.user_data.clone(),
            echoed: echo_used,
        });
        let reason = self
            .rejoin_reason
            .take()
            .unwrap_or_else(|| "joining".into());
        self.phase = Phase::Joining;
        self.send(
            Pending::Join,
            Request::Join {
                member_id: self.member_id.clone(),
                instance_id: self.config.instance_id.clone(),
                session_timeout_ms: self.config.session_timeout_ms as i32,
                rebalance_timeout_ms: self.config.max_poll_interval_ms as i32,
                protocols,
                reason,
            },
        );
    }

    fn begin_leave(&mut self, after: AfterLeave, reason: String) {
        if matches!(self.phase, Phase::Closed | Phase::Leaving) {
            return;
        }
        if !self.owned.is_empty() {
            let revoked = self.take_owned();
            self.out.push_back(Output::Revoke {
                partitions: revoked,
                commit: self.config.auto_commit,
            });
            self.awaiting_callbacks = true;
        }
        self.after_leave = after;
        self.rejoin_reason = Some(reason);
        // Whatever was in flight no longer matters.
        self.pending = None;
        self.heartbeat_pending = None;
        self.phase = Phase::Leaving;
    }

    fn send_leave(&mut self) {
        // Static members do not leave on close (KIP-345): their identity outlives the process
        // and the session timeout removes them if they do not come back. A voluntary leave
        // (to rebalance) is sent for them too.
        let explicit = matches!(self.after_leave, AfterLeave::RejoinAt(_));
        let known = !self.member_id.is_empty() && self.coordinator.is_some();
        if known && (self.config.instance_id.is_none() || explicit) {
            let request = Request::Leave {
                member_id: self.member_id.clone(),
                instance_id: self.config.instance_id.clone(),
                reason: self.rejoin_reason.clone().unwrap_or_default(),
            };
            self.send(Pending::Leave, request);
        } else {
            self.finish_leave();
        }
    }

    fn finish_leave(&mut self) {
        self.pending = None;
        // A heartbeat sent while the leave callbacks ran is moot now; its answer must not
        // rediscover the coordinator (and rejoin) during the cooldown.
        self.heartbeat_pending = None;
        self.reset_member();
        match self.after_leave {
            AfterLeave::Close => {
                self.phase = Phase::Closed;
                self.out.push_back(Output::Closed);
            }
            AfterLeave::RejoinAt(cooldown) => {
                self.phase = Phase::Idle;
                self.wake = Wake::At(self.now + cooldown);
            }
        }
    }

    fn on_transport_failure(&mut self, id: u64, reason: String) {
        if self.heartbeat_pending == Some(id) {
            self.heartbeat_pending = None;
            // A keepalive's failure is the JoinGroup's to report: it went to the same broker.
            if !self.heartbeat_is_moot() {
                self.lose_coordinator(&format!("heartbeat failed: {reason}"));
            }
            return;
        }
        let Some((pid, kind)) = self.pending else {
            return;
        };
        if pid != id {
            return;
        }
        self.pending = None;
        match kind {
            Pending::Leave => self.finish_leave(),
            Pending::LeaderInputs => {
                // Could not read metadata: rejoin so the next leader (maybe us) tries again.
                self.phase = Phase::NeedJoin;
                self.backoff();
            }
            _ => self.lose_coordinator(&reason),
        }
    }

    fn on_refusal(&mut self, id: u64, kind: RefusalKind, reason: String) {
        if self.phase == Phase::Closed {
            return;
        }
        // Leaving anyway: a refused LeaveGroup just ends the leave (the session times out).
        if matches!(self.pending, Some((pid, Pending::Leave)) if pid == id) {
            self.pending = None;
            self.finish_leave();
            return;
        }
        if self.heartbeat_pending == Some(id) {
            self.heartbeat_pending = None;
        }
        if matches!(self.pending, Some((pid, _)) if pid == id) {
            self.pending = None;
        }
        self.fatal(GroupFatal::Refused { kind, reason });
    }

    fn on_response(&mut self, id: u64, response: Response) {
        if self.heartbeat_pending == Some(id) {
            self.heartbeat_pending = None;
            if let Response::Heartbeat { error } = response {
                if error.is_ok() {
                    self.failures = 0;
                }
                if self.heartbeat_is_moot() {
                    self.on_keepalive(error);
                } else {
                    self.on_heartbeat(error);
                }
            }
            return;
        }
        match self.pending {
            Some((pid, _)) if pid == id => self.pending = None,
            // An answer to something we gave up on (a superseded request): ignore it.
            _ => return,
        }
        // The coordinator answered a group request: the next failure starts a new backoff.
        if let Response::Join(JoinAnswer { error, .. }) | Response::Sync { error, .. } = &response {
            if error.is_ok() {
                self.failures = 0;
            }
        }
        match response {
            Response::Coordinator { node_id, addr } => {
                self.coordinator = Some((node_id, addr));
                self.phase = self.resume;
                if self.phase == Phase::Stable {
                    self.next_heartbeat = self.now;
                }
            }
            Response::CoordinatorError { error }
                if error.is(ResponseError::GroupAuthorizationFailed) =>
            {
                // Not allowed to describe the group: no coordinator will ever be found.
                self.fatal(GroupFatal::CoordinatorAuthorization {
                    group: self.config.group_id.clone(),
                    code: error,
                });
            }
            Response::CoordinatorError { error } => {
                tracing::debug!(%error, "FindCoordinator failed");
                self.backoff();
            }
            Response::Join(answer) => self.on_join(answer),
            Response::Sync { error, assignment } => self.on_sync(error, assignment),
            Response::Leave { .. } => self.finish_leave(),
            Response::Heartbeat { .. } => {}
        }
    }

    fn fatal(&mut self, why: GroupFatal) {
        tracing::error!(group = %self.config.group_id, %why, "fatal group error");
        if !self.owned.is_empty() {
            let lost = self.take_owned();
            self.out.push_back(Output::Lost { partitions: lost });
        }
        self.phase = Phase::Closed;
        self.out.push_back(Output::Fatal(why));
    }

    /// FENCED_INSTANCE_ID in answer to `request`: another member took over our
    /// `group.instance.id`, which stops this one for good.
    fn fenced(&mut self, request: FencedIn) {
        self.fatal(GroupFatal::FencedInstanceId {
            group: self.config.group_id.clone(),
            request,
        });
    }

    fn on_join(&mut self, answer: JoinAnswer) {
        let JoinAnswer {
            error,
            generation,
            protocol,
            leader,
            member_id,
            members,
        } = answer;
        if self.phase != Phase::Joining {
            return;
        }
        if error.is_ok() && leader.is_empty() {
            // A classic group always names a leader member. Kafka 4 answers a classic member of
            // a KIP-848 (`group.protocol=consumer`) group without one: the broker assigns, and
            // this member's assignors would never run. Say so instead of consuming under a plan
            // nobody here made.
            return self.fatal(GroupFatal::Kip848Group {
                group: self.config.group_id.clone(),
                assignors: self.assignors.iter().map(|a| a.name().to_owned()).collect(),
            });
        }
        if error.is_ok() {
            self.contact_at = self.now;
            // A member holding partitions heartbeats at once in a new generation. tansu counts
            // a heartbeat towards the session only while the group forms, or once formed only
            // if it carries the generation it formed at; a member whose every heartbeat of a
            // busy stretch came a generation late was expelled while it consumed (seen in the
            // chaos suite: its partitions handed on during its next held JoinGroup, 12 s after
            // its last counted heartbeat). Otherwise a new session's first heartbeat is an
            // interval away, and the cadence is kept (see `keepalive_due`).
            if !self.owned.is_empty() && generation != self.generation {
                self.next_heartbeat = self.now;
            } else if self.generation < 0 {
                self.next_heartbeat = self.now + self.config.heartbeat_interval_ms;
            }
            let previous_generation = self.generation;
            self.member_id = member_id;
            self.generation = generation;
            self.leader = leader;
            self.last_heartbeat_ok = self.now;
            // The heartbeat cadence is not reset here (Java resets it): tansu refreshes a
            // session on heartbeats only, and a leader running round after round a few seconds
            // apart pushed its next heartbeat out each time until tansu expelled it.
            let protocol = match protocol {
                Some(p) if self.assignors.iter().any(|a| a.name() == p) => p,
                protocol => return self.fatal(GroupFatal::AssignorNotOffered { protocol }),
            };
            self.protocol = Some(protocol.clone());
            if self.is_leader() {
                if self.leading.is_none() {
                    self.leading = Some(Leader::resume(std::mem::take(&mut self.retired)));
                }
                self.join_members = members;
                let topics = self.subscribed_topics_of(&self.join_members);
                let id = self.id();
                self.pending = Some((id, Pending::LeaderInputs));
                self.phase = Phase::Assigning;
                self.out
                    .push_back(Output::LeaderInputsNeeded { id, topics });
            } else {
                // tansu expels a member whose session lapsed while the group is formed without
                // starting a rebalance: only the member whose heartbeat found it hears
                // REBALANCE_IN_PROGRESS, and its repeated JoinGroup leaves the generation as it
                // was. The leader never re-planned, and the expelled member's partitions went
                // unconsumed for good (seen in the chaos suite: a member SIGSTOPped past its
                // session, 77 s without an owner). Such a follower rejoins once more with fresh
                // user data after syncing, which does start a rebalance.
                self.nudge_leader = previous_generation == generation
                    && self.last_join.as_ref().is_some_and(|l| l.echoed);
                // Someone else leads: our memory stops covering the group's plans, and our
                // clocks stop measuring anything.
                if let Some(leading) = self.leading.take() {
                    self.retired = leading.retire();
                }
                self.liveness_round_at = None;
                self.phase = Phase::Syncing;
                self.send_sync(protocol, Vec::new());
            }
            return;
        }
        self.phase = Phase::NeedJoin;
        if error.is(ResponseError::MemberIdRequired) {
            // KIP-394: adopt the id the coordinator gave and join again at once.
            self.member_id = member_id;
            self.next_heartbeat = self.now + self.config.heartbeat_interval_ms;
        } else if error.is(ResponseError::UnknownMemberId)
            || error.is(ResponseError::IllegalGeneration)
        {
            self.reset_member();
        } else if error.is(ResponseError::RebalanceInProgress) {
            // Retry as is.
        } else if is_coordinator_error(error) {
            self.lose_coordinator("JoinGroup: coordinator moved or not ready");
        } else if error.is(ResponseError::FencedInstanceId) {
            self.fenced(FencedIn::Join);
        } else if error.is(ResponseError::InconsistentGroupProtocol)
            || error.is(ResponseError::GroupAuthorizationFailed)
            || error.is(ResponseError::InvalidSessionTimeout)
            || error.is(ResponseError::GroupMaxSizeReached)
            || error.is(ResponseError::UnsupportedVersion)
        {
            self.fatal(GroupFatal::JoinRejected {
                group: self.config.group_id.clone(),
                code: error,
            });
        } else {
            self.backoff();
        }
    }

    fn send_sync(&mut self, protocol: String, assignments: Vec<(String, Bytes)>) {
        self.send(
            Pending::Sync,
            Request::Sync {
                generation: self.generation,
                member_id: self.member_id.clone(),
                instance_id: self.config.instance_id.clone(),
                protocol,
                assignments,
            },
        );
    }

    /// Union of the topics members subscribe to (unreadable subscriptions contribute none).
    fn subscribed_topics_of(&self, members: &[JoinedMember]) -> Vec<String> {
        let mut topics = BTreeSet::new();
        for m in members {
            if let Ok((_, s)) = decode_subscription(&m.metadata) {
                topics.extend(s.topics);
            }
        }
        topics.into_iter().collect()
    }

    fn on_leader_inputs(
        &mut self,
        id: u64,
        topics: Vec<(String, i32)>,
        stats: Option<Vec<PartitionLoad>>,
    ) {
        match self.pending {
            Some((pid, Pending::LeaderInputs)) if pid == id => self.pending = None,
            _ => return,
        }
        if self.phase != Phase::Assigning {
            return;
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = decode_members(&self.join_members);
        let round = Round {
            group_id: &self.config.group_id,
            leader_id: &self.member_id,
            generation: self.generation,
            protocol: &protocol,
            members: &members,
            topics: &topics,
            stats: stats.as_deref(),
            now_ms: self.now,
            session_timeout_ms: self.config.session_timeout_ms,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
        };
        let planned = self
            .leading
            .get_or_insert_with(|| Leader::resume(std::mem::take(&mut self.retired)))
            .plan(&round, &mut self.assignors);
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) => return self.fatal(GroupFatal::Leader(e)),
        };
        self.follow_up = plan.follow_up;
        if !self.follow_up {
            self.follow_ups_in_a_row = 0;
        }
        self.liveness_deadline = plan.liveness_deadline;
        let assignments = plan
            .assignments
            .into_iter()
            .map(|a| {
                let blob = encode_assignment(&Assignment {
                    partitions: a.partitions,
                    user_data: a.user_data,
                })
                .unwrap_or_default();
                (a.member_id, blob)
            })
            .collect();
        self.join_members.clear();
        self.phase = Phase::Syncing;
        self.send_sync(protocol, assignments);
    }

    fn on_sync(&mut self, error: BrokerCode, assignment: Bytes) {
        if self.phase != Phase::Syncing {
            return;
        }
        if !error.is_ok() {
            self.phase = Phase::NeedJoin;
            if error.is(ResponseError::RebalanceInProgress) {
            } else if error.is(ResponseError::UnknownMemberId) {
                self.reset_member();
            } else if error.is(ResponseError::IllegalGeneration) {
                self.generation = -1;
            } else if is_coordinator_error(error) {
                self.lose_coordinator("SyncGroup: coordinator moved or not ready");
            } else if error.is(ResponseError::FencedInstanceId) {
                self.fenced(FencedIn::Sync);
            } else {
                self.backoff();
            }
            return;
        }
        self.contact_at = self.now;
        let assignment = match decode_assignment(&assignment) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable assignment from the leader; rejoining");
                self.phase = Phase::NeedJoin;
                self.backoff();
                return;
            }
        };
        let assigned: BTreeSet<NamedPartition> = assignment.partitions.iter().cloned().collect();
        let revoked: Vec<NamedPartition> = self.owned.difference(&assigned).cloned().collect();
        let added: Vec<NamedPartition> = assigned.difference(&self.owned).cloned().collect();
        if !added.is_empty() || !revoked.is_empty() {
            // Our last JoinGroup's claim is out of date even if the owned set comes back to
            // what it was then: an eager member revokes everything before each rejoin, so its
            // empty claim of generation 2 looked unchanged after it held partitions 0–7 at
            // generation 7, and the leader, taking it for a member held back since generation
            // 2, kept those partitions with it round after round (seen with `range` on tansu).
            self.last_join = None;
        }
        if let Some(i) = self.chosen_assignor() {
            self.assignors[i].on_assignment(
                &assignment.partitions,
                assignment.user_data.as_ref(),
                self.generation,
            );
        }
        if !revoked.is_empty() {
            self.out.push_back(Output::Revoke {
                partitions: revoked,
                commit: self.config.auto_commit,
            });
            // The leader can only give these away in a follow-up round.
            self.rejoin_reason = Some("revoked partitions".into());
        }
        self.out.push_back(Output::Assign {
            partitions: added,
            generation: self.generation,
        });
        self.awaiting_callbacks = true;
        self.owned = assigned;
        self.owned_generation = self.generation;
        self.owned_leader = self.leader.clone();
        if self.cooperative() {
            // A cooperative round that moves partitions has a follow-up: the members that
            // revoke rejoin as soon as their application has let go, the others hear of it at
            // their next heartbeat. Early heartbeats (a quarter and a half interval after the
            // sync) let them hear within about a second instead of up to an interval later.
            self.sync_probes = SYNC_PROBES;
            self.next_heartbeat = self.next_heartbeat.min(self.now + self.probe_interval());
        }
        let foreign = self
            .owned
            .iter()
            .any(|(t, _)| !self.subscription.contains(t));
        if foreign {
            self.rejoin_reason
                .get_or_insert_with(|| "assignment has unsubscribed topics".into());
        }
        if std::mem::take(&mut self.nudge_leader) && self.rejoin_reason.is_none() {
            self.refresh_user_data = true;
            self.rejoin_reason =
                Some("the coordinator expelled a member without a new generation".into());
        }
        if std::mem::take(&mut self.follow_up) && self.rejoin_reason.is_none() {
            self.rejoin_reason =
                Some("follow-up round for partitions kept with their remembered owner".into());
            // Our rejoin bumps the generation on tansu, and a follower needs a heartbeat
            // interval to notice plus the 3 s tansu holds its JoinGroup: follow-ups every
            // interval kept the followers from ever syncing (seen: 60 s without a settled
            // group). Backing off lets them catch up; any other rebalance cuts the wait short.
            let factor = 1u64 << self.follow_ups_in_a_row.min(2);
            self.follow_ups_in_a_row += 1;
            self.not_before = self.now + self.config.heartbeat_interval_ms * factor;
            // …but never past the liveness bound (rule 15).
            if let Some(deadline) = self.liveness_deadline {
                self.not_before = self.not_before.min(deadline.max(self.now));
            }
        }
        self.liveness_round_at = match self.rejoin_reason {
            None if self.is_leader() => self.liveness_deadline,
            _ => None,
        };
        self.phase = if self.rejoin_reason.is_some() {
            Phase::NeedJoin
        } else {
            Phase::Stable
        };
    }

    /// The answer to the pending heartbeat cannot fence or reset the current generation: it was
    /// a keepalive during a JoinGroup, or we have joined another generation since it was sent.
    fn heartbeat_is_moot(&self) -> bool {
        self.heartbeat_keepalive
            || self.heartbeat_generation != self.generation
            || self.phase == Phase::Joining
    }

    /// Only "alive" matters: NONE, or REBALANCE_IN_PROGRESS (a rebalancing coordinator still
    /// refreshes the session of a member it knows). Other errors are left to the JoinGroup
    /// answer, except UNKNOWN_MEMBER_ID: the coordinator has forgotten us and may have handed
    /// our partitions on already — and tansu accepts the JoinGroup in flight as a newcomer's,
    /// without a fencing error — so they are lost now.
    fn on_keepalive(&mut self, error: BrokerCode) {
        if error.is_ok() || error.is(ResponseError::RebalanceInProgress) {
            self.last_heartbeat_ok = self.now;
            self.contact_at = self.contact_at.max(self.heartbeat_sent_at);
        } else if error.is(ResponseError::UnknownMemberId) && !self.owned.is_empty() {
            tracing::warn!(group = %self.config.group_id, "the coordinator forgot us while we rejoined; partitions lost");
            self.lose_owned();
        }
    }

    /// Every partition we own, now owned no more (in order), for a revoke or lost callback.
    fn take_owned(&mut self) -> Vec<NamedPartition> {
        std::mem::take(&mut self.owned).into_iter().collect()
    }

    /// Give up every partition without a commit: someone else may own them already.
    fn lose_owned(&mut self) {
        let lost = self.take_owned();
        self.out.push_back(Output::Lost { partitions: lost });
        self.awaiting_callbacks = true;
        self.owned_generation = -1;
    }

    fn on_heartbeat(&mut self, error: BrokerCode) {
        if error.is_ok() {
            self.last_heartbeat_ok = self.now;
            self.contact_at = self.contact_at.max(self.heartbeat_sent_at);
            return;
        }
        if error.is(ResponseError::RebalanceInProgress) {
            // Only a stable member needs to act: one mid-rebalance is already rejoining.
            self.last_heartbeat_ok = self.now;
            if self.phase == Phase::Stable {
                self.request_rejoin("the group is rebalancing".into());
                self.echo_last_join = true;
            } else if self.phase == Phase::NeedJoin && self.pending.is_none() {
                // A follow-up or backoff wait is moot: the round is on now.
                self.not_before = self.now;
            }
        } else if error.is(ResponseError::IllegalGeneration) {
            self.generation = -1;
            self.rejoin_unless_leaving();
        } else if error.is(ResponseError::UnknownMemberId) {
            self.reset_member();
            self.rejoin_unless_leaving();
        } else if is_coordinator_error(error) {
            self.lose_coordinator("heartbeat: coordinator moved or not ready");
        } else if error.is(ResponseError::FencedInstanceId) {
            self.fenced(FencedIn::Heartbeat);
        }
    }

    /// After a fencing error: rejoin, unless the member is on its way out (a LeaveGroup is
    /// still sent if the member id survived) or idle/closed (nothing to rejoin yet).
    fn rejoin_unless_leaving(&mut self) {
        if matches!(self.phase, Phase::Leaving | Phase::Idle | Phase::Closed) {
            return;
        }
        self.phase = Phase::NeedJoin;
        self.pending = None;
    }

    fn on_commit_failed(&mut self, error: BrokerCode, sent_in: i32) {
        if error.is(ResponseError::IllegalGeneration) && sent_in != self.generation {
            // The commit went out in a generation we have since left — its answer raced our
            // JoinGroup — so the error says nothing about the generation we are in now (Java
            // checks the same: `generationUnchanged()`). Dropping the current generation for it
            // made a member that had just joined lose every partition, uncommitted, and the
            // whole group rebalance again (seen on Kafka 4.1.1: `integration/tests/failover.rs`).
            // Were we fenced from this one too, its heartbeat says so.
            tracing::debug!(
                sent_in,
                generation = self.generation,
                "stale commit error ignored"
            );
            return;
        }
        if error.is(ResponseError::IllegalGeneration) {
            self.generation = -1;
            self.rejoin_unless_leaving();
        } else if error.is(ResponseError::UnknownMemberId) {
            self.reset_member();
            self.rejoin_unless_leaving();
        } else if error.is(ResponseError::RebalanceInProgress) {
            self.request_rejoin("commit during a rebalance".into());
        } else if is_coordinator_error(error) {
            self.lose_coordinator("OffsetCommit: coordinator moved or not ready");
        }
    }
}

/// The JoinGroup members with their subscriptions decoded, for [`Leader::plan`]. A member
/// whose subscription cannot be read gets nothing.
fn decode_members(members: &[JoinedMember]) -> Vec<leader::Member> {
    members
        .iter()
        .map(|m| leader::Member {
            member_id: m.member_id.clone(),
            instance_id: m.instance_id.clone(),
            metadata: m.metadata.clone(),
            subscription: match decode_subscription(&m.metadata) {
                Ok((version, s)) => Some(leader::Subscription {
                    version,
                    topics: s.topics,
                    owned: s.owned,
                    generation: s.generation,
                    user_data: s.user_data,
                    rack: s.rack,
                }),
                Err(e) => {
                    tracing::warn!(member = %m.member_id, error = %e, "unreadable subscription; the member gets nothing");
                    None
                }
            },
        })
        .collect()
}

/// The leader's view of the group built from the JoinGroup members and topic metadata, as
/// [`Leader::plan`] builds it ([`leader::build_view`]).
pub fn build_view(
    generation: i32,
    members: &[JoinedMember],
    topics: Vec<(String, i32)>,
    stats: Option<Vec<PartitionLoad>>,
    now_ms: u64,
) -> GroupView {
    leader::build_view(
        generation,
        &decode_members(members),
        &topics,
        stats.as_deref(),
        now_ms,
    )
}
