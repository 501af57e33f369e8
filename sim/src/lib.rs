//! Deterministic discrete-time simulator that runs the real assignors (`range`,
//! `cooperative-sticky`, `lagbalance` from `lagbalance-assign`) and two baselines
//! (`round-robin`, `lag-only`) against a model consumer group. See `docs/sim/README.md`.

pub mod engine;
pub mod producer;
pub mod report;
pub mod scenario;
pub mod strategies;
pub mod svg;

pub use engine::{
    max_sustainable, max_sustainable_with_producer, run, run_with_producer, RunResult, Sustainable,
};
pub use producer::ProducerMode;
pub use scenario::{
    by_name, with_producer, Measurement, Scenario, DEFAULT_SEEDS, NAMES, PRODUCER_NAMES,
};
pub use strategies::Strategy;
