//! The Wan VAE's decoder: conv_in, the middle block, up blocks of residual blocks with the
//! 2-D / 3-D upsamplers (the 3-D one doubling time through the cache's `Rep` marker) and
//! the head.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{
    last_frames, Cache, CausalConv3d, Conv2d, MidBlock, ResidualBlock, RmsNorm, Slot, CACHE_T,
};
use super::VaeConfig;

/// `WanResample` in `upsample2d` or `upsample3d` mode.
pub(super) struct Upsample {
    conv: Conv2d,
    time_conv: Option<CausalConv3d>,
}

impl Upsample {
    pub(super) fn new(dim: usize, temporal: bool, vb: VarBuilder) -> Result<Self> {
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

    pub(super) fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
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
pub(super) struct UpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Upsample>,
}

impl UpBlock {
    pub(super) fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
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
pub(super) struct Decoder {
    conv_in: CausalConv3d,
    mid: MidBlock,
    up_blocks: Vec<UpBlock>,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
}

impl Decoder {
    pub(super) fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
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

    pub(super) fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let x = self.conv_in.forward_cached(x, cache)?;
        let mut x = self.mid.forward(&x, cache)?;
        for b in &self.up_blocks {
            x = b.forward(&x, cache)?;
        }
        let x = self.norm_out.forward(&x)?.silu()?;
        self.conv_out.forward_cached(&x, cache)
    }
}
