//! Pure partition-assignment logic for lagbalance (no I/O, no clocks of its own).
//!
//! The group leader decodes every member's subscription into a [`GroupView`], asks an
//! [`Assignor`] for a [`Plan`], and sends the plan back through SyncGroup. Everything here works
//! on dense integer indices (topics by [`TopicIdx`], partitions by a flat index from
//! [`GroupView::flat_index`]) so that Kafka's large case (1 000 000 partitions × 2 000 members)
//! stays within a second.

pub mod capacity;
pub mod cooperative;
pub mod lagbalance;
pub mod model;
pub mod range;
pub mod sticky;
pub mod userdata;

#[cfg(test)]
pub(crate) mod testutil;

pub use cooperative::{resolve_owners, sticky_hints, to_issued, validate, withhold_transfers};
pub use lagbalance::{LagBalanceAssignor, LagBalanceSettings};
pub use model::{
    AssignError, Assignor, GroupView, IssuedPlan, MemberStats, MemberView, PartitionStats, Plan,
    TopicIdx, TopicInfo, Tp,
};
pub use range::RangeAssignor;
pub use sticky::CooperativeStickyAssignor;
