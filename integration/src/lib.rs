//! Shared pieces of the integration tests: the test broker harness and unique names.
//!
//! Tests find a running broker through `LAGBALANCE_BOOTSTRAP`; when it is unset each test
//! process starts its own tansu (built once by `scripts/test-broker install`) on a free
//! loopback port and stops it when the [`TestBroker`] is dropped.

pub mod agent_scenario;
pub mod agents;
pub mod audit;
pub mod bin_path;
pub mod broker;
pub mod chaos;
pub mod e2e;
pub mod e2e_report;
pub mod lagplot;
pub mod lagrun;
pub mod ledger;
pub mod peers;
pub mod workers;

pub use broker::{unique, TestBroker};
