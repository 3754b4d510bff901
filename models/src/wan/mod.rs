//! The Wan 2.1 family: its configs, the diffusion transformer, the UMT5 text encoder, the
//! VAE (encoder and decoder), the guided sampling loop, and the whole model folder run
//! stage by stage ([`pipeline`]).

pub mod config;
pub(crate) mod cpu_ops;
pub mod pipeline;
pub mod sampling;
pub mod text_encoder;
pub mod transformer;
pub mod vae;
