//! reelfarm worker.
pub mod engine;
pub mod pipeline;
