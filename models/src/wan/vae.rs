//! The Wan 2.1 video VAE (diffusers `AutoencoderKLWan`), both ways: the encoder turns a video
//! into the mean of its latent distribution, the decoder turns latents back into a video.
//! Both are built from the same parts: causal 3-D convolutions with diffusers' per-frame
//! feature cache, RMS norms, residual blocks and the single-head spatial attention of the
//! middle block; the encoder shrinks with the 2-D / 3-D downsamplers, the decoder grows with
//! the matching upsamplers. The math follows diffusers' `autoencoder_kl_wan.py`; weight names
//! are diffusers' own. candle has no conv3d, so a causal conv3d is the sum over its temporal
//! taps of conv2d on time slices.

use candle_core::{bail, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::Deserialize;

/// diffusers' `CACHE_T`: frames each causal conv keeps from the previous chunk.
const CACHE_T: usize = 2;

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

/// One slot of diffusers' `feat_cache`: nothing yet, the `"Rep"` marker of an upsample3d on
/// its first chunk, or the last frames of the previous chunk (for a downsample3d, its last
/// frame).
#[derive(Clone)]
enum Slot {
    Empty,
    Rep,
    Frames(Tensor),
}

/// diffusers' `feat_cache` list with its `feat_idx` counter.
struct Cache {
    slots: Vec<Slot>,
    idx: usize,
}

impl Cache {
    /// diffusers' `clear_cache`: every slot empty.
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            idx: 0,
        }
    }

    /// diffusers resets `feat_idx` to 0 before each chunk; the slots carry over.
    fn start_chunk(&mut self) {
        self.idx = 0;
    }

    /// Takes the current slot and advances the index; the caller stores the new value.
    fn take(&mut self) -> Slot {
        if self.idx >= self.slots.len() {
            self.slots.push(Slot::Empty);
        }
        std::mem::replace(&mut self.slots[self.idx], Slot::Empty)
    }

    fn put(&mut self, slot: Slot) {
        self.slots[self.idx] = slot;
        self.idx += 1;
    }
}

fn last_frames(x: &Tensor, n: usize) -> Result<Tensor> {
    let t = x.dim(2)?;
    let n = n.min(t);
    x.narrow(2, t - n, n)?.contiguous()
}

/// `WanCausalConv3d`: zero padding `2 * pt` in front in time (replaced by cached frames when
/// given), `ph`/`pw` on both sides in space; spatial stride 1, temporal stride 1 except for
/// the encoder's downsample3d `time_conv`.
struct CausalConv3d {
    /// `weight[:, :, k]` for each temporal tap, `[out, in, kh, kw]`.
    taps: Vec<Tensor>,
    bias: Tensor,
    time_pad: usize,
    space_pad: usize,
    time_stride: usize,
    out_dim: usize,
}

impl CausalConv3d {
    fn new(
        in_dim: usize,
        out_dim: usize,
        kernel: (usize, usize, usize),
        padding: (usize, usize),
        vb: VarBuilder,
    ) -> Result<Self> {
        let w = vb.get((out_dim, in_dim, kernel.0, kernel.1, kernel.2), "weight")?;
        let bias = vb.get(out_dim, "bias")?;
        let taps = (0..kernel.0)
            .map(|k| w.narrow(2, k, 1)?.squeeze(2)?.contiguous())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            taps,
            bias,
            time_pad: 2 * padding.0,
            space_pad: padding.1,
            time_stride: 1,
            out_dim,
        })
    }

    fn with_time_stride(mut self, stride: usize) -> Self {
        self.time_stride = stride;
        self
    }

    fn cube(in_dim: usize, out_dim: usize, k: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(in_dim, out_dim, (k, k, k), (k / 2, k / 2), vb)
    }

    /// `x`: `[b, c, t, h, w]`; `cache`: frames of the previous chunk (ignored when the conv
    /// has no temporal padding, as in diffusers).
    fn forward(&self, x: &Tensor, cache: Option<&Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        let mut front = self.time_pad;
        if let Some(c) = cache {
            if self.time_pad > 0 {
                x = Tensor::cat(&[c, &x], 2)?;
                front = front.saturating_sub(c.dim(2)?);
            }
        }
        if front > 0 {
            x = x.pad_with_zeros(2, front, 0)?;
        }
        let (b, c, t, h, w) = x.dims5()?;
        let kt = self.taps.len();
        if t < kt {
            bail!("causal conv3d: {t} frames for a kernel of {kt}");
        }
        let s = self.time_stride;
        let t_out = (t - kt) / s + 1;
        // [b, t, c, h, w]
        let frames = x.permute((0, 2, 1, 3, 4))?.contiguous()?;
        let mut acc: Option<Tensor> = None;
        for (k, tap) in self.taps.iter().enumerate() {
            // The input frames tap k sees: k, k + s, ..., k + s * (t_out - 1).
            let slice = if s == 1 {
                frames.narrow(1, k, t_out)?
            } else {
                let idx: Vec<u32> = (0..t_out).map(|j| (k + s * j) as u32).collect();
                frames.index_select(&Tensor::new(idx, x.device())?, 1)?
            };
            let slice = slice.contiguous()?.reshape((b * t_out, c, h, w))?;
            let y = slice.conv2d(tap, self.space_pad, 1, 1, 1)?;
            acc = Some(match acc {
                None => y,
                Some(a) => (a + y)?,
            });
        }
        let y = acc.expect("at least one temporal tap");
        let (_, _, ho, wo) = y.dims4()?;
        let y = y.broadcast_add(&self.bias.reshape((1, self.out_dim, 1, 1))?)?;
        y.reshape((b, t_out, self.out_dim, ho, wo))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()
    }

    /// The cached call every decoder conv makes: keeps the last `CACHE_T` frames of `x`
    /// (topped up with the previous chunk's last frame) for the next chunk.
    fn forward_cached(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let prev = cache.take();
        let mut cache_x = last_frames(x, CACHE_T)?;
        let prev = match prev {
            Slot::Frames(p) => Some(p),
            _ => None,
        };
        if cache_x.dim(2)? < 2 {
            if let Some(p) = &prev {
                cache_x = Tensor::cat(&[&last_frames(p, 1)?, &cache_x], 2)?;
            }
        }
        let y = self.forward(x, prev.as_ref())?;
        cache.put(Slot::Frames(cache_x));
        Ok(y)
    }
}

/// A 2-D convolution with bias, `[n, c, h, w]`.
struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    fn new(
        in_dim: usize,
        out_dim: usize,
        k: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out_dim, in_dim, k, k), "weight")?,
            bias: vb.get(out_dim, "bias")?,
            padding,
            stride: 1,
        })
    }

    fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

/// `WanRMS_norm`: `F.normalize` over channels (dim 1), times `sqrt(dim) * gamma`.
struct RmsNorm {
    /// `gamma * sqrt(dim)`, shaped to broadcast over dim 1.
    gamma: Tensor,
}

impl RmsNorm {
    fn new(dim: usize, images: bool, vb: VarBuilder) -> Result<Self> {
        let gamma = if images {
            vb.get((dim, 1, 1), "gamma")?.unsqueeze(0)?
        } else {
            vb.get((dim, 1, 1, 1), "gamma")?.unsqueeze(0)?
        };
        Ok(Self { gamma })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = x.dim(1)?;
        let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        let y = x.broadcast_div(&norm)?;
        y.broadcast_mul(&self.gamma)? * (dim as f64).sqrt()
    }
}

/// `WanResidualBlock`.
struct ResidualBlock {
    norm1: RmsNorm,
    conv1: CausalConv3d,
    norm2: RmsNorm,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let shortcut = if in_dim != out_dim {
            Some(CausalConv3d::cube(
                in_dim,
                out_dim,
                1,
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: RmsNorm::new(in_dim, false, vb.pp("norm1"))?,
            conv1: CausalConv3d::cube(in_dim, out_dim, 3, vb.pp("conv1"))?,
            norm2: RmsNorm::new(out_dim, false, vb.pp("norm2"))?,
            conv2: CausalConv3d::cube(out_dim, out_dim, 3, vb.pp("conv2"))?,
            shortcut,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let h = match &self.shortcut {
            Some(s) => s.forward(x, None)?,
            None => x.clone(),
        };
        let y = self.norm1.forward(x)?.silu()?;
        let y = self.conv1.forward_cached(&y, cache)?;
        let y = self.norm2.forward(&y)?.silu()?;
        let y = self.conv2.forward_cached(&y, cache)?;
        y + h
    }
}

/// `WanAttentionBlock`: single-head self-attention over the pixels of each frame.
struct AttentionBlock {
    norm: RmsNorm,
    to_qkv: Conv2d,
    proj: Conv2d,
}

impl AttentionBlock {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: RmsNorm::new(dim, true, vb.pp("norm"))?,
            to_qkv: Conv2d::new(dim, dim * 3, 1, 0, vb.pp("to_qkv"))?,
            proj: Conv2d::new(dim, dim, 1, 0, vb.pp("proj"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let n = b * t;
        let y = x
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?
            .reshape((n, c, h, w))?;
        let y = self.norm.forward(&y)?;
        let qkv = self.to_qkv.forward(&y)?; // [n, 3c, h, w]
        let qkv = qkv.reshape((n, 3 * c, h * w))?.transpose(1, 2)?; // [n, hw, 3c]
        let q = qkv.narrow(D::Minus1, 0, c)?.contiguous()?;
        let k = qkv.narrow(D::Minus1, c, c)?.contiguous()?;
        let v = qkv.narrow(D::Minus1, 2 * c, c)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (c as f64).sqrt()))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let o = probs.matmul(&v)?; // [n, hw, c]
        let o = o.transpose(1, 2)?.contiguous()?.reshape((n, c, h, w))?;
        let o = self.proj.forward(&o)?;
        let o = o
            .reshape((b, t, c, h, w))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?;
        o + x
    }
}

/// `WanMidBlock` with one attention layer.
struct MidBlock {
    res0: ResidualBlock,
    attn: AttentionBlock,
    res1: ResidualBlock,
}

impl MidBlock {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            res0: ResidualBlock::new(dim, dim, vb.pp("resnets.0"))?,
            attn: AttentionBlock::new(dim, vb.pp("attentions.0"))?,
            res1: ResidualBlock::new(dim, dim, vb.pp("resnets.1"))?,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let x = self.res0.forward(x, cache)?;
        let x = self.attn.forward(&x)?;
        self.res1.forward(&x, cache)
    }
}

/// `WanResample` in `downsample2d` or `downsample3d` mode: per frame, zero padding on the
/// right and bottom then a stride-2 3x3 conv; in 3-D mode, then a stride-2 causal conv over
/// time that sees the previous chunk's last frame.
struct Downsample {
    conv: Conv2d,
    time_conv: Option<CausalConv3d>,
}

impl Downsample {
    fn new(dim: usize, temporal: bool, vb: VarBuilder) -> Result<Self> {
        let conv = Conv2d::new(dim, dim, 3, 0, vb.pp("resample.1"))?.with_stride(2);
        let time_conv = if temporal {
            Some(
                CausalConv3d::new(dim, dim, (3, 1, 1), (0, 0), vb.pp("time_conv"))?
                    .with_time_stride(2),
            )
        } else {
            None
        };
        Ok(Self { conv, time_conv })
    }

    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let frames = x
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?
            .reshape((b * t, c, h, w))?;
        // `nn.ZeroPad2d((0, 1, 0, 1))`
        let padded = frames.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
        let y = self.conv.forward(&padded)?;
        let (_, co, ho, wo) = y.dims4()?;
        let x = y
            .reshape((b, t, co, ho, wo))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?;
        let Some(time_conv) = &self.time_conv else {
            return Ok(x);
        };
        // The first chunk passes through untouched; each later one is convolved together
        // with the last frame of the chunk before it.
        let last = last_frames(&x, 1)?;
        let y = match cache.take() {
            Slot::Frames(prev) => time_conv.forward(&Tensor::cat(&[&prev, &x], 2)?, None)?,
            _ => x,
        };
        cache.put(Slot::Frames(last));
        Ok(y)
    }
}

/// One entry of `WanEncoder3d.down_blocks`, a flat list in diffusers.
enum DownLayer {
    Residual(ResidualBlock),
    Attention(AttentionBlock),
    Downsample(Downsample),
}

/// `WanEncoder3d` (Wan 2.1 layout): outputs `2 * z_dim` channels, the mean then the log
/// variance of the latent distribution.
struct Encoder {
    conv_in: CausalConv3d,
    down_blocks: Vec<DownLayer>,
    mid: MidBlock,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
}

impl Encoder {
    fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.base_dim;
        let mult = &cfg.dim_mult;
        let mut dims = vec![dim];
        dims.extend(mult.iter().map(|m| dim * m));
        let conv_in = CausalConv3d::cube(cfg.in_channels, dims[0], 3, vb.pp("conv_in"))?;
        let mut down_blocks = Vec::new();
        let mut scale = 1.0;
        for i in 0..mult.len() {
            let mut in_dim = dims[i];
            let out_dim = dims[i + 1];
            for _ in 0..cfg.num_res_blocks {
                let vbi = vb.pp(format!("down_blocks.{}", down_blocks.len()));
                down_blocks.push(DownLayer::Residual(ResidualBlock::new(
                    in_dim, out_dim, vbi,
                )?));
                // Exact comparison, as diffusers' `scale in attn_scales`: both are powers of 2.
                if cfg.attn_scales.contains(&scale) {
                    let vbi = vb.pp(format!("down_blocks.{}", down_blocks.len()));
                    down_blocks.push(DownLayer::Attention(AttentionBlock::new(out_dim, vbi)?));
                }
                in_dim = out_dim;
            }
            if i != mult.len() - 1 {
                let vbi = vb.pp(format!("down_blocks.{}", down_blocks.len()));
                down_blocks.push(DownLayer::Downsample(Downsample::new(
                    out_dim,
                    cfg.temperal_downsample[i],
                    vbi,
                )?));
                scale /= 2.0;
            }
        }
        let out_dim = dims[mult.len()];
        Ok(Self {
            conv_in,
            down_blocks,
            mid: MidBlock::new(out_dim, vb.pp("mid_block"))?,
            norm_out: RmsNorm::new(out_dim, false, vb.pp("norm_out"))?,
            conv_out: CausalConv3d::cube(out_dim, cfg.z_dim * 2, 3, vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let mut x = self.conv_in.forward_cached(x, cache)?;
        for layer in &self.down_blocks {
            x = match layer {
                DownLayer::Residual(r) => r.forward(&x, cache)?,
                DownLayer::Attention(a) => a.forward(&x)?,
                DownLayer::Downsample(d) => d.forward(&x, cache)?,
            };
        }
        let x = self.mid.forward(&x, cache)?;
        let x = self.norm_out.forward(&x)?.silu()?;
        self.conv_out.forward_cached(&x, cache)
    }
}

/// `WanResample` in `upsample2d` or `upsample3d` mode.
struct Upsample {
    conv: Conv2d,
    time_conv: Option<CausalConv3d>,
}

impl Upsample {
    fn new(dim: usize, temporal: bool, vb: VarBuilder) -> Result<Self> {
        let conv = Conv2d::new(dim, dim / 2, 3, 1, vb.pp("resample.1"))?;
        let time_conv = if temporal {
            Some(CausalConv3d::new(
                dim,
                dim * 2,
                (3, 1, 1),
                (1, 0),
                vb.pp("time_conv"),
            )?)
        } else {
            None
        };
        Ok(Self { conv, time_conv })
    }

    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let mut x = x.clone();
        if let Some(time_conv) = &self.time_conv {
            match cache.take() {
                Slot::Empty => cache.put(Slot::Rep),
                prev => {
                    let mut cache_x = last_frames(&x, CACHE_T)?;
                    if cache_x.dim(2)? < 2 {
                        let front = match &prev {
                            Slot::Frames(p) => last_frames(p, 1)?,
                            _ => cache_x.zeros_like()?,
                        };
                        cache_x = Tensor::cat(&[&front, &cache_x], 2)?;
                    }
                    let y = match &prev {
                        Slot::Frames(p) => time_conv.forward(&x, Some(p))?,
                        _ => time_conv.forward(&x, None)?,
                    };
                    cache.put(Slot::Frames(cache_x));
                    // [b, 2, c, t, h, w] -> [b, c, t, 2, h, w] -> [b, c, 2t, h, w]
                    x = y
                        .reshape((b, 2, c, t, h, w))?
                        .permute((0, 2, 3, 1, 4, 5))?
                        .contiguous()?
                        .reshape((b, c, t * 2, h, w))?;
                }
            }
        }
        let t = x.dim(2)?;
        let frames = x
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?
            .reshape((b * t, c, h, w))?;
        let up = frames.upsample_nearest2d(h * 2, w * 2)?;
        let y = self.conv.forward(&up)?;
        let (_, co, ho, wo) = y.dims4()?;
        y.reshape((b, t, co, ho, wo))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()
    }
}

/// `WanUpBlock`: residual blocks, then an optional upsampler.
struct UpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Upsample>,
}

impl UpBlock {
    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let mut x = x.clone();
        for r in &self.resnets {
            x = r.forward(&x, cache)?;
        }
        if let Some(u) = &self.upsampler {
            x = u.forward(&x, cache)?;
        }
        Ok(x)
    }
}

/// `WanDecoder3d` (Wan 2.1 layout).
struct Decoder {
    conv_in: CausalConv3d,
    mid: MidBlock,
    up_blocks: Vec<UpBlock>,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
}

impl Decoder {
    fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.decoder_base_dim.unwrap_or(cfg.base_dim);
        let mult = &cfg.dim_mult;
        let mut dims = vec![dim * mult[mult.len() - 1]];
        dims.extend(mult.iter().rev().map(|m| dim * m));
        let temporal_up: Vec<bool> = cfg.temperal_downsample.iter().rev().copied().collect();
        let conv_in = CausalConv3d::cube(cfg.z_dim, dims[0], 3, vb.pp("conv_in"))?;
        let mid = MidBlock::new(dims[0], vb.pp("mid_block"))?;
        let mut up_blocks = Vec::new();
        let mut out_dim = dims[0];
        for i in 0..mult.len() {
            let mut in_dim = dims[i];
            out_dim = dims[i + 1];
            if i > 0 {
                in_dim /= 2;
            }
            let vbi = vb.pp(format!("up_blocks.{i}"));
            let mut resnets = Vec::new();
            let mut cur = in_dim;
            for j in 0..=cfg.num_res_blocks {
                resnets.push(ResidualBlock::new(
                    cur,
                    out_dim,
                    vbi.pp(format!("resnets.{j}")),
                )?);
                cur = out_dim;
            }
            let upsampler = if i != mult.len() - 1 {
                Some(Upsample::new(
                    out_dim,
                    temporal_up[i],
                    vbi.pp("upsamplers.0"),
                )?)
            } else {
                None
            };
            up_blocks.push(UpBlock { resnets, upsampler });
        }
        Ok(Self {
            conv_in,
            mid,
            up_blocks,
            norm_out: RmsNorm::new(out_dim, false, vb.pp("norm_out"))?,
            conv_out: CausalConv3d::cube(out_dim, cfg.out_channels, 3, vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let x = self.conv_in.forward_cached(x, cache)?;
        let mut x = self.mid.forward(&x, cache)?;
        for b in &self.up_blocks {
            x = b.forward(&x, cache)?;
        }
        let x = self.norm_out.forward(&x)?.silu()?;
        self.conv_out.forward_cached(&x, cache)
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
