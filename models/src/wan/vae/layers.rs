//! The parts the Wan VAE's encoder and decoder share: diffusers' per-frame feature cache,
//! the causal 3-D convolution (as conv2d sums over its temporal taps), the 2-D convolution,
//! RMS norm, residual block, the middle block's single-head attention and the middle block.

use candle_core::{bail, Result, Tensor, D};
use candle_nn::VarBuilder;

/// diffusers' `CACHE_T`: frames each causal conv keeps from the previous chunk.
pub(super) const CACHE_T: usize = 2;

/// One slot of diffusers' `feat_cache`: nothing yet, the `"Rep"` marker of an upsample3d on
/// its first chunk, or the last frames of the previous chunk (for a downsample3d, its last
/// frame).
#[derive(Clone)]
pub(super) enum Slot {
    Empty,
    Rep,
    Frames(Tensor),
}

/// diffusers' `feat_cache` list with its `feat_idx` counter.
pub(super) struct Cache {
    slots: Vec<Slot>,
    idx: usize,
}

impl Cache {
    /// diffusers' `clear_cache`: every slot empty.
    pub(super) fn new() -> Self {
        Self {
            slots: Vec::new(),
            idx: 0,
        }
    }

    /// diffusers resets `feat_idx` to 0 before each chunk; the slots carry over.
    pub(super) fn start_chunk(&mut self) {
        self.idx = 0;
    }

    /// Takes the current slot and advances the index; the caller stores the new value.
    pub(super) fn take(&mut self) -> Slot {
        if self.idx >= self.slots.len() {
            self.slots.push(Slot::Empty);
        }
        std::mem::replace(&mut self.slots[self.idx], Slot::Empty)
    }

    pub(super) fn put(&mut self, slot: Slot) {
        self.slots[self.idx] = slot;
        self.idx += 1;
    }
}

pub(super) fn last_frames(x: &Tensor, n: usize) -> Result<Tensor> {
    let t = x.dim(2)?;
    let n = n.min(t);
    x.narrow(2, t - n, n)?.contiguous()
}

/// `WanCausalConv3d`: zero padding `2 * pt` in front in time (replaced by cached frames when
/// given), `ph`/`pw` on both sides in space; spatial stride 1, temporal stride 1 except for
/// the encoder's downsample3d `time_conv`.
pub(super) struct CausalConv3d {
    /// `weight[:, :, k]` for each temporal tap, `[out, in, kh, kw]`.
    taps: Vec<Tensor>,
    bias: Tensor,
    time_pad: usize,
    space_pad: usize,
    time_stride: usize,
    out_dim: usize,
}

impl CausalConv3d {
    pub(super) fn new(
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

    pub(super) fn with_time_stride(mut self, stride: usize) -> Self {
        self.time_stride = stride;
        self
    }

    pub(super) fn cube(in_dim: usize, out_dim: usize, k: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(in_dim, out_dim, (k, k, k), (k / 2, k / 2), vb)
    }

    /// `x`: `[b, c, t, h, w]`; `cache`: frames of the previous chunk (ignored when the conv
    /// has no temporal padding, as in diffusers).
    pub(super) fn forward(&self, x: &Tensor, cache: Option<&Tensor>) -> Result<Tensor> {
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
    pub(super) fn forward_cached(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
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
pub(super) struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    pub(super) fn new(
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

    pub(super) fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

/// `WanRMS_norm`: `F.normalize` over channels (dim 1), times `sqrt(dim) * gamma`.
pub(super) struct RmsNorm {
    /// `gamma * sqrt(dim)`, shaped to broadcast over dim 1.
    gamma: Tensor,
}

impl RmsNorm {
    pub(super) fn new(dim: usize, images: bool, vb: VarBuilder) -> Result<Self> {
        let gamma = if images {
            vb.get((dim, 1, 1), "gamma")?.unsqueeze(0)?
        } else {
            vb.get((dim, 1, 1, 1), "gamma")?.unsqueeze(0)?
        };
        Ok(Self { gamma })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = x.dim(1)?;
        let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        let y = x.broadcast_div(&norm)?;
        y.broadcast_mul(&self.gamma)? * (dim as f64).sqrt()
    }
}

/// `WanResidualBlock`.
pub(super) struct ResidualBlock {
    norm1: RmsNorm,
    conv1: CausalConv3d,
    norm2: RmsNorm,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    pub(super) fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
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

    pub(super) fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
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
pub(super) struct AttentionBlock {
    norm: RmsNorm,
    to_qkv: Conv2d,
    proj: Conv2d,
}

impl AttentionBlock {
    pub(super) fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: RmsNorm::new(dim, true, vb.pp("norm"))?,
            to_qkv: Conv2d::new(dim, dim * 3, 1, 0, vb.pp("to_qkv"))?,
            proj: Conv2d::new(dim, dim, 1, 0, vb.pp("proj"))?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
pub(super) struct MidBlock {
    res0: ResidualBlock,
    attn: AttentionBlock,
    res1: ResidualBlock,
}

impl MidBlock {
    pub(super) fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            res0: ResidualBlock::new(dim, dim, vb.pp("resnets.0"))?,
            attn: AttentionBlock::new(dim, vb.pp("attentions.0"))?,
            res1: ResidualBlock::new(dim, dim, vb.pp("resnets.1"))?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let x = self.res0.forward(x, cache)?;
        let x = self.attn.forward(&x)?;
        self.res1.forward(&x, cache)
    }
}
