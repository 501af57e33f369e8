//! Kafka's `cooperative-sticky` assignor.
//!
//! Guarantees (as Kafka's `AbstractStickyAssignor`): every partition of a subscribed topic is in
//! the target exactly once, and only with a subscriber; the target is as balanced as the
//! subscriptions allow (within one partition when everyone subscribes to the same topics); and
//! members keep what they validly own (then what they claimed, see [`sticky_hints`]) unless
//! balance requires otherwise. The plan handed out is the target after
//! [`withhold_transfers`](crate::cooperative::withhold_transfers).
//!
//! Two paths, chosen per call:
//! - **equal subscriptions** (everyone with a usable subscription has the same topics): quotas
//!   are known up front (`n / m`, `n % m` members one more), so it is a few linear passes over
//!   flat arrays — Kafka's 1 000 000 × 2 000 case in tens of milliseconds;
//! - **general**: balance is solved on per-(member, topic) counts as a flow problem — start from
//!   what members keep, let the least-loaded members take the rest (each from its topic with
//!   the most unplaced partitions per subscriber), then shift load along
//!   augmenting paths (member → topic it holds → other subscriber → …) while some member holds
//!   two or more partitions more than a member it can reach. When no such path exists the
//!   counts are optimal for every convex balance measure, which is stronger than Kafka's
//!   single-move rebalancing. Paths are searched cheapest-first (0-1 BFS) where moving a
//!   partition nobody has to revoke is free, so balance costs as few revocations as the search
//!   can find. Partitions are then placed per topic, owners first. Cost at 1 000 000 × 2 000
//!   with unequal subscriptions: 0.15–0.65 s (100–500 topics; the scale_bench example).

// Loops here walk several parallel flat arrays (keeper, owned, assigned_to) by partition index;
// an index is clearer than zipping three iterators over sub-ranges.
#![allow(clippy::needless_range_loop)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::cooperative::{cooperative_plan, sanitized_topics, sticky_hints};
use crate::model::{AssignError, Assignor, GroupView, IssuedPlan, Plan, Tp};

/// Protocol name announced in JoinGroup.
pub const COOPERATIVE_STICKY: &str = "cooperative-sticky";

const NONE: u32 = u32::MAX;

/// Kafka's `CooperativeStickyAssignor`.
#[derive(Clone, Debug, Default)]
pub struct CooperativeStickyAssignor;

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &str {
        COOPERATIVE_STICKY
    }

    fn assign(
        &mut self,
        view: &GroupView,
        previous: Option<&IssuedPlan>,
    ) -> Result<Plan, AssignError> {
        cooperative_plan(view, previous, |owners| {
            sticky_target(view, owners, &sticky_hints(view))
        })
    }
}

/// The sticky target before the cooperative adjustment: every partition of a subscribed topic
/// assigned exactly once, to a subscriber. `owners` comes from
/// [`resolve_owners`](crate::cooperative::resolve_owners), `hints`
/// from [`sticky_hints`]; entries that do not fit the view (wrong length, unknown member, member
/// not subscribed) are ignored.
pub fn sticky_target(view: &GroupView, owners: &[Option<u32>], hints: &[Option<u32>]) -> Plan {
    let ctx = Ctx::new(view, owners, hints);
    let assigned_to = match equal_subscription(&ctx.subs) {
        Some(topics) => ctx.assign_equal(topics),
        None => ctx.assign_general(),
    };
    ctx.into_plan(&assigned_to)
}

/// Assign through the general (unequal-subscription) path even when subscriptions are equal.
/// Exposed so tests can check both paths agree on balance; assignors use [`sticky_target`].
pub fn sticky_target_general(
    view: &GroupView,
    owners: &[Option<u32>],
    hints: &[Option<u32>],
) -> Plan {
    let ctx = Ctx::new(view, owners, hints);
    let assigned_to = ctx.assign_general();
    ctx.into_plan(&assigned_to)
}

/// The shared topic list if every member with a non-empty subscription has the same one.
/// Members with nothing usable (undecodable, or only unknown topics) cannot take partitions and
/// do not break equality.
fn equal_subscription(subs: &[Vec<u32>]) -> Option<&[u32]> {
    let mut shared: Option<&[u32]> = None;
    for s in subs.iter().filter(|s| !s.is_empty()) {
        match shared {
            None => shared = Some(s),
            Some(x) if x == s.as_slice() => {}
            Some(_) => return None,
        }
    }
    Some(shared.unwrap_or(&[]))
}

/// Inputs in the dense form both paths use.
struct Ctx<'a> {
    view: &'a GroupView,
    offsets: Vec<usize>,
    subs: Vec<Vec<u32>>,
    /// Per flat partition, the member that should keep it if it can: the resolved owner, else
    /// the best claimant. `NONE` when nobody (or an entry that does not fit the view).
    keeper: Vec<u32>,
    /// Whether `keeper` is an owner (moving it away forces a revocation) or only a hint.
    owned: Vec<bool>,
}

impl<'a> Ctx<'a> {
    fn new(view: &'a GroupView, owners: &[Option<u32>], hints: &[Option<u32>]) -> Self {
        let offsets = view.topic_offsets();
        let total = offsets.last().copied().unwrap_or(0);
        let subs = sanitized_topics(view);
        let mut keeper = vec![NONE; total];
        let mut owned = vec![false; total];
        for t in 0..view.topics.len() {
            for p in offsets[t]..offsets[t + 1] {
                let fits = |m: Option<u32>| {
                    m.filter(|&m| {
                        subs.get(m as usize)
                            .is_some_and(|s| s.binary_search(&(t as u32)).is_ok())
                    })
                };
                if let Some(m) = fits(owners.get(p).copied().flatten()) {
                    keeper[p] = m;
                    owned[p] = true;
                } else if owners.get(p).copied().flatten().is_none() {
                    // A hint must not override an owner, even one that cannot keep it
                    // (that partition has to be revoked, and hints do not change that).
                    if let Some(m) = fits(hints.get(p).copied().flatten()) {
                        keeper[p] = m;
                    }
                }
            }
        }
        Ctx {
            view,
            offsets,
            subs,
            keeper,
            owned,
        }
    }

    fn members(&self) -> usize {
        self.view.members.len()
    }

    /// Equal subscriptions: Kafka's constrained algorithm on flat arrays.
    ///
    /// Quotas: `base = n / m`, and `extra = n % m` members may hold `base + 1`. (1) Members keep
    /// what they own up to their quota; the extra slots go to members that own more than
    /// `base`, in member order. (2) Unowned partitions go to their hinted claimant if it has
    /// room. (3) The rest are dealt round-robin to members below `base` (round-robin spreads each
    /// member over topics), then one each to members at `base` while extra slots remain.
    fn assign_equal(&self, topics: &[u32]) -> Vec<u32> {
        let total = self.keeper.len();
        let mut assigned_to = vec![NONE; total];
        let participants: Vec<u32> = (0..self.members())
            .filter(|&m| !self.subs[m].is_empty())
            .map(|m| m as u32)
            .collect();
        if participants.is_empty() {
            return assigned_to;
        }
        // Flat ranges of the shared topics, in flat order.
        let ranges: Vec<(usize, usize)> = topics
            .iter()
            .map(|&t| (self.offsets[t as usize], self.offsets[t as usize + 1]))
            .collect();
        let n: usize = ranges.iter().map(|(a, b)| b - a).sum();
        let base = n / participants.len();
        let extra = n % participants.len();

        // (1) Owned counts decide who gets the extra slots; then keep up to the cap.
        let mut owned_count = vec![0usize; self.members()];
        for &(a, b) in &ranges {
            for p in a..b {
                if self.owned[p] {
                    owned_count[self.keeper[p] as usize] += 1;
                }
            }
        }
        let mut cap = vec![0usize; self.members()];
        let mut extras_used = 0;
        for &m in &participants {
            let m = m as usize;
            cap[m] = if owned_count[m] > base && extras_used < extra {
                extras_used += 1;
                base + 1
            } else {
                base
            };
        }
        let mut count = vec![0usize; self.members()];
        for &(a, b) in &ranges {
            for p in a..b {
                let k = self.keeper[p] as usize;
                if self.owned[p] && count[k] < cap[k] {
                    assigned_to[p] = k as u32;
                    count[k] += 1;
                }
            }
        }
        // (2) Hints, for partitions nobody owns.
        for &(a, b) in &ranges {
            for p in a..b {
                if self.owned[p] || self.keeper[p] == NONE {
                    continue;
                }
                let k = self.keeper[p] as usize;
                if count[k] < base || (count[k] == base && extras_used < extra) {
                    if count[k] == base {
                        extras_used += 1;
                    }
                    assigned_to[p] = k as u32;
                    count[k] += 1;
                }
            }
        }
        // (3) Deal the rest.
        let free: Vec<usize> = ranges
            .iter()
            .flat_map(|&(a, b)| a..b)
            .filter(|&p| assigned_to[p] == NONE)
            .collect();
        let mut free = free.into_iter();
        let mut needy: Vec<u32> = participants
            .iter()
            .copied()
            .filter(|&m| count[m as usize] < base)
            .collect();
        'deal: while !needy.is_empty() {
            let mut still = 0;
            for i in 0..needy.len() {
                let m = needy[i];
                let Some(p) = free.next() else { break 'deal };
                assigned_to[p] = m;
                count[m as usize] += 1;
                if count[m as usize] < base {
                    needy[still] = m;
                    still += 1;
                }
            }
            needy.truncate(still);
        }
        // Exactly `extra - extras_used` partitions remain now; members at `base` take one each.
        // Cycling keeps the target complete even if that arithmetic were ever wrong.
        let mut at_base = participants
            .iter()
            .copied()
            .filter(|&m| count[m as usize] == base)
            .chain(participants.iter().copied())
            .cycle();
        for p in free {
            if let Some(m) = at_base.next() {
                assigned_to[p] = m;
            }
        }
        assigned_to
    }

    /// Unequal subscriptions: balance per-(member, topic) counts, then place partitions.
    fn assign_general(&self) -> Vec<u32> {
        let members = self.members();
        let topics = self.view.topics.len();
        let mut subscribers: Vec<Vec<u32>> = vec![Vec::new(); topics];
        for (m, s) in self.subs.iter().enumerate() {
            for &t in s {
                subscribers[t as usize].push(m as u32);
            }
        }
        // x[m][i] = partitions of topic subs[m][i] that m gets; kept[m][i] = how many of those
        // it already holds (moving below that forces a revocation or loses a hint).
        let mut x: Vec<Vec<u32>> = self.subs.iter().map(|s| vec![0; s.len()]).collect();
        let mut kept: Vec<Vec<u32>> = x.clone();
        let mut total = vec![0u64; members];
        let mut unplaced = vec![0u32; topics];
        for t in 0..topics {
            if subscribers[t].is_empty() {
                continue;
            }
            for p in self.offsets[t]..self.offsets[t + 1] {
                let k = self.keeper[p];
                if k == NONE {
                    unplaced[t] += 1;
                    continue;
                }
                let k = k as usize;
                // `keeper` only holds members subscribed to `t`, so the search succeeds.
                if let Ok(i) = self.subs[k].binary_search(&(t as u32)) {
                    x[k][i] += 1;
                    kept[k][i] += 1;
                    total[k] += 1;
                }
            }
        }

        // Hand out what nobody keeps: the least-loaded member that can still take something
        // takes a partition of the topic under most pressure among its topics (unplaced
        // partitions per subscriber: the topic that will be hardest to drain). Only the
        // taker's load changes, so one exact heap of members suffices; the scan over the
        // taker's topics reads two small arrays. The balancer repairs what this greedy gets
        // wrong, which in the scale benchmark is a few milliseconds of work.
        let mut heap: BinaryHeap<Reverse<(u64, u32)>> = (0..members)
            .filter(|&m| self.subs[m].iter().any(|&t| unplaced[t as usize] > 0))
            .map(|m| Reverse((total[m], m as u32)))
            .collect();
        while let Some(Reverse((_, m))) = heap.pop() {
            let mu = m as usize;
            // Highest unplaced/subscribers, compared by cross-multiplying; ties → lowest topic.
            let mut pick: Option<(usize, u64, u64)> = None;
            for (i, &t) in self.subs[mu].iter().enumerate() {
                let (left, subs_t) = (
                    u64::from(unplaced[t as usize]),
                    subscribers[t as usize].len() as u64,
                );
                if left == 0 {
                    continue;
                }
                if pick.is_none_or(|(_, bl, bs)| left * bs > bl * subs_t) {
                    pick = Some((i, left, subs_t));
                }
            }
            let Some((i, _, _)) = pick else {
                continue; // everything it could take is placed: it leaves the heap
            };
            unplaced[self.subs[mu][i] as usize] -= 1;
            x[mu][i] += 1;
            total[mu] += 1;
            heap.push(Reverse((total[mu], m)));
        }

        Balancer {
            subs: &self.subs,
            subscribers: &subscribers,
            x: &mut x,
            kept: &kept,
            total: &mut total,
        }
        .run();

        self.place_general(&subscribers, &x)
    }

    /// Turn per-(member, topic) counts into partitions: per topic, keepers first (owned, then
    /// hinted), then the remaining partitions to members still short, in member order.
    fn place_general(&self, subscribers: &[Vec<u32>], x: &[Vec<u32>]) -> Vec<u32> {
        let mut assigned_to = vec![NONE; self.keeper.len()];
        // want[m] for the topic being placed; reset after each topic so it stays O(subscribers).
        let mut want = vec![0u32; self.members()];
        for (t, subs_t) in subscribers.iter().enumerate() {
            if subs_t.is_empty() {
                continue;
            }
            for &m in subs_t {
                let m = m as usize;
                if let Ok(i) = self.subs[m].binary_search(&(t as u32)) {
                    want[m] = x[m][i];
                }
            }
            let range = self.offsets[t]..self.offsets[t + 1];
            // Owners before hints: an owner losing a partition costs a revocation.
            for owned_pass in [true, false] {
                for p in range.clone() {
                    let k = self.keeper[p];
                    if k != NONE && self.owned[p] == owned_pass && want[k as usize] > 0 {
                        want[k as usize] -= 1;
                        assigned_to[p] = k;
                    }
                }
            }
            // Members still short, in member order; `next` only moves forward.
            let mut next = 0;
            for p in range {
                if assigned_to[p] != NONE {
                    continue;
                }
                while next < subs_t.len() && want[subs_t[next] as usize] == 0 {
                    next += 1;
                }
                let Some(&m) = subs_t.get(next) else { break };
                want[m as usize] -= 1;
                assigned_to[p] = m;
            }
            for &m in subs_t {
                want[m as usize] = 0;
            }
        }
        assigned_to
    }

    fn into_plan(self, assigned_to: &[u32]) -> Plan {
        let mut assignments: Vec<Vec<Tp>> = vec![Vec::new(); self.members()];
        for t in 0..self.view.topics.len() {
            for p in self.offsets[t]..self.offsets[t + 1] {
                if let Some(list) = assignments.get_mut(assigned_to[p] as usize) {
                    // `p - offsets[t] < partitions <= i32::MAX`.
                    list.push(Tp::new(t as u32, (p - self.offsets[t]) as i32));
                }
            }
        }
        Plan {
            user_data: vec![None; assignments.len()],
            assignments,
        }
    }
}

/// Load shifting for the general path (see the module docs).
///
/// The graph has member and topic nodes: member `a` → topic `t` if `a` holds partitions of `t`
/// (cost 0 if it holds more than it kept, so moving one revokes nothing; else cost 1), topic
/// `t` → each subscriber (cost 0). A 0-1 BFS from an overloaded member finds the cheapest
/// path to a member with at least two fewer partitions; shifting along it changes only the two
/// ends' totals.
struct Balancer<'a> {
    subs: &'a [Vec<u32>],
    subscribers: &'a [Vec<u32>],
    x: &'a mut [Vec<u32>],
    kept: &'a [Vec<u32>],
    total: &'a mut [u64],
}

/// How a BFS node was reached: from which node, and (for member → topic edges) which slot of
/// the member's subscription.
#[derive(Clone, Copy)]
enum Via {
    Start,
    /// Member reached from a topic.
    Topic(u32),
    /// Topic reached from member `m` through its subscription slot `i`.
    Member(u32, u32),
}

/// Scratch space for [`Balancer::find_target`], reused across searches so each costs only
/// what it touches.
struct Search {
    dist: Vec<u32>,
    via: Vec<Via>,
    touched: Vec<usize>,
    deque: VecDeque<usize>,
}

impl Search {
    fn new(nodes: usize) -> Self {
        Search {
            dist: vec![u32::MAX; nodes],
            via: vec![Via::Start; nodes],
            touched: Vec::new(),
            deque: VecDeque::new(),
        }
    }
}

impl Balancer<'_> {
    /// Shift load until no member can reach one holding two or more fewer partitions.
    ///
    /// Each pass visits sources in falling load and stops at the first shift (loads changed,
    /// so the order and the `done` marks below would be stale); a pass that shifts nothing
    /// proves optimality. Every shift lowers the sum of squared loads, so the passes end.
    fn run(&mut self) {
        let members = self.subs.len();
        let mut search = Search::new(members + self.subscribers.len());
        let mut done = vec![false; members];
        loop {
            done.iter_mut().for_each(|d| *d = false);
            let mut order: Vec<usize> = (0..members).filter(|&m| self.total[m] > 0).collect();
            order.sort_by_key(|&m| (Reverse(self.total[m]), m));
            let mut improved = false;
            for &u in &order {
                if done[u] {
                    continue;
                }
                // A target must hold at least two fewer partitions than `u`; with fewer than
                // two, `u` has nothing to give (a saturating bound would wrongly admit a gap of
                // one).
                let Some(limit) = self.total[u].checked_sub(2) else {
                    continue;
                };
                match self.find_target(u, limit, &mut search, &done) {
                    // `shift` always moves at least one partition along a real path; if it ever
                    // could not, treating that as progress would loop forever.
                    Some(v) if self.shift(u, v, &search.via) => {
                        improved = true;
                        break;
                    }
                    Some(_) => {}
                    None => {
                        // Nothing reachable from `u` is two below it. Sources come in falling
                        // load, so every member reached from `u` reaches a subset of that and
                        // carries no more load than `u`: none of them can improve either.
                        for &n in &search.touched {
                            if n < members {
                                done[n] = true;
                            }
                        }
                    }
                }
            }
            if !improved {
                return;
            }
        }
    }

    /// 0-1 BFS from `u` for the cheapest path to a member holding at most `limit` partitions.
    /// `None` if nothing reachable qualifies.
    fn find_target(
        &self,
        u: usize,
        limit: u64,
        search: &mut Search,
        done: &[bool],
    ) -> Option<usize> {
        let members = self.subs.len();
        let Search {
            dist,
            via,
            touched,
            deque,
        } = search;
        for &n in touched.iter() {
            dist[n] = u32::MAX;
        }
        touched.clear();
        deque.clear();
        dist[u] = 0;
        via[u] = Via::Start;
        touched.push(u);
        deque.push_back(u);
        // Best target: cheapest path, then lowest load (the bigger gap lets one shift move
        // more), then lowest index.
        let mut best: Option<(u32, u64, usize)> = None;
        while let Some(n) = deque.pop_front() {
            let d = dist[n];
            if n < members {
                if n != u && self.total[n] <= limit {
                    let cand = (d, self.total[n], n);
                    if best.is_none_or(|b| cand < b) {
                        best = Some(cand);
                    }
                }
                for (i, &t) in self.subs[n].iter().enumerate() {
                    let held = self.x[n][i];
                    if held == 0 {
                        continue;
                    }
                    let cost = u32::from(held <= self.kept[n][i]);
                    let node = members + t as usize;
                    if d + cost < dist[node] {
                        if dist[node] == u32::MAX {
                            touched.push(node);
                        }
                        dist[node] = d + cost;
                        via[node] = Via::Member(n as u32, i as u32);
                        if cost == 0 {
                            deque.push_front(node);
                        } else {
                            deque.push_back(node);
                        }
                    }
                }
            } else {
                for &b in &self.subscribers[n - members] {
                    let b = b as usize;
                    // Anything reachable from a `done` member is within one of this source's
                    // load (see `run`), so it cannot lead to a target.
                    if done[b] || d >= dist[b] {
                        continue;
                    }
                    if dist[b] == u32::MAX {
                        touched.push(b);
                    }
                    dist[b] = d;
                    via[b] = Via::Topic(n as u32);
                    deque.push_front(b);
                }
            }
        }
        best.map(|(_, _, v)| v)
    }

    /// Move load from `u` to `v` along the BFS path, as much as halves their gap, limited by
    /// each edge's holdings (and, on edges that were free, by the free amount so a cheap path
    /// stays cheap).
    fn shift(&mut self, u: usize, v: usize, via: &[Via]) -> bool {
        // Collect the path's member → topic edges as (member, slot).
        let mut edges: Vec<(usize, usize)> = Vec::new();
        let mut n = v;
        // The predecessor links form a tree (relaxations are strict), so this ends; the step
        // bound only guards against a bug turning into a hang.
        let mut steps = 0;
        while n != u {
            steps += 1;
            if steps > 2 * via.len() {
                return false;
            }
            match via[n] {
                Via::Topic(t) => n = t as usize,
                Via::Member(m, i) => {
                    edges.push((m as usize, i as usize));
                    n = m as usize;
                }
                // Unreachable for a node on a found path; stop rather than loop.
                Via::Start => return false,
            }
        }
        let mut delta = (self.total[u] - self.total[v]) / 2;
        for &(m, i) in &edges {
            let held = u64::from(self.x[m][i]);
            let free = held.saturating_sub(u64::from(self.kept[m][i]));
            delta = delta.min(if free > 0 { free } else { held });
        }
        if delta == 0 {
            return false;
        }
        // Each edge a -(t)-> b: a gives delta of t, and the next member b takes delta of t.
        // Walking from v back to u, the member that receives through edge (m, i) is the member
        // reached from that topic: track it as we go.
        let mut receiver = v;
        for &(m, i) in &edges {
            let t = self.subs[m][i];
            let d = delta as u32;
            self.x[m][i] -= d;
            if let Ok(j) = self.subs[receiver].binary_search(&t) {
                self.x[receiver][j] += d;
            }
            receiver = m;
        }
        self.total[u] -= delta;
        self.total[v] += delta;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cooperative::resolve_owners;
    use crate::testutil::{member, view};

    fn counts(plan: &Plan) -> Vec<usize> {
        plan.assignments.iter().map(Vec::len).collect()
    }

    #[test]
    fn fresh_equal_group_is_balanced_and_complete() {
        let v = view(
            1,
            &[("a", 5), ("b", 3)],
            vec![
                member("m1", &[0, 1], &[], -1),
                member("m2", &[0, 1], &[], -1),
                member("m3", &[0, 1], &[], -1),
            ],
        );
        let plan = CooperativeStickyAssignor.assign(&v, None).unwrap();
        assert_eq!(counts(&plan), vec![3, 3, 2]);
        assert_eq!(plan.assignments.iter().flatten().count(), 8);
        assert_eq!(CooperativeStickyAssignor.name(), "cooperative-sticky");
        assert!(CooperativeStickyAssignor.cooperative());
    }

    #[test]
    fn owners_keep_up_to_quota_and_excess_is_withheld() {
        // m1 owns all 4 partitions; m2 joins. m1 keeps 2, the other 2 are withheld.
        let v = view(
            3,
            &[("a", 4)],
            vec![
                member("m1", &[0], &[(0, 0), (0, 1), (0, 2), (0, 3)], 2),
                member("m2", &[0], &[], -1),
            ],
        );
        let owners = resolve_owners(&v, None);
        let target = sticky_target(&v, &owners, &sticky_hints(&v));
        assert_eq!(counts(&target), vec![2, 2]);
        let plan = CooperativeStickyAssignor.assign(&v, None).unwrap();
        assert_eq!(counts(&plan), vec![2, 0]);
        assert!(plan.assignments[0]
            .iter()
            .all(|tp| target.assignments[0].contains(tp)));
    }

    #[test]
    fn tied_claims_go_to_a_claimant_with_room() {
        // m1 and m2 both claim p0 at generation 4: unowned, but m1 (hint) gets it back.
        let v = view(
            5,
            &[("a", 2)],
            vec![
                member("m1", &[0], &[(0, 0)], 4),
                member("m2", &[0], &[(0, 0), (0, 1)], 4),
            ],
        );
        let plan = CooperativeStickyAssignor.assign(&v, None).unwrap();
        assert_eq!(plan.assignments[0], vec![Tp::new(0, 0)]);
        assert_eq!(plan.assignments[1], vec![Tp::new(0, 1)]);
    }

    #[test]
    fn unequal_subscriptions_use_the_only_member_that_can_take_a_topic() {
        // Kafka's classic case: m1 subscribes to t0 only, m2 to t0 and t1. Balance requires
        // t0 to go to m1 entirely.
        let v = view(
            1,
            &[("t0", 2), ("t1", 2)],
            vec![member("m1", &[0], &[], -1), member("m2", &[0, 1], &[], -1)],
        );
        let plan = CooperativeStickyAssignor.assign(&v, None).unwrap();
        assert_eq!(plan.assignments[0], vec![Tp::new(0, 0), Tp::new(0, 1)]);
        assert_eq!(plan.assignments[1], vec![Tp::new(1, 0), Tp::new(1, 1)]);
    }

    #[test]
    fn general_path_shifts_along_chains() {
        // m3 can only take t1, which m2 holds; m2 can take t0 from m1. A single move cannot
        // help m3 without unbalancing m2; a chain m1 → m2 → m3 can.
        let v = view(
            3,
            &[("t0", 6), ("t1", 3)],
            vec![
                member(
                    "m1",
                    &[0],
                    &[(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5)],
                    2,
                ),
                member("m2", &[0, 1], &[(1, 0), (1, 1), (1, 2)], 2),
                member("m3", &[1], &[], -1),
            ],
        );
        let owners = resolve_owners(&v, None);
        let target = sticky_target(&v, &owners, &sticky_hints(&v));
        assert_eq!(counts(&target), vec![3, 3, 3]);
        // m3 can only ever hold t1, so it takes all 3; m2 makes up with 3 of m1's t0: 6 moves,
        // the minimum for a balanced result.
        assert_eq!(target.assignments[2].len(), 3);
        let moved = (0..3)
            .map(|m| {
                target.assignments[m]
                    .iter()
                    .filter(|tp| !v.members[m].owned.contains(tp))
                    .count()
            })
            .sum::<usize>();
        assert_eq!(moved, 6);
    }

    #[test]
    fn both_paths_agree_on_balance_for_equal_subscriptions() {
        let v = view(
            1,
            &[("a", 7), ("b", 4)],
            vec![
                member("m1", &[0, 1], &[(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)], 1),
                member("m2", &[0, 1], &[(1, 0)], 1),
                member("m3", &[0, 1], &[], -1),
                member("m4", &[0, 1], &[], -1),
            ],
        );
        let owners = resolve_owners(&v, None);
        let hints = sticky_hints(&v);
        let mut fast = counts(&sticky_target(&v, &owners, &hints));
        let mut general = counts(&sticky_target_general(&v, &owners, &hints));
        fast.sort();
        general.sort();
        assert_eq!(fast, vec![2, 3, 3, 3]);
        assert_eq!(general, fast);
    }

    #[test]
    fn hostile_owner_and_hint_vectors_are_ignored() {
        let v = view(1, &[("a", 2)], vec![member("m1", &[0], &[], -1)]);
        // Wrong length, unknown member index.
        let plan = sticky_target(&v, &[Some(7)], &[Some(9), Some(0), Some(3)]);
        assert_eq!(counts(&plan), vec![2]);
        let plan = sticky_target_general(&v, &[], &[]);
        assert_eq!(counts(&plan), vec![2]);
    }
}
