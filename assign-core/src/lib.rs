//! Pure partition-assignment logic for lagbalance (no I/O, no clocks of its own).
//!
//! The group leader decodes every member's subscription into a [`GroupView`], asks an
//! [`Assignor`] for a [`Plan`], and sends the plan back through SyncGroup. Everything here works
//! on dense integer indices (topics by [`TopicIdx`], partitions by a flat index from
//! [`GroupView::flat_index`]) so that Kafka's large case (1 000 000 partitions × 2 000 members)
//! stays within a second.
//!
//! Modules: [`model`] (the group model), [`cooperative`] (KIP-429 ownership rules, withholding,
//! plan validation — shared by every assignor), [`leader`] (the group leader's whole policy:
//! from decoded subscriptions to the plan to send, with every withholding rule and the
//! liveness bound; the client and the simulator both call [`Leader::plan`]), [`range`] and [`sticky`] (Kafka's `range` and
//! `cooperative-sticky`), [`lagbalance`] (the lag- and capacity-aware assignor) with its
//! [`userdata`] format and [`capacity`] estimator; [`rng`], the one seeded random stream the
//! workspace uses.
//!
//! ```
//! use lagbalance_assign::{Assignor, CooperativeStickyAssignor, GroupView, MemberView, TopicInfo, Tp};
//!
//! let member = |id: &str, owned: Vec<Tp>| MemberView {
//!     member_id: id.into(),
//!     topics: vec![0],
//!     owned,
//!     generation: 4,
//!     ..MemberView::default()
//! };
//! // "a" owns all four partitions; "b" just joined.
//! let view = GroupView {
//!     generation: 5,
//!     topics: vec![TopicInfo { name: "orders".into(), partitions: 4 }],
//!     members: vec![member("a", (0..4).map(|p| Tp::new(0, p)).collect()), member("b", vec![])],
//!     ..GroupView::default()
//! };
//! let plan = CooperativeStickyAssignor.assign(&view, None).unwrap();
//! // "a" keeps two and revokes two; they reach "b" next round, once "a" has let go.
//! assert_eq!(plan.assignments[0].len(), 2);
//! assert!(plan.assignments[1].is_empty());
//! ```

pub mod capacity;
pub mod cooperative;
pub mod lagbalance;
pub mod leader;
pub mod model;
pub mod range;
pub mod rng;
pub mod skew;
pub mod stats;
pub mod sticky;
pub mod userdata;

#[cfg(test)]
pub(crate) mod testutil;

pub use cooperative::{
    contested, cooperative_plan, finalize, remember, resolve_owners, sticky_hints, to_issued,
    validate, withhold_transfers,
};
pub use lagbalance::{LagBalanceAssignor, LagBalanceSettings};
pub use leader::{Leader, LeaderError, LeaderPlan};
pub use model::{
    AssignError, Assignor, GroupView, IssuedPlan, MemberStats, MemberView, NamedPartition,
    PartitionLoad, PartitionStats, Plan, TopicIdx, TopicInfo, Tp,
};
pub use range::RangeAssignor;
pub use sticky::CooperativeStickyAssignor;
