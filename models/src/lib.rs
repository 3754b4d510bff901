//! Open video models for the reelfarm worker, on candle: the Wan 2.1 text-to-video family,
//! loaded from the diffusers folder layout (`model_index.json`, `transformer/`, `vae/`,
//! `text_encoder/`, `tokenizer/`, `scheduler/`) with weights memory-mapped from safetensors.
//!
//! Correctness is shown against diffusers itself: `oracle/make_wan_references.py` builds small
//! random Wan pipelines with diffusers and records diffusers' outputs beside them in
//! `tests/fixtures/`; the tests in `tests/` load those folders through the same loading code
//! the worker uses and compare stage by stage.

pub mod registry;
pub mod schedulers;
pub mod wan;
pub mod weights;
