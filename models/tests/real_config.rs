//! The real Wan 2.1 text-to-video 1.3B architecture, not a tiny stand-in: its published
//! `transformer/config.json` (`tests/fixtures/wan2.1-t2v-1.3b-config/`) parses and passes the
//! engine's check, the transformer it describes has exactly the parameters diffusers counts
//! for it (and the 14B sibling too), and one guided denoising step of that architecture runs on
//! CPU from random bf16 weights written as sharded safetensors and loaded through the
//! production path (`load_component`: the index, memory-mapped shards, shape checks).
//!
//! The weights are random (no checkpoint is downloaded), so this shows that the real sizes
//! load and run, with finite output of the right shape; equality with diffusers is shown on
//! the tiny fixtures (`transformer_parity.rs`) and, at this size, by `reelfarm bench model
//! --config 1.3b`, which runs the same step in diffusers on the same weights and compares.

mod common;

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use reelfarm_models::schedulers::flow_euler::FlowEuler;
use reelfarm_models::wan::config::TransformerConfig;
use reelfarm_models::wan::sampling::{denoise, Conditioning};
use reelfarm_models::wan::transformer::WanTransformer;
use reelfarm_models::weights::check::check_component;
use reelfarm_models::weights::random::write_random_component;
use reelfarm_models::weights::{load_component, read_config};

/// `sum(p.numel() for p in WanTransformer3DModel(**config).parameters())` in diffusers 0.42.1
/// (built on the meta device) for the fixture's config: 825 tensors.
const WAN_1_3B_PARAMETERS: u64 = 1_418_996_800;
const WAN_1_3B_TENSORS: usize = 825;

/// The same count for `WanTransformer3DModel()`, whose defaults are Wan2.1-T2V-14B's
/// transformer (40 layers, 40 heads x 128 = 5120 wide, ffn 13824; diffusers'
/// `scripts/convert_wan_to_diffusers.py` gives the same config for "Wan-T2V-14B").
const WAN_14B_PARAMETERS: u64 = 14_288_491_584;

fn config_1_3b() -> TransformerConfig {
    read_config(&common::fixture("wan2.1-t2v-1.3b-config/transformer"))
        .expect("the fixture's config.json parses")
}

fn config_14b() -> TransformerConfig {
    TransformerConfig {
        num_layers: 40,
        num_attention_heads: 40,
        ffn_dim: 13824,
        ..config_1_3b()
    }
}

/// The transformer's parameters by the architecture's own arithmetic (diffusers'
/// `WanTransformer3DModel` layer by layer), independent of the loading code.
fn parameters_by_formula(cfg: &TransformerConfig) -> u64 {
    let d = cfg.inner_dim() as u64;
    let [pt, ph, pw] = cfg.patch_size.map(|p| p as u64);
    let patch = pt * ph * pw;
    let linear = |i: u64, o: u64| i * o + o;
    // q, k, v, out projections and the RMS norms of q and k.
    let attention = 4 * linear(d, d) + 2 * d;
    let block = 2 * attention
        + 2 * d // norm2 (cross_attn_norm), affine
        + linear(d, cfg.ffn_dim as u64)
        + linear(cfg.ffn_dim as u64, d)
        + 6 * d; // scale_shift_table
    let embeddings = linear(cfg.in_channels as u64 * patch, d) // patch_embedding
        + linear(cfg.freq_dim as u64, d) + linear(d, d) // time_embedder
        + linear(d, 6 * d) // time_proj
        + linear(cfg.text_dim as u64, d) + linear(d, d); // text_embedder
    let head = linear(d, cfg.out_channels as u64 * patch) + 2 * d; // proj_out, scale_shift_table
    cfg.num_layers as u64 * block + embeddings + head
}

/// Every tensor `WanTransformer::load` reads for `cfg`, in the order it reads them.
fn architecture(cfg: &TransformerConfig) -> Vec<(String, Vec<usize>)> {
    reelfarm_models::weights::check::architecture(|vb| WanTransformer::load(cfg.clone(), vb))
        .expect("the architecture builds")
}

fn count(tensors: &[(String, Vec<usize>)]) -> u64 {
    tensors
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum()
}

#[test]
fn the_published_1_3b_config_parses_and_has_diffusers_parameter_count() {
    let cfg = config_1_3b();
    cfg.check().expect("the engine accepts the 1.3B config");
    assert_eq!(
        (
            cfg.num_layers,
            cfg.num_attention_heads,
            cfg.attention_head_dim
        ),
        (30, 12, 128)
    );
    assert_eq!(
        (cfg.ffn_dim, cfg.in_channels, cfg.out_channels),
        (8960, 16, 16)
    );
    assert_eq!(
        (cfg.text_dim, cfg.freq_dim, cfg.patch_size),
        (4096, 256, [1, 2, 2])
    );
    assert_eq!(cfg.qk_norm.as_deref(), Some("rms_norm_across_heads"));
    assert!(cfg.cross_attn_norm);
    assert_eq!((cfg.eps, cfg.rope_max_seq_len), (1e-6, 1024));

    let tensors = architecture(&cfg);
    assert_eq!(tensors.len(), WAN_1_3B_TENSORS, "tensors diffusers has");
    assert_eq!(count(&tensors), WAN_1_3B_PARAMETERS, "parameters loaded");
    assert_eq!(parameters_by_formula(&cfg), WAN_1_3B_PARAMETERS, "formula");

    let big = config_14b();
    assert_eq!(count(&architecture(&big)), WAN_14B_PARAMETERS, "14B loaded");
    assert_eq!(
        parameters_by_formula(&big),
        WAN_14B_PARAMETERS,
        "14B formula"
    );
}

/// `VmHWM` and `VmRSS` of this process in MiB (Linux), for the report. The high-water mark
/// is reached while loading: the weights copied into memory plus the shards' pages mapped
/// at the same moment (file pages the kernel can drop, unmapped when loading ends).
fn memory_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Latent frames, rows and columns of the step: one 8x8 latent frame (a 64x64 image,
/// 16 tokens after 2x2 patches), and a short text context of this many tokens.
const LATENTS: (usize, usize, usize) = (1, 8, 8);
const TEXT_TOKENS: usize = 16;

/// One guided step (cond and uncond forwards, CFG 5, Euler) of the 1.3B architecture.
///
/// About 2.8 GB of bf16 weights are written under cargo's target tmp dir (on disk, not
/// `/tmp`, which may be RAM on CI) and removed once loaded. Measured in a debug test build
/// on a 2 vCPU AMD EPYC (2026-12-02): writing 20 s, loading 6.5 s, the step 7.7 s, 35 s in
/// all; VmRSS 2.7 GiB after loading, VmHWM 5.3 GiB (while loading, the weights' copies plus
/// the shards' mapped pages, which the kernel can drop). To see the figures:
/// `cargo test -p reelfarm-models --test real_config -- --nocapture`.
#[test]
fn one_guided_step_of_the_1_3b_architecture_runs_from_sharded_bf16_safetensors() {
    let cfg = config_1_3b();
    let tensors = architecture(&cfg);
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temp dir");
    let dir = tmp.path().join("transformer");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::copy(
        common::fixture("wan2.1-t2v-1.3b-config/transformer/config.json"),
        dir.join("config.json"),
    )
    .expect("copying config.json");

    let started = Instant::now();
    write_random_component(&dir, &tensors, true, 7).expect("writing the shards");
    let written = started.elapsed();

    // The worker's start-up check, from the headers only.
    let report =
        check_component(&dir, |vb| WanTransformer::load(cfg.clone(), vb)).expect("the shards open");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    assert_eq!(report.parameters, WAN_1_3B_PARAMETERS);
    assert_eq!(report.bytes, 2 * WAN_1_3B_PARAMETERS, "bf16 on disk");
    assert_eq!(report.dtypes, ["BF16"]);

    let started = Instant::now();
    let model = load_component(&dir, DType::BF16, &Device::Cpu, WanTransformer::load)
        .expect("loading the 1.3B transformer");
    let loaded = started.elapsed();
    let (hwm_loaded, rss_loaded) = memory_mib();
    drop(tmp); // the weights are in memory now; free the disk early

    let (f, h, w) = LATENTS;
    let cpu = Device::Cpu;
    let latents = Tensor::randn(0f32, 1., (1, cfg.in_channels, f, h, w), &cpu).unwrap();
    let prompt = Tensor::randn(0f32, 1., (1, TEXT_TOKENS, cfg.text_dim), &cpu).unwrap();
    let negative = Tensor::randn(0f32, 1., (1, TEXT_TOKENS, cfg.text_dim), &cpu).unwrap();
    let text = Conditioning {
        prompt: &prompt,
        negative: Some(&negative),
        guidance_scale: 5.0,
    };
    let mut sampler = FlowEuler::new(1, 3.0);
    let started = Instant::now();
    let out = denoise(&model, &mut sampler, latents.clone(), &text, |_, _| {}).unwrap();
    let stepped = started.elapsed();
    let (hwm, rss) = memory_mib();

    assert_eq!(
        out.dims(),
        latents.dims(),
        "the step keeps the latents' shape"
    );
    assert_eq!(out.dtype(), DType::F32, "the sampler keeps f32 latents");
    let values = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()), "a non-finite latent");
    let spread = values.iter().map(|v| v * v).sum::<f32>() / values.len() as f32;
    assert!(spread > 1e-3, "the step produced all zeros");
    eprintln!(
        "1.3B: wrote {:.1} s, loaded {:.1} s (VmRSS {rss_loaded} MiB, VmHWM {hwm_loaded} MiB), \
         one guided step ({} tokens, {TEXT_TOKENS} text tokens) {:.1} s; VmRSS {rss} MiB, VmHWM {hwm} MiB",
        written.as_secs_f64(),
        loaded.as_secs_f64(),
        f * h * w / 4,
        stepped.as_secs_f64()
    );
}
