//! The Wan 2.1 video VAE (diffusers `AutoencoderKLWan`), both ways: the encoder turns a video
//! into the mean of its latent distribution, the decoder turns latents back into a video.
//! Both are built from the same parts: causal 3-D convolutions with diffusers' per-frame
//! feature cache, RMS norms, residual blocks and the single-head spatial attention of the
//! middle block; the encoder shrinks with the 2-D / 3-D downsamplers, the decoder grows with
//! the matching upsamplers. The math follows diffusers' `autoencoder_kl_wan.py`; weight names
//! are diffusers' own. candle has no conv3d, so a causal conv3d is the sum over its temporal
//! taps of conv2d on time slices.
//!
//! Files: this one (the config and [`WanVae`]), `layers` (the cache and the shared parts),
//! `encoder`, `decoder`.

mod decoder;
mod encoder;
mod layers;

use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use decoder::Decoder;
use encoder::Encoder;
use layers::{Cache, CausalConv3d};

/// Frames per encoder chunk after the first frame, which goes alone: the `4` of diffusers'
/// `AutoencoderKLWan._encode` (fixed there, whatever the temporal downsampling factor).
const ENCODE_CHUNK: usize = 4;

fn default_base_dim() -> usize {
    96
}
fn default_z_dim() -> usize {
    16
}
fn default_dim_mult() -> Vec<usize> {
    vec![1, 2, 4, 4]
}
fn default_num_res_blocks() -> usize {
    2
}
fn default_temperal_downsample() -> Vec<bool> {
    vec![false, true, true]
}
fn default_channels() -> usize {
    3
}

/// `vae/config.json` of a Wan model (`AutoencoderKLWan`). Unknown keys are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "default_base_dim")]
    pub base_dim: usize,
    #[serde(default)]
    pub decoder_base_dim: Option<usize>,
    #[serde(default = "default_z_dim")]
    pub z_dim: usize,
    #[serde(default = "default_dim_mult")]
    pub dim_mult: Vec<usize>,
    #[serde(default = "default_num_res_blocks")]
    pub num_res_blocks: usize,
    #[serde(default)]
    pub attn_scales: Vec<f64>,
    #[serde(default = "default_temperal_downsample")]
    pub temperal_downsample: Vec<bool>,
    #[serde(default)]
    pub latents_mean: Vec<f64>,
    #[serde(default)]
    pub latents_std: Vec<f64>,
    #[serde(default)]
    pub is_residual: bool,
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    #[serde(default = "default_channels")]
    pub out_channels: usize,
    #[serde(default)]
    pub patch_size: Option<usize>,
}

impl VaeConfig {
    /// Refuses what this VAE does not implement (the Wan 2.2 residual VAE, patching).
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.is_residual {
            return Err("is_residual: the Wan 2.2 residual VAE is not supported".into());
        }
        if self.patch_size.is_some() {
            return Err("patch_size: patchified VAEs are not supported".into());
        }
        if self.dim_mult.is_empty() {
            return Err("dim_mult: empty".into());
        }
        if self.temperal_downsample.len() + 1 < self.dim_mult.len() {
            return Err("temperal_downsample: shorter than dim_mult - 1".into());
        }
        Ok(())
    }
}

/// The Wan VAE: `encoder` then `quant_conv` one chunk of frames at a time (the first frame,
/// then four at a time), and `post_quant_conv` then the causal `decoder` one latent frame at
/// a time, each with diffusers' feature cache.
pub struct WanVae {
    cfg: VaeConfig,
    encoder: Encoder,
    quant_conv: CausalConv3d,
    post_quant_conv: CausalConv3d,
    decoder: Decoder,
}

impl WanVae {
    /// Loads `encoder.*`, `quant_conv.*`, `post_quant_conv.*` and `decoder.*`.
    pub fn load(cfg: VaeConfig, vb: VarBuilder) -> Result<Self> {
        if let Err(e) = cfg.check() {
            bail!("vae config: {e}");
        }
        let encoder = Encoder::new(&cfg, vb.pp("encoder"))?;
        let quant_conv = CausalConv3d::cube(cfg.z_dim * 2, cfg.z_dim * 2, 1, vb.pp("quant_conv"))?;
        let post_quant_conv =
            CausalConv3d::cube(cfg.z_dim, cfg.z_dim, 1, vb.pp("post_quant_conv"))?;
        let decoder = Decoder::new(&cfg, vb.pp("decoder"))?;
        Ok(Self {
            cfg,
            encoder,
            quant_conv,
            post_quant_conv,
            decoder,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// `video`: `[b, in_channels, frames, H, W]` in `[-1, 1]`. Returns the mean of the latent
    /// distribution, `[b, z_dim, latent_frames, H / 8, W / 8]` (spatially
    /// `2^(dim_mult.len() - 1)`), un-normalised: diffusers'
    /// `AutoencoderKLWan.encode(video).latent_dist.mean`, before `latents_mean` / `latents_std`.
    /// As in diffusers, frames are read as `1 + 4k` (the first alone, then chunks of four)
    /// and any frames past the last full chunk are ignored; `latent_frames` is `1 + k` for
    /// Wan 2.1's temporal factor of 4.
    pub fn encode(&self, video: &Tensor) -> Result<Tensor> {
        let (_, c, f, _, _) = video.dims5()?;
        if c != self.cfg.in_channels {
            bail!(
                "vae encode: {c} video channels, the VAE has {}",
                self.cfg.in_channels
            );
        }
        if f == 0 {
            bail!("vae encode: a video of 0 frames");
        }
        let chunks = 1 + (f - 1) / ENCODE_CHUNK;
        let mut cache = Cache::new();
        let mut outs = Vec::with_capacity(chunks);
        for i in 0..chunks {
            cache.start_chunk();
            let chunk = if i == 0 {
                video.narrow(2, 0, 1)?
            } else {
                video.narrow(2, 1 + ENCODE_CHUNK * (i - 1), ENCODE_CHUNK)?
            };
            outs.push(self.encoder.forward(&chunk.contiguous()?, &mut cache)?);
        }
        let enc = self.quant_conv.forward(&Tensor::cat(&outs, 2)?, None)?;
        // `DiagonalGaussianDistribution`: the first half of the channels is the mean.
        enc.narrow(1, 0, self.cfg.z_dim)?.contiguous()
    }

    /// `latents`: `[b, z, f, h, w]`, already un-normalised (what `AutoencoderKLWan.decode`
    /// takes). Returns `[b, out_channels, frames, 8h, 8w]` in `[-1, 1]`.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let mut outs = Vec::new();
        self.decode_chunks(latents, |frames| {
            outs.push(frames);
            Ok(())
        })?;
        Tensor::cat(&outs, 2)
    }

    /// [`WanVae::decode`] one latent frame at a time, handing each chunk of decoded frames
    /// (`[b, out_channels, n, 8h, 8w]` in `[-1, 1]`: 1 frame for the first latent frame, the
    /// temporal factor's for each later one) to `on_chunk` as soon as it is decoded, so a
    /// long clip never holds its whole decoded video as floats.
    pub fn decode_chunks(
        &self,
        latents: &Tensor,
        mut on_chunk: impl FnMut(Tensor) -> Result<()>,
    ) -> Result<()> {
        let (_, z, f, _, _) = latents.dims5()?;
        if z != self.cfg.z_dim {
            bail!(
                "vae decode: {z} latent channels, the VAE has {}",
                self.cfg.z_dim
            );
        }
        let x = self.post_quant_conv.forward(latents, None)?;
        let mut cache = Cache::new();
        for i in 0..f {
            cache.start_chunk();
            let chunk = x.narrow(2, i, 1)?.contiguous()?;
            on_chunk(
                self.decoder
                    .forward(&chunk, &mut cache)?
                    .clamp(-1f32, 1f32)?,
            )?;
        }
        Ok(())
    }
}
