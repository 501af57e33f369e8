//! The agent's lag view of the group ([`GroupLagView`]): per-member lag, lag trend, rates and
//! time to drain, computed from what DescribeGroups, OffsetFetch and ListOffsets returned.
//! Pure: the poll loop hands in the raw answers and a clock reading.
//!
//! **Log end and lag** are read by the one lag rule of the client ([`lagbalance::lag`]), the
//! same the consumer, its leader and the partitioner use: log end = `max(ListOffsets,
//! committed offset, the log end of the previous poll)`, lag = log end − committed. tansu
//! 0.6.0 under-reports the log end by up to one batch (docs/tansu-quirks.md); lag is therefore
//! under-estimated by less than one batch there, never negative, and it does not flicker when
//! a later answer is staler than an earlier one.
//!
//! Partitions without a committed offset count as lag 0 (where such a consumer starts depends
//! on its `auto.offset.reset`, which the agent cannot see); they are counted in
//! [`GroupLagView::uncommitted`].

use std::collections::{BTreeMap, HashMap};

use lagbalance::admin::{DescribedMember, GroupDescription};
use lagbalance::assign::capacity::ewma_alpha;
use lagbalance::assign::userdata::MemberUserData;
use lagbalance::group::codec::{decode_assignment, decode_subscription};
use lagbalance::lag;
use lagbalance::NamedPartition;

/// One member as decoded from DescribeGroups. Hostile blobs decode to "nothing known".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// Assigned partitions, sorted, deduplicated.
    pub partitions: Vec<NamedPartition>,
    /// Generation from the member's subscription (v2+), −1 if unknown.
    pub generation: i32,
    /// The member's report of itself (our user data: capacity estimate, CPU), if it sent
    /// valid data.
    pub reported: Option<MemberUserData>,
    /// Whether the assignment or subscription bytes failed to decode.
    pub malformed: bool,
}

impl MemberInfo {
    pub fn from_described(m: &DescribedMember) -> MemberInfo {
        let mut info = MemberInfo {
            member_id: m.member_id.clone(),
            instance_id: m.instance_id.clone(),
            client_id: m.client_id.clone(),
            host: m.client_host.trim_start_matches('/').to_owned(),
            generation: -1,
            ..MemberInfo::default()
        };
        match decode_assignment(&m.assignment) {
            Ok(a) => {
                let mut p: Vec<NamedPartition> =
                    a.partitions.into_iter().filter(|(_, p)| *p >= 0).collect();
                p.sort();
                p.dedup();
                info.partitions = p;
            }
            Err(_) => info.malformed = true,
        }
        if !m.metadata.is_empty() {
            match decode_subscription(&m.metadata) {
                Ok((_, s)) => {
                    info.generation = s.generation;
                    info.reported = s
                        .user_data
                        .as_deref()
                        .and_then(|b| MemberUserData::decode(b).ok());
                }
                Err(_) => info.malformed = true,
            }
        }
        info
    }
}

/// One poll's raw answers.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Monotonic clock, milliseconds.
    pub at_ms: u64,
    pub state: String,
    pub protocol: String,
    pub members: Vec<MemberInfo>,
    /// Committed offsets of the group.
    pub committed: BTreeMap<NamedPartition, i64>,
    /// ListOffsets(latest) answers.
    pub log_end: BTreeMap<NamedPartition, i64>,
    /// Whether DescribeGroups showed any member's assignment. tansu 0.6.0 answers with member
    /// ids only (empty metadata and assignment): then only the agent's own member's partitions
    /// are known, from its app ([`Snapshot::apply_own_assignment`]).
    pub assignments_visible: bool,
}

impl Snapshot {
    pub fn from_description(at_ms: u64, d: &GroupDescription) -> Snapshot {
        let mut members: Vec<MemberInfo> =
            d.members.iter().map(MemberInfo::from_described).collect();
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        members.dedup_by(|a, b| a.member_id == b.member_id);
        let assignments_visible = members.iter().any(|m| !m.partitions.is_empty());
        Snapshot {
            at_ms,
            state: d.state.clone(),
            protocol: d.protocol.clone(),
            members,
            assignments_visible,
            ..Snapshot::default()
        }
    }

    /// Fill in the assignment the agent's own app reported, when the broker hid it. A member id
    /// the broker does not list is ignored (the app's identity is stale).
    pub fn apply_own_assignment(&mut self, member_id: &str, partitions: &[NamedPartition]) {
        if self.assignments_visible {
            return;
        }
        if let Some(m) = self.members.iter_mut().find(|m| m.member_id == member_id) {
            let mut p: Vec<NamedPartition> = partitions
                .iter()
                .filter(|(_, p)| *p >= 0)
                .cloned()
                .collect();
            p.sort();
            p.dedup();
            m.partitions = p;
        }
    }

    /// Topics assigned to anyone or committed by the group, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .members
            .iter()
            .flat_map(|m| m.partitions.iter().map(|(t, _)| t.clone()))
            .chain(self.committed.keys().map(|(t, _)| t.clone()))
            .collect();
        t.sort();
        t.dedup();
        t
    }
}

/// Per-partition figures.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionLag {
    pub tp: NamedPartition,
    /// Index into [`GroupLagView::members`], if someone owns it.
    pub owner: Option<usize>,
    pub log_end: i64,
    pub committed: Option<i64>,
    pub lag: i64,
    /// Incoming records/s (EWMA).
    pub incoming_rate: f64,
    /// Committed records/s (EWMA).
    pub commit_rate: f64,
}

/// Per-member figures.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberLag {
    pub info: MemberInfo,
    /// Sum of its partitions' lag, records (integer so every agent ranks members identically).
    pub lag: i64,
    /// EWMA of `lag`.
    pub lag_smoothed: f64,
    /// d(lag)/dt, records/s (EWMA); negative = draining.
    pub lag_trend: f64,
    /// Records/s it commits (EWMA).
    pub processing_rate: f64,
    /// Records/s arriving on its partitions (EWMA).
    pub incoming_rate: f64,
    /// Seconds to reach zero lag at the current trend; `None` if not shrinking.
    pub time_to_drain: Option<f64>,
}

/// The group's lag as computed at one poll: who owns what, how far behind each member is and
/// where that is heading. (Not the leader's [`lagbalance::assign::GroupView`], the input of an
/// assignor.)
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupLagView {
    pub at_ms: u64,
    pub state: String,
    /// Sorted by member id.
    pub members: Vec<MemberLag>,
    pub partitions: Vec<PartitionLag>,
    /// Owned partitions without a committed offset.
    pub uncommitted: usize,
    /// Hash of who owns what (and the members' subscription generations): changes iff a
    /// rebalance completed.
    pub fingerprint: u64,
    /// Highest generation any member's subscription mentions (−1 if none).
    pub generation_hint: i32,
    /// See [`Snapshot::assignments_visible`].
    pub assignments_visible: bool,
    /// Lag of partitions nobody is known to own (all peers' partitions when assignments are
    /// hidden).
    pub unattributed_lag: i64,
}

impl GroupLagView {
    pub fn stable(&self) -> bool {
        self.state == "Stable"
    }
    pub fn member(&self, member_id: &str) -> Option<&MemberLag> {
        self.members.iter().find(|m| m.info.member_id == member_id)
    }
    /// Member id of the owner of `p`, a partition of this view; `None` if nobody is known to
    /// own it.
    pub fn owner_id(&self, p: &PartitionLag) -> Option<&str> {
        p.owner
            .and_then(|i| self.members.get(i))
            .map(|m| m.info.member_id.as_str())
    }
    /// Lag of every known partition, owned or not.
    pub fn total_lag(&self) -> i64 {
        self.members
            .iter()
            .fold(self.unattributed_lag, |a, m| a.saturating_add(m.lag))
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct PartState {
    log_end: i64,
    committed: Option<i64>,
    incoming: f64,
    commits: f64,
}

#[derive(Clone, Copy, Debug, Default)]
struct MemberState {
    lag: i64,
    lag_smoothed: f64,
    trend: f64,
}

/// Keeps the previous poll to turn offsets into rates and trends.
#[derive(Debug, Default)]
pub struct ViewTracker {
    window_ms: u64,
    last_at: Option<u64>,
    parts: HashMap<NamedPartition, PartState>,
    members: HashMap<String, MemberState>,
}

/// FNV-1a, stable across processes and versions (std's hasher is not guaranteed to be).
fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= *b as u64;
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

fn ewma(prev: f64, sample: f64, alpha: f64) -> f64 {
    if !sample.is_finite() {
        return prev;
    }
    prev + alpha * (sample - prev)
}

impl ViewTracker {
    pub fn new(ewma_window_ms: u64) -> Self {
        ViewTracker {
            window_ms: ewma_window_ms,
            ..Default::default()
        }
    }

    /// Compute the view for `snap` and remember it for the next one.
    pub fn update(&mut self, snap: &Snapshot) -> GroupLagView {
        let dt_ms = self
            .last_at
            .map(|t| snap.at_ms.saturating_sub(t))
            .filter(|d| *d > 0);
        let alpha = dt_ms.map(|d| ewma_alpha(d, self.window_ms)).unwrap_or(1.0);
        let dt_s = dt_ms.map(|d| d as f64 / 1000.0);

        let mut owner: HashMap<&NamedPartition, usize> = HashMap::new();
        let mut fp: u64 = 0xcbf2_9ce4_8422_2325;
        let mut generation_hint = -1;
        for (i, m) in snap.members.iter().enumerate() {
            fnv(&mut fp, m.member_id.as_bytes());
            fnv(&mut fp, &[0]);
            fnv(&mut fp, &m.generation.to_be_bytes());
            generation_hint = generation_hint.max(m.generation);
            for tp in &m.partitions {
                fnv(&mut fp, tp.0.as_bytes());
                fnv(&mut fp, &tp.1.to_be_bytes());
                owner.entry(tp).or_insert(i);
            }
            fnv(&mut fp, &[0xff]);
        }

        // Every partition we know anything about.
        let mut tps: Vec<&NamedPartition> = owner.keys().copied().collect();
        tps.extend(snap.log_end.keys());
        tps.sort();
        tps.dedup();

        let mut partitions = Vec::with_capacity(tps.len());
        let mut new_parts = HashMap::with_capacity(tps.len());
        let mut uncommitted = 0;
        for tp in tps {
            let prev = self.parts.get(tp).copied();
            let committed = snap.committed.get(tp).copied().and_then(lag::offset);
            let reading = lag::read(
                snap.log_end.get(tp).copied(),
                committed,
                prev.map(|p| p.log_end),
            );
            let log_end = reading.log_end;
            let lag = reading.lag.unwrap_or(0);
            if committed.is_none() && owner.contains_key(tp) {
                uncommitted += 1;
            }
            let (incoming, commits) = match (prev, dt_s) {
                (Some(p), Some(dt)) => {
                    let inc = (log_end - p.log_end).max(0) as f64 / dt;
                    let com = match (p.committed, committed) {
                        (Some(a), Some(b)) => (b - a).max(0) as f64 / dt,
                        _ => 0.0,
                    };
                    (ewma(p.incoming, inc, alpha), ewma(p.commits, com, alpha))
                }
                (Some(p), None) => (p.incoming, p.commits),
                (None, _) => (0.0, 0.0),
            };
            new_parts.insert(
                tp.clone(),
                PartState {
                    log_end,
                    committed,
                    incoming,
                    commits,
                },
            );
            partitions.push(PartitionLag {
                tp: tp.clone(),
                owner: owner.get(tp).copied(),
                log_end,
                committed,
                lag,
                incoming_rate: incoming,
                commit_rate: commits,
            });
        }

        let mut members: Vec<MemberLag> = snap
            .members
            .iter()
            .map(|m| MemberLag {
                info: m.clone(),
                lag: 0,
                lag_smoothed: 0.0,
                lag_trend: 0.0,
                processing_rate: 0.0,
                incoming_rate: 0.0,
                time_to_drain: None,
            })
            .collect();
        for p in &partitions {
            if let Some(i) = p.owner {
                let m = &mut members[i];
                m.lag = m.lag.saturating_add(p.lag);
                m.processing_rate += p.commit_rate;
                m.incoming_rate += p.incoming_rate;
            }
        }
        let unattributed_lag = partitions
            .iter()
            .filter(|p| p.owner.is_none())
            .fold(0i64, |a, p| a.saturating_add(p.lag));
        let mut new_members = HashMap::with_capacity(members.len());
        for m in &mut members {
            let prev = self.members.get(&m.info.member_id).copied();
            let (smoothed, trend) = match (prev, dt_s) {
                (Some(p), Some(dt)) => (
                    ewma(p.lag_smoothed, m.lag as f64, alpha),
                    ewma(p.trend, (m.lag - p.lag) as f64 / dt, alpha),
                ),
                (Some(p), None) => (p.lag_smoothed, p.trend),
                (None, _) => (m.lag as f64, 0.0),
            };
            m.lag_smoothed = smoothed;
            m.lag_trend = trend;
            m.time_to_drain = if m.lag == 0 {
                Some(0.0)
            } else if trend < 0.0 {
                Some(m.lag as f64 / -trend)
            } else {
                None
            };
            new_members.insert(
                m.info.member_id.clone(),
                MemberState {
                    lag: m.lag,
                    lag_smoothed: smoothed,
                    trend,
                },
            );
        }
        self.parts = new_parts;
        self.members = new_members;
        self.last_at = Some(snap.at_ms);
        GroupLagView {
            at_ms: snap.at_ms,
            state: snap.state.clone(),
            members,
            partitions,
            uncommitted,
            fingerprint: fp,
            generation_hint,
            assignments_visible: snap.assignments_visible,
            unattributed_lag,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use lagbalance::group::codec::{encode_assignment, Assignment};

    pub fn member(id: &str, parts: &[(&str, i32)]) -> MemberInfo {
        MemberInfo {
            member_id: id.into(),
            host: format!("host-{id}"),
            partitions: parts.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            generation: 1,
            ..MemberInfo::default()
        }
    }

    fn snap(at_ms: u64, ends: &[i64], commits: &[i64]) -> Snapshot {
        let mut s = Snapshot {
            at_ms,
            state: "Stable".into(),
            members: vec![member("a", &[("t", 0), ("t", 1)]), member("b", &[("t", 2)])],
            assignments_visible: true,
            ..Snapshot::default()
        };
        for (p, e) in ends.iter().enumerate() {
            s.log_end.insert(("t".into(), p as i32), *e);
        }
        for (p, c) in commits.iter().enumerate() {
            s.committed.insert(("t".into(), p as i32), *c);
        }
        s
    }

    #[test]
    fn lag_rates_and_drain() {
        let mut t = ViewTracker::new(0);
        let v = t.update(&snap(0, &[100, 100, 100], &[50, 100, 0]));
        assert_eq!(v.member("a").unwrap().lag, 50);
        assert_eq!(v.member("b").unwrap().lag, 100);
        let v = t.update(&snap(1000, &[110, 110, 100], &[100, 110, 50]));
        let a = v.member("a").unwrap();
        assert_eq!(a.lag, 10);
        assert_eq!(a.incoming_rate, 20.0);
        assert_eq!(a.processing_rate, 60.0);
        assert_eq!(a.lag_trend, -40.0);
        assert_eq!(a.time_to_drain, Some(0.25));
        let b = v.member("b").unwrap();
        assert_eq!(b.lag, 50);
        assert_eq!(b.time_to_drain, Some(1.0));
    }

    #[test]
    fn tansu_under_reported_log_end_never_makes_negative_or_flickering_lag() {
        let mut t = ViewTracker::new(0);
        // ListOffsets says 1 (newest batch's base + 1), committed is 10: lag 0, not −9.
        let v = t.update(&snap(0, &[1, 0, 0], &[10, 0, 0]));
        assert_eq!(v.partitions[0].log_end, 10);
        assert_eq!(v.partitions[0].lag, 0);
        // A later, staler answer does not move the log end back.
        let v = t.update(&snap(1000, &[5, 0, 0], &[8, 0, 0]));
        assert_eq!(v.partitions[0].log_end, 10);
        assert_eq!(v.partitions[0].lag, 2);
    }

    #[test]
    fn fingerprint_changes_with_assignment_only() {
        let mut t = ViewTracker::new(0);
        let a = t.update(&snap(0, &[1, 1, 1], &[0, 0, 0]));
        let b = t.update(&snap(1000, &[9, 9, 9], &[1, 1, 1]));
        assert_eq!(a.fingerprint, b.fingerprint);
        let mut s = snap(2000, &[9, 9, 9], &[1, 1, 1]);
        s.members[1].partitions.push(("t".into(), 1));
        s.members[0].partitions.pop();
        assert_ne!(t.update(&s).fingerprint, a.fingerprint);
    }

    #[test]
    fn hidden_assignments_use_the_apps_own_report() {
        // tansu: DescribeGroups lists member ids with empty blobs.
        let mut s = snap(0, &[100, 100, 100], &[0, 90, 95]);
        for m in &mut s.members {
            m.partitions.clear();
        }
        s.assignments_visible = false;
        s.apply_own_assignment("a", &[("t".into(), 0), ("t".into(), 0), ("t".into(), -3)]);
        s.apply_own_assignment("ghost", &[("t".into(), 1)]);
        let v = ViewTracker::new(0).update(&s);
        assert!(!v.assignments_visible);
        assert_eq!(v.member("a").unwrap().lag, 100);
        assert_eq!(v.member("b").unwrap().lag, 0);
        assert_eq!(v.unattributed_lag, 15);
        assert_eq!(v.total_lag(), 115);
        // With visible assignments the app's report is not needed and is ignored.
        let mut s = snap(0, &[100, 100, 100], &[0, 90, 95]);
        s.apply_own_assignment("b", &[("t".into(), 0)]);
        assert_eq!(s.members[1].partitions, vec![("t".into(), 2)]);
    }

    #[test]
    fn hostile_member_bytes_decode_to_nothing() {
        for blob in [
            &b""[..],
            b"\x00",
            b"\xff\xff\xff",
            b"\x00\x03\x7f\xff\xff\xff",
        ] {
            let d = DescribedMember {
                member_id: "m".into(),
                instance_id: None,
                client_id: "c".into(),
                client_host: "/10.0.0.1".into(),
                metadata: Bytes::copy_from_slice(blob),
                assignment: Bytes::copy_from_slice(blob),
            };
            let m = MemberInfo::from_described(&d);
            assert!(m.partitions.is_empty());
            assert_eq!(m.host, "10.0.0.1");
        }
        let good = encode_assignment(&Assignment {
            partitions: vec![("t".into(), 2), ("t".into(), -1), ("t".into(), 2)],
            user_data: None,
        })
        .unwrap();
        let d = DescribedMember {
            member_id: "m".into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            metadata: Bytes::new(),
            assignment: good,
        };
        assert_eq!(
            MemberInfo::from_described(&d).partitions,
            vec![("t".into(), 2)]
        );
    }
}
