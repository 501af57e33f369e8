//! lagbalance: a pure-Rust Kafka client whose consumer groups balance by work.
//!
//! Layers, bottom up: [`wire`] (framing, versions, connections), [`cluster`] (metadata,
//! connection pool, retries), [`admin`] (topic, offset and group operations), [`producer`],
//! [`fetcher`], and [`lag_partitioner`] (a producer partitioner steered by a group's lag).
//! [`lag`] is the one rule a partition's lag is read by, wherever it is read.
//! [`security`] holds the TLS and SASL settings the connections apply; [`settings`], the parsing
//! of the binaries' flags and `LAGBALANCE_*` variables.

pub mod admin;
pub mod cluster;
pub mod consumer;
pub mod control;
mod delivery;
pub mod error;
pub mod fetcher;
pub mod group;
pub mod idempotence;
pub mod lag;
pub mod lag_partitioner;
pub mod partitioner;
pub mod producer;
pub mod records;
pub mod security;
pub mod settings;
pub mod wire;

pub use cluster::{Client, ClientConfig};
pub use consumer::{Consumer, ConsumerConfig, RebalanceListener};
pub use error::{Error, Result};
pub use lagbalance_assign as assign;
pub use lagbalance_assign::NamedPartition;

/// The README's Rust example compiles as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
