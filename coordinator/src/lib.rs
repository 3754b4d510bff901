//! # reelfarm coordinator
//!
//! The coordinator accepts generation jobs over gRPC, plans each into tasks, schedules the
//! tasks on workers, and keeps durable state so that no job is lost or done twice. A tour,
//! in the order a job travels:
//!
//! - [`api`]: the gRPC services. Requests are validated and converted to domain types at
//!   this edge; errors become gRPC statuses naming the field (`api::status`).
//! - [`model`]: the domain — jobs, tasks, attempt tokens, outputs.
//! - [`planner`]: a job spec → PLAN, VIDEO_SEGMENT × K, AUDIO, ASSEMBLE tasks.
//! - [`state`]: the durable store behind one trait, on etcd (clusters) or in memory (demo,
//!   unit tests). Every write is conditioned on the coordinator's term (fencing).
//! - [`scheduler`]: the working state in memory — ready queue by priority then age,
//!   placement on workers' free slots, attempt tokens, retries — writing through to the
//!   store before anything takes effect.
//! - [`membership`]: follows worker leases in etcd; a lost lease requeues the worker's tasks.
//! - [`election`] and [`role`]: replicas elect one leader through etcd; followers answer
//!   with the leader's address.
//! - [`metrics`]: Prometheus metrics, served with `/healthz` by `reelfarm_telemetry`.
//! - [`config`] and [`server`]: flags, and starting everything under one shutdown token.

pub mod api;
pub mod config;
pub mod election;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod planner;
pub mod role;
pub mod scheduler;
pub mod server;
pub mod state;

pub use config::Config;
pub use server::{start, RunningCoordinator};
