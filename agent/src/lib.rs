//! `lagbalance-agent`: a sidecar that watches a consumer group and nudges its own consumer when
//! that consumer is the group's sustained lag outlier. See `docs/agent.md`.
//!
//! Pure modules (no I/O): [`config`], [`view`], [`outlier`], [`election`], [`storm`], [`decide`],
//! [`metrics`] (rendering), and the parsing half of [`hostmetrics`]. I/O modules: [`poll`]
//! (Kafka), [`ctl`] (control channel to the app), [`http`], [`run`] (the loop), [`status`].

pub mod config;
pub mod ctl;
pub mod decide;
pub mod election;
pub mod hostmetrics;
pub mod http;
pub mod metrics;
pub mod outlier;
pub mod poll;
pub mod run;
pub mod status;
pub mod storm;
pub mod view;
