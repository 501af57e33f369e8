//! Deterministic discrete-time simulator that runs the real assignors (`range`,
//! `cooperative-sticky`, `lagbalance` from `lagbalance-assign`) and two baselines
//! (`round-robin`, `lag-only`) against a model consumer group. See `docs/sim/README.md`.

pub mod engine;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod strategies;
pub mod svg;

pub use engine::{max_sustainable, run, RunResult};
pub use scenario::{by_name, Scenario, NAMES};
pub use strategies::Strategy;
