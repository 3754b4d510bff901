//! The Wan 2.1 family: its configs, the diffusion transformer, the UMT5 text encoder, the
//! VAE decoder and the guided sampling loop.

pub mod config;
pub mod sampling;
pub mod text_encoder;
pub mod transformer;
pub mod vae;
