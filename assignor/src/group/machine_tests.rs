//! State-machine tests for every member rule and error path of docs/design.md §2.
//!
//! Two tools, no sockets and no sleeps:
//! - [`Sim`]: N [`Membership`]s, one clock and a simulated group coordinator that behaves like
//!   Kafka's `GroupCoordinator` (join barrier, protocol votes, leader choice, generations,
//!   session and rebalance timeouts, static members) or, with `barrier = false`, like tansu
//!   0.6.0 (JoinGroup answered at once with the last metadata each member sent). It runs every
//!   partition callback as the driver would and audits ownership after each one: a partition
//!   held by two members at any instant panics the test.
//! - [`Solo`]: one machine driven by hand, for exact request/response sequences.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use lagbalance_assign::userdata::MemberUserData;
use lagbalance_assign::{
    Assignor, CooperativeStickyAssignor, LagBalanceAssignor, MemberStats, RangeAssignor,
};

use super::codec::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, Assignment,
    Subscription,
};
use super::machine::{
    Input, JoinedMember, MemberConfig, Membership, Output, Phase, Request, Response, Tp,
};

// ---------------------------------------------------------------------------------------------
// Small helpers

fn code(e: ResponseError) -> i16 {
    e.code()
}

fn tps(topic: &str, partitions: impl IntoIterator<Item = i32>) -> Vec<Tp> {
    partitions
        .into_iter()
        .map(|p| (topic.to_string(), p))
        .collect()
}

fn set(v: Vec<Tp>) -> BTreeSet<Tp> {
    v.into_iter().collect()
}

fn config() -> MemberConfig {
    MemberConfig {
        group_id: "g".into(),
        session_timeout_ms: 10_000,
        heartbeat_interval_ms: 3_000,
        max_poll_interval_ms: 30_000,
        retry_backoff_ms: 100,
        auto_commit: true,
        ..MemberConfig::default()
    }
}

fn static_config(instance: &str) -> MemberConfig {
    MemberConfig {
        instance_id: Some(instance.into()),
        ..config()
    }
}

fn sticky() -> Vec<Box<dyn Assignor>> {
    vec![Box::new(CooperativeStickyAssignor)]
}

fn range() -> Vec<Box<dyn Assignor>> {
    vec![Box::new(RangeAssignor)]
}

fn lagbalance_then_sticky() -> Vec<Box<dyn Assignor>> {
    vec![
        Box::new(LagBalanceAssignor::default()),
        Box::new(CooperativeStickyAssignor),
    ]
}

fn assignment_blob(parts: &[Tp]) -> Bytes {
    encode_assignment(&Assignment {
        partitions: parts.to_vec(),
        user_data: None,
    })
    .unwrap()
}

/// The subscription a Join request carries for protocol `i`.
fn join_subscription(req: &Request, i: usize) -> Subscription {
    let Request::Join { protocols, .. } = req else {
        panic!("not a Join: {req:?}")
    };
    decode_subscription(&protocols[i].1).unwrap().1
}

fn join_member_id(req: &Request) -> &str {
    match req {
        Request::Join { member_id, .. } => member_id,
        _ => panic!("not a Join: {req:?}"),
    }
}

/// The leader's Sync assignments, decoded, by member id.
fn sync_assignments(req: &Request) -> BTreeMap<String, Vec<Tp>> {
    let Request::Sync { assignments, .. } = req else {
        panic!("not a Sync: {req:?}")
    };
    assignments
        .iter()
        .map(|(m, blob)| (m.clone(), decode_assignment(blob).unwrap().partitions))
        .collect()
}

fn is_callback(o: &Output) -> bool {
    matches!(
        o,
        Output::Revoke { .. } | Output::Assign { .. } | Output::Lost { .. }
    )
}

/// Deterministic pseudo-random numbers (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated coordinator

const COORDINATOR: i32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GroupState {
    Empty,
    Preparing,
    Completing,
    Stable,
}

struct CMember {
    instance_id: Option<String>,
    protocols: Vec<(String, Bytes)>,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    last_seen: u64,
    node: usize,
    /// Parked JoinGroup / SyncGroup request ids (answered on `node`).
    join: Option<u64>,
    sync: Option<u64>,
    assignment: Bytes,
}

type Reply = (usize, u64, Response);

fn join_error(error: i16, member_id: &str) -> Response {
    Response::Join {
        error,
        generation: -1,
        protocol: None,
        leader: String::new(),
        member_id: member_id.into(),
        members: Vec::new(),
    }
}

/// Kafka's `GroupCoordinator` for one group, reduced to what members can observe; with
/// `barrier = false` it behaves like tansu 0.6.0 instead (see [`Coordinator::join_at_once`]).
struct Coordinator {
    barrier: bool,
    state: GroupState,
    generation: i32,
    protocol: Option<String>,
    leader: Option<String>,
    /// By member id; ids are handed out in join order, so this is also join order.
    members: BTreeMap<String, CMember>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending_ids: BTreeSet<String>,
    /// `group.instance.id` → member id (KIP-345).
    statics: BTreeMap<String, String>,
    next_member: u32,
    prepare_started: u64,
    /// No-barrier mode: a generation was started and its leader has not synced yet.
    plan_pending: bool,
}

impl Coordinator {
    fn new(barrier: bool) -> Self {
        Coordinator {
            barrier,
            state: GroupState::Empty,
            generation: 0,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_ids: BTreeSet::new(),
            statics: BTreeMap::new(),
            next_member: 0,
            prepare_started: 0,
            plan_pending: false,
        }
    }

    fn handle(&mut self, now: u64, node: usize, id: u64, req: Request) -> Vec<Reply> {
        match req {
            Request::FindCoordinator => vec![(
                node,
                id,
                Response::Coordinator {
                    node_id: COORDINATOR,
                    addr: "127.0.0.1:9092".into(),
                },
            )],
            Request::Join {
                member_id,
                instance_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocols,
                ..
            } => self.join(
                now,
                node,
                id,
                member_id,
                instance_id,
                (session_timeout_ms as u64, rebalance_timeout_ms as u64),
                protocols,
            ),
            Request::Sync {
                generation,
                member_id,
                instance_id,
                assignments,
                ..
            } => self.sync(
                now,
                node,
                id,
                generation,
                member_id,
                instance_id,
                assignments,
            ),
            Request::Heartbeat {
                generation,
                member_id,
                instance_id,
            } => {
                let error = self.heartbeat(now, generation, &member_id, &instance_id);
                vec![(node, id, Response::Heartbeat { error })]
            }
            Request::Leave {
                member_id,
                instance_id,
                ..
            } => {
                if self.fenced(&member_id, &instance_id) {
                    let error = code(ResponseError::FencedInstanceId);
                    return vec![(node, id, Response::Leave { error })];
                }
                if !self.members.contains_key(&member_id) {
                    let error = code(ResponseError::UnknownMemberId);
                    return vec![(node, id, Response::Leave { error })];
                }
                let mut out = vec![(node, id, Response::Leave { error: 0 })];
                out.extend(self.remove(now, &member_id));
                out
            }
        }
    }

    fn fenced(&self, member_id: &str, instance_id: &Option<String>) -> bool {
        match instance_id {
            Some(i) => self.statics.get(i).map(String::as_str) != Some(member_id),
            None => false,
        }
    }

    fn new_member_id(&mut self) -> String {
        self.next_member += 1;
        format!("member-{:03}", self.next_member)
    }

    /// Whether a member offering `protocols` shares a protocol with everyone else.
    fn supports(&self, member_id: &str, protocols: &[(String, Bytes)]) -> bool {
        protocols.iter().any(|(name, _)| {
            self.members
                .iter()
                .filter(|(id, _)| id.as_str() != member_id)
                .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Kafka's protocol selection: among protocols every member supports, the one with the most
    /// first-choice votes (each member votes for its first supported candidate); ties by name.
    fn select_protocol(&self) -> Option<String> {
        let mut candidates: Vec<&String> = Vec::new();
        if let Some(first) = self.members.values().next() {
            for (name, _) in &first.protocols {
                if self
                    .members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                {
                    candidates.push(name);
                }
            }
        }
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|(_, v)| *v == best)
            .map(|(n, _)| n.clone())
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        now: u64,
        node: usize,
        id: u64,
        member_id: String,
        instance_id: Option<String>,
        (session_timeout_ms, rebalance_timeout_ms): (u64, u64),
        protocols: Vec<(String, Bytes)>,
    ) -> Vec<Reply> {
        let mut out = Vec::new();
        let mid = if member_id.is_empty() {
            let new = self.new_member_id();
            match &instance_id {
                Some(inst) => {
                    // KIP-345: a restarted static member takes over its old identity without
                    // MEMBER_ID_REQUIRED; whoever still uses the old member id is fenced.
                    if let Some(old) = self.statics.insert(inst.clone(), new.clone()) {
                        if let Some(mut m) = self.members.remove(&old) {
                            let fenced = code(ResponseError::FencedInstanceId);
                            if let Some(j) = m.join.take() {
                                out.push((m.node, j, join_error(fenced, "")));
                            }
                            if let Some(s) = m.sync.take() {
                                out.push((
                                    m.node,
                                    s,
                                    Response::Sync {
                                        error: fenced,
                                        assignment: Bytes::new(),
                                    },
                                ));
                            }
                            self.members.insert(new.clone(), m);
                        }
                        if self.leader.as_deref() == Some(old.as_str()) {
                            self.leader = Some(new.clone());
                        }
                    }
                    new
                }
                None => {
                    self.pending_ids.insert(new.clone());
                    let e = code(ResponseError::MemberIdRequired);
                    return vec![(node, id, join_error(e, &new))];
                }
            }
        } else {
            if self.fenced(&member_id, &instance_id) {
                let e = code(ResponseError::FencedInstanceId);
                return vec![(node, id, join_error(e, ""))];
            }
            if !self.pending_ids.remove(&member_id) && !self.members.contains_key(&member_id) {
                let e = code(ResponseError::UnknownMemberId);
                return vec![(node, id, join_error(e, ""))];
            }
            member_id
        };
        if !self.supports(&mid, &protocols) {
            let e = code(ResponseError::InconsistentGroupProtocol);
            out.push((node, id, join_error(e, "")));
            return out;
        }
        let is_new = !self.members.contains_key(&mid);
        let m = self.members.entry(mid.clone()).or_insert_with(|| CMember {
            instance_id: None,
            protocols: Vec::new(),
            session_timeout_ms,
            rebalance_timeout_ms,
            last_seen: now,
            node,
            join: None,
            sync: None,
            assignment: Bytes::new(),
        });
        let changed = is_new || m.protocols != protocols;
        m.protocols = protocols;
        m.instance_id = instance_id;
        m.node = node;
        m.last_seen = now;
        m.session_timeout_ms = session_timeout_ms;
        m.rebalance_timeout_ms = rebalance_timeout_ms;
        if self.barrier {
            out.extend(self.join_with_barrier(now, id, &mid, changed));
        } else {
            out.extend(self.join_at_once(id, &mid, changed));
        }
        out
    }

    /// Kafka: a join parks until every known member has rejoined (or the rebalance timeout
    /// expires). A follower rejoining with unchanged metadata gets the current generation back
    /// without a rebalance — why a rebalance request must change the user data (docs/design.md §2.2).
    fn join_with_barrier(&mut self, now: u64, id: u64, mid: &str, changed: bool) -> Vec<Reply> {
        let node = self.members[mid].node;
        let is_leader = self.leader.as_deref() == Some(mid);
        let mut out = Vec::new();
        match self.state {
            GroupState::Completing if !changed => return vec![(node, id, self.join_ok(mid))],
            GroupState::Stable if !changed && !is_leader => {
                return vec![(node, id, self.join_ok(mid))]
            }
            GroupState::Preparing => {}
            _ => out.extend(self.prepare(now)),
        }
        self.members.get_mut(mid).unwrap().join = Some(id);
        out.extend(self.try_complete(false));
        out
    }

    /// tansu 0.6.0: no barrier. A join is answered at once; the leader's answer lists every
    /// member with the *last* metadata it sent, however old. A new member or changed metadata
    /// (or the leader asking) starts a new generation; members on an older generation learn of
    /// it from their heartbeat (REBALANCE_IN_PROGRESS); followers' syncs wait for the leader's.
    fn join_at_once(&mut self, id: u64, mid: &str, changed: bool) -> Vec<Reply> {
        let node = self.members[mid].node;
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = Some(mid.to_string());
        }
        let is_leader = self.leader.as_deref() == Some(mid);
        if (changed || is_leader) && !self.plan_pending {
            self.generation += 1;
            self.plan_pending = true;
            self.state = GroupState::Completing;
        }
        if self.plan_pending {
            self.protocol = self.select_protocol();
        }
        vec![(node, id, self.join_ok(mid))]
    }

    fn join_ok(&self, mid: &str) -> Response {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == mid {
            self.members
                .iter()
                .map(|(id, m)| JoinedMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Response::Join {
            error: 0,
            generation: self.generation,
            protocol: Some(protocol),
            leader,
            member_id: mid.into(),
            members,
        }
    }

    /// Enter PreparingRebalance: pending syncs of the old generation are told to rejoin.
    fn prepare(&mut self, now: u64) -> Vec<Reply> {
        self.state = GroupState::Preparing;
        self.prepare_started = now;
        let mut out = Vec::new();
        for m in self.members.values_mut() {
            if let Some(s) = m.sync.take() {
                out.push((
                    m.node,
                    s,
                    Response::Sync {
                        error: code(ResponseError::RebalanceInProgress),
                        assignment: Bytes::new(),
                    },
                ));
            }
        }
        out
    }

    /// Complete the join phase when everyone rejoined (or, `timed_out`, drop those who did not).
    fn try_complete(&mut self, timed_out: bool) -> Vec<Reply> {
        if self.state != GroupState::Preparing {
            return Vec::new();
        }
        if self.members.values().any(|m| m.join.is_none()) {
            if !timed_out {
                return Vec::new();
            }
            let gone: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| m.join.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                self.forget(&id);
            }
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            return Vec::new();
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::Completing;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        let mut out = Vec::new();
        for mid in ids {
            let resp = self.join_ok(&mid);
            let m = self.members.get_mut(&mid).unwrap();
            m.assignment = Bytes::new();
            if let Some(j) = m.join.take() {
                out.push((m.node, j, resp));
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn sync(
        &mut self,
        now: u64,
        node: usize,
        id: u64,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        assignments: Vec<(String, Bytes)>,
    ) -> Vec<Reply> {
        let fail = |e: ResponseError| {
            vec![(
                node,
                id,
                Response::Sync {
                    error: code(e),
                    assignment: Bytes::new(),
                },
            )]
        };
        if self.fenced(&member_id, &instance_id) {
            return fail(ResponseError::FencedInstanceId);
        }
        let Some(m) = self.members.get_mut(&member_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        m.last_seen = now;
        if self.barrier {
            if generation != self.generation {
                return fail(ResponseError::IllegalGeneration);
            }
            match self.state {
                GroupState::Preparing => return fail(ResponseError::RebalanceInProgress),
                GroupState::Stable => {
                    let assignment = m.assignment.clone();
                    return vec![(
                        node,
                        id,
                        Response::Sync {
                            error: 0,
                            assignment,
                        },
                    )];
                }
                GroupState::Empty => return fail(ResponseError::UnknownMemberId),
                GroupState::Completing => {}
            }
        } else if generation < self.generation {
            return fail(ResponseError::RebalanceInProgress);
        } else if generation > self.generation {
            return fail(ResponseError::IllegalGeneration);
        }
        m.sync = Some(id);
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        if is_leader {
            let plan: BTreeMap<String, Bytes> = assignments.into_iter().collect();
            for (mid, m) in self.members.iter_mut() {
                m.assignment = plan.get(mid).cloned().unwrap_or_default();
            }
            self.state = GroupState::Stable;
            self.plan_pending = false;
        }
        if self.state != GroupState::Stable {
            return Vec::new(); // parked until the leader's sync
        }
        let mut out = Vec::new();
        for m in self.members.values_mut() {
            if let Some(s) = m.sync.take() {
                out.push((
                    m.node,
                    s,
                    Response::Sync {
                        error: 0,
                        assignment: m.assignment.clone(),
                    },
                ));
            }
        }
        out
    }

    fn heartbeat(
        &mut self,
        now: u64,
        generation: i32,
        member_id: &str,
        instance_id: &Option<String>,
    ) -> i16 {
        if self.fenced(member_id, instance_id) {
            return code(ResponseError::FencedInstanceId);
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        m.last_seen = now;
        if self.barrier {
            if generation != self.generation {
                code(ResponseError::IllegalGeneration)
            } else if self.state == GroupState::Preparing {
                code(ResponseError::RebalanceInProgress)
            } else {
                0
            }
        } else if generation < self.generation {
            code(ResponseError::RebalanceInProgress)
        } else {
            0
        }
    }

    fn forget(&mut self, member_id: &str) {
        self.members.remove(member_id);
        self.statics.retain(|_, m| m != member_id);
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// A member left or expired: the rest rebalance.
    fn remove(&mut self, now: u64, member_id: &str) -> Vec<Reply> {
        let was_leader = self.leader.as_deref() == Some(member_id);
        self.forget(member_id);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.plan_pending = false;
            return Vec::new();
        }
        if self.barrier {
            let mut out = Vec::new();
            if self.state != GroupState::Preparing {
                out.extend(self.prepare(now));
            }
            out.extend(self.try_complete(false));
            out
        } else {
            let mut out = Vec::new();
            if was_leader {
                // Nobody will answer the syncs parked for the dead leader's generation: start
                // a new one, which the new leader learns of from its heartbeat.
                out.extend(self.prepare(now));
                self.state = GroupState::Completing;
                self.plan_pending = false;
            }
            if !self.plan_pending {
                self.generation += 1;
                self.plan_pending = true;
            }
            if self.leader.is_none() {
                self.leader = self.members.keys().next().cloned();
            }
            out
        }
    }

    /// Session expiry (members not parked in a join) and the rebalance timeout.
    fn tick(&mut self, now: u64) -> Vec<Reply> {
        let mut out = Vec::new();
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join.is_none() && now >= m.last_seen + m.session_timeout_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            out.extend(self.remove(now, &id));
        }
        if self.state == GroupState::Preparing && now >= self.rebalance_deadline() {
            out.extend(self.try_complete(true));
        }
        out
    }

    fn rebalance_deadline(&self) -> u64 {
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.prepare_started + timeout
    }

    fn deadlines(&self) -> Vec<u64> {
        let mut d: Vec<u64> = self
            .members
            .values()
            .filter(|m| m.join.is_none())
            .map(|m| m.last_seen + m.session_timeout_ms)
            .collect();
        if self.state == GroupState::Preparing {
            d.push(self.rebalance_deadline());
        }
        d
    }

    /// Expel a member as if its session had expired.
    fn expel(&mut self, now: u64, member_id: &str) -> Vec<Reply> {
        self.remove(now, member_id)
    }
}

// ---------------------------------------------------------------------------------------------
// The simulation

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Find,
    Join,
    Sync,
    Heartbeat,
    Leave,
}

fn api_of(r: &Request) -> Api {
    match r {
        Request::FindCoordinator => Api::Find,
        Request::Join { .. } => Api::Join,
        Request::Sync { .. } => Api::Sync,
        Request::Heartbeat { .. } => Api::Heartbeat,
        Request::Leave { .. } => Api::Leave,
    }
}

fn error_response(api: Api, error: i16) -> Response {
    match api {
        Api::Find => Response::CoordinatorError { error },
        Api::Join => join_error(error, ""),
        Api::Sync => Response::Sync {
            error,
            assignment: Bytes::new(),
        },
        Api::Heartbeat => Response::Heartbeat { error },
        Api::Leave => Response::Leave { error },
    }
}

struct Node {
    m: Membership,
    /// What the application holds: changed only by running Revoke / Assign / Lost.
    app: BTreeSet<Tp>,
    /// Every output with the time it was taken.
    log: Vec<(u64, Output)>,
    /// Callbacks taken but not yet run.
    callbacks: Vec<Output>,
    hold_callbacks: bool,
    auto_poll: bool,
    /// One-shot faults for the next request of a kind: answer with an error, fail it in
    /// transport (`RequestFailed`), or never answer it (the coordinator never sees it).
    fail_next: Vec<(Api, i16)>,
    drop_next: Vec<Api>,
    swallow_next: Vec<Api>,
    /// Errors for the next commits (one per Revoke with `commit`).
    commit_errors: VecDeque<i16>,
    commits: Vec<Vec<Tp>>,
    /// Killed: takes no more inputs and holds nothing.
    dead: bool,
    /// How its JoinGroup subscriptions look on the wire.
    dialect: Dialect,
}

/// How a node's JoinGroup subscriptions reach the coordinator: as our machine wrote them, or
/// rewritten to look like another client's (the machine underneath behaves as ours).
#[derive(Clone, Debug, PartialEq)]
enum Dialect {
    Ours,
    /// kafka-python 3.x `cooperative-sticky`: subscription v1 — owned partitions, no
    /// generation (the leader reads −1), empty user data.
    KafkaPython,
    /// kafka-python's eager assignors (`range`, `roundrobin`): subscription v0 — no owned
    /// partitions, no generation.
    KafkaPythonEager,
    /// A buggy or hostile member: its claims also list `extra`, which it was never given, at
    /// its real generation or at `generation`.
    Liar {
        extra: Vec<Tp>,
        generation: Option<i32>,
    },
}

/// A subscription blob of consumer-protocol version `version` (0–3), as other clients write
/// them: v0 has no owned partitions, v1 no generation, v2 no rack.
fn subscription_blob_v(s: &Subscription, version: i16) -> Bytes {
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTp;
    use kafka_protocol::messages::{ConsumerProtocolSubscription, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &s.owned {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    let body = ConsumerProtocolSubscription::default()
        .with_topics(
            s.topics
                .iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        )
        .with_user_data(s.user_data.clone())
        .with_owned_partitions(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OwnedTp::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_owned())))
                        .with_partitions(ps)
                })
                .collect(),
        )
        .with_generation_id(s.generation);
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    body.encode(&mut buf, version).unwrap();
    buf.freeze()
}

impl Dialect {
    fn rewrite(&self, blob: &Bytes) -> Bytes {
        match self {
            Dialect::Ours => blob.clone(),
            Dialect::KafkaPython => {
                let (_, mut s) = decode_subscription(blob).unwrap();
                s.user_data = Some(Bytes::new());
                subscription_blob_v(&s, 1)
            }
            Dialect::KafkaPythonEager => {
                let (_, mut s) = decode_subscription(blob).unwrap();
                s.user_data = Some(Bytes::new());
                subscription_blob_v(&s, 0)
            }
            Dialect::Liar { extra, generation } => {
                let (_, mut s) = decode_subscription(blob).unwrap();
                s.owned.extend(extra.iter().cloned());
                s.generation = generation.unwrap_or(s.generation);
                s.owned.sort();
                s.owned.dedup();
                encode_subscription(&s).unwrap()
            }
        }
    }
}

struct Sim {
    now: u64,
    nodes: Vec<Node>,
    coord: Coordinator,
    topics: BTreeMap<String, i32>,
    queue: VecDeque<(usize, Input)>,
    /// Every response delivered: (time, node, response).
    responses: Vec<(u64, usize, Response)>,
    /// Panic on double ownership (off only where KIP-345 allows a zombie by design).
    audit: bool,
    /// How many Assign callbacks the audit checked.
    audited: usize,
    /// Per partition of a topic some live member subscribes to: since when no live member has
    /// held it (checked at every stop of [`Sim::advance`]).
    unowned_since: BTreeMap<Tp, u64>,
    /// The longest such stretch so far, and the partition.
    worst_unowned: (u64, Option<Tp>),
}

impl Sim {
    fn new(barrier: bool, topics: &[(&str, i32)]) -> Sim {
        Sim {
            now: 0,
            nodes: Vec::new(),
            coord: Coordinator::new(barrier),
            topics: topics.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            queue: VecDeque::new(),
            responses: Vec::new(),
            audit: true,
            audited: 0,
            unowned_since: BTreeMap::new(),
            worst_unowned: (0, None),
        }
    }

    fn add(&mut self, config: MemberConfig, assignors: Vec<Box<dyn Assignor>>) -> usize {
        self.nodes.push(Node {
            m: Membership::new(config, assignors, self.now),
            app: BTreeSet::new(),
            log: Vec::new(),
            callbacks: Vec::new(),
            hold_callbacks: false,
            auto_poll: true,
            fail_next: Vec::new(),
            drop_next: Vec::new(),
            swallow_next: Vec::new(),
            commit_errors: VecDeque::new(),
            commits: Vec::new(),
            dead: false,
            dialect: Dialect::Ours,
        });
        self.nodes.len() - 1
    }

    /// Add a member whose JoinGroups look like `dialect`'s, subscribed to `topics`.
    fn join_as(
        &mut self,
        dialect: Dialect,
        config: MemberConfig,
        assignors: Vec<Box<dyn Assignor>>,
        topics: &[&str],
    ) -> usize {
        let i = self.add(config, assignors);
        self.nodes[i].dialect = dialect;
        self.input(
            i,
            Input::Subscribe(topics.iter().map(|t| t.to_string()).collect()),
        );
        i
    }

    /// Update the unowned-partition clocks (see `unowned_since`).
    fn track_unowned(&mut self) {
        let live = |n: &&Node| !n.dead && n.m.phase() != Phase::Closed;
        let held: BTreeSet<Tp> = self
            .nodes
            .iter()
            .filter(live)
            .flat_map(|n| n.app.iter().cloned())
            .collect();
        let wanted: Vec<Tp> = self
            .topics
            .iter()
            .filter(|(t, _)| self.nodes.iter().filter(live).any(|n| subscribed(n, t)))
            .flat_map(|(t, n)| tps(t, 0..*n))
            .collect();
        let now = self.now;
        self.unowned_since
            .retain(|p, _| wanted.contains(p) && !held.contains(p));
        for p in wanted {
            if !held.contains(&p) {
                let since = *self.unowned_since.entry(p.clone()).or_insert(now);
                if now - since > self.worst_unowned.0 {
                    self.worst_unowned = (now - since, Some(p));
                }
            }
        }
    }

    /// Print every plan, claim, callback and group answer, by time (debugging aid).
    fn dump(&self) {
        for (t, i, r) in &self.responses {
            if let Response::Sync { error, assignment } = r {
                eprintln!(
                    "t={t} node {i} sync answer {error} {:?}",
                    decode_assignment(assignment).map(|a| a.partitions)
                );
            }
            if let Response::Join {
                error, generation, ..
            } = r
            {
                eprintln!("t={t} node {i} join answer {error} gen {generation}");
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            for (t, o) in &n.log {
                match o {
                    Output::Send {
                        request:
                            r @ Request::Sync {
                                generation,
                                assignments,
                                ..
                            },
                        ..
                    } if !assignments.is_empty() => {
                        eprintln!(
                            "t={t} node {i} plan gen {generation}: {:?}",
                            sync_assignments(r)
                        );
                    }
                    Output::Send {
                        request: r @ Request::Join { .. },
                        ..
                    } => {
                        let sub = join_subscription(r, 0);
                        eprintln!(
                            "t={t} node {i} join claim gen {} {:?}",
                            sub.generation, sub.owned
                        );
                    }
                    Output::Send { .. } => {}
                    o => eprintln!("t={t} node {i} {o:?}"),
                }
            }
        }
    }

    /// Forget the unowned stretches measured so far.
    fn reset_unowned(&mut self) {
        self.unowned_since.clear();
        self.worst_unowned = (0, None);
    }

    /// Add a member subscribed to `topics` and run until nothing moves.
    fn join(
        &mut self,
        config: MemberConfig,
        assignors: Vec<Box<dyn Assignor>>,
        topics: &[&str],
    ) -> usize {
        let i = self.add(config, assignors);
        self.input(
            i,
            Input::Subscribe(topics.iter().map(|t| t.to_string()).collect()),
        );
        i
    }

    fn input(&mut self, i: usize, input: Input) {
        self.queue.push_back((i, input));
        self.run();
    }

    /// Deliver queued inputs and route outputs until nothing is left to do at this instant.
    fn run(&mut self) {
        for _ in 0..100_000 {
            for i in 0..self.nodes.len() {
                self.drain(i);
            }
            let Some((i, input)) = self.queue.pop_front() else {
                return;
            };
            if self.nodes[i].dead {
                continue;
            }
            if input == Input::CallbacksDone {
                // The machine's idea of ownership matches what the app was told.
                assert_eq!(
                    self.nodes[i].m.owned(),
                    &self.nodes[i].app,
                    "node {i}: machine and application disagree on ownership"
                );
            }
            if let Input::Response { response, .. } = &input {
                self.responses.push((self.now, i, response.clone()));
            }
            self.nodes[i].m.handle(self.now, input);
        }
        panic!("the simulation does not settle (livelock)");
    }

    fn drain(&mut self, i: usize) {
        let mut callbacks = false;
        while let Some(o) = self.nodes[i].m.poll_output() {
            self.nodes[i].log.push((self.now, o.clone()));
            match o {
                Output::Send { id, request } => self.route(i, id, request),
                Output::LeaderInputsNeeded { id, topics } => {
                    let topics = topics
                        .iter()
                        .filter_map(|t| self.topics.get(t).map(|n| (t.clone(), *n)))
                        .collect();
                    let input = Input::LeaderInputs {
                        id,
                        topics,
                        stats: None,
                    };
                    self.queue.push_back((i, input));
                }
                o if is_callback(&o) => {
                    self.nodes[i].callbacks.push(o);
                    callbacks = true;
                }
                _ => {}
            }
        }
        if callbacks && !self.nodes[i].hold_callbacks {
            self.run_callbacks(i);
        }
    }

    /// Run node `i`'s pending callbacks as the driver would, auditing every change.
    fn run_callbacks(&mut self, i: usize) {
        let callbacks = std::mem::take(&mut self.nodes[i].callbacks);
        if callbacks.is_empty() {
            return;
        }
        for cb in callbacks {
            match cb {
                Output::Revoke { partitions, commit } => {
                    for p in &partitions {
                        assert!(
                            self.nodes[i].app.remove(p),
                            "node {i} revoked {p:?} it did not hold"
                        );
                    }
                    if commit {
                        self.nodes[i].commits.push(partitions);
                        if let Some(error) = self.nodes[i].commit_errors.pop_front() {
                            // The commit carried the generation the callback ran in.
                            let generation = self.nodes[i].m.generation();
                            self.queue
                                .push_back((i, Input::CommitFailed { error, generation }));
                        }
                    }
                }
                Output::Lost { partitions } => {
                    for p in &partitions {
                        assert!(
                            self.nodes[i].app.remove(p),
                            "node {i} lost {p:?} it did not hold"
                        );
                    }
                }
                Output::Assign { partitions, .. } => {
                    for p in &partitions {
                        if self.audit {
                            for (j, other) in self.nodes.iter().enumerate() {
                                if j != i && other.app.contains(p) && std::env::var("DUMP").is_ok()
                                {
                                    self.dump();
                                }
                                assert!(
                                    j == i || !other.app.contains(p),
                                    "t={}: {p:?} assigned to node {i} while node {j} holds it",
                                    self.now
                                );
                            }
                        }
                        assert!(
                            self.nodes[i].app.insert(p.clone()),
                            "node {i} assigned {p:?} twice"
                        );
                        self.audited += 1;
                    }
                }
                _ => unreachable!(),
            }
        }
        self.queue.push_back((i, Input::CallbacksDone));
    }

    fn release_callbacks(&mut self, i: usize) {
        self.nodes[i].hold_callbacks = false;
        self.run_callbacks(i);
        self.run();
    }

    fn route(&mut self, i: usize, id: u64, request: Request) {
        let api = api_of(&request);
        let node = &mut self.nodes[i];
        if let Some(k) = node.swallow_next.iter().position(|a| *a == api) {
            node.swallow_next.remove(k);
            return;
        }
        if let Some(k) = node.drop_next.iter().position(|a| *a == api) {
            node.drop_next.remove(k);
            let reason = "connection reset".to_string();
            self.queue
                .push_back((i, Input::RequestFailed { id, reason }));
            return;
        }
        if let Some(k) = node.fail_next.iter().position(|(a, _)| *a == api) {
            let (_, error) = node.fail_next.remove(k);
            let response = error_response(api, error);
            self.queue.push_back((i, Input::Response { id, response }));
            return;
        }
        let request = match request {
            Request::Join {
                member_id,
                instance_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocols,
                reason,
            } => Request::Join {
                member_id,
                instance_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocols: protocols
                    .into_iter()
                    .map(|(name, blob)| (name, node.dialect.rewrite(&blob)))
                    .collect(),
                reason,
            },
            other => other,
        };
        let replies = self.coord.handle(self.now, i, id, request);
        self.deliver(replies);
    }

    fn deliver(&mut self, replies: Vec<Reply>) {
        for (n, id, response) in replies {
            self.queue.push_back((n, Input::Response { id, response }));
        }
    }

    /// Move the clock forward by `ms`, stopping at every timer of the members and the
    /// coordinator; members that `auto_poll` poll at every stop.
    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            let mut next = end;
            for n in self.nodes.iter().filter(|n| !n.dead) {
                if let Some(t) = n.m.next_timer() {
                    if t > self.now {
                        next = next.min(t);
                    }
                }
            }
            for t in self.coord.deadlines() {
                if t > self.now {
                    next = next.min(t);
                }
            }
            self.now = next;
            let replies = self.coord.tick(self.now);
            self.deliver(replies);
            for i in 0..self.nodes.len() {
                if !self.nodes[i].dead {
                    let input = if self.nodes[i].auto_poll {
                        Input::Polled
                    } else {
                        Input::Tick
                    };
                    self.queue.push_back((i, input));
                }
            }
            self.run();
            self.track_unowned();
            if self.now >= end {
                return;
            }
        }
    }

    /// Whether every live member is stable in the coordinator's current generation.
    fn settled(&self) -> bool {
        let live: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| !n.dead && n.m.phase() != Phase::Closed)
            .collect();
        self.coord.state == GroupState::Stable
            && !self.coord.plan_pending
            && live
                .iter()
                .all(|n| n.m.phase() == Phase::Stable && n.m.generation() == self.coord.generation)
    }

    /// Advance in heartbeat-sized steps until settled; panics if that takes over `max_ms`.
    fn settle(&mut self, max_ms: u64) {
        let start = self.now;
        while !self.settled() {
            assert!(
                self.now - start <= max_ms,
                "group did not settle within {max_ms} ms: coordinator {:?} generation {} \
                 pending plan {}, members {:?}",
                self.coord.state,
                self.coord.generation,
                self.coord.plan_pending,
                self.nodes
                    .iter()
                    .map(|n| (
                        n.dead,
                        n.m.phase(),
                        n.m.member_id().to_string(),
                        n.m.generation()
                    ))
                    .collect::<Vec<_>>()
            );
            self.advance(500);
        }
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].dead = true;
        self.nodes[i].app.clear();
    }

    fn owned(&self, i: usize) -> BTreeSet<Tp> {
        self.nodes[i].app.clone()
    }

    fn mark(&self, i: usize) -> usize {
        self.nodes[i].log.len()
    }

    /// Requests node `i` sent since `mark`, with their times.
    fn sends_since(&self, i: usize, mark: usize) -> Vec<(u64, Request)> {
        self.nodes[i].log[mark..]
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Send { request, .. } => Some((*t, request.clone())),
                _ => None,
            })
            .collect()
    }

    /// Non-request outputs of node `i` since `mark`.
    fn events_since(&self, i: usize, mark: usize) -> Vec<Output> {
        self.nodes[i].log[mark..]
            .iter()
            .filter(|(_, o)| !matches!(o, Output::Send { .. }))
            .map(|(_, o)| o.clone())
            .collect()
    }

    fn sends_of(&self, i: usize, mark: usize, api: Api) -> Vec<(u64, Request)> {
        self.sends_since(i, mark)
            .into_iter()
            .filter(|(_, r)| api_of(r) == api)
            .collect()
    }

    /// Every partition of `topics` held by exactly one live member.
    fn assert_all_assigned_once(&self) {
        let mut seen: BTreeMap<Tp, usize> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| !n.dead) {
            for p in &n.app {
                assert!(seen.insert(p.clone(), i).is_none(), "{p:?} held twice");
            }
        }
        let all: Vec<Tp> = self
            .topics
            .iter()
            .flat_map(|(t, n)| tps(t, 0..*n))
            .filter(|(t, _)| {
                self.nodes
                    .iter()
                    .any(|n| !n.dead && n.m.phase() != Phase::Closed && subscribed(n, t))
            })
            .collect();
        assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), all);
    }

    fn member_id(&self, i: usize) -> String {
        self.nodes[i].m.member_id().to_string()
    }
}

fn subscribed(n: &Node, topic: &str) -> bool {
    n.log.iter().rev().find_map(|(_, o)| match o {
        Output::Send {
            request: Request::Join { protocols, .. },
            ..
        } => Some(
            decode_subscription(&protocols[0].1)
                .unwrap()
                .1
                .topics
                .iter()
                .any(|t| t == topic),
        ),
        _ => None,
    }) == Some(true)
}

/// One machine driven by hand.
struct Solo {
    m: Membership,
    now: u64,
}

impl Solo {
    fn new(config: MemberConfig, assignors: Vec<Box<dyn Assignor>>) -> Self {
        Solo {
            m: Membership::new(config, assignors, 0),
            now: 0,
        }
    }

    fn input(&mut self, input: Input) -> Vec<Output> {
        self.m.handle(self.now, input);
        std::iter::from_fn(|| self.m.poll_output()).collect()
    }

    fn respond(&mut self, id: u64, response: Response) -> Vec<Output> {
        self.input(Input::Response { id, response })
    }

    /// Subscribe to `t` and find the coordinator; returns what followed (the first JoinGroup).
    fn subscribe_and_find(&mut self) -> Vec<Output> {
        let out = self.input(Input::Subscribe(vec!["t".into()]));
        let (find, _) = only_send(&out, Api::Find);
        self.respond(
            find,
            Response::Coordinator {
                node_id: 1,
                addr: "c".into(),
            },
        )
    }

    /// As leader: supply the inputs the JoinGroup answer `out` asked for (topic `t` with
    /// `partitions` partitions, no stats) and return the SyncGroup that follows.
    fn leader_sync(&mut self, out: &[Output], partitions: i32) -> (u64, Request) {
        let Some(Output::LeaderInputsNeeded { id, .. }) = out
            .iter()
            .find(|o| matches!(o, Output::LeaderInputsNeeded { .. }))
            .cloned()
        else {
            panic!("{out:?}")
        };
        let out = self.input(Input::LeaderInputs {
            id,
            topics: vec![("t".into(), partitions)],
            stats: None,
        });
        send_among(&out, Api::Sync)
    }

    /// Answer every heartbeat among `out` with NONE.
    fn answer_heartbeats(&mut self, out: &[Output]) {
        for o in out {
            if let Output::Send {
                id,
                request: Request::Heartbeat { .. },
            } = o
            {
                assert!(self
                    .respond(*id, Response::Heartbeat { error: 0 })
                    .is_empty());
            }
        }
    }

    /// At `at`, a heartbeat answered REBALANCE_IN_PROGRESS (someone else's rebalance);
    /// returns the JoinGroup it causes.
    fn foreign_rebalance_at(&mut self, at: u64) -> (u64, Request) {
        self.now = at;
        let out = self.input(Input::Tick);
        let (beat, _) = only_send(&out, Api::Heartbeat);
        let out = self.respond(
            beat,
            Response::Heartbeat {
                error: code(ResponseError::RebalanceInProgress),
            },
        );
        only_send(&out, Api::Join)
    }

    /// Answer follower `m1`'s JoinGroup for `generation` and its SyncGroup with `parts` (and
    /// the heartbeat a member holding partitions sends in a new generation); returns what
    /// the callbacks' completion produced.
    fn complete_round(&mut self, join: u64, generation: i32, parts: &[Tp]) -> Vec<Output> {
        let out = self.respond(join, follower_join_ok(generation));
        let (sync, _) = send_among(&out, Api::Sync);
        self.answer_heartbeats(&out);
        let out = self.respond(
            sync,
            Response::Sync {
                error: 0,
                assignment: assignment_blob(parts),
            },
        );
        if out.iter().any(is_callback) {
            self.input(Input::CallbacksDone)
        } else {
            Vec::new()
        }
    }

    /// Subscribe to `t` and become a stable follower of generation 1 owning `owned`.
    /// Returns the member id.
    fn stable_follower(&mut self, owned: &[Tp]) -> String {
        let out = self.input(Input::Subscribe(vec!["t".into()]));
        let id = only_send(&out, Api::Find).0;
        let out = self.respond(
            id,
            Response::Coordinator {
                node_id: 1,
                addr: "c".into(),
            },
        );
        let (join, _) = only_send(&out, Api::Join);
        let out = self.respond(join, follower_join_ok(1));
        let (sync, _) = only_send(&out, Api::Sync);
        let out = self.respond(
            sync,
            Response::Sync {
                error: 0,
                assignment: assignment_blob(owned),
            },
        );
        assert_eq!(
            out,
            vec![Output::Assign {
                partitions: owned.to_vec(),
                generation: 1
            }]
        );
        assert!(self.input(Input::CallbacksDone).is_empty());
        assert_eq!(self.m.phase(), Phase::Stable);
        "m1".into()
    }
}

/// The single output, which must be a request of kind `api`: (id, request).
#[track_caller]
/// A JoinGroup answer making `m1` a follower of `leader` in `generation`.
fn follower_join_ok(generation: i32) -> Response {
    Response::Join {
        error: 0,
        generation,
        protocol: Some("cooperative-sticky".into()),
        leader: "leader".into(),
        member_id: "m1".into(),
        members: vec![],
    }
}

/// A subscription to `t` claiming `owned` as of `generation`.
fn claim_of_t(owned: Vec<Tp>, generation: i32) -> Bytes {
    encode_subscription(&Subscription {
        topics: vec!["t".into()],
        owned,
        generation,
        ..Subscription::default()
    })
    .unwrap()
}

/// A member of a JoinGroup answer.
fn member(id: &str, metadata: Bytes) -> JoinedMember {
    JoinedMember {
        member_id: id.into(),
        instance_id: None,
        metadata,
    }
}

/// The one `api` request among `out`, which may hold other requests too.
fn send_among(out: &[Output], api: Api) -> (u64, Request) {
    let found: Vec<(u64, Request)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { id, request } if api_of(request) == api => Some((*id, request.clone())),
            _ => None,
        })
        .collect();
    match found.as_slice() {
        [one] => one.clone(),
        _ => panic!("expected one {api:?} request, got {out:?}"),
    }
}

fn only_send(out: &[Output], api: Api) -> (u64, Request) {
    match out {
        [Output::Send { id, request }] if api_of(request) == api => (*id, request.clone()),
        _ => panic!("expected exactly one {api:?} request, got {out:?}"),
    }
}

/// A group of `n` cooperative-sticky members on topic `t` with `partitions` partitions,
/// joined one by one and settled.
fn sticky_group(barrier: bool, n: usize, partitions: i32) -> Sim {
    let mut sim = Sim::new(barrier, &[("t", partitions)]);
    for _ in 0..n {
        sim.join(config(), sticky(), &["t"]);
        sim.settle(60_000);
    }
    sim
}

// ---------------------------------------------------------------------------------------------
// Join flow

#[test]
fn join_flow_adopts_member_id_and_rejoins_at_once() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.join(config(), sticky(), &["t"]);
    let sends: Vec<Request> = sim
        .sends_since(a, 0)
        .into_iter()
        .map(|(t, r)| {
            assert_eq!(t, 0, "no backoff anywhere in a clean join");
            r
        })
        .collect();
    assert_eq!(sends.len(), 4, "{sends:?}");
    assert_eq!(sends[0], Request::FindCoordinator);
    // KIP-394: the first JoinGroup has no id; the coordinator hands one out with
    // MEMBER_ID_REQUIRED and the member joins again with it straight away.
    assert_eq!(join_member_id(&sends[1]), "");
    assert_eq!(join_member_id(&sends[2]), "member-001");
    let Request::Join {
        session_timeout_ms,
        rebalance_timeout_ms,
        instance_id,
        ..
    } = &sends[2]
    else {
        unreachable!()
    };
    assert_eq!(
        (*session_timeout_ms, *rebalance_timeout_ms),
        (10_000, 30_000)
    );
    assert_eq!(instance_id, &None);
    assert!(matches!(
        &sim.responses[1].2,
        Response::Join { error, member_id, .. }
            if *error == code(ResponseError::MemberIdRequired) && member_id == "member-001"
    ));
    // Alone, it leads: metadata for the subscribed topics, then a Sync with the plan.
    let Request::Sync {
        generation,
        member_id,
        protocol,
        ..
    } = &sends[3]
    else {
        panic!("{:?}", sends[3])
    };
    assert_eq!(
        (*generation, member_id.as_str(), protocol.as_str()),
        (1, "member-001", "cooperative-sticky")
    );
    assert_eq!(
        sync_assignments(&sends[3]),
        BTreeMap::from([("member-001".to_string(), tps("t", 0..4))])
    );
    let ev = sim.events_since(a, 0);
    assert!(matches!(&ev[0], Output::LeaderInputsNeeded { topics, .. } if topics == &["t"]));
    assert_eq!(
        ev[1..],
        vec![Output::Assign {
            partitions: tps("t", 0..4),
            generation: 1
        }]
    );
    assert_eq!(sim.nodes[a].m.phase(), Phase::Stable);
    assert!(sim.nodes[a].m.is_leader());
}

#[test]
fn join_lists_protocols_in_preference_order_with_owned_partitions_and_generation() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let mut cfg = config();
    cfg.rack = Some("rack-a".into());
    let a = sim.join(cfg, lagbalance_then_sticky(), &["t"]);
    sim.settle(10_000);
    assert_eq!(sim.nodes[a].m.protocol(), Some("lagbalance"));
    let mark = sim.mark(a);
    sim.input(a, Input::RequestRejoin("check the subscription".into()));
    let joins = sim.sends_of(a, mark, Api::Join);
    let (_, join) = &joins[0];
    let Request::Join {
        protocols, reason, ..
    } = join
    else {
        unreachable!()
    };
    assert_eq!(reason, "check the subscription");
    let names: Vec<&str> = protocols.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["lagbalance", "cooperative-sticky"]);
    for (i, (_, blob)) in protocols.iter().enumerate() {
        // Subscription v3 on the wire.
        assert_eq!(&blob[..2], &[0, 3]);
        let s = join_subscription(join, i);
        assert_eq!(s.topics, vec!["t"]);
        assert_eq!(
            s.owned,
            tps("t", 0..4),
            "every JoinGroup carries the owned partitions"
        );
        assert_eq!(s.generation, 1, "and the generation they belong to");
        assert_eq!(s.rack.as_deref(), Some("rack-a"));
    }
    // Only lagbalance has user data.
    assert!(join_subscription(join, 0).user_data.is_some());
    assert_eq!(join_subscription(join, 1).user_data, None);
}

#[test]
fn coordinator_picks_the_protocol_everyone_supports_with_most_votes() {
    // Rolling upgrade: two of ours prefer lagbalance, one old member only knows
    // cooperative-sticky, so the group runs cooperative-sticky until it leaves.
    let mut sim = Sim::new(true, &[("t", 6)]);
    let a = sim.join(config(), lagbalance_then_sticky(), &["t"]);
    let b = sim.join(config(), lagbalance_then_sticky(), &["t"]);
    let old = sim.join(config(), sticky(), &["t"]);
    sim.settle(60_000);
    for i in [a, b, old] {
        assert_eq!(sim.nodes[i].m.protocol(), Some("cooperative-sticky"));
    }
    let mark = sim.mark(a);
    sim.input(old, Input::Close);
    sim.settle(60_000);
    assert_eq!(sim.nodes[a].m.protocol(), Some("lagbalance"));
    assert_eq!(sim.nodes[b].m.protocol(), Some("lagbalance"));
    // The leader syncs with the protocol the coordinator chose.
    let syncs = sim.sends_of(a, mark, Api::Sync);
    assert!(
        matches!(&syncs.last().unwrap().1, Request::Sync { protocol, .. } if protocol == "lagbalance")
    );
    sim.assert_all_assigned_once();
}

#[test]
fn a_protocol_this_member_does_not_offer_is_fatal() {
    let mut solo = Solo::new(config(), sticky());
    let out = solo.subscribe_and_find();
    let (join, _) = only_send(&out, Api::Join);
    let out = solo.respond(
        join,
        Response::Join {
            error: 0,
            generation: 1,
            protocol: Some("range".into()),
            leader: "m1".into(),
            member_id: "m1".into(),
            members: vec![],
        },
    );
    assert!(matches!(out.as_slice(), [Output::Fatal(_)]), "{out:?}");
    assert_eq!(solo.m.phase(), Phase::Closed);
}

#[test]
fn coordinator_lookups_back_off_exponentially_up_to_the_maximum() {
    // A coordinator that FindCoordinator keeps naming but that does not answer (a dead broker
    // the cluster has not fenced yet): 100, 200, 400, 800, then 1 000 ms between lookups.
    let mut solo = Solo::new(config(), sticky());
    let out = solo.input(Input::Subscribe(vec!["t".into()]));
    let (mut find, _) = only_send(&out, Api::Find);
    let mut asked_at = solo.now;
    let mut gaps = Vec::new();
    while gaps.len() < 6 {
        let mut out = solo.input(Input::RequestFailed {
            id: find,
            reason: "connection refused".into(),
        });
        while sends(&out, Api::Find).is_empty() {
            solo.now += 10;
            out = solo.input(Input::Tick);
        }
        gaps.push(solo.now - asked_at);
        asked_at = solo.now;
        find = sends(&out, Api::Find)[0].0;
    }
    assert_eq!(gaps, [100, 200, 400, 800, 1_000, 1_000]);
}

#[test]
fn a_group_whose_broker_assigns_is_fatal() {
    // Kafka 4 answers a classic member of a KIP-848 group with no leader (seen on 4.1.1).
    let mut solo = Solo::new(config(), sticky());
    let out = solo.subscribe_and_find();
    let (join, _) = only_send(&out, Api::Join);
    let out = solo.respond(
        join,
        Response::Join {
            error: 0,
            generation: 2,
            protocol: Some("cooperative-sticky".into()),
            leader: String::new(),
            member_id: "m1".into(),
            members: vec![],
        },
    );
    let [Output::Fatal(why)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert!(why.contains("KIP-848"), "{why}");
    assert!(why.contains("cooperative-sticky"), "{why}");
    assert_eq!(solo.m.phase(), Phase::Closed);
}

// ---------------------------------------------------------------------------------------------
// Leader and follower

#[test]
fn leader_computes_the_plan_and_follower_sends_an_empty_sync() {
    let mut sim = sticky_group(true, 2, 4);
    let (a, b) = (0, 1);
    assert!(sim.nodes[a].m.is_leader() && !sim.nodes[b].m.is_leader());
    let (ma, mb) = (sim.mark(a), sim.mark(b));
    sim.input(a, Input::RequestRejoin("again".into()));
    sim.settle(30_000);
    let lead = sim.sends_of(a, ma, Api::Sync);
    let follow = sim.sends_of(b, mb, Api::Sync);
    assert_eq!(lead.len(), 1);
    assert_eq!(follow.len(), 1);
    assert_eq!(
        sync_assignments(&lead[0].1),
        BTreeMap::from([
            (sim.member_id(a), tps("t", 0..2)),
            (sim.member_id(b), tps("t", 2..4)),
        ]),
        "a sticky plan for everyone, nothing moves"
    );
    assert!(matches!(&follow[0].1, Request::Sync { assignments, .. } if assignments.is_empty()));
    // Nothing was revoked or added for either: the callbacks are empty assigns.
    assert_eq!(
        sim.events_since(b, mb),
        vec![Output::Assign {
            partitions: vec![],
            generation: sim.coord.generation
        }]
    );
}

#[test]
fn leader_rejects_an_invalid_plan() {
    // An assignor that gives away a partition its owner still holds (revoked and added in the
    // same round) is caught by the leader's validation: Fatal, not a double assignment.
    struct Greedy;
    impl Assignor for Greedy {
        fn name(&self) -> &str {
            "greedy"
        }
        fn assign(
            &mut self,
            view: &lagbalance_assign::GroupView,
            _: Option<&lagbalance_assign::IssuedPlan>,
        ) -> Result<lagbalance_assign::Plan, lagbalance_assign::AssignError> {
            // Everything to the first member ("a", owning nothing), whoever owns it.
            let mut assignments = vec![Vec::new(); view.members.len()];
            assignments[0] = (0..view.topics[0].partitions)
                .map(|p| lagbalance_assign::Tp::new(0, p))
                .collect();
            Ok(lagbalance_assign::Plan {
                assignments,
                user_data: vec![],
            })
        }
    }
    let mut solo = Solo::new(config(), vec![Box::new(Greedy)]);
    let out = solo.subscribe_and_find();
    let (join, req) = only_send(&out, Api::Join);
    let mine = match req {
        Request::Join { protocols, .. } => protocols[0].1.clone(),
        _ => unreachable!(),
    };
    let other = encode_subscription(&Subscription {
        topics: vec!["t".into()],
        owned: tps("t", 0..2),
        generation: 3,
        ..Subscription::default()
    })
    .unwrap();
    let out = solo.respond(
        join,
        Response::Join {
            error: 0,
            generation: 4,
            protocol: Some("greedy".into()),
            leader: "a".into(),
            member_id: "a".into(),
            members: vec![
                JoinedMember {
                    member_id: "a".into(),
                    instance_id: None,
                    metadata: mine,
                },
                JoinedMember {
                    member_id: "z".into(),
                    instance_id: None,
                    metadata: other,
                },
            ],
        },
    );
    let Output::LeaderInputsNeeded { id, .. } = out[0] else {
        panic!("{out:?}")
    };
    let out = solo.input(Input::LeaderInputs {
        id,
        topics: vec![("t".into(), 4)],
        stats: None,
    });
    assert!(
        matches!(out.as_slice(), [Output::Fatal(why)] if why.contains("invalid plan")),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Cooperative rebalancing

#[test]
fn second_member_converges_revoke_then_assign() {
    let mut sim = sticky_group(true, 1, 4);
    let a = 0;
    assert_eq!(sim.owned(a), set(tps("t", 0..4)));
    let ma = sim.mark(a);
    let b = sim.join(config(), sticky(), &["t"]);
    sim.settle(60_000);
    // A revokes the two it gives up (committing first), keeps the rest, and rejoins at once
    // so the leader can hand them out; B gets them only in the follow-up round.
    let ev = sim.events_since(a, ma);
    let revoke_at = ev
        .iter()
        .position(|o| matches!(o, Output::Revoke { .. }))
        .unwrap();
    assert_eq!(
        ev[revoke_at],
        Output::Revoke {
            partitions: tps("t", 2..4),
            commit: true
        }
    );
    assert_eq!(
        ev[revoke_at + 1],
        Output::Assign {
            partitions: vec![],
            generation: 2
        }
    );
    let (t_revoke, _) = sim.nodes[a].log[ma..]
        .iter()
        .find(|(_, o)| matches!(o, Output::Revoke { .. }))
        .unwrap();
    let rejoin = sim.sends_of(a, ma, Api::Join);
    assert!(
        rejoin.iter().any(|(t, r)| t == t_revoke
            && matches!(r, Request::Join { reason, .. } if reason == "revoked partitions")),
        "immediate rejoin after a revocation: {rejoin:?}"
    );
    assert_eq!(sim.nodes[a].commits, vec![tps("t", 2..4)]);
    assert_eq!(
        sim.events_since(b, 0),
        vec![
            Output::Assign {
                partitions: vec![],
                generation: 2
            },
            Output::Assign {
                partitions: tps("t", 2..4),
                generation: 3
            }
        ]
    );
    assert_eq!(sim.owned(a), set(tps("t", 0..2)));
    assert_eq!(sim.owned(b), set(tps("t", 2..4)));
    assert!(sim.audited >= 6);
}

#[test]
fn revoke_commits_only_with_auto_commit() {
    let mut sim = Sim::new(true, &[("t", 2)]);
    let cfg = MemberConfig {
        auto_commit: false,
        ..config()
    };
    let a = sim.join(cfg, sticky(), &["t"]);
    sim.settle(10_000);
    let ma = sim.mark(a);
    sim.join(config(), sticky(), &["t"]);
    sim.settle(60_000);
    assert!(sim.events_since(a, ma).contains(&Output::Revoke {
        partitions: tps("t", 1..2),
        commit: false
    }));
    assert!(sim.nodes[a].commits.is_empty());
}

#[test]
fn partitions_move_only_after_the_owner_revoked() {
    let mut sim = sticky_group(true, 1, 4);
    let a = 0;
    sim.nodes[a].hold_callbacks = true;
    let b = sim.join(config(), sticky(), &["t"]);
    let mark = sim.mark(a);
    let t0 = sim.now;
    // Twice the session timeout with the revocation callback still running.
    sim.advance(20_000);
    // Regression (machine.rs fix 1): A keeps heartbeating while its callbacks run, so the
    // coordinator does not expel it and hand its partitions to B while A still holds them.
    let beats: Vec<u64> = sim
        .sends_of(a, mark, Api::Heartbeat)
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert!(beats.len() >= 6 && beats[0] <= t0 + 3_000, "{beats:?}");
    assert!(sim.coord.members.contains_key(&sim.member_id(a)));
    // A was told to revoke but has not run the callback: it does not rejoin, so the leader
    // never sees the partitions free and B gets nothing.
    assert!(matches!(
        sim.nodes[a].callbacks.first(),
        Some(Output::Revoke { .. })
    ));
    assert_eq!(sim.owned(a), set(tps("t", 0..4)));
    assert_eq!(sim.owned(b), BTreeSet::new());
    sim.release_callbacks(a);
    sim.settle(60_000);
    assert_eq!(sim.owned(a), set(tps("t", 0..2)));
    assert_eq!(sim.owned(b), set(tps("t", 2..4)));
}

#[test]
fn ownership_audit_holds_under_churn_with_and_without_a_join_barrier() {
    for barrier in [true, false] {
        for seed in 1..=4u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut sim = Sim::new(barrier, &[("t", 7), ("u", 3)]);
            for _ in 0..3 {
                sim.join(config(), sticky(), &["t", "u"]);
            }
            sim.settle(120_000);
            for step in 0..12 {
                let live: Vec<usize> = (0..sim.nodes.len())
                    .filter(|&i| !sim.nodes[i].dead && sim.nodes[i].m.phase() != Phase::Closed)
                    .collect();
                match rng.below(6) {
                    0 | 1 => {
                        sim.join(config(), sticky(), &["t", "u"]);
                    }
                    2 if live.len() > 1 => {
                        let i = live[rng.below(live.len() as u64) as usize];
                        sim.input(i, Input::Close);
                    }
                    3 if live.len() > 1 => {
                        // Killed without LeaveGroup: the coordinator expires it.
                        let i = live[rng.below(live.len() as u64) as usize];
                        sim.kill(i);
                    }
                    4 => {
                        let i = live[rng.below(live.len() as u64) as usize];
                        let cooldown_ms = 2_000;
                        let reason = format!("step {step}");
                        sim.input(
                            i,
                            Input::LeaveAndRejoin {
                                cooldown_ms,
                                reason,
                            },
                        );
                    }
                    _ => {
                        let i = live[rng.below(live.len() as u64) as usize];
                        sim.input(i, Input::RequestRejoin(format!("step {step}")));
                    }
                }
                sim.advance(rng.below(4_000));
            }
            // Shown only when the test fails: which run to replay.
            eprintln!("barrier={barrier} seed={seed}");
            sim.settle(300_000);
            sim.assert_all_assigned_once();
            assert!(sim.audited > 10, "barrier={barrier} seed={seed}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lost partitions and error paths

/// Stable single leader owning t0..t3; returns the sim.
fn solo_sim() -> Sim {
    sticky_group(true, 1, 4)
}

#[test]
fn illegal_generation_on_sync_keeps_member_id_and_loses_partitions_at_next_join() {
    let mut sim = solo_sim();
    let id = sim.member_id(0);
    sim.nodes[0]
        .fail_next
        .push((Api::Sync, code(ResponseError::IllegalGeneration)));
    let mark = sim.mark(0);
    sim.input(0, Input::RequestRejoin("test".into()));
    sim.settle(60_000);
    let joins = sim.sends_of(0, mark, Api::Join);
    assert_eq!(joins.len(), 2);
    let s = join_subscription(&joins[1].1, 0);
    assert_eq!(join_member_id(&joins[1].1), id, "member id kept");
    assert_eq!(
        (s.generation, s.owned),
        (-1, vec![]),
        "generation reset, nothing owned"
    );
    assert_eq!(
        sim.events_since(0, mark)
            .into_iter()
            .filter(is_callback)
            .collect::<Vec<_>>(),
        vec![
            Output::Lost {
                partitions: tps("t", 0..4)
            },
            Output::Assign {
                partitions: tps("t", 0..4),
                generation: 3
            }
        ]
    );
    assert!(
        sim.nodes[0].commits.is_empty(),
        "lost partitions are not committed"
    );
}

#[test]
fn illegal_generation_on_heartbeat_loses_partitions_at_next_join() {
    let mut sim = solo_sim();
    let id = sim.member_id(0);
    sim.nodes[0]
        .fail_next
        .push((Api::Heartbeat, code(ResponseError::IllegalGeneration)));
    let mark = sim.mark(0);
    sim.advance(3_000);
    let joins = sim.sends_of(0, mark, Api::Join);
    assert_eq!(join_member_id(&joins[0].1), id);
    assert_eq!(join_subscription(&joins[0].1, 0).generation, -1);
    let ev: Vec<Output> = sim
        .events_since(0, mark)
        .into_iter()
        .filter(is_callback)
        .collect();
    assert_eq!(
        ev[0],
        Output::Lost {
            partitions: tps("t", 0..4)
        }
    );
    sim.settle(30_000);
    assert_eq!(sim.owned(0), set(tps("t", 0..4)));
    assert!(sim.nodes[0].commits.is_empty());
}

#[test]
fn illegal_generation_on_commit_loses_the_rest_at_next_join() {
    let mut sim = solo_sim();
    let a = 0;
    sim.nodes[a]
        .commit_errors
        .push_back(code(ResponseError::IllegalGeneration));
    let ma = sim.mark(a);
    let b = sim.join(config(), sticky(), &["t"]);
    sim.settle(60_000);
    let ev: Vec<Output> = sim
        .events_since(a, ma)
        .into_iter()
        .filter(is_callback)
        .collect();
    // The revocation's commit failed: the generation is gone, so what A kept is lost (no
    // commit) before it rejoins, with the member id kept.
    assert_eq!(
        ev[..3],
        [
            Output::Revoke {
                partitions: tps("t", 2..4),
                commit: true
            },
            Output::Assign {
                partitions: vec![],
                generation: 2
            },
            Output::Lost {
                partitions: tps("t", 0..2)
            },
        ]
    );
    let joins = sim.sends_of(a, ma, Api::Join);
    let after = joins
        .iter()
        .find(|(_, r)| join_subscription(r, 0).generation == -1)
        .expect("a join with the generation reset");
    assert_eq!(join_member_id(&after.1), sim.member_id(a));
    // Only what A revoked was committed. (A, whose claim was reset, is the remembered owner of
    // t2/t3 for one round, gets them back and revokes them again: one wasted, safe round.)
    assert_eq!(sim.nodes[a].commits[0], tps("t", 2..4));
    assert!(sim.nodes[a].commits.iter().all(|c| *c == tps("t", 2..4)));
    assert_eq!(sim.owned(a).len() + sim.owned(b).len(), 4);
    sim.assert_all_assigned_once();
}

#[test]
fn unknown_member_id_on_join_resets_the_id_and_rejoins() {
    let mut sim = solo_sim();
    let old = sim.member_id(0);
    sim.nodes[0]
        .fail_next
        .push((Api::Join, code(ResponseError::UnknownMemberId)));
    let mark = sim.mark(0);
    sim.input(0, Input::RequestRejoin("test".into()));
    let joins = sim.sends_of(0, mark, Api::Join);
    assert_eq!(join_member_id(&joins[0].1), old);
    // Rejoined at once, without an id (so via MEMBER_ID_REQUIRED), partitions lost first.
    assert_eq!(joins[1].0, joins[0].0);
    assert_eq!(join_member_id(&joins[1].1), "");
    assert_eq!(
        sim.events_since(0, mark)[0],
        Output::Lost {
            partitions: tps("t", 0..4)
        }
    );
    sim.settle(60_000);
    assert_ne!(sim.member_id(0), old);
    assert_eq!(sim.owned(0), set(tps("t", 0..4)));
}

#[test]
fn unknown_member_id_on_sync_and_heartbeat_loses_partitions() {
    for api in [Api::Sync, Api::Heartbeat] {
        let mut sim = solo_sim();
        let old = sim.member_id(0);
        let mark = sim.mark(0);
        if api == Api::Sync {
            sim.nodes[0]
                .fail_next
                .push((api, code(ResponseError::UnknownMemberId)));
            sim.input(0, Input::RequestRejoin("test".into()));
        } else {
            // The coordinator really forgot us (session expired on its side).
            let replies = sim.coord.expel(sim.now, &old);
            sim.deliver(replies);
            sim.advance(3_000);
        }
        let ev: Vec<Output> = sim
            .events_since(0, mark)
            .into_iter()
            .filter(is_callback)
            .collect();
        assert_eq!(
            ev[0],
            Output::Lost {
                partitions: tps("t", 0..4)
            },
            "{api:?}"
        );
        let joins = sim.sends_of(0, mark, Api::Join);
        let last = &joins.last().unwrap().1;
        assert_eq!(join_subscription(last, 0).owned, vec![], "{api:?}");
        assert!(
            joins.iter().any(|(_, r)| join_member_id(r).is_empty()),
            "{api:?}"
        );
        sim.settle(60_000);
        assert_ne!(sim.member_id(0), old);
        assert_eq!(sim.owned(0), set(tps("t", 0..4)));
        assert!(sim.nodes[0].commits.is_empty());
    }
}

#[test]
fn rebalance_in_progress_on_join_and_sync_rejoins_without_reset() {
    for api in [Api::Join, Api::Sync] {
        let mut sim = solo_sim();
        let id = sim.member_id(0);
        sim.nodes[0]
            .fail_next
            .push((api, code(ResponseError::RebalanceInProgress)));
        let mark = sim.mark(0);
        sim.input(0, Input::RequestRejoin("test".into()));
        let joins = sim.sends_of(0, mark, Api::Join);
        assert!(joins.len() >= 2, "{api:?}: {joins:?}");
        // The subscription reports the generation the owned partitions came from (KIP-792),
        // which only a successful SyncGroup changes: 1 after a failed Join and after a failed
        // Sync alike, so the rejoin repeats the same claim. No reset, same id, same claims.
        let generations = [1, 1];
        for ((t, j), g) in joins.iter().zip(generations) {
            assert_eq!(*t, sim.now, "at once, no backoff");
            assert_eq!(join_member_id(j), id);
            let s = join_subscription(j, 0);
            assert_eq!(
                (s.generation, s.owned),
                (g, tps("t", 0..4)),
                "{api:?}: no reset"
            );
        }
        assert!(
            !sim.events_since(0, mark)
                .iter()
                .any(|o| matches!(o, Output::Lost { .. } | Output::Revoke { .. })),
            "{api:?}"
        );
        assert_eq!(sim.owned(0), set(tps("t", 0..4)));
        sim.settle(30_000);
    }
}

#[test]
fn rebalance_in_progress_on_heartbeat_rejoins_only_when_stable() {
    // Stable: rejoin.
    let mut solo = Solo::new(config(), sticky());
    solo.stable_follower(&tps("t", 0..2));
    solo.now = 3_000;
    let out = solo.input(Input::Tick);
    let (hb, _) = only_send(&out, Api::Heartbeat);
    let out = solo.respond(
        hb,
        Response::Heartbeat {
            error: code(ResponseError::RebalanceInProgress),
        },
    );
    let (_, join) = only_send(&out, Api::Join);
    assert_eq!(join_member_id(&join), "m1");
    assert_eq!(join_subscription(&join, 0).owned, tps("t", 0..2));

    // Mid-rebalance (waiting for the Sync answer): ignore, no second JoinGroup.
    let mut solo = Solo::new(config(), sticky());
    let out = solo.subscribe_and_find();
    let (join, _) = only_send(&out, Api::Join);
    let out = solo.respond(
        join,
        Response::Join {
            error: 0,
            generation: 1,
            protocol: Some("cooperative-sticky".into()),
            leader: "l".into(),
            member_id: "m1".into(),
            members: vec![],
        },
    );
    let (sync, _) = only_send(&out, Api::Sync);
    solo.now = 3_000;
    let out = solo.input(Input::Tick);
    let (hb, _) = only_send(&out, Api::Heartbeat);
    let out = solo.respond(
        hb,
        Response::Heartbeat {
            error: code(ResponseError::RebalanceInProgress),
        },
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(solo.m.phase(), Phase::Syncing);
    let out = solo.respond(
        sync,
        Response::Sync {
            error: 0,
            assignment: assignment_blob(&tps("t", 0..1)),
        },
    );
    assert_eq!(
        out,
        vec![Output::Assign {
            partitions: tps("t", 0..1),
            generation: 1
        }]
    );
    assert!(solo.input(Input::CallbacksDone).is_empty());
    assert_eq!(solo.m.phase(), Phase::Stable);
}

#[test]
fn coordinator_errors_rediscover_after_the_backoff() {
    let errors = [
        ResponseError::NotCoordinator,
        ResponseError::CoordinatorNotAvailable,
        ResponseError::CoordinatorLoadInProgress,
    ];
    for e in errors {
        for api in [Api::Join, Api::Sync, Api::Heartbeat] {
            let mut sim = solo_sim();
            let id = sim.member_id(0);
            sim.nodes[0].fail_next.push((api, code(e)));
            let mark = sim.mark(0);
            if api == Api::Heartbeat {
                sim.advance(3_000);
            } else {
                sim.input(0, Input::RequestRejoin("test".into()));
            }
            let failed_at = sim.sends_of(0, mark, api)[0].0;
            sim.advance(1_000);
            let finds = sim.sends_of(0, mark, Api::Find);
            assert_eq!(finds.len(), 1, "{e:?} on {api:?}");
            assert_eq!(
                finds[0].0,
                failed_at + 100,
                "{e:?} on {api:?}: not before retry_backoff_ms"
            );
            let after: Vec<(u64, Request)> = sim
                .sends_since(0, mark)
                .into_iter()
                .filter(|(t, _)| *t >= failed_at + 100)
                .collect();
            // Then carry on where it was: a stable member heartbeats at once, a joining one
            // joins again — same member id, nothing lost.
            let expect = if api == Api::Heartbeat {
                Api::Heartbeat
            } else {
                Api::Join
            };
            assert_eq!(api_of(&after[1].1), expect, "{e:?} on {api:?}: {after:?}");
            assert_eq!(after[1].0, failed_at + 100);
            assert_eq!(sim.member_id(0), id);
            assert!(!sim
                .events_since(0, mark)
                .iter()
                .any(|o| matches!(o, Output::Lost { .. } | Output::Revoke { .. })));
            sim.settle(30_000);
            assert_eq!(sim.owned(0), set(tps("t", 0..4)));
        }
    }
    // FindCoordinator failing is retried after the backoff too.
    let mut sim = Sim::new(true, &[("t", 1)]);
    let a = sim.add(config(), sticky());
    sim.nodes[a]
        .fail_next
        .push((Api::Find, code(ResponseError::CoordinatorNotAvailable)));
    sim.input(a, Input::Subscribe(vec!["t".into()]));
    sim.advance(1_000);
    let finds: Vec<u64> = sim
        .sends_of(a, 0, Api::Find)
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(finds, vec![0, 100]);
    assert_eq!(sim.owned(a), set(tps("t", 0..1)));
}

#[test]
fn transport_failures_rediscover_without_losing_partitions() {
    for api in [Api::Join, Api::Sync, Api::Heartbeat] {
        let mut sim = solo_sim();
        sim.nodes[0].drop_next.push(api);
        let mark = sim.mark(0);
        if api == Api::Heartbeat {
            sim.advance(3_000);
        } else {
            sim.input(0, Input::RequestRejoin("test".into()));
        }
        let failed_at = sim.sends_of(0, mark, api)[0].0;
        sim.settle(30_000);
        let finds = sim.sends_of(0, mark, Api::Find);
        assert_eq!(finds[0].0, failed_at + 100, "{api:?}");
        assert!(!sim
            .events_since(0, mark)
            .iter()
            .any(|o| matches!(o, Output::Lost { .. } | Output::Revoke { .. })));
        assert_eq!(sim.owned(0), set(tps("t", 0..4)), "{api:?}");
    }
}

#[test]
fn session_timeout_without_a_successful_heartbeat_gives_up_the_partitions() {
    // session 10 s, heartbeat 3 s. The coordinator may expel us 10 s after it last heard from
    // us; we stop one heartbeat interval earlier (librdkafka does the same; Java waits for a
    // fencing error, and a member expelled while still consuming breaks the one-owner rule).
    let mut sim = solo_sim();
    let old = sim.member_id(0);
    let start = sim.now; // the join's success: the coordinator heard from us then
    let mark = sim.mark(0);
    // The next heartbeat vanishes (neither answered nor seen by the coordinator).
    sim.nodes[0].swallow_next.push(Api::Heartbeat);
    sim.advance(3_000);
    assert_eq!(sim.sends_of(0, mark, Api::Heartbeat).len(), 1);
    sim.advance(3_999);
    assert_eq!(
        sim.owned(0),
        set(tps("t", 0..4)),
        "still ours before the deadline"
    );
    assert_eq!(
        sim.nodes[0].m.coordinator(),
        Some(&(1, "127.0.0.1:9092".into()))
    );
    sim.advance(1);
    assert_eq!(sim.now, start + 7_000);
    assert_eq!(
        sim.nodes[0].m.coordinator(),
        None,
        "coordinator marked unknown"
    );
    let ev: Vec<Output> = sim
        .events_since(0, mark)
        .into_iter()
        .filter(is_callback)
        .collect();
    assert_eq!(
        ev,
        vec![Output::Lost {
            partitions: tps("t", 0..4)
        }],
        "lost, not revoked: no commit"
    );
    assert!(sim.nodes[0].commits.is_empty());
    assert!(
        sim.sends_of(0, mark, Api::Find).is_empty(),
        "not before the backoff"
    );
    sim.advance(100);
    assert_eq!(sim.sends_of(0, mark, Api::Find)[0].0, start + 7_100);
    // It rejoins with the generation reset and gets its partitions back.
    sim.settle(60_000);
    let joins = sim.sends_of(0, mark, Api::Join);
    assert_eq!(join_subscription(&joins[0].1, 0).generation, -1);
    assert!(join_subscription(&joins[0].1, 0).owned.is_empty());
    assert_eq!(sim.owned(0), set(tps("t", 0..4)));
    let _ = old;
}

#[test]
fn poll_timeout_leaves_and_rejoins_on_the_next_poll_with_partitions_lost() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.add(config(), sticky());
    sim.nodes[a].auto_poll = false;
    sim.input(a, Input::Subscribe(vec!["t".into()]));
    let id = sim.member_id(a);
    let mark = sim.mark(a);
    sim.advance(29_999);
    assert!(sim.sends_of(a, mark, Api::Leave).is_empty());
    sim.advance(1);
    assert_eq!(
        sim.sends_of(a, mark, Api::Leave),
        vec![(
            30_000,
            Request::Leave {
                member_id: id.clone(),
                instance_id: None,
                reason: "consumer poll timeout has expired".into()
            }
        )]
    );
    assert_eq!(sim.nodes[a].m.phase(), Phase::Idle);
    assert_eq!(sim.nodes[a].m.member_id(), "");
    // We are out of the group, so the partitions are lost — not revoked, no commit — at once
    // (the driver runs that callback before it fetches again). No rejoin until the
    // application polls again.
    sim.advance(60_000);
    assert!(sim.sends_of(a, mark, Api::Join).is_empty());
    assert_eq!(sim.owned(a), BTreeSet::new());
    sim.input(a, Input::Polled);
    let ev: Vec<Output> = sim
        .events_since(a, mark)
        .into_iter()
        .filter(is_callback)
        .collect();
    assert_eq!(
        ev[0],
        Output::Lost {
            partitions: tps("t", 0..4)
        }
    );
    let joins = sim.sends_of(a, mark, Api::Join);
    assert_eq!(join_member_id(&joins[0].1), "");
    assert_eq!(joins[0].0, 90_000);
    // Its old member id left the group while the leader's memory said it held them: they wait
    // one session timeout before anyone (here, its new self) gets them.
    sim.settle(60_000);
    assert_eq!(
        sim.owned(a),
        set(tps("t", 0..4)),
        "rejoined and got them back"
    );
    assert!(sim.nodes[a].commits.is_empty());
}

#[test]
fn poll_timeout_of_a_static_member_sends_no_leave() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.add(static_config("pod-a"), sticky());
    sim.nodes[a].auto_poll = false;
    sim.input(a, Input::Subscribe(vec!["t".into()]));
    let mark = sim.mark(a);
    sim.advance(40_000);
    assert!(sim.sends_of(a, mark, Api::Leave).is_empty());
    assert_eq!(sim.nodes[a].m.phase(), Phase::Idle);
    sim.input(a, Input::Polled);
    let ev: Vec<Output> = sim
        .events_since(a, mark)
        .into_iter()
        .filter(is_callback)
        .collect();
    assert_eq!(
        ev[0],
        Output::Lost {
            partitions: tps("t", 0..4)
        }
    );
    let joins = sim.sends_of(a, mark, Api::Join);
    assert!(
        matches!(&joins[0].1, Request::Join { member_id, instance_id, .. }
        if member_id.is_empty() && instance_id.as_deref() == Some("pod-a"))
    );
}

// ---------------------------------------------------------------------------------------------
// Static membership

#[test]
fn static_member_sends_its_instance_id_and_no_leave_on_close() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.join(static_config("pod-a"), sticky(), &["t"]);
    sim.advance(3_000);
    let sends = sim.sends_since(a, 0);
    let mut seen = BTreeSet::new();
    for (_, r) in &sends {
        let inst = match r {
            Request::Join { instance_id, .. }
            | Request::Sync { instance_id, .. }
            | Request::Heartbeat { instance_id, .. } => instance_id,
            _ => continue,
        };
        assert_eq!(inst.as_deref(), Some("pod-a"), "{r:?}");
        seen.insert(format!("{:?}", api_of(r)));
    }
    assert_eq!(seen.len(), 3, "Join, Sync and Heartbeat all seen: {seen:?}");
    // A static member joins without MEMBER_ID_REQUIRED.
    assert_eq!(sim.sends_of(a, 0, Api::Join).len(), 1);
    let mark = sim.mark(a);
    sim.input(a, Input::Close);
    assert!(sim.sends_of(a, mark, Api::Leave).is_empty());
    assert_eq!(
        sim.events_since(a, mark),
        vec![
            Output::Revoke {
                partitions: tps("t", 0..4),
                commit: true
            },
            Output::Closed
        ]
    );
}

#[test]
fn static_member_sends_leave_on_leave_and_rejoin() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.join(static_config("pod-a"), sticky(), &["t"]);
    let id = sim.member_id(a);
    let mark = sim.mark(a);
    sim.input(
        a,
        Input::LeaveAndRejoin {
            cooldown_ms: 1_000,
            reason: "lagging".into(),
        },
    );
    assert_eq!(
        sim.sends_of(a, mark, Api::Leave),
        vec![(
            0,
            Request::Leave {
                member_id: id,
                instance_id: Some("pod-a".into()),
                reason: "lagging".into()
            }
        )]
    );
    // The leader holds what the departed identity may hold for one session timeout.
    sim.settle(60_000);
    assert_eq!(sim.owned(a), set(tps("t", 0..4)));
}

#[test]
fn fenced_instance_id_is_fatal() {
    for api in [Api::Join, Api::Sync, Api::Heartbeat] {
        let mut sim = Sim::new(true, &[("t", 4)]);
        let a = sim.join(static_config("pod-a"), sticky(), &["t"]);
        sim.nodes[a]
            .fail_next
            .push((api, code(ResponseError::FencedInstanceId)));
        let mark = sim.mark(a);
        if api == Api::Heartbeat {
            sim.advance(3_000);
        } else {
            sim.input(a, Input::RequestRejoin("test".into()));
        }
        let ev: Vec<Output> = sim
            .events_since(a, mark)
            .into_iter()
            .filter(|o| is_callback(o) || matches!(o, Output::Fatal(_)))
            .collect();
        assert_eq!(ev.len(), 2, "{api:?}: {ev:?}");
        assert!(
            matches!(ev.last(), Some(Output::Fatal(_))),
            "{api:?}: {ev:?}"
        );
        assert_eq!(
            ev[0],
            Output::Lost {
                partitions: tps("t", 0..4)
            },
            "{api:?}"
        );
        assert_eq!(sim.nodes[a].m.phase(), Phase::Closed);
        let n = sim.mark(a);
        sim.advance(60_000);
        assert!(
            sim.sends_since(a, n).is_empty(),
            "{api:?}: silent after Fatal"
        );
    }

    // The real thing: a second process starts with the same group.instance.id. KIP-345 hands
    // it the identity at once; the old one is fenced at its next heartbeat. (The overlap until
    // then is by design of KIP-345, so the audit is off here.)
    let mut sim = Sim::new(true, &[("t", 4)]);
    sim.audit = false;
    let old = sim.join(static_config("pod-a"), sticky(), &["t"]);
    let mark = sim.mark(old);
    let new = sim.join(static_config("pod-a"), sticky(), &["t"]);
    sim.advance(3_000);
    let ev = sim.events_since(old, mark);
    assert_eq!(
        ev,
        vec![
            Output::Lost {
                partitions: tps("t", 0..4)
            },
            Output::Fatal("heartbeat: fenced by another member with our group.instance.id".into())
        ]
    );
    assert_eq!(sim.owned(new), set(tps("t", 0..4)));
}

// ---------------------------------------------------------------------------------------------
// Close and voluntary leave

#[test]
fn close_revokes_with_commit_then_leaves_then_closes() {
    let mut sim = sticky_group(true, 2, 4);
    let (a, b) = (0, 1);
    let id = sim.member_id(a);
    let mark = sim.mark(a);
    sim.nodes[a].hold_callbacks = true;
    sim.input(a, Input::Close);
    // LeaveGroup only after the revocation (and its commit) ran.
    assert!(sim.sends_since(a, mark).is_empty());
    sim.release_callbacks(a);
    assert_eq!(
        sim.sends_since(a, mark),
        vec![(
            sim.now,
            Request::Leave {
                member_id: id,
                instance_id: None,
                reason: "consumer closed".into()
            }
        )]
    );
    assert_eq!(
        sim.events_since(a, mark),
        vec![
            Output::Revoke {
                partitions: tps("t", 0..2),
                commit: true
            },
            Output::Closed
        ]
    );
    assert_eq!(sim.nodes[a].commits.last(), Some(&tps("t", 0..2)));
    assert_eq!(sim.nodes[a].m.phase(), Phase::Closed);
    sim.settle(30_000);
    assert_eq!(sim.owned(b), set(tps("t", 0..4)));
}

#[test]
fn leave_and_rejoin_waits_for_the_cooldown() {
    let mut sim = sticky_group(true, 2, 4);
    let (a, b) = (0, 1);
    let t0 = sim.now;
    let mark = sim.mark(a);
    sim.input(
        a,
        Input::LeaveAndRejoin {
            cooldown_ms: 5_000,
            reason: "lagging".into(),
        },
    );
    let sends = sim.sends_since(a, mark);
    assert!(matches!(&sends[0].1, Request::Leave { reason, .. } if reason == "lagging"));
    assert_eq!(
        sim.events_since(a, mark)[0],
        Output::Revoke {
            partitions: tps("t", 0..2),
            commit: true
        }
    );
    sim.advance(4_999);
    assert!(
        sim.sends_of(a, mark, Api::Join).is_empty(),
        "no join during the cooldown"
    );
    assert_eq!(
        sim.owned(b),
        set(tps("t", 0..4)),
        "the other member took over"
    );
    sim.advance(1);
    let joins = sim.sends_of(a, mark, Api::Join);
    assert_eq!(joins[0].0, t0 + 5_000);
    assert_eq!(
        join_member_id(&joins[0].1),
        "",
        "a new member after LeaveGroup"
    );
    sim.settle(60_000);
    assert_eq!(sim.owned(a).len(), 2);
    assert_eq!(sim.owned(b).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Subscription changes and rejoin requests

#[test]
fn unsubscribing_a_topic_revokes_only_its_partitions_before_joining() {
    let mut sim = Sim::new(true, &[("t", 2), ("u", 2)]);
    let a = sim.join(config(), sticky(), &["t", "u"]);
    sim.settle(10_000);
    let mut all = tps("t", 0..2);
    all.extend(tps("u", 0..2));
    assert_eq!(sim.owned(a), set(all));
    let mark = sim.mark(a);
    sim.input(a, Input::Subscribe(vec!["t".into()]));
    let log = &sim.nodes[a].log[mark..];
    let revoke = log
        .iter()
        .position(|(_, o)| matches!(o, Output::Revoke { .. }))
        .unwrap();
    let join = log
        .iter()
        .position(|(_, o)| {
            matches!(
                o,
                Output::Send {
                    request: Request::Join { .. },
                    ..
                }
            )
        })
        .unwrap();
    assert!(revoke < join, "revoked before the JoinGroup");
    assert_eq!(
        sim.events_since(a, mark),
        vec![
            Output::Revoke {
                partitions: tps("u", 0..2),
                commit: true
            },
            Output::LeaderInputsNeeded {
                id: match &log[join + 1].1 {
                    Output::LeaderInputsNeeded { id, .. } => *id,
                    o => panic!("{o:?}"),
                },
                topics: vec!["t".into()]
            },
            Output::Assign {
                partitions: vec![],
                generation: 2
            }
        ]
    );
    let s = join_subscription(&sim.sends_of(a, mark, Api::Join)[0].1, 0);
    assert_eq!((s.topics, s.owned), (vec!["t".to_string()], tps("t", 0..2)));
    assert_eq!(sim.owned(a), set(tps("t", 0..2)));
}

#[test]
fn subscription_change_while_stable_rejoins() {
    let mut sim = Sim::new(true, &[("t", 2), ("u", 2)]);
    let a = sim.join(config(), sticky(), &["t"]);
    sim.settle(10_000);
    let mark = sim.mark(a);
    sim.input(a, Input::Subscribe(vec!["t".into(), "u".into()]));
    let joins = sim.sends_of(a, mark, Api::Join);
    assert!(
        matches!(&joins[0].1, Request::Join { reason, .. } if reason == "subscription changed")
    );
    assert_eq!(join_subscription(&joins[0].1, 0).topics, vec!["t", "u"]);
    assert_eq!(
        sim.events_since(a, mark)
            .into_iter()
            .filter(is_callback)
            .collect::<Vec<_>>(),
        vec![Output::Assign {
            partitions: tps("u", 0..2),
            generation: 2
        }]
    );
}

#[test]
fn request_rejoin_sends_fresh_user_data() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.join(config(), lagbalance_then_sticky(), &["t"]);
    let b = sim.join(config(), lagbalance_then_sticky(), &["t"]);
    sim.settle(60_000);
    let user_data = |sim: &Sim, i: usize| {
        let joins = sim.sends_of(i, 0, Api::Join);
        let ud = join_subscription(&joins.last().unwrap().1, 0)
            .user_data
            .unwrap();
        MemberUserData::decode(&ud).unwrap()
    };
    let before = user_data(&sim, b);
    let gen = sim.coord.generation;
    let stats = MemberStats {
        processed_rate: 1234.0,
        backlogged: true,
        measured_at_ms: sim.now,
        ..MemberStats::default()
    };
    sim.input(b, Input::Stats(stats));
    let mark = sim.mark(b);
    sim.input(b, Input::RequestRejoin("capacity changed".into()));
    let joins = sim.sends_of(b, mark, Api::Join);
    assert!(matches!(&joins[0].1, Request::Join { reason, .. } if reason == "capacity changed"));
    let after = user_data(&sim, b);
    assert_eq!(after.observed_rate, 1234.0);
    assert!(after.backlogged);
    assert!(after.seq > before.seq);
    // The follower's metadata changed, so the coordinator really rebalances (it answers a
    // follower rejoining with identical metadata with the current generation, no new plan).
    sim.settle(60_000);
    assert!(sim.coord.generation > gen);
    assert!(sim.nodes[a].m.is_leader());
}

#[test]
fn stale_responses_are_ignored() {
    let mut solo = Solo::new(config(), sticky());
    let out = solo.input(Input::Subscribe(vec!["t".into()]));
    let (find, _) = only_send(&out, Api::Find);
    let coordinator = Response::Coordinator {
        node_id: 1,
        addr: "c".into(),
    };
    assert!(solo.respond(find + 100, coordinator.clone()).is_empty());
    assert_eq!(solo.m.phase(), Phase::Discovering);
    let out = solo.respond(find, coordinator.clone());
    let (join1, _) = only_send(&out, Api::Join);
    // The JoinGroup fails in transport: rediscover, join again with a new request id.
    let out = solo.input(Input::RequestFailed {
        id: join1,
        reason: "eof".into(),
    });
    assert!(out.is_empty());
    solo.now = 100;
    let out = solo.input(Input::Tick);
    let (find2, _) = only_send(&out, Api::Find);
    let out = solo.respond(find2, coordinator);
    let (join2, _) = only_send(&out, Api::Join);
    assert_ne!(join1, join2);
    let ok = |gen| Response::Join {
        error: 0,
        generation: gen,
        protocol: Some("cooperative-sticky".into()),
        leader: "l".into(),
        member_id: "m1".into(),
        members: vec![],
    };
    // A late answer to the abandoned JoinGroup changes nothing.
    assert!(solo.respond(join1, ok(7)).is_empty());
    assert_eq!((solo.m.phase(), solo.m.generation()), (Phase::Joining, -1));
    let out = solo.respond(join2, ok(8));
    let (sync, _) = only_send(&out, Api::Sync);
    // A stale heartbeat id and a stale Sync id are ignored too.
    let bad = Response::Heartbeat {
        error: code(ResponseError::IllegalGeneration),
    };
    assert!(solo.respond(sync + 50, bad).is_empty());
    let assignment = assignment_blob(&tps("t", 0..1));
    let stale = Response::Sync {
        error: 0,
        assignment: assignment.clone(),
    };
    assert!(solo.respond(sync + 51, stale).is_empty());
    assert_eq!((solo.m.phase(), solo.m.generation()), (Phase::Syncing, 8));
    let out = solo.respond(
        sync,
        Response::Sync {
            error: 0,
            assignment,
        },
    );
    assert_eq!(
        out,
        vec![Output::Assign {
            partitions: tps("t", 0..1),
            generation: 8
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile metadata and the stale-metadata defence

#[test]
fn malformed_subscriptions_never_crash_the_leader() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let good = encode_subscription(&Subscription {
        topics: vec!["t".into()],
        generation: -1,
        ..Subscription::default()
    })
    .unwrap();
    for round in 0..50 {
        let mut solo = Solo::new(config(), sticky());
        let out = solo.input(Input::Subscribe(vec!["t".into()]));
        let (find, _) = only_send(&out, Api::Find);
        let out = solo.respond(
            find,
            Response::Coordinator {
                node_id: 1,
                addr: "c".into(),
            },
        );
        let (join, req) = only_send(&out, Api::Join);
        let mine = match req {
            Request::Join { protocols, .. } => protocols[0].1.clone(),
            _ => unreachable!(),
        };
        let random: Vec<u8> = (0..rng.below(80)).map(|_| rng.next() as u8).collect();
        let truncated = good[..1 + rng.below(good.len() as u64 - 1) as usize].to_vec();
        // Version 3, then a topic-array length of 2^31 − 1 with nothing behind it.
        let huge = vec![0, 3, 0x7f, 0xff, 0xff, 0xff];
        // A topic name claiming 32 767 bytes.
        let long_name = vec![0, 3, 0, 0, 0, 1, 0x7f, 0xff, b't'];
        let member = |id: &str, metadata: Vec<u8>| JoinedMember {
            member_id: id.into(),
            instance_id: None,
            metadata: Bytes::from(metadata),
        };
        let members = vec![
            member("a", mine.to_vec()),
            member("b-random", random),
            member("c-truncated", truncated),
            member("d-huge", huge),
            member("e-long", long_name),
            member("f-empty", vec![]),
            member("g-good", good.to_vec()),
        ];
        let out = solo.respond(
            join,
            Response::Join {
                error: 0,
                generation: 1,
                protocol: Some("cooperative-sticky".into()),
                leader: "a".into(),
                member_id: "a".into(),
                members,
            },
        );
        let Output::LeaderInputsNeeded { id, topics } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(topics, &vec!["t".to_string()]);
        let out = solo.input(Input::LeaderInputs {
            id: *id,
            topics: vec![("t".into(), 4)],
            stats: None,
        });
        let (_, sync) = only_send(&out, Api::Sync);
        let plan = sync_assignments(&sync);
        assert_eq!(plan.len(), 7, "round {round}: everyone gets an answer");
        for bad in ["b-random", "c-truncated", "d-huge", "e-long", "f-empty"] {
            assert_eq!(plan[bad], vec![], "round {round}: {bad}");
        }
        let mut both: Vec<Tp> = plan["a"].iter().chain(&plan["g-good"]).cloned().collect();
        both.sort();
        assert_eq!(both, tps("t", 0..4), "round {round}");
        assert_eq!((plan["a"].len(), plan["g-good"].len()), (2, 2));
    }
}

#[test]
fn stale_metadata_without_a_join_barrier_is_withheld_not_double_assigned() {
    // tansu-like coordinator: JoinGroup is answered at once with each member's *last*
    // metadata. B receives t2,t3 from the leader A but does not need to rejoin afterwards, so
    // the coordinator keeps B's old subscription (owns nothing) while B really holds t2,t3.
    let mut sim = Sim::new(false, &[("t", 4)]);
    let a = sim.join(config(), sticky(), &["t"]);
    sim.settle(30_000);
    let b = sim.join(config(), sticky(), &["t"]);
    sim.settle(60_000);
    assert_eq!(sim.owned(a), set(tps("t", 0..2)));
    assert_eq!(sim.owned(b), set(tps("t", 2..4)));
    let b_id = sim.member_id(b);
    let b_meta = decode_subscription(&sim.coord.members[&b_id].protocols[0].1)
        .unwrap()
        .1;
    assert!(
        b_meta.owned.is_empty(),
        "the coordinator holds B's stale metadata: {b_meta:?}"
    );
    let responses_before = sim.responses.len();

    // C joins: the leader rejoins at once and sees B "owning nothing".
    let c = sim.join(config(), sticky(), &["t"]);
    sim.settle(120_000);
    sim.assert_all_assigned_once();

    // The first JoinGroup answer A got after C arrived: the leader's inputs.
    let (gen, members) = sim.responses[responses_before..]
        .iter()
        .find_map(|(_, n, r)| match r {
            Response::Join {
                error: 0,
                generation,
                members,
                ..
            } if *n == a && members.len() == 3 => Some((*generation, members.clone())),
            _ => None,
        })
        .expect("the leader's JoinGroup answer with C in it");
    let stale_b = members.iter().find(|m| m.member_id == b_id).unwrap();
    assert!(decode_subscription(&stale_b.metadata)
        .unwrap()
        .1
        .owned
        .is_empty());
    // What our leader (remembering its last plan) sent for that generation: C got nothing
    // that B still held.
    let c_id = sim.member_id(c);
    let ours = sim.nodes[a]
        .log
        .iter()
        .find_map(|(_, o)| match o {
            Output::Send {
                request: r @ Request::Sync { generation, .. },
                ..
            } if *generation == gen => Some(sync_assignments(r)),
            _ => None,
        })
        .unwrap();
    assert!(
        ours[&c_id].iter().all(|p| !tps("t", 2..4).contains(p)),
        "{ours:?}"
    );
    assert_eq!(ours[&c_id], vec![], "C waits for B to revoke");
    // B's claim is stale, so B is the *remembered* owner of both: it keeps them (it would not
    // revoke partitions it does not claim, so withholding them would strand them) and gives
    // one up next round, once it claims them itself.
    let b_kept = ours[&b_id].clone();
    assert_eq!(b_kept, tps("t", 2..4), "B keeps what it may hold: {ours:?}");

    // The same inputs to a new leader (a fresh process: no memory of any plan): it cannot know
    // what B holds either, so it hands out nothing B might hold — it withholds every unclaimed
    // partition until the follow-up round refreshes the claims.
    let a_id = sim.member_id(a);
    let mut fresh = Solo::new(config(), sticky());
    let out = fresh.input(Input::Subscribe(vec!["t".into()]));
    let (find, _) = only_send(&out, Api::Find);
    let out = fresh.respond(
        find,
        Response::Coordinator {
            node_id: 1,
            addr: "c".into(),
        },
    );
    let (join, _) = only_send(&out, Api::Join);
    let out = fresh.respond(
        join,
        Response::Join {
            error: 0,
            generation: gen,
            protocol: Some("cooperative-sticky".into()),
            leader: a_id.clone(),
            member_id: a_id,
            members: members.clone(),
        },
    );
    let (_, sync) = fresh.leader_sync(&out, 4);
    let guarded = sync_assignments(&sync);
    assert!(
        guarded[&c_id].iter().all(|p| !tps("t", 2..4).contains(p)),
        "a new leader hands out nothing B may hold: {guarded:?}"
    );
    // Proof that the inputs are dangerous: the assignor alone, without the leader's guards,
    // gives C one of the partitions B still holds.
    let view = crate::group::machine::build_view(gen, &members, vec![("t".into(), 4)], None, 0);
    let naive = lagbalance_assign::CooperativeStickyAssignor
        .assign(&view, None)
        .unwrap();
    let c_index = view
        .members
        .iter()
        .position(|m| m.member_id == c_id)
        .unwrap();
    let double = naive.assignments[c_index]
        .iter()
        .filter(|tp| tp.topic == 0 && (2..4).contains(&tp.partition))
        .count();
    assert_eq!(
        double, 1,
        "the unguarded assignor gives C a partition B holds: {naive:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Eager protocol

#[test]
fn eager_range_revokes_everything_before_each_join() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let a = sim.join(config(), range(), &["t"]);
    sim.settle(10_000);
    assert_eq!(sim.owned(a), set(tps("t", 0..4)));
    let ma = sim.mark(a);
    let b = sim.join(config(), range(), &["t"]);
    sim.settle(60_000);
    let ev: Vec<Output> = sim
        .events_since(a, ma)
        .into_iter()
        .filter(is_callback)
        .collect();
    // Everything revoked first; then (after the new member's first round, in which the leader
    // hands out nothing a member it has no history of might hold) A ends with half.
    assert_eq!(
        ev[0],
        Output::Revoke {
            partitions: tps("t", 0..4),
            commit: true
        }
    );
    let last_assign = ev
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Assign { partitions, .. } if !partitions.is_empty() => Some(partitions.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(last_assign, tps("t", 0..2));
    let join = &sim.sends_of(a, ma, Api::Join)[0].1;
    assert_eq!(
        join_subscription(join, 0).owned,
        vec![],
        "nothing owned when joining"
    );
    assert_eq!(sim.owned(b), set(tps("t", 2..4)));
    // And again on the next rebalance: everything revoked, even what it gets back.
    let ma = sim.mark(a);
    sim.input(b, Input::RequestRejoin("again".into()));
    sim.settle(60_000);
    let ev: Vec<Output> = sim
        .events_since(a, ma)
        .into_iter()
        .filter(is_callback)
        .collect();
    assert_eq!(
        ev,
        vec![
            Output::Revoke {
                partitions: tps("t", 0..2),
                commit: true
            },
            Output::Assign {
                partitions: tps("t", 0..2),
                generation: sim.coord.generation
            }
        ]
    );
}

/// An eager member revokes everything before each rejoin, so its owned set is empty every time
/// it joins — but its claim must still carry the generation it last held partitions in. It
/// used to repeat an older empty claim byte for byte (rule 9), and a leader without a join
/// barrier took it for a member held back since then and kept its last partitions with it,
/// round after round (seen with `range` on tansu: one member never got a partition).
#[test]
fn an_eager_members_claim_is_never_older_than_its_last_assignment() {
    let mut sim = Sim::new(true, &[("t", 4)]);
    let _a = sim.join(config(), range(), &["t"]);
    sim.settle(60_000);
    let b = sim.join(config(), range(), &["t"]);
    sim.settle(60_000);
    let c = sim.join(config(), range(), &["t"]);
    sim.settle(60_000);
    let held_at = |sim: &Sim, mark: usize| {
        sim.events_since(b, mark)
            .into_iter()
            .filter_map(|o| match o {
                Output::Assign {
                    partitions,
                    generation,
                } if !partitions.is_empty() => Some(generation),
                _ => None,
            })
            .max()
    };
    let last_held = held_at(&sim, 0).expect("b was given partitions");
    let mark = sim.mark(b);
    sim.input(c, Input::RequestRejoin("again".into()));
    sim.settle(60_000);
    let joins = sim.sends_of(b, mark, Api::Join);
    assert!(!joins.is_empty(), "b rejoined for c's rebalance");
    let claim = join_subscription(&joins[0].1, 0);
    assert!(claim.owned.is_empty(), "eager: {claim:?}");
    assert!(
        claim.generation >= last_held,
        "claim of generation {} after holding partitions at {last_held}",
        claim.generation
    );
    sim.assert_all_assigned_once();
}

// ---------------------------------------------------------------------------------------------
// Regressions for fixes in machine.rs

#[test]
fn slow_close_callbacks_keep_heartbeating_then_leave() {
    let mut sim = sticky_group(true, 2, 4);
    let (a, b) = (0, 1);
    let mark = sim.mark(a);
    sim.nodes[a].hold_callbacks = true;
    sim.input(a, Input::Close);
    sim.advance(25_000);
    // Still a member while the revoke-and-commit runs: heartbeats keep it in the group and
    // nobody else gets its partitions yet.
    assert!(sim.sends_of(a, mark, Api::Heartbeat).len() >= 8);
    assert!(sim.sends_of(a, mark, Api::Leave).is_empty());
    assert_eq!(sim.owned(b), set(tps("t", 2..4)));
    sim.release_callbacks(a);
    assert_eq!(sim.sends_of(a, mark, Api::Leave).len(), 1);
    assert_eq!(sim.events_since(a, mark).last(), Some(&Output::Closed));
    sim.settle(30_000);
    assert_eq!(sim.owned(b), set(tps("t", 0..4)));
}

#[test]
fn a_commit_error_for_a_generation_already_left_keeps_the_current_one() {
    // Seen on Kafka 4.1.1 (integration/tests/failover.rs): an auto-commit sent in generation 1
    // reached the coordinator after the join round of generation 2 had completed, and its
    // ILLEGAL_GENERATION arrived while the member synced generation 2. The member dropped that
    // generation, lost every partition without a commit and rejoined; the group rebalanced
    // once more.
    let illegal = code(ResponseError::IllegalGeneration);
    let callbacks = |out: Vec<Output>| out.into_iter().filter(is_callback).collect::<Vec<_>>();
    let mut solo = Solo::new(config(), sticky());
    solo.stable_follower(&tps("t", 0..2));
    let (join, _) = solo.foreign_rebalance_at(3_000);
    let out = solo.respond(join, follower_join_ok(2));
    let (sync, _) = send_among(&out, Api::Sync);
    solo.answer_heartbeats(&out);
    let out = solo.input(Input::CommitFailed {
        error: illegal,
        generation: 1,
    });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!((solo.m.phase(), solo.m.generation()), (Phase::Syncing, 2));
    let out = solo.respond(
        sync,
        Response::Sync {
            error: 0,
            assignment: assignment_blob(&tps("t", 0..2)),
        },
    );
    assert_eq!(
        callbacks(out),
        vec![Output::Assign {
            partitions: vec![],
            generation: 2
        }]
    );
    assert!(solo.input(Input::CallbacksDone).is_empty());
    // Stable in generation 2: a late answer about generation 1 changes nothing either.
    let out = solo.input(Input::CommitFailed {
        error: illegal,
        generation: 1,
    });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!((solo.m.phase(), solo.m.generation()), (Phase::Stable, 2));
    // The same error for the generation we are in still means we are out of it.
    let out = solo.input(Input::CommitFailed {
        error: illegal,
        generation: 2,
    });
    assert_eq!(
        callbacks(out),
        vec![Output::Lost {
            partitions: tps("t", 0..2)
        }]
    );
    assert_eq!(solo.m.generation(), -1);
}

#[test]
fn commit_failure_while_leaving_still_leaves() {
    // The commit in the close-time revocation fails because the group moved on. Before the
    // fix the member went back to NeedJoin and rejoined instead of closing.
    let cases = [
        // Generation gone, member id kept: LeaveGroup is still sent.
        (ResponseError::IllegalGeneration, true),
        // Member id gone: nothing to leave, close at once.
        (ResponseError::UnknownMemberId, false),
        // A rebalance does not stop a close.
        (ResponseError::RebalanceInProgress, true),
    ];
    for (e, leave) in cases {
        let mut sim = sticky_group(true, 2, 4);
        let a = 0;
        let mark = sim.mark(a);
        sim.nodes[a].commit_errors.push_back(code(e));
        sim.input(a, Input::Close);
        sim.advance(60_000);
        assert_eq!(sim.nodes[a].m.phase(), Phase::Closed, "{e:?}");
        assert_eq!(
            sim.sends_of(a, mark, Api::Leave).len(),
            leave as usize,
            "{e:?}"
        );
        assert!(sim.sends_of(a, mark, Api::Join).is_empty(), "{e:?}");
        assert_eq!(
            sim.events_since(a, mark).last(),
            Some(&Output::Closed),
            "{e:?}"
        );
        assert_eq!(sim.owned(1), set(tps("t", 0..4)), "{e:?}");
    }
    // Voluntary leave: the rejoin still waits for the cooldown.
    let mut sim = sticky_group(true, 2, 4);
    let t0 = sim.now;
    let mark = sim.mark(0);
    sim.nodes[0]
        .commit_errors
        .push_back(code(ResponseError::IllegalGeneration));
    let (cooldown_ms, reason) = (5_000, "lagging".to_string());
    sim.input(
        0,
        Input::LeaveAndRejoin {
            cooldown_ms,
            reason,
        },
    );
    assert_eq!(sim.sends_of(0, mark, Api::Leave).len(), 1);
    sim.advance(10_000);
    assert_eq!(sim.sends_of(0, mark, Api::Join)[0].0, t0 + 5_000);
}

#[test]
fn late_answers_after_close_fatal_or_leave_start_nothing() {
    let not_coordinator = || Response::Heartbeat {
        error: code(ResponseError::NotCoordinator),
    };
    // Fatal while a heartbeat is in flight.
    let mut solo = Solo::new(config(), sticky());
    solo.stable_follower(&tps("t", 0..2));
    solo.now = 3_000;
    let (hb, _) = only_send(&solo.input(Input::Tick), Api::Heartbeat);
    let out = solo.input(Input::RequestRejoin("test".into()));
    let (join, _) = only_send(&out, Api::Join);
    let fenced = join_error(code(ResponseError::FencedInstanceId), "");
    let out = solo.respond(join, fenced);
    assert!(matches!(out.last(), Some(Output::Fatal(_))), "{out:?}");
    assert!(solo.respond(hb, not_coordinator()).is_empty());
    let failed = Input::RequestFailed {
        id: hb,
        reason: "eof".into(),
    };
    assert!(solo.input(failed).is_empty());
    solo.now = 60_000;
    assert!(solo.input(Input::Tick).is_empty());
    assert_eq!(solo.m.phase(), Phase::Closed);

    // Closed after a LeaveGroup, with a heartbeat sent while the close callbacks ran.
    for rejoin in [false, true] {
        let mut solo = Solo::new(config(), sticky());
        solo.stable_follower(&tps("t", 0..2));
        solo.now = 1_000;
        let input = if rejoin {
            Input::LeaveAndRejoin {
                cooldown_ms: 50_000,
                reason: "test".into(),
            }
        } else {
            Input::Close
        };
        let out = solo.input(input);
        assert!(matches!(out.as_slice(), [Output::Revoke { .. }]), "{out:?}");
        solo.now = 3_000;
        let (hb, _) = only_send(&solo.input(Input::Tick), Api::Heartbeat);
        let (leave, _) = only_send(&solo.input(Input::CallbacksDone), Api::Leave);
        let out = solo.respond(leave, Response::Leave { error: 0 });
        assert_eq!(out, if rejoin { vec![] } else { vec![Output::Closed] });
        assert!(
            solo.respond(hb, not_coordinator()).is_empty(),
            "rejoin={rejoin}"
        );
        solo.now = 10_000;
        assert!(
            solo.input(Input::Tick).is_empty(),
            "rejoin={rejoin}: nothing before the cooldown"
        );
        if rejoin {
            // The cooldown counts from the end of the LeaveGroup (t = 3 000).
            solo.now = 52_999;
            assert!(solo.input(Input::Tick).is_empty());
            solo.now = 53_000;
            let out = solo.input(Input::Tick);
            let (_, join) = only_send(&out, Api::Join);
            assert_eq!(join_member_id(&join), "");
        }
    }
}

#[test]
fn commit_errors_during_a_revocation() {
    // (error, partitions kept lost?, rediscovers?, new member id?)
    let cases = [
        (ResponseError::NotCoordinator, false, true, false),
        (ResponseError::CoordinatorLoadInProgress, false, true, false),
        (ResponseError::UnknownMemberId, true, false, true),
        (ResponseError::RebalanceInProgress, false, false, false),
    ];
    for (e, lost, rediscovers, new_id) in cases {
        let mut sim = solo_sim();
        let a = 0;
        let old = sim.member_id(a);
        sim.nodes[a].commit_errors.push_back(code(e));
        let mark = sim.mark(a);
        let b = sim.join(config(), sticky(), &["t"]);
        sim.settle(120_000);
        let (revoked_at, _) = sim.nodes[a].log[mark..]
            .iter()
            .find(|(_, o)| matches!(o, Output::Revoke { .. }))
            .cloned()
            .unwrap();
        let ev: Vec<Output> = sim
            .events_since(a, mark)
            .into_iter()
            .filter(is_callback)
            .collect();
        assert_eq!(
            ev.contains(&Output::Lost {
                partitions: tps("t", 0..2)
            }),
            lost,
            "{e:?}: {ev:?}"
        );
        let finds = sim.sends_of(a, mark, Api::Find);
        assert_eq!(!finds.is_empty(), rediscovers, "{e:?}");
        if rediscovers {
            assert_eq!(finds[0].0, revoked_at + 100, "{e:?}: after the backoff");
        }
        assert_eq!(sim.member_id(a) != old, new_id, "{e:?}");
        assert_eq!(sim.owned(a).len() + sim.owned(b).len(), 4, "{e:?}");
        sim.assert_all_assigned_once();
    }
}

#[test]
fn a_stuck_revocation_callback_is_bounded_by_max_poll_interval() {
    // A keeps heartbeating while its callbacks run (fix 1), so only max.poll.interval.ms can
    // free the group from a callback that never returns — as in Java, where callbacks run
    // inside poll(). The stuck process still holds its partitions when they move on: that is
    // the contract of max.poll.interval.ms, so the audit is off here.
    let mut sim = sticky_group(true, 1, 4);
    sim.audit = false;
    let a = 0;
    let id = sim.member_id(a);
    sim.nodes[a].hold_callbacks = true;
    let mark = sim.mark(a);
    let b = sim.join(config(), sticky(), &["t"]);
    // The revocation arrives at A's next heartbeat; from then on A's app is stuck.
    while sim.nodes[a].callbacks.is_empty() {
        sim.advance(100);
    }
    sim.nodes[a].auto_poll = false;
    let stuck_at = sim.now;
    sim.advance(29_999);
    assert!(sim.sends_of(a, mark, Api::Leave).is_empty());
    assert_eq!(
        sim.owned(b),
        BTreeSet::new(),
        "withheld while A is inside max.poll.interval.ms"
    );
    sim.advance(1);
    assert_eq!(
        sim.sends_of(a, mark, Api::Leave),
        vec![(
            stuck_at + 30_000,
            Request::Leave {
                member_id: id,
                instance_id: None,
                reason: "consumer poll timeout has expired".into()
            }
        )]
    );
    sim.advance(30_000);
    assert_eq!(sim.owned(b), set(tps("t", 0..4)));
    assert_eq!(
        sim.nodes[a].m.phase(),
        Phase::Idle,
        "waits for the next poll"
    );
    // What A kept was reported lost when the poll timer fired (it left the group then); the
    // callback finally returns, the app polls and A rejoins as a new member.
    assert!(
        sim.events_since(a, mark).iter().any(|o| *o
            == Output::Lost {
                partitions: tps("t", 0..2)
            }),
        "lost at the poll timeout"
    );
    let mark = sim.mark(a);
    sim.release_callbacks(a);
    sim.nodes[a].auto_poll = true;
    sim.input(a, Input::Polled);
    assert_eq!(join_member_id(&sim.sends_of(a, mark, Api::Join)[0].1), "");
    sim.settle(120_000);
    assert_eq!(sim.owned(a).len() + sim.owned(b).len(), 4);
    sim.assert_all_assigned_once();
}

// ---------------------------------------------------------------------------------------------
// Keepalive while a JoinGroup is held (tansu 0.6.0 refreshes sessions on heartbeats only)

/// The requests of kind `api` among `out`: (id, request).
fn sends(out: &[Output], api: Api) -> Vec<(u64, Request)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { id, request } if api_of(request) == api => Some((*id, request.clone())),
            _ => None,
        })
        .collect()
}

/// A stable follower owning t0..t2 that asked to rejoin; its JoinGroup is in flight.
/// Returns the Join's id.
fn follower_joining(s: &mut Solo) -> u64 {
    s.stable_follower(&tps("t", 0..3));
    let out = s.input(Input::RequestRejoin("test".into()));
    let joins = sends(&out, Api::Join);
    assert_eq!(joins.len(), 1, "{out:?}");
    assert_eq!(s.m.phase(), Phase::Joining);
    joins[0].0
}

/// Advance `ms` in 500 ms ticks, answering every heartbeat with `error`; returns every output.
fn tick_answering_heartbeats(s: &mut Solo, ms: u64, error: i16) -> Vec<Output> {
    let mut all = Vec::new();
    let end = s.now + ms;
    while s.now < end {
        s.now += 500;
        let out = s.input(Input::Tick);
        for (id, _) in sends(&out, Api::Heartbeat) {
            all.extend(s.respond(id, Response::Heartbeat { error }));
        }
        all.extend(out);
    }
    all
}

#[test]
fn a_member_holding_partitions_heartbeats_while_its_join_is_held() {
    let mut s = Solo::new(config(), sticky());
    let join = follower_joining(&mut s);
    let start = s.now;
    // The coordinator holds the JoinGroup for two session timeouts, answering heartbeats with
    // REBALANCE_IN_PROGRESS (alive, rebalancing).
    let mut beats = Vec::new();
    while s.now < start + 20_000 {
        // The driver only ticks when the machine asks: it must ask for each keepalive.
        let wake = s.m.next_timer().expect("a timer while joining");
        assert!(wake <= s.now + 3_000, "next tick at {wake}, now {}", s.now);
        s.now += 500;
        let out = s.input(Input::Tick);
        for (id, req) in sends(&out, Api::Heartbeat) {
            beats.push((s.now, req));
            let more = s.respond(
                id,
                Response::Heartbeat {
                    error: code(ResponseError::RebalanceInProgress),
                },
            );
            assert!(more.iter().all(|o| !is_callback(o)), "{more:?}");
        }
        assert!(out.iter().all(|o| !is_callback(o)), "{out:?}");
        assert!(
            sends(&out, Api::Join).is_empty(),
            "the held join is not resent"
        );
    }
    // One heartbeat per interval, with the generation the owned partitions came from.
    assert!(beats.len() >= 6, "{beats:?}");
    for pair in beats.windows(2) {
        assert!(pair[1].0 - pair[0].0 <= 3_500, "{beats:?}");
    }
    assert!(beats.iter().all(|(_, r)| matches!(
        r,
        Request::Heartbeat { generation: 1, member_id, .. } if member_id == "m1"
    )));
    // Our contact stayed fresh: nothing was given up, and the join completes normally.
    assert_eq!(s.m.owned(), &set(tps("t", 0..3)));
    let out = s.respond(join, follower_join_ok(2));
    assert_eq!(sends(&out, Api::Sync).len(), 1, "{out:?}");
}

#[test]
fn only_a_member_with_an_id_keeps_alive_while_joining() {
    // Without partitions too: an expelled member costs the group another round.
    let mut s = Solo::new(config(), sticky());
    s.stable_follower(&[]);
    let out = s.input(Input::RequestRejoin("test".into()));
    assert_eq!(sends(&out, Api::Join).len(), 1);
    let mut beats = 0;
    for _ in 0..20 {
        s.now += 500;
        let out = s.input(Input::Tick);
        for (id, _) in sends(&out, Api::Heartbeat) {
            beats += 1;
            s.respond(id, Response::Heartbeat { error: 0 });
        }
    }
    assert!(beats >= 3, "{beats}");
    // A first join has no member id to heartbeat with.
    let mut s = Solo::new(config(), sticky());
    let out = s.input(Input::Subscribe(vec!["t".into()]));
    let (find, _) = only_send(&out, Api::Find);
    let out = s.respond(
        find,
        Response::Coordinator {
            node_id: 1,
            addr: "c".into(),
        },
    );
    only_send(&out, Api::Join);
    let out = tick_answering_heartbeats(&mut s, 10_000, 0);
    assert!(sends(&out, Api::Heartbeat).is_empty(), "{out:?}");
}

#[test]
fn a_leader_running_rounds_back_to_back_keeps_its_heartbeat_cadence() {
    // Each round's answers used to push the next heartbeat out by an interval; a leader whose
    // rounds came faster than that never heartbeat, and tansu (which counts only heartbeats)
    // expelled it.
    let mut s = Solo::new(config(), sticky());
    s.stable_follower(&tps("t", 0..2));
    let mut beats = Vec::new();
    let mut generation = 1;
    while s.now < 20_000 {
        s.now += 500;
        let mut out = s.input(Input::Tick);
        if s.now % 2_000 == 0 && s.m.phase() == Phase::Stable {
            out.extend(s.input(Input::RequestRejoin("round".into())));
        }
        while let Some(o) = out.pop() {
            let Output::Send { id, request } = o else {
                if is_callback(&o) {
                    out.extend(s.input(Input::CallbacksDone));
                }
                continue;
            };
            match request {
                Request::Heartbeat { .. } => {
                    beats.push(s.now);
                    out.extend(s.respond(id, Response::Heartbeat { error: 0 }));
                }
                Request::Join { .. } => {
                    generation += 1;
                    out.extend(s.respond(id, follower_join_ok(generation)));
                }
                Request::Sync { .. } => out.extend(s.respond(
                    id,
                    Response::Sync {
                        error: 0,
                        assignment: assignment_blob(&tps("t", 0..2)),
                    },
                )),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(generation >= 8, "rounds ran: {generation}");
    assert!(beats.len() >= 6, "{beats:?}");
    for pair in beats.windows(2) {
        assert!(pair[1] - pair[0] <= 3_500, "{beats:?}");
    }
}

#[test]
fn keepalive_errors_other_than_unknown_member_leave_the_join_alone() {
    for error in [
        ResponseError::IllegalGeneration,
        ResponseError::NotCoordinator,
        ResponseError::CoordinatorLoadInProgress,
    ] {
        let mut s = Solo::new(config(), sticky());
        let join = follower_joining(&mut s);
        let out = tick_answering_heartbeats(&mut s, 4_000, code(error));
        // The join is neither cancelled nor resent, the generation is kept, nothing is lost.
        assert!(sends(&out, Api::Join).is_empty(), "{error:?}: {out:?}");
        assert!(sends(&out, Api::Find).is_empty(), "{error:?}: {out:?}");
        assert!(out.iter().all(|o| !is_callback(o)), "{error:?}: {out:?}");
        assert_eq!(s.m.phase(), Phase::Joining, "{error:?}");
        assert_eq!(s.m.generation(), 1, "{error:?}");
        let out = s.respond(join, follower_join_ok(2));
        assert_eq!(sends(&out, Api::Sync).len(), 1, "{error:?}: {out:?}");
    }
}

#[test]
fn a_keepalive_answered_unknown_member_loses_the_partitions_before_the_join_returns() {
    let mut s = Solo::new(config(), sticky());
    let join = follower_joining(&mut s);
    let out = tick_answering_heartbeats(&mut s, 4_000, code(ResponseError::UnknownMemberId));
    let callbacks: Vec<&Output> = out.iter().filter(|o| is_callback(o)).collect();
    assert_eq!(
        callbacks,
        vec![&Output::Lost {
            partitions: tps("t", 0..3)
        }]
    );
    assert!(s.m.owned().is_empty());
    assert!(s.input(Input::CallbacksDone).is_empty());
    // tansu lets the forgotten member back in under the same id as a newcomer; the plan it
    // gets no longer includes what it lost, and there is nothing to revoke.
    let out = s.respond(join, follower_join_ok(3));
    let (sync, _) = only_send(&out, Api::Sync);
    let out = s.respond(
        sync,
        Response::Sync {
            error: 0,
            assignment: assignment_blob(&tps("t", 5..6)),
        },
    );
    assert_eq!(
        out,
        vec![Output::Assign {
            partitions: tps("t", 5..6),
            generation: 3
        }]
    );
}

#[test]
fn a_heartbeat_answer_for_a_generation_we_left_does_not_fence_the_new_one() {
    let mut s = Solo::new(config(), sticky());
    s.stable_follower(&tps("t", 0..3));
    // A heartbeat of generation 1 goes out and is still unanswered when we rejoin.
    s.now += 3_000;
    let out = s.input(Input::Tick);
    let (beat, _) = only_send(&out, Api::Heartbeat);
    let out = s.input(Input::RequestRejoin("test".into()));
    let (join, _) = only_send(&out, Api::Join);
    let out = s.respond(join, follower_join_ok(2));
    let (sync, _) = only_send(&out, Api::Sync);
    // Its late ILLEGAL_GENERATION is about generation 1: no reset, no rejoin — only the
    // heartbeat a member holding partitions sends at once in its new generation.
    let out = s.respond(
        beat,
        Response::Heartbeat {
            error: code(ResponseError::IllegalGeneration),
        },
    );
    let (_, request) = only_send(&out, Api::Heartbeat);
    assert!(
        matches!(request, Request::Heartbeat { generation: 2, .. }),
        "{request:?}"
    );
    assert_eq!(s.m.generation(), 2);
    let out = s.respond(
        sync,
        Response::Sync {
            error: 0,
            assignment: assignment_blob(&tps("t", 0..3)),
        },
    );
    assert_eq!(
        out,
        vec![Output::Assign {
            partitions: vec![],
            generation: 2
        }]
    );
    assert!(s.input(Input::CallbacksDone).is_empty());
    assert_eq!(s.m.phase(), Phase::Stable);
}

/// tansu bumps the generation for every changed subscription; the claim's generation alone
/// changing kept a quiet group rebalancing for ever. Someone else's rebalance with nothing of
/// ours changed → the same bytes as our last JoinGroup; a changed owned set → fresh ones.
#[test]
fn a_rejoin_for_someone_elses_rebalance_repeats_our_last_subscription() {
    let mut s = Solo::new(config(), sticky());
    s.stable_follower(&tps("t", 0..2));
    // Our owned set changed since our first join (we got t0, t1): fresh claim.
    let (join, j1) = s.foreign_rebalance_at(s.now + 3_000);
    assert_eq!(join_subscription(&j1, 0).generation, 1);
    s.complete_round(join, 2, &tps("t", 0..2));
    // Generation 2 synced with the same partitions: the next foreign rebalance repeats j1
    // byte for byte (the claim stays at generation 1).
    let (join, j2) = s.foreign_rebalance_at(s.now + 3_000);
    let (Request::Join { protocols: p1, .. }, Request::Join { protocols: p2, .. }) = (&j1, &j2)
    else {
        unreachable!()
    };
    assert_eq!(p1, p2);
    // This time we lose t1: the set changed, so the rejoin after revoking claims afresh.
    let out = s.complete_round(join, 3, &tps("t", 0..1));
    let (_, j3) = only_send(&out, Api::Join);
    let sub = join_subscription(&j3, 0);
    assert_eq!(sub.owned, tps("t", 0..1));
    assert_eq!(sub.generation, 3);
}

#[test]
fn a_claim_from_before_our_first_sync_is_never_repeated() {
    // Nothing owned before or after the first sync, yet the claim must say we synced: a leader
    // that sees a claim from before any sync withholds as if it knew nothing of us.
    let mut s = Solo::new(config(), sticky());
    s.stable_follower(&[]);
    s.now += 3_000;
    let out = s.input(Input::Tick);
    let (beat, _) = only_send(&out, Api::Heartbeat);
    let out = s.respond(
        beat,
        Response::Heartbeat {
            error: code(ResponseError::RebalanceInProgress),
        },
    );
    let (_, join) = only_send(&out, Api::Join);
    let sub = join_subscription(&join, 0);
    assert_eq!(sub.generation, 1);
    assert!(sub.owned.is_empty());
}

/// Stale claims on a broker without a join barrier can tie: two members claim one partition at
/// the same generation. Kafka's rule makes it unowned — free to hand to anyone at once — but
/// either may still hold it (seen in the chaos suite on tansu: a leader took a partition a
/// member still consumed). The leader gives it to nobody this round.
#[test]
fn a_partition_two_members_claim_equally_is_given_to_nobody() {
    let mut solo = Solo::new(config(), sticky());
    let out = solo.subscribe_and_find();
    let (join, req) = only_send(&out, Api::Join);
    let Request::Join { protocols, .. } = req else {
        unreachable!()
    };
    let claim = |owned: Vec<Tp>| claim_of_t(owned, 4);
    let out = solo.respond(
        join,
        Response::Join {
            error: 0,
            generation: 4,
            protocol: Some("cooperative-sticky".into()),
            leader: "a".into(),
            member_id: "a".into(),
            members: vec![
                member("a", protocols[0].1.clone()),
                member("y", claim(tps("t", 0..1))),
                member("z", claim(tps("t", 0..2))),
            ],
        },
    );
    let Output::LeaderInputsNeeded { id, .. } = out[0] else {
        panic!("{out:?}")
    };
    let out = solo.input(Input::LeaderInputs {
        id,
        topics: vec![("t".into(), 6)],
        stats: None,
    });
    let (_, sync) = only_send(&out, Api::Sync);
    let plan = sync_assignments(&sync);
    let holders: Vec<&String> = plan
        .iter()
        .filter(|(_, parts)| parts.contains(&("t".to_string(), 0)))
        .map(|(m, _)| m)
        .collect();
    assert!(holders.is_empty(), "t0 handed to {holders:?}: {plan:?}");
    // z keeps what only it claims.
    assert!(plan["z"].contains(&("t".to_string(), 1)));
}

/// tansu drops a live member from a JoinGroup answer when it judged the member's session
/// expired (heartbeats that came a generation late do not count there), and lets it back in
/// under the same id without a fencing error; seen in the chaos suite: the leader handed a
/// missing member's partitions to the others while it consumed them for 10 s more. The leader
/// gives what it last gave a missing member to nobody for one session timeout — by then the
/// member has rejoined, or given its partitions up itself (`check_session`).
#[test]
fn a_member_missing_from_the_join_answer_keeps_its_partitions_for_a_session_timeout() {
    let mut solo = Solo::new(config(), sticky());
    let out = solo.subscribe_and_find();
    let (mut join, _) = only_send(&out, Api::Join);
    let claim = claim_of_t;
    // Leads one round with `members` (besides itself) and returns the plan it synced.
    let lead = |solo: &mut Solo,
                join: u64,
                generation: i32,
                others: Vec<JoinedMember>|
     -> BTreeMap<String, Vec<(String, i32)>> {
        let mut members = vec![member(
            "a",
            claim(solo.m.owned().iter().cloned().collect(), 4),
        )];
        members.extend(others);
        let out = solo.respond(
            join,
            Response::Join {
                error: 0,
                generation,
                protocol: Some("cooperative-sticky".into()),
                leader: "a".into(),
                member_id: "a".into(),
                members,
            },
        );
        solo.answer_heartbeats(&out);
        let (sync, request) = solo.leader_sync(&out, 6);
        let plan = sync_assignments(&request);
        let mine: Vec<Tp> = plan["a"].iter().map(|(t, p)| (t.clone(), *p)).collect();
        let out = solo.respond(
            sync,
            Response::Sync {
                error: 0,
                assignment: assignment_blob(&mine),
            },
        );
        if out.iter().any(is_callback) {
            solo.input(Input::CallbacksDone);
        }
        plan
    };
    let plan = lead(
        &mut solo,
        join,
        4,
        vec![
            member("y", claim(tps("t", 0..2), 4)),
            member("z", claim(tps("t", 2..4), 4)),
        ],
    );
    assert_eq!(plan["y"].len(), 2, "{plan:?}");
    let given_to_y: Vec<(String, i32)> = plan["y"].clone();

    // y is missing from the next answer: what it had goes to nobody.
    let holders_of_ys = |plan: &BTreeMap<String, Vec<(String, i32)>>| -> Vec<String> {
        plan.iter()
            .filter(|(_, parts)| parts.iter().any(|p| given_to_y.contains(p)))
            .map(|(m, _)| m.clone())
            .collect()
    };
    // Time passes with every heartbeat answered; returns the follow-up JoinGroup the leader
    // sent meanwhile, if any.
    let pass = |solo: &mut Solo, ms: u64| -> Option<u64> {
        let mut follow_up = None;
        let end = solo.now + ms;
        while solo.now < end {
            solo.now = (solo.now + 500).min(end);
            let out = solo.input(Input::Tick);
            for o in out {
                match o {
                    Output::Send {
                        id,
                        request: Request::Heartbeat { .. },
                    } => assert!(solo
                        .respond(id, Response::Heartbeat { error: 0 })
                        .is_empty()),
                    Output::Send {
                        id,
                        request: Request::Join { .. },
                    } => follow_up = Some(id),
                    other => panic!("{other:?}"),
                }
            }
            if follow_up.is_some() {
                break;
            }
        }
        follow_up
    };
    // y is missing from the next answers: what it had goes to nobody for a session timeout
    // after we first missed it; the leader's follow-up rounds then hand it out.
    let out = solo.input(Input::RequestRejoin("test".into()));
    join = send_among(&out, Api::Join).0;
    let first_missed = solo.now;
    let mut generation = 5;
    loop {
        let plan = lead(
            &mut solo,
            join,
            generation,
            vec![member("z", claim(tps("t", 2..4), 4))],
        );
        let since_missed = solo.now - first_missed;
        if since_missed < 10_000 {
            assert!(
                holders_of_ys(&plan).is_empty(),
                "{since_missed} ms: {plan:?}"
            );
        } else if plan.values().map(Vec::len).sum::<usize>() == 6 {
            break;
        }
        assert!(since_missed < 60_000, "never handed out: {plan:?}");
        join = pass(&mut solo, 60_000).expect("a follow-up round");
        generation += 1;
    }
}

/// Capacity news reaches the leader at the next rebalance: user data older than
/// `USER_DATA_MAX_AGE_MS` is recomputed at a join and sent if the assignor says it matters
/// (lagbalance: a capacity appeared, vanished or moved by more than 20 %). Members that had
/// just joined when the group formed otherwise kept announcing "capacity unknown" for 30 s,
/// and the leader, giving unknown members the median of the known, spread a 2:2:1 group
/// evenly (the end-to-end benchmark's 1.00×).
#[test]
fn capacity_learnt_after_joining_is_sent_at_the_next_rebalance() {
    let mut s = Solo::new(config(), lagbalance_then_sticky());
    s.stable_follower(&tps("t", 0..2));
    let capacity_in = |req: &Request| {
        let sub = join_subscription(req, 0);
        sub.user_data
            .and_then(|b| MemberUserData::decode(&b).ok())
            .and_then(|d| d.capacity)
    };
    // Measured after the first join: busy half the time at 100 records/s.
    let stats = |at: u64| MemberStats {
        processed_rate: 100.0,
        busy_fraction: Some(0.5),
        measured_at_ms: at,
        ..MemberStats::default()
    };
    s.input(Input::Stats(stats(2_000)));
    // 3 s after the first join the user data is still fresh: no capacity yet.
    let (join, j1) = s.foreign_rebalance_at(3_000);
    assert_eq!(capacity_in(&j1), None);
    s.complete_round(join, 2, &tps("t", 0..2));
    // Past the age limit, the next rebalance carries the capacity.
    s.input(Input::Stats(stats(5_500)));
    let (_, j2) = s.foreign_rebalance_at(6_000);
    let capacity = capacity_in(&j2).expect("capacity sent");
    assert!((capacity - 200.0).abs() < 1.0, "{capacity}");
}

/// tansu expels a member whose session lapsed in a formed group without a new generation; only
/// the member whose heartbeat found it is told (REBALANCE_IN_PROGRESS), and its repeated
/// JoinGroup keeps the generation, so the leader never re-plans (chaos suite: a SIGSTOPped
/// member's partitions unowned for 77 s). A follower whose repeated JoinGroup comes back in the
/// generation it had rejoins once more, with fresh user data, after syncing.
#[test]
fn a_repeated_join_answered_in_the_same_generation_rejoins_with_fresh_bytes() {
    let run = |answer_generation: i32| -> (Request, Vec<Output>) {
        let mut s = Solo::new(config(), lagbalance_then_sticky());
        s.stable_follower(&tps("t", 0..2));
        let (join, _) = s.foreign_rebalance_at(3_000);
        s.complete_round(join, 2, &tps("t", 0..2));
        // Someone else's "rebalance" again, nothing of ours changed: the same bytes.
        let (join, echoed) = s.foreign_rebalance_at(7_000);
        let out = s.respond(join, follower_join_ok(answer_generation));
        let (sync, _) = send_among(&out, Api::Sync);
        let out = s.respond(
            sync,
            Response::Sync {
                error: 0,
                assignment: assignment_blob(&tps("t", 0..2)),
            },
        );
        let mut after = out.clone();
        if out.iter().any(is_callback) {
            after.extend(s.input(Input::CallbacksDone));
        }
        (echoed, after)
    };
    let (echoed, after) = run(2);
    let (_, again) = send_among(&after, Api::Join);
    let (Request::Join { protocols: p1, .. }, Request::Join { protocols: p2, .. }) =
        (&echoed, &again)
    else {
        unreachable!()
    };
    assert_ne!(p1, p2, "fresh bytes, so the coordinator starts a rebalance");
    // A repeated JoinGroup answered in a new generation was an ordinary rebalance: settle.
    let (_, after) = run(3);
    assert!(
        !after.iter().any(|o| matches!(
            o,
            Output::Send {
                request: Request::Join { .. },
                ..
            }
        )),
        "{after:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Liveness: whatever the leader withholds reaches a live member within a bound

/// `docs/group-protocol.md` rule 15 with the tests' settings (session 10 s, heartbeat 3 s):
/// a partition without a confirmed holder reaches a live member within one session timeout
/// plus a round (the leader notices within a heartbeat interval; rounds take no simulated time
/// here) …
const LIVENESS_BOUND_MS: u64 = 10_000 + 3_000 + 500;
/// … or, if the member it was handed to never takes it up while it stays in the group, within
/// two session timeouts plus two rounds.
const HANDOUT_BOUND_MS: u64 = 2 * 10_000 + 2 * 3_000 + 500;

/// Run `sim` for `ms` and check that no partition went without a live holder for longer than
/// [`LIVENESS_BOUND_MS`] meanwhile, and that every partition ends up held exactly once.
#[track_caller]
fn run_checking_liveness(sim: &mut Sim, ms: u64) {
    run_checking_liveness_within(sim, ms, LIVENESS_BOUND_MS);
}

#[track_caller]
fn run_checking_liveness_within(sim: &mut Sim, ms: u64, bound_ms: u64) {
    sim.advance(ms);
    if std::env::var("DUMP").is_ok() {
        sim.dump();
    }
    let (worst, which) = sim.worst_unowned.clone();
    assert!(
        worst <= bound_ms,
        "{which:?} had no holder for {worst} ms (bound {bound_ms} ms); held: {:?}",
        sim.nodes.iter().map(|n| n.app.clone()).collect::<Vec<_>>()
    );
    sim.assert_all_assigned_once();
}

/// The reported stall, narrowed: our worker leads a cooperative-sticky group on a broker
/// without a join barrier, and a kafka-python consumer joins. kafka-python's cooperative-sticky
/// sends subscription v1 — owned partitions, no generation — so the leader reads generation
/// −1 from it at every join. The rule for a new leader without history
/// (`withhold_unclaimed_if_history_unknown`: "a member whose claim predates my first plan may
/// hold what an earlier leader gave it") took that −1 for an old claim, every round, for good:
/// the worker revoked half its partitions and nobody ever got them.
#[test]
fn a_peer_whose_claim_has_no_generation_gets_its_share() {
    let mut sim = Sim::new(false, &[("t", 6)]);
    let worker = sim.join(config(), sticky(), &["t"]);
    sim.settle(30_000);
    assert_eq!(sim.owned(worker).len(), 6);
    sim.reset_unowned();
    let py = sim.join_as(Dialect::KafkaPython, config(), sticky(), &["t"]);
    run_checking_liveness(&mut sim, 60_000);
    assert_eq!(sim.owned(worker).len(), 3, "{:?}", sim.owned(worker));
    assert_eq!(sim.owned(py).len(), 3, "{:?}", sim.owned(py));
}

/// The reported group: our worker leading, a librdkafka member (subscription v3 with its
/// generation — what our machine writes too) and a kafka-python member (v1), 12 partitions.
#[test]
fn the_reported_mixed_group_hands_every_partition_out() {
    for barrier in [false, true] {
        let mut sim = Sim::new(barrier, &[("t", 12)]);
        let worker = sim.join(config(), sticky(), &["t"]);
        sim.settle(30_000);
        sim.reset_unowned();
        let rdkafka = sim.join(config(), sticky(), &["t"]);
        let py = sim.join_as(Dialect::KafkaPython, config(), sticky(), &["t"]);
        run_checking_liveness(&mut sim, 90_000);
        for i in [worker, rdkafka, py] {
            assert_eq!(sim.owned(i).len(), 4, "barrier {barrier}, node {i}");
        }
    }
}

/// Cooperative moves away from a member whose claims carry no generation: it must not be
/// handed back what it has just revoked, round after round (the leader's memory keeps what it
/// gave a member until the member's claim is at least that recent — never, for a claim at −1).
#[test]
fn partitions_move_away_from_a_peer_whose_claim_has_no_generation() {
    let mut sim = Sim::new(false, &[("t", 6)]);
    let worker = sim.join(config(), sticky(), &["t"]);
    sim.settle(30_000);
    let py = sim.join_as(Dialect::KafkaPython, config(), sticky(), &["t"]);
    sim.advance(60_000);
    sim.assert_all_assigned_once();
    sim.reset_unowned();
    let third = sim.join(config(), sticky(), &["t"]);
    run_checking_liveness(&mut sim, 60_000);
    for i in [worker, py, third] {
        assert_eq!(sim.owned(i).len(), 2, "node {i}: {:?}", sim.owned(i));
    }
    // …and the group is quiet again: no follow-up rounds for ever.
    let generation = sim.coord.generation;
    sim.advance(60_000);
    assert_eq!(
        sim.coord.generation, generation,
        "the group keeps rebalancing"
    );
}

/// A member that claims partitions it was never given (a bug, or hostile bytes): here every
/// partition of the topic, at a generation above everyone's, so by Kafka's rule it owns them
/// all. The others, not given what they held, revoke it; the plan gives the liar only its
/// share, and the rest — "owned" by a member that will never revoke what it does not hold —
/// would wait for that revocation for good. A claim that has stood for a session timeout
/// while our plans never gave the partition to its member is ignored (and stays ignored while
/// the member sends the same bytes), so those partitions reach the honest members.
#[test]
fn claims_a_member_was_never_given_cannot_keep_partitions_from_the_group() {
    for (barrier, generation) in [(false, Some(1_000)), (false, None), (true, Some(1_000))] {
        let mut sim = Sim::new(barrier, &[("t", 6)]);
        let a = sim.join(config(), sticky(), &["t"]);
        sim.settle(30_000);
        let b = sim.join(config(), sticky(), &["t"]);
        sim.settle(60_000);
        sim.reset_unowned();
        let liar = Dialect::Liar {
            extra: tps("t", 0..6),
            generation,
        };
        let z = sim.join_as(liar, config(), sticky(), &["t"]);
        run_checking_liveness(&mut sim, 90_000);
        for i in [a, b, z] {
            assert_eq!(
                sim.owned(i).len(),
                2,
                "barrier {barrier}, liar at {generation:?}: node {i} holds {:?}",
                sim.owned(i)
            );
        }
        // …and it stays that way: the ignored claims do not come back every other round.
        sim.reset_unowned();
        run_checking_liveness(&mut sim, 60_000);
        let generation_now = sim.coord.generation;
        sim.advance(60_000);
        assert_eq!(
            sim.coord.generation, generation_now,
            "the group keeps rebalancing"
        );
    }
}

/// A member joins and dies before its SyncGroup completes: it never learns what it was
/// given, never claims it, and — on a broker without a join barrier — stays in the JoinGroup
/// answers until its session expires. What it was handed reaches a live member within the
/// bound.
#[test]
fn a_member_that_joins_and_never_syncs_holds_nothing_up_for_long() {
    for barrier in [false, true] {
        let mut sim = sticky_group(barrier, 2, 6);
        sim.reset_unowned();
        let x = sim.add(config(), sticky());
        sim.nodes[x].swallow_next.push(Api::Sync);
        sim.input(x, Input::Subscribe(vec!["t".into()]));
        if barrier {
            // Kafka answers its JoinGroup once everyone rejoined.
            while sim.sends_of(x, 0, Api::Sync).is_empty() {
                sim.advance(100);
            }
        }
        assert_eq!(sim.sends_of(x, 0, Api::Sync).len(), 1, "joined, sync sent");
        sim.kill(x);
        run_checking_liveness(&mut sim, 90_000);
        assert_eq!(sim.owned(0).len() + sim.owned(1).len(), 6);
    }
}

/// The same, but the member stays alive and heartbeating while its SyncGroup never completes
/// (a hung request): a barrier-less coordinator keeps it in every answer for good. Partitions
/// the plans hand it are given to live members once it has not confirmed them for the bound,
/// and it gets nothing new until it rejoins with other bytes.
#[test]
fn a_member_whose_sync_never_completes_gets_nothing_for_good() {
    let mut sim = sticky_group(false, 2, 6);
    sim.reset_unowned();
    let x = sim.add(config(), sticky());
    sim.nodes[x].swallow_next.push(Api::Sync);
    sim.input(x, Input::Subscribe(vec!["t".into()]));
    assert_eq!(sim.nodes[x].m.phase(), Phase::Syncing);
    run_checking_liveness_within(&mut sim, 120_000, HANDOUT_BOUND_MS);
    assert!(sim.owned(x).is_empty());
    assert_eq!(sim.owned(0).len() + sim.owned(1).len(), 6);
    assert!(
        sim.coord.members.contains_key(&sim.member_id(x)),
        "still in the group"
    );
    let generation = sim.coord.generation;
    sim.reset_unowned();
    run_checking_liveness(&mut sim, 60_000);
    assert_eq!(
        sim.coord.generation, generation,
        "the group keeps rebalancing"
    );
    assert_eq!(sim.worst_unowned.0, 0);
}

/// kafka-python with its default eager assignors in a `range` group led by our worker: its
/// subscription (v0) carries neither owned partitions nor a generation, so the leader's memory
/// is all it knows of what that member holds. An eager member revokes everything before it
/// rejoins; the memory must not keep what it had for good, or a later member never gets it.
#[test]
fn an_eager_peer_without_owned_partitions_lets_partitions_move_on() {
    for barrier in [true, false] {
        let mut sim = Sim::new(barrier, &[("t", 6)]);
        let worker = sim.join(config(), range(), &["t"]);
        sim.settle(30_000);
        let py = sim.join_as(Dialect::KafkaPythonEager, config(), range(), &["t"]);
        run_checking_liveness(&mut sim, 60_000);
        assert_eq!(sim.owned(py).len(), 3, "barrier {barrier}");
        sim.reset_unowned();
        let third = sim.join(config(), range(), &["t"]);
        run_checking_liveness(&mut sim, 60_000);
        for i in [worker, py, third] {
            assert_eq!(
                sim.owned(i).len(),
                2,
                "barrier {barrier}, node {i}: {:?}",
                sim.owned(i)
            );
        }
        let generation = sim.coord.generation;
        sim.advance(60_000);
        assert_eq!(
            sim.coord.generation, generation,
            "the group keeps rebalancing"
        );
    }
}

/// A live member told to give a partition up cannot do so before it syncs the plan that says
/// so, and a SyncGroup can take long: a broker holds it until the leader's plan arrives, and a
/// busy barrier-less group fails it with REBALANCE_IN_PROGRESS again and again (chaos suite
/// on tansu: a forced rebalance took 10.4 s). All that time the member keeps its partitions,
/// heartbeats, and claims them; the leader must not hand them on (the chaos suite saw one
/// handed to another member while its old owner consumed it for 5.4 s more).
#[test]
fn a_member_whose_sync_hangs_keeps_what_it_claims() {
    for barrier in [false, true] {
        let mut sim = sticky_group(barrier, 3, 6);
        // Both followers' next SyncGroups hang, so whichever the plan takes from cannot
        // revoke.
        let followers = [1, 2];
        let held: Vec<BTreeSet<Tp>> = followers.iter().map(|&f| sim.owned(f)).collect();
        let marks: Vec<usize> = followers.iter().map(|&f| sim.mark(f)).collect();
        for f in followers {
            sim.nodes[f].swallow_next.push(Api::Sync);
        }
        sim.join(config(), sticky(), &["t"]);
        let deadline = sim.now + 30_000;
        while followers
            .iter()
            .zip(&marks)
            .any(|(&f, &mark)| sim.sends_of(f, mark, Api::Sync).is_empty())
        {
            assert!(
                sim.now < deadline,
                "barrier {barrier}: a follower never synced"
            );
            sim.advance(100);
        }
        // Their SyncGroups hang for three session timeouts while others join (each join a
        // new plan); then the requests time out.
        for _ in 0..3 {
            sim.advance(10_000);
            sim.join(config(), sticky(), &["t"]);
        }
        if std::env::var("DUMP").is_ok() {
            sim.dump();
        }
        for ((&f, &mark), held) in followers.iter().zip(&marks).zip(&held) {
            if !barrier {
                // (Kafka expels a member whose SyncGroup does not arrive within the rebalance
                // timeout; it loses its partitions at its next heartbeat.)
                assert_eq!(&sim.owned(f), held, "node {f} still holds its partitions");
            }
            let id = sim.nodes[f].log[mark..]
                .iter()
                .find_map(|(_, o)| match o {
                    Output::Send {
                        id,
                        request: Request::Sync { .. },
                    } => Some(*id),
                    _ => None,
                })
                .unwrap();
            let reason = "request timed out".to_string();
            sim.input(f, Input::RequestFailed { id, reason });
        }
        sim.settle(60_000);
        sim.assert_all_assigned_once();
    }
}

/// A refusal (bad credentials, certificate, missing ACL) stops the member with the reason
/// instead of rediscovering and retrying for ever; so does a FindCoordinator answered
/// GROUP_AUTHORIZATION_FAILED.
#[test]
fn refusals_are_fatal_not_retried() {
    let mut solo = Solo::new(config(), sticky());
    let out = solo.input(Input::Subscribe(vec!["t".into()]));
    let (find, _) = only_send(&out, Api::Find);
    let out = solo.input(Input::RequestRefused {
        id: find,
        reason: "SASL PLAIN authentication failed: bad password".into(),
    });
    assert!(
        matches!(out.as_slice(), [Output::Fatal(why)] if why.contains("SASL PLAIN")),
        "{out:?}"
    );
    solo.now = 60_000;
    assert!(
        solo.input(Input::Tick).is_empty(),
        "silent after the refusal"
    );

    let mut solo = Solo::new(config(), sticky());
    let out = solo.input(Input::Subscribe(vec!["t".into()]));
    let (find, _) = only_send(&out, Api::Find);
    let out = solo.respond(
        find,
        Response::CoordinatorError {
            error: ResponseError::GroupAuthorizationFailed.code(),
        },
    );
    assert!(
        matches!(out.as_slice(), [Output::Fatal(why)]
            if why.contains("GroupAuthorizationFailed") && why.contains("Read ACL")),
        "{out:?}"
    );
    solo.now = 60_000;
    assert!(solo.input(Input::Tick).is_empty());
}
