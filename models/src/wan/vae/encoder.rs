//! The Wan VAE's encoder: conv_in, down blocks of residual blocks with the 2-D / 3-D
//! downsamplers (the 3-D one with its stride-2 time convolution and one-frame cache), the
//! middle block and the head.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{
    last_frames, AttentionBlock, Cache, CausalConv3d, Conv2d, MidBlock, ResidualBlock, RmsNorm,
    Slot,
};
use super::VaeConfig;

/// `WanResample` in `downsample2d` or `downsample3d` mode: per frame, zero padding on the
/// right and bottom then a stride-2 3x3 conv; in 3-D mode, then a stride-2 causal conv over
/// time that sees the previous chunk's last frame.
pub(super) struct Downsample {
    conv: Conv2d,
    time_conv: Option<CausalConv3d>,
}

impl Downsample {
    pub(super) fn new(dim: usize, temporal: bool, vb: VarBuilder) -> Result<Self> {
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

    pub(super) fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
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
pub(super) enum DownLayer {
    Residual(ResidualBlock),
    Attention(AttentionBlock),
    Downsample(Downsample),
}

/// `WanEncoder3d` (Wan 2.1 layout): outputs `2 * z_dim` channels, the mean then the log
/// variance of the latent distribution.
pub(super) struct Encoder {
    conv_in: CausalConv3d,
    down_blocks: Vec<DownLayer>,
    mid: MidBlock,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
}

impl Encoder {
    pub(super) fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
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

    pub(super) fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
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
