//! # reelfarm coordinator
//!
//! The coordinator accepts generation jobs over gRPC, plans each into tasks, schedules the
//! tasks on workers, and keeps durable state so that no job is lost or done twice. It is
//! one wing of the farm: it meets the worker only through the crates below both
//! (`reelfarm-proto`, `reelfarm-domain`, `reelfarm-artifacts`, `reelfarm-telemetry`) and
//! links none of the pipeline, codecs or models. A tour, in the order a job travels:
//!
//! - [`api`]: the gRPC services. Requests are validated and converted to domain types at
//!   this edge; errors become gRPC statuses naming the field (`api::status`).
//! - [`model`]: the domain — jobs, tasks, attempt tokens, outputs, the tenant rule.
//! - [`planner`]: a job spec → PLAN, VIDEO_SEGMENT × K, AUDIO, ASSEMBLE tasks.
//! - [`state`]: the durable store behind one trait, on etcd (clusters) or in memory (demo,
//!   unit tests). Every write is conditioned on the coordinator's term (fencing).
//! - [`scheduler`]: the working state in memory — the farm's job table and worker
//!   registry, the ready queue by priority, tenant fair share and age, placement on
//!   workers' free slots, attempt tokens, retries — writing through to the store before
//!   anything takes effect. VerifyContent's check is handed to a worker from here too.
//! - [`membership`]: follows worker leases in etcd; a lost lease requeues the worker's tasks.
//! - [`election`] and [`role`]: replicas elect one leader (a trait, on etcd or single
//!   node); followers answer with the leader's address.
//! - [`metrics`]: Prometheus metrics, served with `/healthz` by `reelfarm_telemetry`.
//! - [`config`] and [`server`]: flags, and starting everything under one shutdown token.

pub mod api;
pub(crate) mod config;
pub(crate) mod election;
pub(crate) mod membership;
pub mod metrics;
pub mod model;
pub mod planner;
pub(crate) mod role;
pub mod scheduler;
pub(crate) mod server;
pub mod state;
pub mod tls;

pub use config::Config;
pub use server::{start, RunningCoordinator};
