//! The cooperative (KIP-429) layer every assignor shares.
//!
//! An assignor computes a *target* — where every partition should end up. This module decides
//! who currently owns what ([`resolve_owners`]), cuts the target down to what may move this
//! round ([`withhold_transfers`]), checks the result ([`validate`]) and records it so the next
//! round can defend against stale metadata ([`to_issued`]).
//!
//! Everything works on flat partition indices ([`GroupView::flat_index`]) and member indices
//! (position in [`GroupView::members`]) so the large case (1 000 000 partitions) costs a few
//! linear passes over `Vec`s and no per-partition hashing.

use std::collections::HashMap;

use crate::model::{AssignError, Assignor, GroupView, IssuedPlan, Plan, Tp};

/// Sentinel in per-partition member slots: nobody.
const NONE: u32 = u32::MAX;
/// Sentinel: two members made equally strong claims, so neither counts (KIP-429 rule).
const CONFLICT: u32 = u32::MAX - 1;

/// Per-partition "best claim so far", shared by [`resolve_owners`] and [`sticky_hints`].
struct Claims {
    generation: Vec<i32>,
    member: Vec<u32>,
}

impl Claims {
    fn new(partitions: usize) -> Self {
        Claims {
            generation: vec![i32::MIN; partitions],
            member: vec![NONE; partitions],
        }
    }

    /// Ownership semantics: the highest generation wins; a tie between two *different* members
    /// invalidates both (a third, lower claim must not then win, so the tie keeps the
    /// generation). The same member claiming twice (duplicates, or a claim plus the leader's
    /// memory) is not a conflict. The result does not depend on the order of offers.
    fn offer_owner(&mut self, p: usize, member: u32, generation: i32) {
        let (g, m) = (self.generation[p], self.member[p]);
        if m == NONE || generation > g {
            self.generation[p] = generation;
            self.member[p] = member;
        } else if generation == g && m != member {
            self.member[p] = CONFLICT;
        }
    }

    /// Preference semantics: highest generation, then lowest member index. Never conflicts,
    /// because a hint only says whom to prefer, not who may safely be given the partition.
    fn offer_hint(&mut self, p: usize, member: u32, generation: i32) {
        let (g, m) = (self.generation[p], self.member[p]);
        if m == NONE || generation > g || (generation == g && member < m) {
            self.generation[p] = generation;
            self.member[p] = member;
        }
    }

    fn into_conflicts(self) -> Vec<bool> {
        self.member.into_iter().map(|m| m == CONFLICT).collect()
    }

    fn into_members(self) -> Vec<Option<u32>> {
        self.member
            .into_iter()
            .map(|m| {
                if m == NONE || m == CONFLICT {
                    None
                } else {
                    Some(m)
                }
            })
            .collect()
    }
}

/// Reusable "is topic t subscribed by the current member" table: set a member's topics, ask,
/// clear. Costs O(topics of the member) per member instead of one allocation each, and copes
/// with unsorted or out-of-range topic indices in hostile input.
pub(crate) struct SubscriptionMask {
    subscribed: Vec<bool>,
    set: Vec<usize>,
}

impl SubscriptionMask {
    pub(crate) fn new(topics: usize) -> Self {
        SubscriptionMask {
            subscribed: vec![false; topics],
            set: Vec::new(),
        }
    }

    /// Make the mask reflect `topics` (replacing the previous member's).
    pub(crate) fn load(&mut self, topics: &[u32]) {
        for &t in &self.set {
            self.subscribed[t] = false;
        }
        self.set.clear();
        for &t in topics {
            let t = t as usize;
            if let Some(slot) = self.subscribed.get_mut(t) {
                if !*slot {
                    *slot = true;
                    self.set.push(t);
                }
            }
        }
    }

    pub(crate) fn contains(&self, topic: u32) -> bool {
        self.subscribed
            .get(topic as usize)
            .copied()
            .unwrap_or(false)
    }
}

/// Each member's subscription as the assignors use it: topic indices that exist, sorted and
/// deduplicated. The decoder promises this already; hostile or buggy input must not be able to
/// break an assignor's invariants, so they re-derive it (cost: one small sort per member).
pub(crate) fn sanitized_topics(view: &GroupView) -> Vec<Vec<u32>> {
    let topics = view.topics.len();
    view.members
        .iter()
        .map(|m| {
            let mut t: Vec<u32> = m
                .topics
                .iter()
                .copied()
                .filter(|&t| (t as usize) < topics)
                .collect();
            t.sort_unstable();
            t.dedup();
            t
        })
        .collect()
}

/// Feed every member's valid claims (in range, in a subscribed topic) to `offer`.
fn for_each_valid_claim(
    view: &GroupView,
    offsets: &[usize],
    mut offer: impl FnMut(usize, u32, i32),
) {
    let mut mask = SubscriptionMask::new(view.topics.len());
    for (m, member) in view.members.iter().enumerate() {
        if member.owned.is_empty() {
            continue;
        }
        mask.load(&member.topics);
        for &tp in &member.owned {
            if !mask.contains(tp.topic) {
                continue;
            }
            if let Some(p) = view.flat_index(offsets, tp) {
                offer(p, m as u32, member.generation);
            }
        }
    }
}

/// Effective current owner of every partition (flat index) → member index, after applying the
/// ownership rules. `previous` is the plan this leader issued earlier, if any.
///
/// Rules, in the order they are applied:
/// - a member's claims count only for partitions in range and in topics it subscribes to (a
///   cooperative member revokes partitions of topics it dropped before it rejoins, and a member
///   whose subscription could not be decoded has no topics, so it owns nothing);
/// - the leader's memory: if `previous` (generation `G`) gave `p` to a member that is still in
///   the group with a generation below `G`, that member has not rejoined since, so the
///   metadata we see for it may be stale (brokers without a join barrier replay old owned
///   lists). It is treated as claiming `p` at generation `G`, which outranks every claim below
///   `G`. Members at `G` or later speak for themselves; entries for departed members are
///   dropped;
/// - the highest generation wins; two different members tied at the highest generation
///   invalidate each other and the partition is unowned.
///
/// The memory entry competes as an ordinary claim at `G`, so a contradicting claim at exactly
/// `G` makes the partition unowned, as docs/design.md §2.4 states for equal generations.
pub fn resolve_owners(view: &GroupView, previous: Option<&IssuedPlan>) -> Vec<Option<u32>> {
    ownership_claims(view, previous).into_members()
}

/// Partitions that two different members claim equally strongly (the same highest generation,
/// counting the leader's memory as in [`resolve_owners`]). Kafka's rule makes them unowned, so
/// an assignor may hand them to anyone at once; with a join barrier that is sound, but on a
/// broker that serves stale claims either claimant may still hold the partition. The leader
/// withholds them for a round instead: every claimant that is not given the partition revokes
/// it, and the next round finds it free.
pub fn contested(view: &GroupView, previous: Option<&IssuedPlan>) -> Vec<bool> {
    ownership_claims(view, previous).into_conflicts()
}

/// Every valid claim and the leader's memory, weighed by the ownership rules of
/// [`resolve_owners`]; it and [`contested`] read the two outcomes of the same weighing.
fn ownership_claims(view: &GroupView, previous: Option<&IssuedPlan>) -> Claims {
    let offsets = view.topic_offsets();
    let total = offsets.last().copied().unwrap_or(0);
    let mut claims = Claims::new(total);
    for_each_valid_claim(view, &offsets, |p, m, g| claims.offer_owner(p, m, g));
    if let Some(prev) = previous {
        apply_memory(view, &offsets, prev, &mut claims);
    }
    claims
}

/// Inject the leader's remembered plan as claims at the plan's generation for members that
/// have not rejoined since (see [`resolve_owners`]).
fn apply_memory(view: &GroupView, offsets: &[usize], prev: &IssuedPlan, claims: &mut Claims) {
    // One map per member (not per partition): member ids are unique in a group.
    let mut by_id: HashMap<&str, u32> = HashMap::with_capacity(view.members.len());
    for (m, member) in view.members.iter().enumerate() {
        by_id.entry(member.member_id.as_str()).or_insert(m as u32);
    }
    let mut mask = SubscriptionMask::new(view.topics.len());
    for (k, (member_id, parts)) in prev.assignments.iter().enumerate() {
        let Some(&m) = by_id.get(member_id.as_str()) else {
            continue; // departed: its partitions were lost with its session
        };
        let member = &view.members[m as usize];
        if member.generation >= prev.generation {
            continue; // rejoined since our plan: its own claims are current
        }
        mask.load(&member.topics);
        // The plan lists partitions grouped by topic, so caching the last lookup turns one
        // binary search per partition into one per topic.
        let mut last: Option<(&str, Option<u32>)> = None;
        for (j, (topic, partition)) in parts.iter().enumerate() {
            if prev.since(k, j) <= member.generation {
                continue; // handed over no later than its claim, which no longer lists it
            }
            let t = match last {
                Some((name, t)) if name == topic.as_str() => t,
                _ => {
                    let t = view.topic_index(topic);
                    last = Some((topic.as_str(), t));
                    t
                }
            };
            let Some(t) = t else { continue };
            if !mask.contains(t) {
                continue;
            }
            if let Some(p) = view.flat_index(offsets, Tp::new(t, *partition)) {
                claims.offer_owner(p, m, prev.generation);
            }
        }
    }
}

/// Per partition, the member with the best valid claim (highest generation, then lowest member
/// index), even when that claim does not amount to ownership (lost a tie, or outranked). Use it
/// as a stickiness preference for partitions [`resolve_owners`] left unowned.
pub fn sticky_hints(view: &GroupView) -> Vec<Option<u32>> {
    let offsets = view.topic_offsets();
    let total = offsets.last().copied().unwrap_or(0);
    let mut claims = Claims::new(total);
    for_each_valid_claim(view, &offsets, |p, m, g| claims.offer_hint(p, m, g));
    claims.into_members()
}

/// Cooperative adjustment: for every partition whose target member differs from its current
/// (resolved) owner and that has a current owner, remove it from the target member's list
/// (it is withheld this round: the old owner revokes it, it moves next round).
/// Returns how many partitions were withheld.
///
/// Entries the view cannot index (out of range) are left alone for [`validate`] to reject.
pub fn withhold_transfers(view: &GroupView, owners: &[Option<u32>], plan: &mut Plan) -> usize {
    let offsets = view.topic_offsets();
    let mut withheld = 0;
    for (m, list) in plan.assignments.iter_mut().enumerate() {
        let before = list.len();
        list.retain(|&tp| {
            match view
                .flat_index(&offsets, tp)
                .and_then(|p| owners.get(p).copied().flatten())
            {
                Some(owner) => owner as usize == m,
                None => true,
            }
        });
        withheld += before - list.len();
    }
    withheld
}

/// Validate a final plan: plan.assignments.len() == members.len(); every Tp in range and
/// subscribed by its member; no partition assigned twice; no partition newly added to a member
/// while another member still owns it (i.e. no partition both revoked and added in one round).
///
/// `plan.user_data` must be empty or have one entry per member, because the leader zips it with
/// the members when it builds SyncGroup.
pub fn validate(view: &GroupView, owners: &[Option<u32>], plan: &Plan) -> Result<(), AssignError> {
    let members = view.members.len();
    if plan.assignments.len() != members {
        return Err(invalid(format!(
            "{} assignment lists for {} members",
            plan.assignments.len(),
            members
        )));
    }
    if !plan.user_data.is_empty() && plan.user_data.len() != members {
        return Err(invalid(format!(
            "{} user data entries for {} members",
            plan.user_data.len(),
            members
        )));
    }
    let offsets = view.topic_offsets();
    let total = offsets.last().copied().unwrap_or(0);
    let mut assigned_to = vec![NONE; total];
    let mut mask = SubscriptionMask::new(view.topics.len());
    for (m, (member, list)) in view.members.iter().zip(&plan.assignments).enumerate() {
        mask.load(&member.topics);
        for &tp in list {
            let Some(p) = view.flat_index(&offsets, tp) else {
                return Err(invalid(format!(
                    "member {} given out-of-range {:?}",
                    member.member_id, tp
                )));
            };
            if !mask.contains(tp.topic) {
                return Err(invalid(format!(
                    "member {} given {:?} of a topic it does not subscribe to",
                    member.member_id, tp
                )));
            }
            if assigned_to[p] != NONE {
                return Err(invalid(format!(
                    "{:?} assigned twice (members {} and {})",
                    tp, assigned_to[p], m
                )));
            }
            assigned_to[p] = m as u32;
            if let Some(owner) = owners.get(p).copied().flatten() {
                if owner as usize != m {
                    return Err(invalid(format!(
                        "{:?} added to member {} while member {} still owns it",
                        tp, member.member_id, owner
                    )));
                }
            }
        }
    }
    Ok(())
}

fn invalid(msg: String) -> AssignError {
    AssignError::InvalidPlan(msg)
}

/// Convert a plan into the by-name form the leader remembers for next time.
///
/// Every member is listed, even with nothing assigned, and entries the view cannot name are
/// skipped (a validated plan has none).
pub fn to_issued(view: &GroupView, plan: &Plan) -> IssuedPlan {
    let offsets = view.topic_offsets();
    let assignments: Vec<(String, Vec<(String, i32)>)> = view
        .members
        .iter()
        .zip(&plan.assignments)
        .map(|(member, list)| {
            let parts = list
                .iter()
                .filter(|&&tp| view.flat_index(&offsets, tp).is_some())
                .map(|tp| (view.topics[tp.topic as usize].name.clone(), tp.partition))
                .collect();
            (member.member_id.clone(), parts)
        })
        .collect();
    let since = assignments
        .iter()
        .map(|(_, parts)| vec![view.generation; parts.len()])
        .collect();
    IssuedPlan {
        generation: view.generation,
        assignments,
        since,
    }
}

/// The last step of every assignor: withhold transfers from a target plan, then validate it.
/// Returns how many partitions were withheld.
pub fn finalize(
    view: &GroupView,
    owners: &[Option<u32>],
    plan: &mut Plan,
) -> Result<usize, AssignError> {
    let withheld = withhold_transfers(view, owners, plan);
    validate(view, owners, plan)?;
    Ok(withheld)
}

/// An assignor's whole round for a target computed from the current owners: resolve who owns
/// what (with the leader's memory `previous`), let `target` place every partition, then
/// [`finalize`]. Assignors that only need the plan use this; one that also reports what was
/// withheld calls [`resolve_owners`] and [`finalize`] itself.
pub fn cooperative_plan(
    view: &GroupView,
    previous: Option<&IssuedPlan>,
    target: impl FnOnce(&[Option<u32>]) -> Plan,
) -> Result<Plan, AssignError> {
    let owners = resolve_owners(view, previous);
    let mut plan = target(&owners);
    finalize(view, &owners, &mut plan)?;
    Ok(plan)
}

/// An eager assignor (Kafka's `range`, the simulator's baselines): members revoke everything
/// before they rejoin, so it places every partition from the view alone, without asking who
/// owns what. Such a type is an [`Assignor`] whose plan is its target run through
/// [`cooperative_plan`], which keeps it safe with members that keep their partitions too.
pub trait EagerAssignor: Send {
    /// Protocol name announced in JoinGroup.
    const NAME: &'static str;

    /// Where every partition of every subscribed topic goes, before the cooperative adjustment.
    fn target(&self, view: &GroupView) -> Plan;
}

impl<T: EagerAssignor> Assignor for T {
    fn name(&self) -> &str {
        T::NAME
    }

    fn cooperative(&self) -> bool {
        false
    }

    fn assign(
        &mut self,
        view: &GroupView,
        previous: Option<&IssuedPlan>,
    ) -> Result<Plan, AssignError> {
        cooperative_plan(view, previous, |_owners| self.target(view))
    }
}

/// The leader's ownership memory after issuing `plan` (for `view.generation`): per member,
/// every partition it may hold until it next rejoins with a current claim.
///
/// A member holds what it claimed until it applies this plan, and then what the plan gives
/// it; it may also hold whatever `previous` remembered for it that an earlier plan handed it
/// *after* its claim (it may have synced a plan whose result we never saw). What it was handed
/// (or claimed) no later than its current claim and no longer claims, it has let go: a member
/// only gains partitions by syncing a plan. Remembering only the last plan (`to_issued`) is not
/// enough on a broker without a join barrier: a member whose join is held back keeps
/// presenting its old claim while the leader issues several plans, and a partition revoked
/// from it in a plan it never received would look free one round later — that double
/// ownership was seen on tansu 0.6.0 (a follower's join is held 3 s there). Remembering
/// everything until the claim caught up with the memory, as we first did, handed a member
/// back the partitions it had just revoked, round after round (seen there too).
pub fn remember(view: &GroupView, previous: Option<&IssuedPlan>, plan: &Plan) -> IssuedPlan {
    let offsets = view.topic_offsets();
    let name = |tp: &Tp| (view.topics[tp.topic as usize].name.clone(), tp.partition);
    let mut assignments = Vec::with_capacity(view.members.len());
    let mut since = Vec::with_capacity(view.members.len());
    for (i, member) in view.members.iter().enumerate() {
        let mut may_hold: std::collections::BTreeMap<(String, i32), i32> = Default::default();
        let valid = |tp: &&Tp| view.flat_index(&offsets, **tp).is_some();
        for tp in plan.assignments.get(i).into_iter().flatten().filter(valid) {
            may_hold.insert(name(tp), view.generation);
        }
        for tp in member.owned.iter().filter(valid) {
            let at = may_hold.entry(name(tp)).or_insert(member.generation);
            *at = (*at).max(member.generation);
        }
        if let Some(prev) = previous {
            if let Some((k, (_, parts))) = prev
                .assignments
                .iter()
                .enumerate()
                .find(|(_, (id, _))| *id == member.member_id)
            {
                for (j, part) in parts.iter().enumerate() {
                    let at = prev.since(k, j);
                    if at > member.generation {
                        let e = may_hold.entry(part.clone()).or_insert(at);
                        *e = (*e).max(at);
                    }
                }
            }
        }
        let (parts, ats): (Vec<_>, Vec<_>) = may_hold.into_iter().unzip();
        assignments.push((member.member_id.clone(), parts));
        since.push(ats);
    }
    IssuedPlan {
        generation: view.generation,
        assignments,
        since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{member, view};

    fn plan(lists: Vec<Vec<(u32, i32)>>) -> Plan {
        Plan {
            assignments: lists
                .into_iter()
                .map(|l| l.into_iter().map(|(t, p)| Tp::new(t, p)).collect())
                .collect(),
            user_data: Vec::new(),
        }
    }

    fn issued(generation: i32, lists: &[(&str, &[(&str, i32)])]) -> IssuedPlan {
        IssuedPlan {
            since: Vec::new(),
            generation,
            assignments: lists
                .iter()
                .map(|(id, parts)| {
                    (
                        id.to_string(),
                        parts.iter().map(|&(t, p)| (t.to_string(), p)).collect(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn claims_count_only_in_range_and_subscribed() {
        // Topic 0 has 3 partitions, topic 1 has 2; A subscribes to topic 0 only.
        let v = view(
            2,
            &[("a", 3), ("b", 2)],
            vec![member(
                "A",
                &[0, 9],
                &[(0, 1), (0, 3), (0, -1), (1, 0), (9, 0)],
                1,
            )],
        );
        let owners = resolve_owners(&v, None);
        assert_eq!(owners, vec![None, Some(0), None, None, None]);
    }

    #[test]
    fn higher_generation_wins() {
        let v = view(
            6,
            &[("a", 2)],
            vec![
                member("A", &[0], &[(0, 0)], 3),
                member("B", &[0], &[(0, 0), (0, 1)], 5),
            ],
        );
        assert_eq!(resolve_owners(&v, None), vec![Some(1), Some(1)]);
    }

    #[test]
    fn equal_generations_invalidate_both_and_lower_claims_do_not_step_in() {
        let v = view(
            6,
            &[("a", 1)],
            vec![
                member("A", &[0], &[(0, 0)], 5),
                member("B", &[0], &[(0, 0)], 5),
                member("C", &[0], &[(0, 0)], 4),
            ],
        );
        assert_eq!(resolve_owners(&v, None), vec![None]);
        // As a preference, the best claim still counts: highest generation, lowest index.
        assert_eq!(sticky_hints(&v), vec![Some(0)]);
    }

    #[test]
    fn a_member_repeating_its_own_claim_is_no_conflict() {
        let v = view(
            3,
            &[("a", 1)],
            vec![member("A", &[0], &[(0, 0), (0, 0)], 2)],
        );
        assert_eq!(resolve_owners(&v, None), vec![Some(0)]);
    }

    #[test]
    fn sticky_hints_prefer_higher_generation_then_lower_index() {
        let v = view(
            9,
            &[("a", 3)],
            vec![
                member("A", &[0], &[(0, 0), (0, 1)], 2),
                member("B", &[0], &[(0, 0), (0, 2)], 3),
                member("C", &[0], &[(0, 1)], 2),
            ],
        );
        // p0: B (gen 3) beats A (gen 2). p1: A and C tie at 2 → A (lower index). p2: B.
        assert_eq!(sticky_hints(&v), vec![Some(1), Some(0), Some(1)]);
        // Ownership: p1's tie makes it unowned.
        assert_eq!(resolve_owners(&v, None), vec![Some(1), None, Some(1)]);
    }

    #[test]
    fn stale_metadata_is_overridden_by_the_leaders_memory() {
        // Leader issued generation 5: p0 to A. B's metadata is stale (gen 4, still claims p0);
        // A's metadata is also from gen 4 and does not list p0 yet.
        let v = view(
            6,
            &[("t", 1)],
            vec![member("A", &[0], &[], 4), member("B", &[0], &[(0, 0)], 4)],
        );
        let prev = issued(5, &[("A", &[("t", 0)]), ("B", &[])]);
        assert_eq!(resolve_owners(&v, Some(&prev)), vec![Some(0)]);
        // Without the memory we would believe B's stale claim, which is the tansu bug.
        assert_eq!(resolve_owners(&v, None), vec![Some(1)]);
    }

    #[test]
    fn a_member_that_rejoined_speaks_for_itself() {
        let prev = issued(5, &[("A", &[("t", 0), ("t", 1)])]);
        // A rejoined at gen 5 and now claims only p1 (it revoked p0): p0 is free.
        let v = view(6, &[("t", 2)], vec![member("A", &[0], &[(0, 1)], 5)]);
        assert_eq!(resolve_owners(&v, Some(&prev)), vec![None, Some(0)]);
    }

    #[test]
    fn memory_of_departed_members_is_dropped() {
        let prev = issued(5, &[("GONE", &[("t", 0)]), ("B", &[("t", 1)])]);
        let v = view(6, &[("t", 2)], vec![member("B", &[0], &[(0, 0)], 4)]);
        // B's gen-4 claim to p0 stands, since GONE's memory entry is dropped; p1 is pinned to
        // B by the memory (B has not rejoined since generation 5).
        assert_eq!(resolve_owners(&v, Some(&prev)), vec![Some(0), Some(0)]);
    }

    #[test]
    fn memory_loses_to_a_newer_claim_and_ties_at_its_generation() {
        let prev = issued(5, &[("A", &[("t", 0), ("t", 1)])]);
        let v = view(
            8,
            &[("t", 2)],
            vec![member("A", &[0], &[], 4), member("B", &[0], &[(0, 0)], 6)],
        );
        assert_eq!(resolve_owners(&v, Some(&prev)), vec![Some(1), Some(0)]);
        let v = view(
            8,
            &[("t", 2)],
            vec![member("A", &[0], &[], 4), member("B", &[0], &[(0, 0)], 5)],
        );
        assert_eq!(resolve_owners(&v, Some(&prev)), vec![None, Some(0)]);
    }

    #[test]
    fn memory_ignores_unknown_topics_and_out_of_range_partitions() {
        let prev = issued(5, &[("A", &[("t", 0), ("t", 7), ("t", -3), ("zzz", 0)])]);
        let v = view(6, &[("t", 2)], vec![member("A", &[0], &[], 4)]);
        assert_eq!(resolve_owners(&v, Some(&prev)), vec![Some(0), None]);
    }

    #[test]
    fn undecodable_members_own_nothing_even_if_remembered() {
        let prev = issued(5, &[("A", &[("t", 0)])]);
        let v = view(6, &[("t", 1)], vec![member("A", &[], &[], -1)]);
        assert_eq!(resolve_owners(&v, Some(&prev)), vec![None]);
        assert_eq!(sticky_hints(&v), vec![None]);
    }

    #[test]
    fn empty_group_and_empty_topics() {
        let v = view(1, &[], vec![]);
        assert!(resolve_owners(&v, None).is_empty());
        assert_eq!(validate(&v, &[], &plan(vec![])), Ok(()));
    }

    fn two_members() -> GroupView {
        view(
            3,
            &[("a", 2), ("b", 2)],
            vec![
                member("A", &[0], &[(0, 0)], 2),
                member("B", &[0, 1], &[], 2),
            ],
        )
    }

    #[test]
    fn validate_accepts_a_good_plan() {
        let v = two_members();
        let owners = resolve_owners(&v, None);
        let p = plan(vec![vec![(0, 0)], vec![(0, 1), (1, 0), (1, 1)]]);
        assert_eq!(validate(&v, &owners, &p), Ok(()));
    }

    #[test]
    fn validate_rejects_each_kind_of_bad_plan() {
        let v = two_members();
        let owners = resolve_owners(&v, None);
        let bad = [
            ("wrong member count", plan(vec![vec![(0, 0)]])),
            ("out of range", plan(vec![vec![(0, 2)], vec![]])),
            ("negative partition", plan(vec![vec![], vec![(1, -1)]])),
            ("unknown topic", plan(vec![vec![], vec![(5, 0)]])),
            ("not subscribed", plan(vec![vec![(1, 0)], vec![]])),
            ("twice", plan(vec![vec![(0, 1)], vec![(0, 1)]])),
            (
                "twice in one list",
                plan(vec![vec![], vec![(1, 1), (1, 1)]]),
            ),
            ("added while owned", plan(vec![vec![], vec![(0, 0)]])),
        ];
        for (what, p) in bad {
            assert!(
                matches!(validate(&v, &owners, &p), Err(AssignError::InvalidPlan(_))),
                "{what} accepted"
            );
        }
        let mut p = plan(vec![vec![], vec![]]);
        p.user_data = vec![None];
        assert!(
            validate(&v, &owners, &p).is_err(),
            "user data length accepted"
        );
    }

    #[test]
    fn withholding_makes_a_moving_target_valid() {
        let v = view(
            3,
            &[("a", 4)],
            vec![
                member("A", &[0], &[(0, 0), (0, 1), (0, 2)], 2),
                member("B", &[0], &[(0, 3)], 2),
            ],
        );
        let owners = resolve_owners(&v, None);
        // Target: A keeps p0, gives p1/p2 away; B keeps p3 and takes p1, p2.
        let mut p = plan(vec![vec![(0, 0)], vec![(0, 1), (0, 2), (0, 3)]]);
        assert!(validate(&v, &owners, &p).is_err());
        assert_eq!(withhold_transfers(&v, &owners, &mut p), 2);
        assert_eq!(p, plan(vec![vec![(0, 0)], vec![(0, 3)]]));
        assert_eq!(validate(&v, &owners, &p), Ok(()));
    }

    #[test]
    fn withholding_keeps_unowned_and_out_of_range_entries() {
        let v = view(3, &[("a", 2)], vec![member("A", &[0], &[], 2)]);
        let owners = resolve_owners(&v, None);
        let mut p = plan(vec![vec![(0, 0), (0, 9)]]);
        assert_eq!(withhold_transfers(&v, &owners, &mut p), 0);
        assert_eq!(p.assignments[0].len(), 2);
        assert!(
            validate(&v, &owners, &p).is_err(),
            "out-of-range must still be caught"
        );
    }

    /// The ping-pong seen on tansu: a member whose join is held presents claims that lag the
    /// leader's memory. What it was handed no later than its claim and no longer claims, it
    /// has revoked — that must not come back to it; what a later plan handed it, it may hold.
    #[test]
    fn memory_forgets_what_a_newer_claim_gave_up_and_keeps_later_hand_outs() {
        // Generation 10: C claims (from generation 8) partitions 0..4 of topic a.
        let v10 = view(
            10,
            &[("a", 6)],
            vec![
                member("A", &[0], &[(0, 4), (0, 5)], 8),
                member("C", &[0], &[(0, 0), (0, 1), (0, 2), (0, 3)], 8),
            ],
        );
        // The plan keeps only 0 with C (1..3 are withheld: C must revoke them first).
        let p10 = plan(vec![vec![(0, 4), (0, 5)], vec![(0, 0)]]);
        let m10 = remember(&v10, None, &p10);
        // Generation 12: A leads again and hands C partition 1 back (say, a plan of its own).
        // C's claim still shows generation 8 (its join was held): it may hold everything.
        let v12 = view(
            12,
            &[("a", 6)],
            vec![
                member("A", &[0], &[(0, 4), (0, 5)], 10),
                member("C", &[0], &[(0, 0), (0, 1), (0, 2), (0, 3)], 8),
            ],
        );
        let p12 = plan(vec![vec![(0, 4), (0, 5)], vec![(0, 0), (0, 1)]]);
        let m12 = remember(&v12, Some(&m10), &p12);
        // Generation 13: C's claim is from generation 10 — it synced plan 10 and revoked
        // 1, 2 and 3. It may hold 1 again (plan 12 came after its claim), not 2 or 3.
        let v13 = view(
            13,
            &[("a", 6)],
            vec![
                member("A", &[0], &[(0, 4), (0, 5)], 12),
                member("C", &[0], &[(0, 0)], 10),
            ],
        );
        let owners = resolve_owners(&v13, Some(&m12));
        assert_eq!(owners[0], Some(1));
        assert_eq!(
            owners[1],
            Some(1),
            "handed out after C's claim: C may hold it"
        );
        assert_eq!(owners[2], None, "revoked by C's generation-10 claim");
        assert_eq!(owners[3], None, "revoked by C's generation-10 claim");
        let p13 = plan(vec![
            vec![(0, 2), (0, 4), (0, 5)],
            vec![(0, 0), (0, 1), (0, 3)],
        ]);
        let m13 = remember(&v13, Some(&m12), &p13);
        let c = m13
            .assignments
            .iter()
            .position(|(id, _)| id == "C")
            .unwrap();
        assert_eq!(
            m13.assignments[c].1,
            vec![("a".into(), 0), ("a".into(), 1), ("a".into(), 3)]
        );
        // Without the refinement, the old claim's partitions would still be remembered.
        assert!(!m13.assignments[c].1.contains(&("a".into(), 2)));
    }

    #[test]
    fn equally_strong_claims_are_contested_and_nothing_else_is() {
        // A and B both claim a/0 at generation 5 (one of them from stale metadata); A alone
        // claims a/1; B claims a/2 at 5 and A at 4 (B wins, not contested).
        let v = view(
            6,
            &[("a", 4)],
            vec![
                member("A", &[0], &[(0, 0), (0, 1)], 5),
                member("B", &[0], &[(0, 0), (0, 2)], 5),
                member("C", &[0], &[(0, 2)], 4),
            ],
        );
        assert_eq!(contested(&v, None), vec![true, false, false, false]);
        let owners = resolve_owners(&v, None);
        assert_eq!(owners[0], None, "Kafka's rule: a tie is unowned");
        assert_eq!(owners[2], Some(1));
    }

    #[test]
    fn issued_plan_round_trips_through_memory() {
        let v = two_members();
        let p = plan(vec![vec![(0, 0)], vec![(0, 1), (1, 0), (1, 1)]]);
        let prev = to_issued(&v, &p);
        assert_eq!(prev.generation, 3);
        assert_eq!(
            prev.assignments,
            vec![
                ("A".to_string(), vec![("a".to_string(), 0)]),
                (
                    "B".to_string(),
                    vec![
                        ("a".to_string(), 1),
                        ("b".to_string(), 0),
                        ("b".to_string(), 1)
                    ]
                ),
            ]
        );
        // Next round, both members still show generation-2 metadata without what they got:
        // the memory makes each the owner of exactly what it was given.
        let next = view(
            4,
            &[("a", 2), ("b", 2)],
            vec![member("A", &[0], &[], 2), member("B", &[0, 1], &[], 2)],
        );
        assert_eq!(
            resolve_owners(&next, Some(&prev)),
            vec![Some(0), Some(1), Some(1), Some(1)]
        );
    }
}
