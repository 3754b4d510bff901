//! The Wan 2.1 family: its configs, the diffusion transformer and the UMT5 text encoder.

pub mod config;
pub mod sampling;
pub mod text_encoder;
pub mod transformer;
