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
//!
//! This file is the harness, shared by every test; the tests live in one file per topic:
//! - `join`: the JoinGroup flow, the protocols offered and the coordinator's choice;
//! - `cooperative`, `eager`: how partitions move under each rebalance protocol;
//! - `leader_rules`: the plan, its validation, and what the leader withholds;
//! - `liveness`: whatever the leader withholds reaches a live member within a bound;
//! - `lost`: fencing errors and timeouts that give partitions up as lost;
//! - `errors`: retriable answers, coordinator rediscovery, fatal refusals;
//! - `static_membership`, `leave`, `rejoin`, `keepalive`;
//! - `regressions`: one rule per fix in machine.rs.

mod cooperative;
mod eager;
mod errors;
mod join;
mod keepalive;
mod leader_rules;
mod leave;
mod liveness;
mod lost;
mod regressions;
mod rejoin;
mod static_membership;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use lagbalance_assign::rng::Rng;
use lagbalance_assign::userdata::MemberUserData;
use lagbalance_assign::{
    Assignor, CooperativeStickyAssignor, LagBalanceAssignor, MemberStats, NamedPartition,
    RangeAssignor,
};

use super::codec::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
    encode_subscription_at, Assignment, Subscription,
};
use super::fatal::{FencedIn, GroupFatal};
use super::machine::{
    Input, JoinAnswer, JoinedMember, MemberConfig, Membership, Output, Phase, Request, Response,
    CAPACITY_REJOIN_MIN_INTERVAL_MS,
};
use crate::error::{BrokerCode, RefusalKind};

// ---------------------------------------------------------------------------------------------
// Small helpers

fn code(e: ResponseError) -> BrokerCode {
    e.into()
}

fn tps(topic: &str, partitions: impl IntoIterator<Item = i32>) -> Vec<NamedPartition> {
    partitions
        .into_iter()
        .map(|p| (topic.to_string(), p))
        .collect()
}

fn set(v: Vec<NamedPartition>) -> BTreeSet<NamedPartition> {
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

fn assignment_blob(parts: &[NamedPartition]) -> Bytes {
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
fn sync_assignments(req: &Request) -> BTreeMap<String, Vec<NamedPartition>> {
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

fn join_error(error: BrokerCode, member_id: &str) -> Response {
    Response::Join(JoinAnswer {
        error,
        generation: -1,
        protocol: None,
        leader: String::new(),
        member_id: member_id.into(),
        members: Vec::new(),
    })
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
                let mut out = vec![(
                    node,
                    id,
                    Response::Leave {
                        error: BrokerCode::NONE,
                    },
                )];
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
        Response::Join(JoinAnswer {
            error: BrokerCode::NONE,
            generation: self.generation,
            protocol: Some(protocol),
            leader,
            member_id: mid.into(),
            members,
        })
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
                            error: BrokerCode::NONE,
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
                        error: BrokerCode::NONE,
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
    ) -> BrokerCode {
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
                BrokerCode::NONE
            }
        } else if generation < self.generation {
            code(ResponseError::RebalanceInProgress)
        } else {
            BrokerCode::NONE
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

fn error_response(api: Api, error: BrokerCode) -> Response {
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
    app: BTreeSet<NamedPartition>,
    /// Every output with the time it was taken.
    log: Vec<(u64, Output)>,
    /// Callbacks taken but not yet run.
    callbacks: Vec<Output>,
    hold_callbacks: bool,
    auto_poll: bool,
    /// One-shot faults for the next request of a kind: answer with an error, fail it in
    /// transport (`RequestFailed`), or never answer it (the coordinator never sees it).
    fail_next: Vec<(Api, BrokerCode)>,
    drop_next: Vec<Api>,
    swallow_next: Vec<Api>,
    /// Errors for the next commits (one per Revoke with `commit`).
    commit_errors: VecDeque<BrokerCode>,
    commits: Vec<Vec<NamedPartition>>,
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
        extra: Vec<NamedPartition>,
        generation: Option<i32>,
    },
}

impl Dialect {
    fn rewrite(&self, blob: &Bytes) -> Bytes {
        match self {
            Dialect::Ours => blob.clone(),
            Dialect::KafkaPython => {
                let (_, mut s) = decode_subscription(blob).unwrap();
                s.user_data = Some(Bytes::new());
                encode_subscription_at(&s, 1).unwrap()
            }
            Dialect::KafkaPythonEager => {
                let (_, mut s) = decode_subscription(blob).unwrap();
                s.user_data = Some(Bytes::new());
                encode_subscription_at(&s, 0).unwrap()
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
    unowned_since: BTreeMap<NamedPartition, u64>,
    /// The longest such stretch so far, and the partition.
    worst_unowned: (u64, Option<NamedPartition>),
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
        let held: BTreeSet<NamedPartition> = self
            .nodes
            .iter()
            .filter(live)
            .flat_map(|n| n.app.iter().cloned())
            .collect();
        let wanted: Vec<NamedPartition> = self
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
            if let Response::Join(JoinAnswer {
                error, generation, ..
            }) = r
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

    fn route(&mut self, i: usize, id: u64, mut request: Request) {
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
        if let Request::Join { protocols, .. } = &mut request {
            for (_, blob) in protocols.iter_mut() {
                *blob = node.dialect.rewrite(blob);
            }
        }
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

    fn owned(&self, i: usize) -> BTreeSet<NamedPartition> {
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
        let mut seen: BTreeMap<NamedPartition, usize> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| !n.dead) {
            for p in &n.app {
                assert!(seen.insert(p.clone(), i).is_none(), "{p:?} held twice");
            }
        }
        let all: Vec<NamedPartition> = self
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
                    .respond(
                        *id,
                        Response::Heartbeat {
                            error: BrokerCode::NONE
                        }
                    )
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
    fn complete_round(
        &mut self,
        join: u64,
        generation: i32,
        parts: &[NamedPartition],
    ) -> Vec<Output> {
        let out = self.respond(join, follower_join_ok(generation));
        let (sync, _) = send_among(&out, Api::Sync);
        self.answer_heartbeats(&out);
        let out = self.respond(
            sync,
            Response::Sync {
                error: BrokerCode::NONE,
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
    fn stable_follower(&mut self, owned: &[NamedPartition]) -> String {
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
                error: BrokerCode::NONE,
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

/// A JoinGroup answer making `m1` a follower of `leader` in `generation`.
fn follower_join_ok(generation: i32) -> Response {
    Response::Join(JoinAnswer {
        error: BrokerCode::NONE,
        generation,
        protocol: Some("cooperative-sticky".into()),
        leader: "leader".into(),
        member_id: "m1".into(),
        members: vec![],
    })
}

/// A subscription to `t` claiming `owned` as of `generation`.
fn claim_of_t(owned: Vec<NamedPartition>, generation: i32) -> Bytes {
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

/// The single output, which must be a request of kind `api`: (id, request).
#[track_caller]
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

/// Stable single leader owning t0..t3; returns the sim.
fn solo_sim() -> Sim {
    sticky_group(true, 1, 4)
}

/// The requests of kind `api` among `out`: (id, request).
fn sends(out: &[Output], api: Api) -> Vec<(u64, Request)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { id, request } if api_of(request) == api => Some((*id, request.clone())),
            _ => None,
        })
        .collect()
}
