//! The group model every assignor works on.

use bytes::Bytes;

/// A partition by its topic's name and its number, as on the wire and in the client's API.
/// [`Tp`] is the same partition in the leader's dense form (topic by index).
pub type NamedPartition = (String, i32);

/// Index of a topic in [`GroupView::topics`].
pub type TopicIdx = u32;

/// A topic-partition in dense form: the topic is an index into [`GroupView::topics`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tp {
    pub topic: TopicIdx,
    pub partition: i32,
}

impl Tp {
    pub fn new(topic: TopicIdx, partition: i32) -> Self {
        Tp { topic, partition }
    }
}

/// A topic known to the leader from cluster metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// Number of partitions (partitions are `0..partitions`).
    pub partitions: i32,
}

/// One member as the leader sees it in JoinGroup, already decoded and sanitised:
/// unknown topics and out-of-range partitions were dropped by the decoder.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberView {
    pub member_id: String,
    /// `group.instance.id` (KIP-345), if the member is static.
    pub instance_id: Option<String>,
    /// Subscribed topics that exist, sorted, deduplicated.
    pub topics: Vec<TopicIdx>,
    /// Partitions the member claims to own (subscription v1+), sorted, deduplicated.
    pub owned: Vec<Tp>,
    /// Generation the member's claim refers to (subscription v2+); -1 when unknown.
    pub generation: i32,
    /// Assignor-specific user data from the subscription, untouched (may be hostile).
    pub user_data: Option<Bytes>,
    /// Rack id (subscription v3), `None` when empty.
    pub rack: Option<String>,
}

/// One partition's load, by topic name: how far behind its readers are and how many records
/// per second pass through it.
///
/// Which rate is meant depends on who measured: a member's own measurement
/// ([`MemberStats::partitions`]) reports the records/s it processed, the leader's lag sample
/// (`leader::Round::stats`) the records/s arriving.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionLoad {
    pub topic: String,
    pub partition: i32,
    /// Records behind the log end.
    pub lag: f64,
    /// Records per second, processed or arriving (see above); `NaN` when unknown.
    pub rate: f64,
}

/// Per-partition lag and rate the leader measured at assignment time, indexed by
/// [`GroupView::flat_index`]. `NaN` / negative values mean "unknown".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionStats {
    /// Records behind the log end (log end − committed).
    pub lag: Vec<f64>,
    /// Incoming records per second.
    pub rate: Vec<f64>,
}

/// Everything an assignor needs to compute a plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupView {
    /// Generation the plan is being computed for (from the JoinGroup response).
    pub generation: i32,
    /// Topics sorted by name.
    pub topics: Vec<TopicInfo>,
    /// Members sorted by `member_id`.
    pub members: Vec<MemberView>,
    /// Lag and rate per partition when the leader could measure them.
    pub stats: Option<PartitionStats>,
    /// Leader's clock in milliseconds (monotonic), for stabilisation windows.
    pub now_ms: u64,
}

impl GroupView {
    /// Start of each topic's block in the flat partition index; one more entry than topics,
    /// the last being the total partition count.
    pub fn topic_offsets(&self) -> Vec<usize> {
        let mut offsets = Vec::with_capacity(self.topics.len() + 1);
        let mut total = 0usize;
        for t in &self.topics {
            offsets.push(total);
            total += t.partitions.max(0) as usize;
        }
        offsets.push(total);
        offsets
    }

    /// Flat index of `tp` given `offsets` from [`Self::topic_offsets`]; `None` if out of range.
    pub fn flat_index(&self, offsets: &[usize], tp: Tp) -> Option<usize> {
        let t = self.topics.get(tp.topic as usize)?;
        if tp.partition < 0 || tp.partition >= t.partitions {
            return None;
        }
        Some(offsets[tp.topic as usize] + tp.partition as usize)
    }

    /// Index of a topic by name.
    pub fn topic_index(&self, name: &str) -> Option<TopicIdx> {
        self.topics
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| i as TopicIdx)
    }
}

/// The assignment the leader hands out: `assignments[i]` belongs to `view.members[i]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub assignments: Vec<Vec<Tp>>,
    /// Assignment user data per member (same order); `None` for none.
    pub user_data: Vec<Option<Bytes>>,
}

/// The plan a leader issued in an earlier generation, by name so it survives topic re-indexing.
/// The leader keeps it to defend against stale owned-partition claims (docs/design.md §3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuedPlan {
    pub generation: i32,
    /// member id → (topic, partition) it was given.
    pub assignments: Vec<(String, Vec<(String, i32)>)>,
    /// `since[i][j]`: the generation at which partition `j` of entry `i` was last handed to
    /// that member by a plan, or claimed by it. A member whose claim is at least that recent
    /// and does not list the partition has let it go. Missing entries count as `generation`.
    pub since: Vec<Vec<i32>>,
}

impl IssuedPlan {
    /// [`IssuedPlan::since`] of partition `j` of entry `i`.
    pub fn since(&self, i: usize, j: usize) -> i32 {
        self.since
            .get(i)
            .and_then(|s| s.get(j))
            .copied()
            .unwrap_or(self.generation)
    }
}

/// What a member measured about itself, carried to the leader in its subscription user data
/// (the encoding is the assignor's business).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberStats {
    /// Records processed per second over the last window.
    pub processed_rate: f64,
    /// Whether the member had a backlog for the whole window (so `processed_rate` is its capacity).
    pub backlogged: bool,
    /// CPU utilisation of the process / pod in `0..=limit_cores`, in cores; `None` if unknown.
    pub cpu_used_cores: Option<f64>,
    /// CPU limit of the pod in cores (cgroup quota or host cores); `None` if unknown.
    pub cpu_limit_cores: Option<f64>,
    /// Fraction of the window the application spent processing records (outside `poll`), in
    /// `0..=1`; `None` if unknown. Saturates for an I/O-bound consumer whose CPU stays idle.
    pub busy_fraction: Option<f64>,
    /// Per owned partition: its lag and the records/s this member processed from it.
    pub partitions: Vec<PartitionLoad>,
    /// Member's own clock in milliseconds when it measured.
    pub measured_at_ms: u64,
}

/// Why an assignor could not produce a plan.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum AssignError {
    #[error("assignor produced an invalid plan: {0}")]
    InvalidPlan(String),
    #[error("{0}")]
    Other(String),
}

/// Whether a value that may be absent changed enough to tell the group: appearing or vanishing
/// always is news, two absences never are, and between two values `differs` judges.
pub fn is_news<T>(sent: Option<T>, fresh: Option<T>, differs: impl FnOnce(T, T) -> bool) -> bool {
    match (sent, fresh) {
        (Some(sent), Some(fresh)) => differs(sent, fresh),
        (None, None) => false,
        _ => true,
    }
}

/// A partition assignor, as in Kafka's `ConsumerPartitionAssignor`.
///
/// Implementations must be deterministic given the same view and state: any member may become
/// leader.
pub trait Assignor: Send {
    /// Protocol name announced in JoinGroup (e.g. `"cooperative-sticky"`).
    fn name(&self) -> &str;

    /// Whether the assignor supports the cooperative (KIP-429) protocol.
    fn cooperative(&self) -> bool {
        true
    }

    /// User data for this member's subscription, from what the member measured.
    fn subscription_user_data(&mut self, _stats: &MemberStats) -> Option<Bytes> {
        None
    }

    /// Whether `fresh` user data says something the leader should plan with that `sent` (what
    /// the member last joined with) does not. Checked when user data ages out, not when a
    /// rebalance is requested (then fresh data is always sent). A changed subscription is a
    /// new generation for the whole group on a broker without a join barrier, so re-sending
    /// numbers that moved a little only churns the group.
    fn user_data_worth_sending(&self, sent: &Bytes, fresh: &Bytes) -> bool {
        sent != fresh
    }

    /// Whether `fresh` user data is news against what the member last joined with (`sent`):
    /// [`is_news`], with [`Assignor::user_data_worth_sending`] judging two values.
    fn user_data_news(&self, sent: Option<&Bytes>, fresh: Option<&Bytes>) -> bool {
        is_news(sent, fresh, |sent, fresh| {
            self.user_data_worth_sending(sent, fresh)
        })
    }

    /// Leader side: compute a plan for `view`. `previous` is the plan this process issued
    /// last time it was leader, if any.
    fn assign(
        &mut self,
        view: &GroupView,
        previous: Option<&IssuedPlan>,
    ) -> Result<Plan, AssignError>;

    /// Member side: the assignment this member received (names, generation, user data).
    fn on_assignment(
        &mut self,
        _assigned: &[(String, i32)],
        _user_data: Option<&Bytes>,
        _generation: i32,
    ) {
    }
}
