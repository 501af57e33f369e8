//! lagbalance: a pure-Rust Kafka client whose consumer groups balance by work.
pub use lagbalance_assign as assign;
