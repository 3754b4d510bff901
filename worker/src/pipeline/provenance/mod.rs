//! Provenance: is this video ours, and which job made it?
//!
//! - [`watermark`]: an invisible, keyed spread-spectrum mark in every frame carrying the job
//!   id; it survives re-encoding and metadata stripping.
//! - [`manifest`]: a signed JSON statement (AI-generated, generator, model, job, spec hash,
//!   content hash) stored in the MP4 and as manifest.json.
//! - [`verify`]: checks a file with both, given the farm secret.

pub mod ecc;
pub mod manifest;
pub mod verify;
pub mod watermark;

pub use verify::{verify, Verification};
