//! # reelfarm domain
//!
//! The vocabulary the coordinator and the workers must agree on, in a crate below both
//! wings so that neither depends on the other (DESIGN.md, "Layout"). Small and free of I/O:
//!
//! - [`clip`]: what a clip is made with — the diffusion [`Sampler`](clip::Sampler) and the
//!   [`frame_count`](clip::frame_count) rule both sides compute from a spec.
//! - [`model_rules`]: what an open model family accepts (frame counts, sizes), which the
//!   coordinator adjusts a model job to and the worker checks again.
//! - [`cluster_keys`]: the etcd key layout of one cluster (job records, results, worker
//!   registrations, the election), written by one side and read by the other.
//!
//! Wire types stay in `reelfarm-proto`, the artifact store in `reelfarm-artifacts`. The
//! farm secret is not here: only the workers hold it (they sign, and they run
//! VerifyContent's check), so it lives in the worker's configuration.

pub mod clip;
pub mod cluster_keys;
pub mod model_rules;

pub use clip::{frame_count, Sampler};
pub use cluster_keys::ClusterKeys;
