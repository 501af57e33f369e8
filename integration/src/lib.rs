//! Shared pieces of the integration tests: the test broker harness (Apache Kafka by default,
//! tansu as the second broker, see [`broker`]), the group peers from other clients ([`peers`]),
//! the ownership audit and unique names.

pub mod agent_scenario;
pub mod agents;
pub mod audit;
pub mod bin_path;
pub mod broker;
pub mod chaos;
pub mod e2e;
pub mod e2e_cli;
pub mod e2e_report;
pub mod lagplot;
pub mod lagrun;
pub mod ledger;
pub mod peers;
pub mod raw_member;
pub mod readback;
pub mod secure;
pub mod workers;

pub use broker::{unique, unique_temp_dir, TestBroker};
