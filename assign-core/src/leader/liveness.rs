//! The leader's liveness bound (`docs/group-protocol.md` rules 15 and 16).
//!
//! Every withholding rule of the leader ([`super`]: `hold_vanished`, `withhold_contested`,
//! `withhold_unclaimed_if_history_unknown`, the cooperative transfer rule, the memory that keeps
//! a partition with a member that may hold it) guards against a view that may be stale. Each
//! is sound on its own, but each also waits for something the leader cannot force — that a
//! member rejoins, revokes, or claims what it holds — and a member that never does (a peer
//! whose claim carries no generation, one that claims what it was never given, one that joined
//! and never synced) made them withhold for good. [`Liveness`] bounds them all at once with
//! clocks read at plan times, all measured against the leader's session timeout `S`:
//!
//! - per partition, since when it has had no *confirmed* holder — a present member whose claim
//!   lists it after our last plan gave it to that member, or that our plan kept it with because
//!   it claimed it. A hand-out does not stop this clock; the recipient's claim does. Once it
//!   has run for `S` the partition is *overdue*: the precautionary rules stop withholding it,
//!   and a round is run when it falls due even if nothing else happens;
//! - per member and partition, since when its claims have listed it: a claim to an overdue
//!   partition that has stood for `S` although our last plan did not give it to its member is
//!   ignored (and stays ignored while the member sends the same bytes) — but only a claim the
//!   member cannot honestly make: to a partition that neither its first claim we saw (unless
//!   that claim was impossible: a generation above the group's, or partitions owned at −1)
//!   nor any of our plans gave it, or at a generation above the last plan that did (it synced
//!   a later plan, which took it away). An honest member keeps claiming what it holds until
//!   it syncs the plan that takes it away, and a SyncGroup can take longer than `S` (held by a
//!   busy barrier-less broker, failed with REBALANCE_IN_PROGRESS again and again); a member
//!   that holds a partition must never see it handed on;
//! - per member and partition, since when only our memory says it may hold it (it was given
//!   it, its claim does not list it): restarted by every plan that gives it again, and once it
//!   has run for `S` on an overdue partition the memory is dropped. A gift restarts it because
//!   the member may take the gift up at any time before the next generation; so an overdue
//!   partition stops being given back to a member whose bytes have not changed for `S` since
//!   it was first found unconfirmed — a member that synced any of our gifts would have claimed
//!   it, which changes its bytes;
//! - per member, since when its claim has said "never synced" (a dated claim at −1 with
//!   nothing owned): after `S` it is *unresponsive*, as is a member whose memory was dropped.
//!   Unresponsive members get nothing new until their bytes change (the leader plans as if
//!   they were absent and lets them keep what they claim), and an overdue partition is not
//!   handed to a member that has never synced.
//!
//! Sound for the same reason as rule 13: a live member that holds a partition learns of a new
//! generation within a heartbeat interval and rejoins with a claim that lists it (after the
//! broker's hold of its JoinGroup); one that does not for a session timeout has been expelled,
//! and has given its partitions up (rule 5). Members that cannot confirm anything with a claim
//! (subscription v0, or any member under an eager protocol, which revokes everything before it
//! joins) count as holding what our last plan gave them.
//!
//! [`ClaimAges`] dates claims that carry no generation (consumer-protocol subscription v0/v1:
//! kafka-python's `cooperative-sticky`), which the leader otherwise reads as −1 for ever.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::Member;
use crate::cooperative::resolve_owners;
use crate::model::{GroupView, IssuedPlan, NamedPartition, Plan, Tp as DenseTp};

/// What the leader saw of one member's subscription.
struct Seen {
    bytes: Bytes,
    /// Generation of the last answer of ours that listed these bytes, and when we saw it.
    generation: i32,
    at: u64,
    /// The generation of an answer of ours that predates the member's current claim.
    sent_after: Option<i32>,
}

/// The age of each member's claim as the leader can prove it from its own JoinGroup answers.
///
/// A JoinGroup answer lists each member's last metadata. If a member's bytes differ from what
/// our previous answer of generation `g` showed (or it was not in that answer), it sent them
/// after that answer was made — and a member syncs nothing while its JoinGroup is in flight,
/// so every plan it synced before sending them is for a generation below `g`: the claim
/// reflects all of them, as a claim carrying generation `g − 1` would. Unchanged bytes prove
/// nothing new.
#[derive(Default)]
pub(crate) struct ClaimAges {
    protocol: Option<String>,
    previous_answer: Option<i32>,
    seen: HashMap<String, Seen>,
}

impl ClaimAges {
    /// Record the members of our JoinGroup answer of `generation` (their metadata for
    /// `protocol`). Members absent for longer than `forget_after_ms` are forgotten (they were
    /// expelled, and come back as newcomers).
    pub(crate) fn observe(
        &mut self,
        protocol: &str,
        generation: i32,
        members: &[Member],
        now: u64,
        forget_after_ms: u64,
    ) {
        if self.protocol.as_deref() != Some(protocol) {
            // Another protocol's blob is another encoding of the same JoinGroup: no evidence.
            *self = ClaimAges {
                protocol: Some(protocol.to_owned()),
                ..ClaimAges::default()
            };
        }
        for m in members {
            let sent_after = match self.seen.get(&m.member_id) {
                Some(s) if s.bytes == m.metadata => s.sent_after,
                Some(s) => Some(s.generation),
                None => self.previous_answer,
            };
            self.seen.insert(
                m.member_id.clone(),
                Seen {
                    bytes: m.metadata.clone(),
                    generation,
                    at: now,
                    sent_after,
                },
            );
        }
        self.seen
            .retain(|_, s| s.generation == generation || now < s.at + forget_after_ms);
        self.previous_answer = Some(generation);
    }

    /// The generation of an answer of ours that `member_id`'s current claim was sent after,
    /// if we know one.
    pub(crate) fn sent_after(&self, member_id: &str) -> Option<i32> {
        self.seen.get(member_id).and_then(|s| s.sent_after)
    }

    /// Give the `undated` members of `view` (claims without a generation) the generation
    /// their claims provably have (−1 when we know nothing), and say, per member, whether its
    /// claim is known to postdate `led_since`, the first plan of our run as leader — for a
    /// dated claim, whether its generation does (`withhold_unclaimed_if_history_unknown`).
    pub(crate) fn date(
        &self,
        view: &mut GroupView,
        undated: &HashSet<String>,
        led_since: i32,
    ) -> Vec<bool> {
        view.members
            .iter_mut()
            .map(|m| {
                if !undated.contains(&m.member_id) {
                    return m.generation >= led_since;
                }
                let sent_after = self.sent_after(&m.member_id);
                if let Some(g) = sent_after {
                    m.generation = m.generation.max(g - 1);
                }
                sent_after.is_some_and(|g| g >= led_since)
            })
            .collect()
    }
}

/// What the leader reads off the members' subscription blobs besides the view.
pub(crate) struct Subscriptions {
    /// Member id → its subscription bytes for the chosen protocol.
    pub(crate) metadata: HashMap<String, Bytes>,
    /// Subscriptions without owned partitions (v0).
    pub(crate) no_claims: HashSet<String>,
    /// Subscriptions without a generation (v0, v1).
    pub(crate) undated: HashSet<String>,
}

/// The member sets of a [`PlanContext`].
pub(crate) struct LivenessSets {
    pub(crate) cannot_confirm: HashSet<String>,
    pub(crate) unproven: HashSet<String>,
}

impl Subscriptions {
    pub(crate) fn of(members: &[Member]) -> Self {
        let mut subs = Subscriptions {
            metadata: HashMap::with_capacity(members.len()),
            no_claims: HashSet::new(),
            undated: HashSet::new(),
        };
        for m in members {
            subs.metadata
                .insert(m.member_id.clone(), m.metadata.clone());
            if let Some(version) = m.subscription.as_ref().map(|s| s.version) {
                if version < 1 {
                    subs.no_claims.insert(m.member_id.clone());
                }
                if version < 2 {
                    subs.undated.insert(m.member_id.clone());
                }
            }
        }
        subs
    }

    /// Who cannot confirm what it holds with a claim (v0 members; everyone in an `eager`
    /// protocol, where members revoke everything before joining), and who says it has never
    /// synced (a dated claim at −1 with nothing owned; `view` already dated, the leader
    /// excluded).
    pub(crate) fn liveness_sets(
        &self,
        view: &GroupView,
        leader: &str,
        eager: bool,
    ) -> LivenessSets {
        let cannot_confirm = if eager {
            self.metadata.keys().cloned().collect()
        } else {
            self.no_claims.clone()
        };
        let unproven = view
            .members
            .iter()
            .filter(|m| m.member_id != leader && !self.undated.contains(&m.member_id))
            .filter(|m| m.generation < 0 && m.owned.is_empty())
            .map(|m| m.member_id.clone())
            .collect();
        LivenessSets {
            cannot_confirm,
            unproven,
        }
    }
}

/// What the liveness bound decided before the assignor runs.
#[derive(Debug, Default)]
pub(crate) struct Overdue {
    /// Flat indices of partitions without a confirmed holder for the bound: the leader's
    /// precautionary rules no longer withhold them.
    pub(crate) partitions: HashSet<usize>,
    /// `(member index, flat index)`: the member may not be given that partition this round (it
    /// claimed it, or was remembered with it, for the bound without ever confirming it).
    pub(crate) barred: HashSet<(usize, usize)>,
}

/// The leader's clocks (see the module docs). Reset whenever someone else leads.
#[derive(Default)]
pub(crate) struct Liveness {
    /// Since when a partition has had no confirmed holder.
    unowned_since: HashMap<NamedPartition, u64>,
    /// Since when only our memory says a member may hold a partition (restarted by every plan
    /// that gives it the partition again).
    unconfirmed_since: HashMap<(String, NamedPartition), u64>,
    /// Since when only our memory says a member may hold a partition, whatever our plans gave
    /// it meanwhile.
    memory_only_since: HashMap<(String, NamedPartition), u64>,
    /// Since when each member has presented the same subscription bytes.
    bytes_since: HashMap<String, (Bytes, u64)>,
    /// Since when a member's claims have listed a partition, continuously.
    claimed_since: HashMap<(String, NamedPartition), u64>,
    /// Who our last plan gave each partition to.
    last_plan: HashMap<NamedPartition, String>,
    /// Claims we ignore, per member, while it presents the same metadata and our plans do not
    /// give it the partition.
    ignored: HashMap<String, (Bytes, HashSet<NamedPartition>)>,
    /// Members that never confirmed a partition they were given for the bound, with the
    /// metadata they still present: they get no new partition until it changes (they
    /// rejoined). A member that joined and never synced stays in a barrier-less broker's
    /// answers for as long as it heartbeats.
    unresponsive: HashMap<String, Bytes>,
    /// Members whose claims have said "never synced" since this time, with those bytes. A live
    /// member syncs its first plan within moments and says so at its next JoinGroup, which a
    /// new generation brings within a heartbeat interval.
    unproven_since: HashMap<String, (Bytes, u64)>,
    /// Per member, what it may honestly claim (see [`MayHold`]).
    may_hold: HashMap<String, MayHold>,
}

/// What one member may hold by an honest account: what its first claim we saw listed (unless
/// that claim was impossible) and everything our plans have given it since, each with the
/// generation it was last given (or claimed) at. A member's claim reports the generation of
/// its last synced plan; one above that generation means a later plan, which did not give the
/// partition, was synced and the partition revoked. Only a claim outside this account is
/// ever ignored.
struct MayHold {
    partitions: HashMap<NamedPartition, i32>,
    /// When the member was last in a JoinGroup answer of ours: one absent for longer than
    /// twice the bound was expelled and gave everything up (rule 5), and is forgotten.
    last_seen: u64,
}

/// Per flat partition index, the members whose claims list it (in a subscribed topic).
fn claimants(view: &GroupView) -> Vec<Vec<usize>> {
    let offsets = view.topic_offsets();
    let total = offsets.last().copied().unwrap_or(0);
    let mut out = vec![Vec::new(); total];
    for (m, member) in view.members.iter().enumerate() {
        for tp in &member.owned {
            if !member.topics.contains(&tp.topic) {
                continue;
            }
            if let Some(p) = view.flat_index(&offsets, *tp) {
                if !out[p].contains(&m) {
                    out[p].push(m);
                }
            }
        }
    }
    out
}

/// Flat index → partition name.
fn names(view: &GroupView) -> Vec<NamedPartition> {
    view.topics
        .iter()
        .flat_map(|t| (0..t.partitions.max(0)).map(move |p| (t.name.clone(), p)))
        .collect()
}

/// The name of a partition of the view.
fn name_of(view: &GroupView, tp: DenseTp) -> NamedPartition {
    (view.topics[tp.topic as usize].name.clone(), tp.partition)
}

/// Remove `name` from member `m`'s claims in `view`.
fn strip_claim(view: &mut GroupView, m: usize, name: &NamedPartition) {
    if let Some(t) = view.topic_index(&name.0) {
        let tp = DenseTp::new(t, name.1);
        view.members[m].owned.retain(|x| *x != tp);
    }
}

/// Per-plan inputs the clocks need besides the view.
pub(crate) struct PlanContext<'a> {
    pub(crate) now: u64,
    /// The bound: the leader's session timeout.
    pub(crate) bound_ms: u64,
    /// Each member's subscription bytes for the chosen protocol.
    pub(crate) metadata: &'a HashMap<String, Bytes>,
    /// Members that cannot confirm anything with a claim — their subscriptions carry no owned
    /// partitions (v0), or the protocol is eager (everyone revokes everything before joining):
    /// what our last plan gave them counts as confirmed.
    pub(crate) cannot_confirm: &'a HashSet<String>,
    /// The leader's own member id: it syncs its plans itself, so what they give it needs no
    /// confirmation.
    pub(crate) leader: &'a str,
    /// Members whose claims say they have never synced a plan (generation −1, nothing owned).
    pub(crate) unproven: &'a HashSet<String>,
    /// Members whose claims carry no generation (subscription v0/v1; dated by rule 16).
    pub(crate) undated: &'a HashSet<String>,
    /// The generation of the JoinGroup answer being planned for.
    pub(crate) generation: i32,
}

impl PlanContext<'_> {
    /// What our plan gives this member counts as held without its claim saying so.
    fn takes_plan_as_given(&self, member_id: &str) -> bool {
        member_id == self.leader || self.cannot_confirm.contains(member_id)
    }
}

impl Liveness {
    /// Per member of `view`: whether it is unresponsive (see `unresponsive`). The leader plans
    /// without such members: it keeps what it claims, and is given nothing new.
    pub(crate) fn unresponsive_in(&self, view: &GroupView) -> Vec<bool> {
        view.members
            .iter()
            .map(|m| self.unresponsive.contains_key(&m.member_id))
            .collect()
    }

    /// Before the assignor runs: advance the clocks with this view; for every partition past
    /// the bound, ignore the claims that have listed it that long although our plans never
    /// gave it to their member (a member that does not revoke what it is not given is lying or
    /// broken), and drop the memory of members that have not confirmed it that long.
    pub(crate) fn before_plan(
        &mut self,
        cx: &PlanContext,
        view: &mut GroupView,
        issued: Option<&mut IssuedPlan>,
    ) -> Overdue {
        let (now, bound) = (cx.now, cx.bound_ms);
        let names = names(view);
        let index_of: HashMap<String, usize> = view
            .members
            .iter()
            .enumerate()
            .map(|(m, member)| (member.member_id.clone(), m))
            .collect();
        self.note_first_claims(cx, view);
        let unchanged = |id: &String, bytes: &Bytes| cx.metadata.get(id) == Some(bytes);
        self.bytes_since
            .retain(|id, (bytes, _)| unchanged(id, bytes));
        for (id, bytes) in cx.metadata {
            self.bytes_since
                .entry(id.clone())
                .or_insert_with(|| (bytes.clone(), now));
        }
        self.unresponsive.retain(|id, bytes| unchanged(id, bytes));
        self.unproven_since
            .retain(|id, (bytes, _)| cx.unproven.contains(id) && unchanged(id, bytes));
        for id in cx.unproven {
            let Some(bytes) = cx.metadata.get(id) else {
                continue;
            };
            let (_, since) = self
                .unproven_since
                .entry(id.clone())
                .or_insert_with(|| (bytes.clone(), now));
            if now >= *since + bound && !self.unresponsive.contains_key(id) {
                tracing::warn!(member = %id, "has not synced a plan for a session timeout; it gets no partitions until it rejoins");
                self.unresponsive.insert(id.clone(), bytes.clone());
            }
        }
        self.ignored.retain(|id, (bytes, _)| unchanged(id, bytes));
        for (id, (_, parts)) in &self.ignored {
            if let Some(&m) = index_of.get(id) {
                for name in parts {
                    strip_claim(view, m, name);
                }
            }
        }
        let claims = claimants(view);
        let mut claimed_now = HashSet::new();
        for (p, members) in claims.iter().enumerate() {
            for &m in members {
                let key = (view.members[m].member_id.clone(), names[p].clone());
                self.claimed_since.entry(key.clone()).or_insert(now);
                claimed_now.insert(key);
            }
        }
        self.claimed_since.retain(|k, _| claimed_now.contains(k));
        let owners = resolve_owners(view, issued.as_deref());
        let mut remembered_now = HashSet::new();
        for (p, owner) in owners.iter().enumerate() {
            let Some(m) = owner.map(|m| m as usize) else {
                continue;
            };
            let id = &view.members[m].member_id;
            // A member that cannot confirm holds what our last plan gave it, as far as we can
            // tell; older gifts it let go when it rejoined (it is eager).
            let given_last = self.last_plan.get(&names[p]) == Some(id);
            let held_as_given = cx.cannot_confirm.contains(id) && given_last;
            if !claims[p].contains(&m) && !held_as_given {
                let key = (id.clone(), names[p].clone());
                self.unconfirmed_since.entry(key.clone()).or_insert(now);
                self.memory_only_since.entry(key.clone()).or_insert(now);
                remembered_now.insert(key);
            }
        }
        self.unconfirmed_since
            .retain(|k, _| remembered_now.contains(k));
        self.memory_only_since
            .retain(|k, _| remembered_now.contains(k));
        self.unowned_since
            .retain(|name, _| view.topic_index(&name.0).is_some());
        let mut overdue = Overdue::default();
        for (p, name) in names.iter().enumerate() {
            let confirmed = self.last_plan.get(name).is_some_and(|id| {
                index_of
                    .get(id)
                    .is_some_and(|&m| claims[p].contains(&m) || cx.takes_plan_as_given(id))
            });
            if confirmed {
                self.unowned_since.remove(name);
                continue;
            }
            let since = *self.unowned_since.entry(name.clone()).or_insert(now);
            if now >= since + bound {
                overdue.partitions.insert(p);
            }
        }
        let mut overdue_list: Vec<usize> = overdue.partitions.iter().copied().collect();
        overdue_list.sort_unstable();
        for p in overdue_list {
            let name = &names[p];
            for &m in &claims[p] {
                let id = view.members[m].member_id.clone();
                let key = (id.clone(), name.clone());
                let stuck = self
                    .claimed_since
                    .get(&key)
                    .is_some_and(|&s| now >= s + bound);
                if !stuck
                    || self.last_plan.get(name) == Some(&id)
                    || self.may_hold(cx, &id, name, view.members[m].generation)
                {
                    continue;
                }
                tracing::warn!(member = %id, partition = ?name, "ignoring a claim to a partition our plans have not given that member for a session timeout");
                strip_claim(view, m, name);
                overdue.barred.insert((m, p));
                if let Some(bytes) = cx.metadata.get(&id) {
                    let entry = self
                        .ignored
                        .entry(id)
                        .or_insert_with(|| (bytes.clone(), HashSet::new()));
                    entry.1.insert(name.clone());
                }
            }
        }
        // The memory of members that never confirmed what they were given.
        let offsets = view.topic_offsets();
        if let Some(issued) = issued {
            for (k, (id, parts)) in issued.assignments.iter_mut().enumerate() {
                let Some(&m) = index_of.get(id) else {
                    continue;
                };
                let mut j = 0;
                while j < parts.len() {
                    let p = view
                        .topic_index(&parts[j].0)
                        .and_then(|t| view.flat_index(&offsets, DenseTp::new(t, parts[j].1)));
                    let key = (id.clone(), parts[j].clone());
                    let forget = p.is_some_and(|p| overdue.partitions.contains(&p))
                        && id != cx.leader
                        && self
                            .unconfirmed_since
                            .get(&key)
                            .is_some_and(|&s| now >= s + bound);
                    match p {
                        Some(p) if forget => {
                            tracing::warn!(member = %id, partition = ?parts[j], "never confirmed a partition it was given for a session timeout; it gets no new ones until it rejoins");
                            self.unconfirmed_since.remove(&key);
                            self.memory_only_since.remove(&key);
                            parts.remove(j);
                            if let Some(since) = issued.since.get_mut(k) {
                                if j < since.len() {
                                    since.remove(j);
                                }
                            }
                            overdue.barred.insert((m, p));
                            // One that cannot confirm let it go when it rejoined: it is
                            // eager, not unresponsive.
                            if let (Some(bytes), false) =
                                (cx.metadata.get(id), cx.cannot_confirm.contains(id))
                            {
                                self.unresponsive.insert(id.clone(), bytes.clone());
                            }
                        }
                        _ => j += 1,
                    }
                }
            }
        }
        overdue
    }

    /// Start the honest account of members we see for the first time with their claims, and
    /// forget members long gone.
    fn note_first_claims(&mut self, cx: &PlanContext, view: &GroupView) {
        let (now, bound) = (cx.now, cx.bound_ms);
        for member in &view.members {
            let entry = self
                .may_hold
                .entry(member.member_id.clone())
                .or_insert_with(|| {
                    // A dated claim above the group's generation, or of partitions owned before
                    // any sync (−1), cannot be true. An undated one (rule 16) may always be.
                    let possible = cx.undated.contains(&member.member_id)
                        || (0..=cx.generation).contains(&member.generation);
                    let partitions = if possible {
                        member
                            .owned
                            .iter()
                            .map(|tp| (name_of(view, *tp), member.generation))
                            .collect()
                    } else {
                        HashMap::new()
                    };
                    MayHold {
                        partitions,
                        last_seen: now,
                    }
                });
            entry.last_seen = now;
        }
        self.may_hold.retain(|_, m| now < m.last_seen + 2 * bound);
    }

    /// Whether `id`'s claim of `generation` may honestly list `name` (see [`MayHold`]). The
    /// generation of an undated claim (rule 16) only bounds its last sync from above, so it
    /// proves no revocation.
    fn may_hold(&self, cx: &PlanContext, id: &str, name: &NamedPartition, generation: i32) -> bool {
        self.may_hold
            .get(id)
            .and_then(|m| m.partitions.get(name))
            .is_some_and(|&given| generation <= given || cx.undated.contains(id))
    }

    /// Whether to stop giving `name` back to `id`, which holds it by our memory only: every
    /// gift restarts the clock after which we may forget it, so a member that never takes it
    /// up would keep it for good. Not before the member has presented unchanged bytes for the
    /// bound since the first plan that found it unconfirmed: a member that synced any of our
    /// gifts claims it — new bytes — at its next JoinGroup, which a new generation brings
    /// within a heartbeat interval. (Not giving it is not harmless: a member that does hold it
    /// revokes it.)
    fn stop_giving(&self, cx: &PlanContext, id: &str, name: &NamedPartition) -> bool {
        let key = (id.to_owned(), name.clone());
        let (Some(&since), Some((_, same_bytes))) =
            (self.memory_only_since.get(&key), self.bytes_since.get(id))
        else {
            return false;
        };
        cx.now >= since.max(*same_bytes) + cx.bound_ms
    }

    /// After the assignor (and `keep_with_remembered_owner`):
    /// - an overdue partition is no longer given back to a member that holds it by our memory
    ///   only and has not taken any of it up for the bound (`stop_giving`);
    /// - a partition given to a member barred from it, or handed to an unresponsive member,
    ///   goes to the subscribed member with the fewest partitions that may take it (nobody else
    ///   owns it), if there is one.
    ///
    /// Returns whether it withheld anything.
    pub(crate) fn enforce(
        &self,
        cx: &PlanContext,
        view: &GroupView,
        owners: &[Option<u32>],
        overdue: &Overdue,
        plan: &mut Plan,
    ) -> bool {
        if plan.assignments.len() != view.members.len() {
            return false; // validate() reports it
        }
        let offsets = view.topic_offsets();
        let claims = claimants(view);
        let mut withheld = false;
        for (m, list) in plan.assignments.iter_mut().enumerate() {
            let id = &view.members[m].member_id;
            if cx.takes_plan_as_given(id) {
                continue;
            }
            list.retain(|tp| {
                let keep = view.flat_index(&offsets, *tp).is_none_or(|p| {
                    !overdue.partitions.contains(&p)
                        || owners[p] != Some(m as u32)
                        || claims[p].contains(&m)
                        || !self.stop_giving(cx, id, &name_of(view, *tp))
                });
                withheld |= !keep;
                keep
            });
        }
        let unresponsive: Vec<bool> = view
            .members
            .iter()
            .map(|m| self.unresponsive.contains_key(&m.member_id))
            .collect();
        let unproven: Vec<bool> = view
            .members
            .iter()
            .map(|m| cx.unproven.contains(&m.member_id))
            .collect();
        if overdue.barred.is_empty()
            && !unresponsive.contains(&true)
            && (overdue.partitions.is_empty() || !unproven.contains(&true))
        {
            return withheld;
        }
        // A new hand-out to a member that may not take it up: one that never confirmed what
        // it was given, or — for a partition that has waited the bound already — one that has
        // never synced at all (a member that joined and died would cost a second bound).
        let barred = |m: usize, p: usize| {
            let new = !claims[p].contains(&m) && owners[p] != Some(m as u32);
            overdue.barred.contains(&(m, p))
                || (new && unresponsive[m])
                || (new && unproven[m] && overdue.partitions.contains(&p))
        };
        let mut moves = Vec::new();
        for (m, list) in plan.assignments.iter().enumerate() {
            for tp in list {
                if let Some(p) = view.flat_index(&offsets, *tp) {
                    if barred(m, p) {
                        moves.push((m, *tp, p));
                    }
                }
            }
        }
        for (from, tp, p) in moves {
            let to = (0..view.members.len())
                .filter(|&t| t != from && !barred(t, p) && !unresponsive[t] && !unproven[t])
                .filter(|&t| view.members[t].topics.contains(&tp.topic))
                .filter(|&t| owners[p].is_none_or(|o| o as usize == t))
                .min_by_key(|&t| (plan.assignments[t].len(), t));
            if let Some(to) = to {
                plan.assignments[from].retain(|x| *x != tp);
                plan.assignments[to].push(tp);
            }
        }
        withheld
    }

    /// After the final plan: record who got what; a partition kept with the member that
    /// claims it is confirmed, any other stays unconfirmed until its holder's claim lists it.
    /// Returns when the next clock is due: the leader runs a round then at the latest, so that
    /// a hand-out nobody confirms (a member that missed the plan, or died) is noticed.
    pub(crate) fn after_plan(
        &mut self,
        cx: &PlanContext,
        heartbeat_ms: u64,
        view: &GroupView,
        owners: &[Option<u32>],
        plan: &Plan,
    ) -> Option<u64> {
        let (now, bound) = (cx.now, cx.bound_ms);
        let names = names(view);
        let offsets = view.topic_offsets();
        let claims = claimants(view);
        let mut given = vec![None; names.len()];
        self.last_plan.clear();
        for (m, list) in plan.assignments.iter().enumerate() {
            let id = &view.members[m].member_id;
            for tp in list {
                let Some(p) = view.flat_index(&offsets, *tp) else {
                    continue;
                };
                given[p] = Some(m);
                self.last_plan.insert(names[p].clone(), id.clone());
                if let Some(may) = self.may_hold.get_mut(id) {
                    may.partitions.insert(names[p].clone(), cx.generation);
                }
                // Its clock restarts at the next plan: it may take this gift up any time
                // before then.
                self.unconfirmed_since
                    .remove(&(id.clone(), names[p].clone()));
                if let Some((_, parts)) = self.ignored.get_mut(id) {
                    parts.remove(&names[p]); // its claim may be true from now on
                }
                if claims[p].contains(&m) || cx.takes_plan_as_given(id) {
                    self.unowned_since.remove(&names[p]);
                } else {
                    self.unowned_since.entry(names[p].clone()).or_insert(now);
                }
            }
        }
        let mut next: Option<u64> = None;
        let mut at = |t: u64| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for (p, name) in names.iter().enumerate() {
            let Some(&since) = self.unowned_since.get(name) else {
                continue;
            };
            match given[p] {
                // A new hand-out: confirmed at the next round, which must come within the
                // bound (soon, if the partition is overdue already).
                Some(m) if owners[p] != Some(m as u32) => at(if since + bound > now {
                    since + bound
                } else {
                    now + heartbeat_ms
                }),
                // Kept with a member that may hold it by our memory only: the follow-up rounds
                // (`keep_with_remembered_owner`) check it; due at the bound, and when we stop
                // giving it.
                Some(m) => {
                    at(since + bound);
                    let key = (view.members[m].member_id.clone(), name.clone());
                    if let (Some(&first), Some((_, same))) = (
                        self.memory_only_since.get(&key),
                        self.bytes_since.get(&key.0),
                    ) {
                        at(first.max(*same) + bound);
                    }
                }
                // Withheld: due at the bound; a claim blocking it, or the memory of a member,
                // once it has lasted the bound.
                None => {
                    at(since + bound);
                    for &m in &claims[p] {
                        let key = (view.members[m].member_id.clone(), name.clone());
                        if let Some(&c) = self.claimed_since.get(&key) {
                            at(c + bound);
                        }
                    }
                    if let Some(m) = owners[p] {
                        let key = (view.members[m as usize].member_id.clone(), name.clone());
                        if let Some(&u) = self.unconfirmed_since.get(&key) {
                            at(u + bound);
                        }
                    }
                }
            }
        }
        next
    }
}
