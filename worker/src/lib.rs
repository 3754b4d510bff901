//! # reelfarm worker
//!
//! A worker runs the tasks the coordinator assigns it and writes their outputs to the
//! artifact store (`reelfarm-artifacts`); it also runs the provenance checks the
//! coordinator hands it (VerifyContent), since only workers link the decoders and hold the
//! farm secret. It never depends on the coordinator: both meet through `reelfarm-proto`,
//! `reelfarm-domain` and `reelfarm-artifacts`. A tour:
//!
//! - [`agent`]: the stream to the coordinator (connecting and following the leader, the
//!   registry of running attempts), the etcd lease, the executor that runs one
//!   assignment, and the content checks.
//! - [`engine`]: where the heavy math runs — the `Engine` trait and the CPU engine, the
//!   only one built today (a CUDA engine would plug in behind the same trait).
//! - [`pipeline`]: the reference generation pipeline, one entry point per task kind
//!   (plan, video segment, audio, assemble), one module per stage.
//! - [`metrics`] and [`config`]: Prometheus metrics and flags.

pub mod agent;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod models;
pub mod pipeline;

pub use agent::{start, RunningWorker};
pub use config::Config;
