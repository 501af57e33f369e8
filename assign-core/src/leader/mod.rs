//! The group leader's policy, in one place: from the members' decoded subscriptions to the plan
//! the leader sends through SyncGroup.
//!
//! [`Leader::plan`] is the only entry point. One call, for one JoinGroup answer:
//!
//! 1. builds the [`GroupView`] (topics sorted by name, members by id, claims in range);
//! 2. dates claims that carry no generation from the leader's own answers (rule 16,
//!    `liveness.rs`'s `ClaimAges`) and advances the liveness clocks (rule 15);
//! 3. resolves who owns what ([`resolve_owners`], with the leader's memory of its last plan) and
//!    runs the group's [`Assignor`] (without members that never confirm what they are given);
//! 4. applies every withholding rule, each a guard against a view that may be stale:
//!    - keep a partition with its remembered owner (`keep_with_remembered_owner`);
//!    - the liveness bound's corrections (`Liveness::enforce`);
//!    - hold what members missing from the answer were given (`hold_vanished`);
//!    - withhold partitions two members claim equally strongly (`withhold_contested`);
//!    - hand out nothing unclaimed while a claim predates our run as leader
//!      (`withhold_unclaimed_if_history_unknown`);
//! 5. validates the plan ([`validate`]), remembers it ([`remember`]), and says whether the
//!    leader must run a follow-up round and when the liveness bound next needs one.
//!
//! The same function runs in the membership machine (`lagbalance::group::machine`) and in the
//! simulator (`lagbalance-sim`), so what the simulator measures is the leader production runs.
//! Decoding and encoding the consumer-protocol blobs stays with the client: the input is
//! already decoded ([`Member`]), the output is by name ([`LeaderPlan`]).

mod liveness;

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;

use crate::cooperative::{contested, remember, resolve_owners, validate, withhold_transfers};
use crate::model::{
    AssignError, Assignor, GroupView, IssuedPlan, MemberView, NamedPartition, PartitionLoad,
    PartitionStats, Plan, TopicInfo, Tp as DenseTp,
};
use liveness::{ClaimAges, Liveness, Overdue, PlanContext, Subscriptions};

/// One member of a JoinGroup answer, its subscription decoded by the client.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    /// The subscription exactly as the member sent it. Only compared with what the same member
    /// sent before: new bytes prove the member rejoined since (rules 15 and 16).
    pub metadata: Bytes,
    /// `None` when the subscription could not be read: the member subscribes to and owns
    /// nothing.
    pub subscription: Option<Subscription>,
}

/// A decoded consumer-protocol subscription.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    /// The consumer-protocol version: below 1 the subscription carries no owned partitions,
    /// below 2 no generation (the leader dates such claims itself, rule 16).
    pub version: i16,
    pub topics: Vec<String>,
    /// Partitions the member claims to own.
    pub owned: Vec<NamedPartition>,
    /// Generation `owned` refers to; −1 when unknown.
    pub generation: i32,
    pub user_data: Option<Bytes>,
    pub rack: Option<String>,
}

/// Everything one plan depends on besides the leader's memory.
#[derive(Clone, Copy, Debug)]
pub struct Round<'a> {
    /// For log lines only.
    pub group_id: &'a str,
    /// The leader's own member id: it syncs its plans itself.
    pub leader_id: &'a str,
    /// The generation of the JoinGroup answer being planned for.
    pub generation: i32,
    /// The protocol (assignor name) the group chose.
    pub protocol: &'a str,
    pub members: &'a [Member],
    /// Topics that exist, with partition counts (any order; non-positive counts are dropped).
    pub topics: &'a [(String, i32)],
    /// Lag and incoming rate per partition, if the client sampled them.
    pub stats: Option<&'a [PartitionLoad]>,
    pub now_ms: u64,
    /// The leader's session timeout: the liveness bound, and how long missing members' partitions
    /// are held.
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
}

/// What one member is sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberAssignment {
    pub member_id: String,
    pub partitions: Vec<NamedPartition>,
    pub user_data: Option<Bytes>,
}

/// The plan to send, and what the leader must do next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeaderPlan {
    /// One entry per member, in member-id order.
    pub assignments: Vec<MemberAssignment>,
    /// The plan withheld or kept back something that only another round can hand out: the
    /// leader starts one itself (nobody else may have a reason to rejoin).
    pub follow_up: bool,
    /// When the next partition without a confirmed holder reaches the liveness bound: the
    /// leader runs a round then at the latest.
    pub liveness_deadline: Option<u64>,
}

/// Why no plan could be made. Each is fatal for the member that leads.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LeaderError {
    #[error("leader does not know assignor {0}")]
    UnknownAssignor(String),
    #[error("assignor {protocol} failed: {error}")]
    AssignorFailed {
        protocol: String,
        error: AssignError,
    },
    #[error("assignor {protocol} produced an invalid plan: {error}")]
    InvalidPlan {
        protocol: String,
        error: AssignError,
    },
}

/// What outlives a run as leader: the last plan this member issued and the members of it since
/// missed. A member that has not rejoined since that plan may still hold what it gave, whoever
/// led in between; the clocks of a run, by contrast, measured only what this leader saw.
#[derive(Debug, Default)]
pub struct Retired {
    issued: Option<IssuedPlan>,
    vanished: BTreeMap<String, (u64, Vec<NamedPartition>)>,
}

/// The leader's memory. A client keeps one while it leads; when another member leads, it keeps
/// only what [`Leader::retire`] returns and starts the next run from it ([`Leader::resume`]).
#[derive(Default)]
pub struct Leader {
    /// The plan issued last (stale-metadata defence).
    issued: Option<IssuedPlan>,
    /// Members of our last plan missing from a later JoinGroup answer, with when we first
    /// missed them and what we had given them (see `hold_vanished`).
    vanished: BTreeMap<String, (u64, Vec<NamedPartition>)>,
    /// Generation of the first plan of this run as leader. A member whose claim predates it
    /// may hold what an earlier leader gave it, which we never saw.
    led_since: Option<i32>,
    /// How old each member's claim provably is (for claims without a generation).
    claim_ages: ClaimAges,
    /// The liveness bound's clocks (rule 15).
    liveness: Liveness,
}

impl Leader {
    /// A leader with no memory.
    pub fn new() -> Self {
        Leader::default()
    }

    /// Start a new run as leader with what the last one left.
    pub fn resume(retired: Retired) -> Self {
        Leader {
            issued: retired.issued,
            vanished: retired.vanished,
            ..Leader::default()
        }
    }

    /// Someone else leads: our clocks stop measuring anything, and our memory stops covering
    /// the group's plans — except what we issued ourselves (see [`Retired`]).
    pub fn retire(self) -> Retired {
        Retired {
            issued: self.issued,
            vanished: self.vanished,
        }
    }

    /// The plan issued last, if any.
    pub fn issued(&self) -> Option<&IssuedPlan> {
        self.issued.as_ref()
    }

    /// Turn one JoinGroup answer into the plan to send (see the module docs). `assignors` are
    /// the ones this member offers; the one named `round.protocol` plans.
    pub fn plan(
        &mut self,
        round: &Round,
        assignors: &mut [Box<dyn Assignor>],
    ) -> Result<LeaderPlan, LeaderError> {
        let protocol = round.protocol;
        let generation = round.generation;
        let now = round.now_ms;
        let mut view = build_view(generation, round.members, round.topics, round.stats, now);
        let bound = round.session_timeout_ms;
        let led_since = *self.led_since.get_or_insert(generation);
        // Claims without a generation (subscription v0/v1) are dated from our own answers
        // (rule 16).
        self.claim_ages
            .observe(protocol, generation, round.members, now, bound);
        let subs = Subscriptions::of(round.members);
        let history_known = self.claim_ages.date(&mut view, &subs.undated, led_since);
        // The liveness bound (rule 15): partitions without a confirmed holder for a session
        // timeout are no longer withheld by the precautionary rules below.
        let eager = assignors
            .iter()
            .any(|a| a.name() == protocol && !a.cooperative());
        let leader_id = round.leader_id;
        let sets = subs.liveness_sets(&view, leader_id, eager);
        let cx = PlanContext {
            now,
            bound_ms: bound,
            metadata: &subs.metadata,
            cannot_confirm: &sets.cannot_confirm,
            leader: leader_id,
            unproven: &sets.unproven,
            undated: &subs.undated,
            generation,
        };
        let overdue = self
            .liveness
            .before_plan(&cx, &mut view, self.issued.as_mut());
        let Some(assignor) = assignors.iter_mut().find(|a| a.name() == protocol) else {
            return Err(LeaderError::UnknownAssignor(protocol.to_owned()));
        };
        let unresponsive = self.liveness.unresponsive_in(&view);
        let planned = if unresponsive.contains(&true) {
            assign_without(
                assignor.as_mut(),
                &view,
                self.issued.as_ref(),
                &unresponsive,
            )
        } else {
            assignor.assign(&view, self.issued.as_ref())
        };
        let mut plan = planned.map_err(|error| LeaderError::AssignorFailed {
            protocol: protocol.to_owned(),
            error,
        })?;
        let owners = resolve_owners(&view, self.issued.as_ref());
        if unresponsive.contains(&true) {
            keep_with_claimants(&view, &owners, &unresponsive, &mut plan);
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let claims: Vec<(String, i32, usize)> = view
                .members
                .iter()
                .map(|m| (m.member_id.clone(), m.generation, m.owned.len()))
                .collect();
            tracing::debug!(
                generation,
                ?claims,
                memory = ?self.issued.as_ref().map(|i| (i.generation, &i.assignments)),
                plan = ?plan.assignments,
                "leader plan"
            );
        }
        // The assignor's intent for those partitions is deferred: the leader asks for another
        // round once their holder has had time to rejoin with a current claim.
        let mut follow_up = keep_with_remembered_owner(&view, &owners, &subs.no_claims, &mut plan);
        if self
            .liveness
            .enforce(&cx, &view, &owners, &overdue, &mut plan)
        {
            follow_up = true;
        }
        if self.hold_vanished(round, &view, &owners, &mut plan) {
            follow_up = true;
        }
        if withhold_contested(&view, self.issued.as_ref(), &overdue, &mut plan) {
            follow_up = true;
        }
        if withhold_unclaimed_if_history_unknown(
            &view,
            &owners,
            &history_known,
            leader_id,
            &overdue,
            &mut plan,
        ) {
            follow_up = true;
        }
        if let Err(error) = validate(&view, &owners, &plan) {
            return Err(LeaderError::InvalidPlan {
                protocol: protocol.to_owned(),
                error,
            });
        }
        let liveness_deadline =
            self.liveness
                .after_plan(&cx, round.heartbeat_interval_ms, &view, &owners, &plan);
        self.issued = Some(remember(&view, self.issued.as_ref(), &plan));
        let assignments = view
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| MemberAssignment {
                member_id: m.member_id.clone(),
                partitions: plan.assignments[i]
                    .iter()
                    .map(|tp| (view.topics[tp.topic as usize].name.clone(), tp.partition))
                    .collect(),
                user_data: plan.user_data.get(i).cloned().flatten(),
            })
            .collect();
        Ok(LeaderPlan {
            assignments,
            follow_up,
            liveness_deadline,
        })
    }
    /// A member of our last plan that is missing from this JoinGroup answer may still be
    /// alive and consuming — tansu leaves a member out while its own JoinGroup sits in the 3 s
    /// pause, or drops one that missed heartbeats and lets it back in under the same id without
    /// a fencing error (seen in the chaos suite: a newcomer's partition given to another member
    /// one generation later while the newcomer consumed it for 11 s). Kafka would have fenced
    /// it; here we cannot know. So what we gave it stays with nobody until a session timeout
    /// after we first missed it — by then it has given its partitions up itself
    /// (`check_session`) — unless a present member owns it. The liveness bound (rule 15) does
    /// not shorten this: its clock may have started before the member went missing, while the
    /// member may hold the partition until its own session check. Returns whether it withheld
    /// anything.
    fn hold_vanished(
        &mut self,
        round: &Round,
        view: &GroupView,
        owners: &[Option<u32>],
        plan: &mut Plan,
    ) -> bool {
        let present: HashSet<&str> = view.members.iter().map(|m| m.member_id.as_str()).collect();
        let now = round.now_ms;
        if let Some(issued) = &self.issued {
            for (id, parts) in &issued.assignments {
                if !present.contains(id.as_str()) && !parts.is_empty() {
                    self.vanished
                        .entry(id.clone())
                        .or_insert_with(|| (now, parts.clone()));
                }
            }
        }
        let hold_for = round.session_timeout_ms;
        self.vanished
            .retain(|id, (since, _)| !present.contains(id.as_str()) && now < *since + hold_for);
        if self.vanished.is_empty() {
            return false;
        }
        let offsets = view.topic_offsets();
        let held: HashSet<usize> = self
            .vanished
            .values()
            .flat_map(|(_, parts)| parts.iter())
            .filter_map(|(topic, partition)| {
                let t = view.topic_index(topic)?;
                view.flat_index(&offsets, DenseTp::new(t, *partition))
            })
            .filter(|&i| owners.get(i).copied().flatten().is_none())
            .collect();
        let withheld = withhold_from_plan(view, plan, |i| i.is_none_or(|i| !held.contains(&i)));
        if withheld {
            tracing::info!(group = %round.group_id, members = ?self.vanished.keys().collect::<Vec<_>>(), "holding the partitions of members missing from the JoinGroup answer");
        }
        withheld
    }
}

/// A new leader does not know what the previous one handed out. On a broker without a join
/// barrier, a member that has not rejoined since still presents its old claim, so a partition
/// nobody claims may in fact be held. While any other member's claim predates `led_since`, hand
/// out no unclaimed partition (owned ones still follow the normal cooperative rules) and run a
/// follow-up round: rejoining refreshes every claim (tansu bumps the generation when the
/// leader's claim changes, and the others then rejoin too). A group where nobody has ever
/// synced (every claim at −1 and empty) is simply new. Returns whether it withheld anything.
fn withhold_unclaimed_if_history_unknown(
    view: &GroupView,
    owners: &[Option<u32>],
    history_known: &[bool],
    leader_id: &str,
    overdue: &Overdue,
    plan: &mut Plan,
) -> bool {
    let fresh_group = view
        .members
        .iter()
        .all(|m| m.generation < 0 && m.owned.is_empty());
    let unknown = view
        .members
        .iter()
        .zip(history_known)
        .any(|(m, known)| m.member_id != leader_id && !known);
    if fresh_group || !unknown || plan.assignments.len() != view.members.len() {
        return false;
    }
    withhold_from_plan(view, plan, |i| {
        i.is_some_and(|i| owners[i].is_some() || overdue.partitions.contains(&i))
    })
}

/// Give every partition whose owner is known only from the leader's memory back to that owner.
///
/// The cooperative rule withholds a partition that moves away from its owner until the owner
/// revokes it and rejoins. But a *remembered* owner (a member whose join the broker held back,
/// so it still presents an old claim) does not claim the partition, so it would never revoke
/// it, and the partition would stay unassigned until something else triggered a rebalance.
/// Assigning it to that member instead is safe — it is the only member that may hold it — and
/// next round the member claims it for real and the normal revoke-then-assign flow applies.
/// Returns whether it changed the plan (the leader then runs a follow-up round, see
/// [`LeaderPlan::follow_up`]).
///
/// Not for a member whose subscription carries no owned partitions (v0): it is eager, so it
/// lets everything go when it rejoins, and as it never claims anything, keeping a partition
/// with it would keep it there for good; the partition waits for the liveness bound instead.
fn keep_with_remembered_owner(
    view: &GroupView,
    owners: &[Option<u32>],
    no_claims: &HashSet<String>,
    plan: &mut Plan,
) -> bool {
    if plan.assignments.len() != view.members.len() {
        return false; // validate() reports it
    }
    let mut changed = false;
    let offsets = view.topic_offsets();
    let mut assigned = vec![false; owners.len()];
    for list in &plan.assignments {
        for tp in list {
            if let Some(i) = view.flat_index(&offsets, *tp) {
                assigned[i] = true;
            }
        }
    }
    let mut claimed = vec![false; owners.len()];
    for (m, member) in view.members.iter().enumerate() {
        for tp in &member.owned {
            if let Some(i) = view.flat_index(&offsets, *tp) {
                claimed[i] |= owners[i] == Some(m as u32);
            }
        }
    }
    for (t, topic) in view.topics.iter().enumerate() {
        for p in 0..topic.partitions.max(0) {
            let i = offsets[t] + p as usize;
            if let (Some(m), false, false) = (owners[i], assigned[i], claimed[i]) {
                if no_claims.contains(&view.members[m as usize].member_id) {
                    continue;
                }
                plan.assignments[m as usize].push(DenseTp::new(t as u32, p));
                changed = true;
            }
        }
    }
    changed
}

/// Run `assignor` as if the members marked in `skip` were not in the group (unresponsive
/// members, see [`liveness`]: balancing onto them pulled partitions away from live members
/// round after round, only to strand them), and give them empty lists in the result.
fn assign_without(
    assignor: &mut dyn Assignor,
    view: &GroupView,
    issued: Option<&IssuedPlan>,
    skip: &[bool],
) -> Result<Plan, AssignError> {
    let mut reduced = view.clone();
    let mut keep = skip.iter().map(|s| !s);
    reduced.members.retain(|_| keep.next().unwrap_or(true));
    let partial = assignor.assign(&reduced, issued)?;
    let mut plan = Plan {
        assignments: Vec::with_capacity(view.members.len()),
        user_data: Vec::new(),
    };
    let mut lists = partial.assignments.into_iter();
    let mut data = partial.user_data.into_iter();
    let with_data = !reduced.members.is_empty() && data.len() == reduced.members.len();
    for skipped in skip {
        if *skipped {
            plan.assignments.push(Vec::new());
            if with_data {
                plan.user_data.push(None);
            }
        } else {
            plan.assignments.push(lists.next().unwrap_or_default());
            if with_data {
                plan.user_data.push(data.next().flatten());
            }
        }
    }
    Ok(plan)
}

/// After [`assign_without`]: the skipped members keep what they claim and own, and nobody
/// else is given it (the assignor did not see their claims).
fn keep_with_claimants(view: &GroupView, owners: &[Option<u32>], skip: &[bool], plan: &mut Plan) {
    withhold_transfers(view, owners, plan);
    let offsets = view.topic_offsets();
    for (m, member) in view.members.iter().enumerate() {
        if !skip.get(m).copied().unwrap_or(false) {
            continue;
        }
        for tp in &member.owned {
            let owned = view
                .flat_index(&offsets, *tp)
                .is_some_and(|i| owners[i] == Some(m as u32));
            if owned && !plan.assignments[m].contains(tp) {
                plan.assignments[m].push(*tp);
            }
        }
    }
}

/// Take out of the plan every partition for which `keep` (given its flat index in the view,
/// `None` if the view cannot name it) is false. Returns whether it took anything out.
fn withhold_from_plan(
    view: &GroupView,
    plan: &mut Plan,
    keep: impl Fn(Option<usize>) -> bool,
) -> bool {
    let offsets = view.topic_offsets();
    let mut withheld = false;
    for list in plan.assignments.iter_mut() {
        list.retain(|tp| {
            let kept = keep(view.flat_index(&offsets, *tp));
            withheld |= !kept;
            kept
        });
    }
    withheld
}

/// Take out of the plan every partition two members claim equally strongly
/// ([`contested`]): either may hold it, so nobody gets it this round, both revoke it if they
/// hold it, and a follow-up round hands it out. Returns whether it withheld anything.
fn withhold_contested(
    view: &GroupView,
    previous: Option<&IssuedPlan>,
    overdue: &Overdue,
    plan: &mut Plan,
) -> bool {
    let contested = contested(view, previous);
    if !contested.iter().any(|c| *c) {
        return false;
    }
    withhold_from_plan(view, plan, |i| {
        i.is_none_or(|i| {
            !contested.get(i).copied().unwrap_or(false) || overdue.partitions.contains(&i)
        })
    })
}

/// Build the leader's view of the group from the decoded JoinGroup members and the topic
/// metadata: topics sorted by name (only those with partitions), members sorted by id, each
/// member's topics and claims reduced to what exists. A member whose subscription could not be
/// read subscribes to and owns nothing, at generation −1.
pub fn build_view(
    generation: i32,
    members: &[Member],
    topics: &[(String, i32)],
    stats: Option<&[PartitionLoad]>,
    now_ms: u64,
) -> GroupView {
    let mut topics: Vec<TopicInfo> = topics
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, partitions)| TopicInfo {
            name: name.clone(),
            partitions: *partitions,
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    topics.dedup_by(|a, b| a.name == b.name);
    let mut view = GroupView {
        generation,
        topics,
        members: Vec::with_capacity(members.len()),
        stats: None,
        now_ms,
    };
    for m in members {
        let mut mv = MemberView {
            member_id: m.member_id.clone(),
            instance_id: m.instance_id.clone(),
            generation: -1,
            ..Default::default()
        };
        if let Some(s) = &m.subscription {
            mv.topics = s
                .topics
                .iter()
                .filter_map(|t| view.topic_index(t))
                .collect();
            mv.topics.sort_unstable();
            mv.topics.dedup();
            mv.owned = s
                .owned
                .iter()
                .filter_map(|(t, p)| {
                    let ti = view.topic_index(t)?;
                    let n = view.topics[ti as usize].partitions;
                    (0..n).contains(p).then_some(DenseTp::new(ti, *p))
                })
                .collect();
            mv.owned.sort_unstable();
            mv.owned.dedup();
            mv.generation = s.generation;
            mv.user_data = s.user_data.clone();
            mv.rack = s.rack.clone();
        }
        view.members.push(mv);
    }
    view.members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    if let Some(stats) = stats {
        let offsets = view.topic_offsets();
        let total = *offsets.last().unwrap_or(&0);
        let mut ps = PartitionStats {
            lag: vec![f64::NAN; total],
            rate: vec![f64::NAN; total],
        };
        for load in stats {
            if let Some(ti) = view.topic_index(&load.topic) {
                if let Some(i) = view.flat_index(&offsets, DenseTp::new(ti, load.partition)) {
                    ps.lag[i] = load.lag;
                    ps.rate[i] = load.rate;
                }
            }
        }
        view.stats = Some(ps);
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sticky::CooperativeStickyAssignor;

    fn member(id: &str, owned: &[i32], generation: i32) -> Member {
        let owned: Vec<NamedPartition> = owned.iter().map(|&p| ("t".to_string(), p)).collect();
        Member {
            member_id: id.into(),
            instance_id: None,
            // Stands in for the blob: it changes whenever the claim does.
            metadata: Bytes::from(format!("{id} {owned:?} {generation}")),
            subscription: Some(Subscription {
                version: 3,
                topics: vec!["t".into()],
                owned,
                generation,
                user_data: None,
                rack: None,
            }),
        }
    }

    fn plan(
        leader: &mut Leader,
        generation: i32,
        members: &[Member],
        now_ms: u64,
    ) -> Result<LeaderPlan, LeaderError> {
        let mut assignors: Vec<Box<dyn Assignor>> = vec![Box::new(CooperativeStickyAssignor)];
        let topics = [("t".to_string(), 4)];
        let round = Round {
            group_id: "g",
            leader_id: "a",
            generation,
            protocol: "cooperative-sticky",
            members,
            topics: &topics,
            stats: None,
            now_ms,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
        };
        leader.plan(&round, &mut assignors)
    }

    fn counts(p: &LeaderPlan) -> Vec<usize> {
        p.assignments.iter().map(|a| a.partitions.len()).collect()
    }

    #[test]
    fn a_new_group_gets_everything_and_a_round_within_the_bound() {
        let mut leader = Leader::new();
        let p = plan(
            &mut leader,
            1,
            &[member("b", &[], -1), member("a", &[], -1)],
            0,
        )
        .unwrap();
        let ids: Vec<&str> = p.assignments.iter().map(|a| a.member_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "member-id order");
        assert_eq!(counts(&p), [2, 2]);
        assert!(!p.follow_up);
        // What b was handed is unconfirmed until its claim lists it: a round by the bound.
        assert_eq!(p.liveness_deadline, Some(45_000));
        assert_eq!(leader.issued().map(|i| i.generation), Some(1));
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_revoked_it() {
        let mut leader = Leader::new();
        plan(&mut leader, 1, &[member("a", &[], -1)], 0).unwrap();
        let p = plan(
            &mut leader,
            2,
            &[member("a", &[0, 1, 2, 3], 1), member("b", &[], -1)],
            1_000,
        )
        .unwrap();
        assert_eq!(counts(&p), [2, 0], "a revokes two; b gets them next round");
        // a revokes, so it rejoins by itself: no follow-up of the leader's.
        assert!(!p.follow_up);
        let p = plan(
            &mut leader,
            3,
            &[member("a", &[0, 1], 2), member("b", &[], 2)],
            2_000,
        )
        .unwrap();
        assert_eq!(counts(&p), [2, 2]);
    }

    #[test]
    fn an_unknown_assignor_is_an_error() {
        let mut assignors: Vec<Box<dyn Assignor>> = vec![Box::new(CooperativeStickyAssignor)];
        let members = [member("a", &[], -1)];
        let round = Round {
            group_id: "g",
            leader_id: "a",
            generation: 1,
            protocol: "range",
            members: &members,
            topics: &[],
            stats: None,
            now_ms: 0,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
        };
        let err = Leader::new().plan(&round, &mut assignors).unwrap_err();
        assert_eq!(err, LeaderError::UnknownAssignor("range".into()));
        assert_eq!(err.to_string(), "leader does not know assignor range");
    }

    #[test]
    fn a_retired_leader_keeps_only_what_it_issued() {
        let mut leader = Leader::new();
        plan(
            &mut leader,
            1,
            &[member("a", &[], -1), member("b", &[], -1)],
            0,
        )
        .unwrap();
        let leader = Leader::resume(leader.retire());
        assert_eq!(leader.issued().map(|i| i.generation), Some(1));
        assert_eq!(leader.led_since, None, "a new run starts its own history");
    }
}
