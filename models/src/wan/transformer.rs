//! The Wan diffusion transformer (diffusers `WanTransformer3DModel`, text-to-video): patch
//! embedding, 3-D rotary positions, self-attention with RMS q/k norm across heads,
//! cross-attention to the text, and a time embedding that shifts, scales and gates every
//! block. The math follows diffusers' `transformer_wan.py` line by line; the weight names
//! are diffusers' own, so a `save_pretrained` folder loads unchanged. Weights may be f32,
//! bf16 or f16; norms, modulation, rotary angles and attention run in f32 as diffusers'
//! do. Its GELU and softmax are the vectorised CPU kernels of [`super::cpu_ops`].

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{linear, Linear, VarBuilder};

use super::config::TransformerConfig;
use super::cpu_ops::{gelu_tanh, softmax_last_dim};

/// `f` on each clip of a batch `x` [b, ...] alone, the results concatenated: what keeps a
/// batched forward bit for bit equal to each clip's forward alone. A GEMM folds the batch
/// into its rows and its blocking follows the row count, and attention's query blocks
/// follow `b`, so running those on the whole batch would round differently. The element-wise
/// work between them (norms, modulation, rotary, residuals) runs on the whole batch.
fn per_clip(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let b = x.dim(0)?;
    if b == 1 {
        return f(x);
    }
    let clips = (0..b)
        .map(|i| f(&x.narrow(0, i, 1)?))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&clips, 0)
}

/// A linear layer applied clip by clip ([`per_clip`]).
fn linear_per_clip(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    per_clip(x, |x| layer.forward(x))
}

/// `FP32LayerNorm`: layer norm computed in f32, with or without affine weights.
struct LayerNorm {
    weight: Option<(Tensor, Tensor)>,
    eps: f64,
}

impl LayerNorm {
    fn plain(eps: f64) -> Self {
        Self { weight: None, eps }
    }

    fn affine(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let w = vb.get(dim, "weight")?;
        let b = vb.get(dim, "bias")?;
        Ok(Self {
            weight: Some((w, b)),
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let mut y = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        if let Some((w, b)) = &self.weight {
            y = y
                .broadcast_mul(&w.to_dtype(DType::F32)?)?
                .broadcast_add(&b.to_dtype(DType::F32)?)?;
        }
        y.to_dtype(dtype)
    }
}

/// `torch.nn.RMSNorm` over the last dimension, with a weight.
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// Per-token rotary angles, as cosines and sines per pair of channels: [tokens, head_dim / 2].
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    /// `WanRotaryPosEmbed`: the head's channels are split into time, height and width parts
    /// (`h = w = 2 * (head_dim / 6)`, time the rest), each a 1-D rotary embedding of the
    /// token's frame, row and column in patches. Angles in f64 as diffusers computes them.
    pub fn new(cfg: &TransformerConfig, grid: [usize; 3], device: &Device) -> Result<Self> {
        let head = cfg.attention_head_dim;
        let hw = 2 * (head / 6);
        let dims = [head - 2 * hw, hw, hw];
        let theta = 10_000f64;
        let pairs = head / 2;
        let tokens = grid[0] * grid[1] * grid[2];
        let (mut cos, mut sin) = (
            Vec::with_capacity(tokens * pairs),
            Vec::with_capacity(tokens * pairs),
        );
        for f in 0..grid[0] {
            for h in 0..grid[1] {
                for w in 0..grid[2] {
                    for (axis, &dim) in dims.iter().enumerate() {
                        let pos = [f, h, w][axis] as f64;
                        for i in 0..dim / 2 {
                            let freq = 1.0 / theta.powf((2 * i) as f64 / dim as f64);
                            let angle = pos * freq;
                            cos.push(angle.cos() as f32);
                            sin.push(angle.sin() as f32);
                        }
                    }
                }
            }
        }
        let max = *grid.iter().max().unwrap_or(&0);
        if max > cfg.rope_max_seq_len {
            candle_core::bail!(
                "the latent grid {grid:?} is longer than rope_max_seq_len {}",
                cfg.rope_max_seq_len
            );
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (tokens, pairs), device)?,
            sin: Tensor::from_vec(sin, (tokens, pairs), device)?,
        })
    }

    /// Rotates interleaved channel pairs of `x` [batch, tokens, heads, head_dim].
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, h, d) = x.dims4()?;
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?.reshape((b, n, h, d / 2, 2))?;
        let x1 = x.narrow(4, 0, 1)?.squeeze(4)?;
        let x2 = x.narrow(4, 1, 1)?.squeeze(4)?;
        let cos = self.cos.reshape((1, n, 1, d / 2))?;
        let sin = self.sin.reshape((1, n, 1, d / 2))?;
        let even = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
        let odd = (x1.broadcast_mul(&sin)? + x2.broadcast_mul(&cos)?)?;
        Tensor::stack(&[even, odd], 4)?
            .reshape((b, n, h, d))?
            .to_dtype(dtype)
    }
}

/// `WanAttention` without image keys: q/k/v projections, RMS norm of q and k across heads,
/// rotary positions for self-attention, scaled dot-product attention, output projection.
struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    norm_q: RmsNorm,
    norm_k: RmsNorm,
    heads: usize,
}

impl Attention {
    fn new(dim: usize, heads: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            to_q: linear(dim, dim, vb.pp("to_q"))?,
            to_k: linear(dim, dim, vb.pp("to_k"))?,
            to_v: linear(dim, dim, vb.pp("to_v"))?,
            to_out: linear(dim, dim, vb.pp("to_out.0"))?,
            norm_q: RmsNorm::new(dim, eps, vb.pp("norm_q"))?,
            norm_k: RmsNorm::new(dim, eps, vb.pp("norm_k"))?,
            heads,
        })
    }

    /// `x` [b, tokens, dim]; `context` [b, text, dim] for cross-attention. Each clip of the
    /// batch runs alone ([`per_clip`]).
    fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        rotary: Option<&Rotary>,
    ) -> Result<Tensor> {
        if x.dim(0)? == 1 {
            return self.forward_clip(x, context, rotary);
        }
        let clips = (0..x.dim(0)?)
            .map(|i| {
                let context = context.map(|c| c.narrow(0, i, 1)).transpose()?;
                self.forward_clip(&x.narrow(0, i, 1)?, context.as_ref(), rotary)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&clips, 0)
    }

    fn forward_clip(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        rotary: Option<&Rotary>,
    ) -> Result<Tensor> {
        let kv_in = context.unwrap_or(x);
        let (b, n, dim) = x.dims3()?;
        let m = kv_in.dim(1)?;
        let hd = dim / self.heads;
        let q = self
            .norm_q
            .forward(&self.to_q.forward(x)?)?
            .reshape((b, n, self.heads, hd))?;
        let k = self
            .norm_k
            .forward(&self.to_k.forward(kv_in)?)?
            .reshape((b, m, self.heads, hd))?;
        let v = self.to_v.forward(kv_in)?.reshape((b, m, self.heads, hd))?;
        let (q, k) = match rotary {
            Some(r) => (r.apply(&q)?, r.apply(&k)?),
            None => (q, k),
        };
        // [b, heads, tokens, hd]. The scores, softmax and weighted sum run in f32 whatever
        // the weights' dtype, as torch's scaled_dot_product_attention accumulates half
        // inputs in f32: bf16 scores of magnitude ~10 would be off by ~0.05 before the exp.
        let dtype = x.dtype();
        let heads = |t: Tensor| t.to_dtype(DType::F32)?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (heads(q)?, heads(k)?, heads(v)?);
        let scale = 1.0 / (hd as f64).sqrt();
        let out = attention(&q, &k, &v, scale, ATTENTION_SCORES_AT_ONCE)?
            .transpose(1, 2)?
            .reshape((b, n, dim))?
            .to_dtype(dtype)?;
        self.to_out.forward(&out)
    }
}

/// Attention scores held at once, in f32 elements (256 MiB). Wan's own size, 480x832 and 81
/// frames, is 32,760 tokens: its whole [12 heads, tokens, tokens] matrix would be 51 GB.
const ATTENTION_SCORES_AT_ONCE: usize = 1 << 26;

/// `softmax(q k^T * scale) v` for `q` [b, h, n, d] and `k`, `v` [b, h, m, d]. The query rows
/// go in blocks that keep the [b, h, block, m] scores under `max_scores` elements; each
/// row's softmax is over all the keys, so blocking does not change the result.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, max_scores: usize) -> Result<Tensor> {
    let (b, h, n, _) = q.dims4()?;
    let m = k.dim(2)?;
    let block = (max_scores / (b * h * m).max(1)).clamp(1, n.max(1));
    let kt = k.t()?;
    let rows = |q: &Tensor| -> Result<Tensor> {
        let scores = (q.matmul(&kt)? * scale)?;
        softmax_last_dim(&scores)?.matmul(v)
    };
    if block >= n {
        return rows(q);
    }
    let blocks = (0..n)
        .step_by(block)
        .map(|start| rows(&q.narrow(2, start, block.min(n - start))?.contiguous()?))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&blocks, 2)
}

/// `FeedForward(activation_fn="gelu-approximate")`: linear, tanh-GELU, linear.
struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
}

impl FeedForward {
    fn new(dim: usize, inner: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj_in: linear(dim, inner, vb.pp("net.0.proj"))?,
            proj_out: linear(inner, dim, vb.pp("net.2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear_per_clip(
            &self.proj_out,
            &gelu_tanh(&linear_per_clip(&self.proj_in, x)?)?,
        )
    }
}

/// `WanTransformerBlock`.
struct Block {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: Option<LayerNorm>,
    attn2: Attention,
    norm3: LayerNorm,
    ffn: FeedForward,
    scale_shift_table: Tensor,
}

impl Block {
    fn new(cfg: &TransformerConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        let heads = cfg.num_attention_heads;
        Ok(Self {
            norm1: LayerNorm::plain(cfg.eps),
            attn1: Attention::new(dim, heads, cfg.eps, vb.pp("attn1"))?,
            norm2: if cfg.cross_attn_norm {
                Some(LayerNorm::affine(dim, cfg.eps, vb.pp("norm2"))?)
            } else {
                None
            },
            attn2: Attention::new(dim, heads, cfg.eps, vb.pp("attn2"))?,
            norm3: LayerNorm::plain(cfg.eps),
            ffn: FeedForward::new(dim, cfg.ffn_dim, vb.pp("ffn"))?,
            scale_shift_table: vb.get((1, 6, dim), "scale_shift_table")?,
        })
    }

    /// `x` [b, tokens, dim], `context` [b, text, dim], `time` [b, 6, dim].
    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        time: &Tensor,
        rotary: &Rotary,
    ) -> Result<Tensor> {
        let m = self
            .scale_shift_table
            .to_dtype(DType::F32)?
            .broadcast_add(&time.to_dtype(DType::F32)?)?;
        let part = |i: usize| m.narrow(1, i, 1);
        let (shift, scale, gate) = (part(0)?, part(1)?, part(2)?);
        let (c_shift, c_scale, c_gate) = (part(3)?, part(4)?, part(5)?);
        let dtype = x.dtype();

        let h = modulate(&self.norm1.forward(x)?, &shift, &scale)?.to_dtype(dtype)?;
        let attn = self.attn1.forward(&h, None, Some(rotary))?;
        let x = (x.to_dtype(DType::F32)? + attn.to_dtype(DType::F32)?.broadcast_mul(&gate)?)?
            .to_dtype(dtype)?;

        let h = match &self.norm2 {
            Some(n) => n.forward(&x)?,
            None => x.clone(),
        };
        let x = (&x + self.attn2.forward(&h, Some(context), None)?)?;

        let h = modulate(&self.norm3.forward(&x)?, &c_shift, &c_scale)?.to_dtype(dtype)?;
        let ff = self.ffn.forward(&h)?;
        (x.to_dtype(DType::F32)? + ff.to_dtype(DType::F32)?.broadcast_mul(&c_gate)?)?
            .to_dtype(dtype)
    }
}

/// `x * (1 + scale) + shift`, in f32.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.to_dtype(DType::F32)?
        .broadcast_mul(&(scale + 1.0)?)?
        .broadcast_add(shift)
}

/// Diffusers' `Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)`: [b] -> [b, dim] as
/// cos then sin of `t * 10000^(-i / half)`.
fn timestep_features(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let exponent: Vec<f32> = (0..half)
        .map(|i| (-(10_000f32.ln()) * i as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::from_vec(exponent, (1, half), t.device())?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], 1)
}

/// The whole transformer, loaded.
pub struct WanTransformer {
    cfg: TransformerConfig,
    /// The weights' dtype: inputs are cast to it, the output comes in it.
    dtype: DType,
    patch_embedding: Linear,
    time_1: Linear,
    time_2: Linear,
    time_proj: Linear,
    text_1: Linear,
    text_2: Linear,
    blocks: Vec<Block>,
    norm_out: LayerNorm,
    proj_out: Linear,
    scale_shift_table: Tensor,
}

impl WanTransformer {
    /// Builds the model from `vb` (diffusers' names); every tensor's shape is checked.
    pub fn load(cfg: TransformerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.check().map_err(candle_core::Error::msg)?;
        let dim = cfg.inner_dim();
        let [pt, ph, pw] = cfg.patch_size;
        let patch_in = cfg.in_channels * pt * ph * pw;
        // A Conv3d whose kernel equals its stride is a linear map of each patch.
        let pe = vb.pp("patch_embedding");
        let patch_w = pe
            .get((dim, cfg.in_channels, pt, ph, pw), "weight")?
            .reshape((dim, patch_in))?;
        let patch_embedding = Linear::new(patch_w, Some(pe.get(dim, "bias")?));
        let ce = vb.pp("condition_embedder");
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(&cfg, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embedding,
            time_1: linear(cfg.freq_dim, dim, ce.pp("time_embedder.linear_1"))?,
            time_2: linear(dim, dim, ce.pp("time_embedder.linear_2"))?,
            time_proj: linear(dim, 6 * dim, ce.pp("time_proj"))?,
            text_1: linear(cfg.text_dim, dim, ce.pp("text_embedder.linear_1"))?,
            text_2: linear(dim, dim, ce.pp("text_embedder.linear_2"))?,
            blocks,
            norm_out: LayerNorm::plain(cfg.eps),
            proj_out: linear(dim, cfg.out_channels * pt * ph * pw, vb.pp("proj_out"))?,
            scale_shift_table: vb.get((1, 2, dim), "scale_shift_table")?,
            dtype: vb.dtype(),
            cfg,
        })
    }

    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    /// The dtype the weights were loaded in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The flow prediction for `latents` [b, c, f, h, w] at `timestep` [b] given the text
    /// embeddings `context` [b, text_len, text_dim]. Each clip of a batch gets exactly the
    /// prediction it would get alone (b = 1), bit for bit. Latents and context of any float dtype
    /// are cast to the weights' dtype (as `WanPipeline` casts them to `transformer.dtype`);
    /// the prediction is in the weights' dtype.
    pub fn forward(&self, latents: &Tensor, timestep: &Tensor, context: &Tensor) -> Result<Tensor> {
        let latents = &latents.to_dtype(self.dtype)?;
        let context = &context.to_dtype(self.dtype)?;
        let (b, c, f, h, w) = latents.dims5()?;
        let [pt, ph, pw] = self.cfg.patch_size;
        if f % pt != 0 || h % ph != 0 || w % pw != 0 {
            candle_core::bail!(
                "latents {f}x{h}x{w} are not a whole number of {pt}x{ph}x{pw} patches"
            );
        }
        let grid = [f / pt, h / ph, w / pw];
        let tokens = grid[0] * grid[1] * grid[2];
        let rotary = Rotary::new(&self.cfg, grid, latents.device())?;

        // Patches in (frame, row, column) order, each flattened as (channel, pt, ph, pw).
        let patches = latents
            .reshape(&[b, c, grid[0], pt, grid[1], ph, grid[2], pw][..])?
            .permute(vec![0, 2, 4, 6, 1, 3, 5, 7])?
            .reshape((b, tokens, c * pt * ph * pw))?;
        let mut x = linear_per_clip(&self.patch_embedding, &patches)?;

        let t = timestep_features(timestep, self.cfg.freq_dim)?.to_dtype(x.dtype())?;
        let temb = linear_per_clip(&self.time_2, &linear_per_clip(&self.time_1, &t)?.silu()?)?;
        let time = linear_per_clip(&self.time_proj, &temb.silu()?)?.reshape((
            b,
            6,
            self.cfg.inner_dim(),
        ))?;
        let context = linear_per_clip(
            &self.text_2,
            &gelu_tanh(&linear_per_clip(&self.text_1, context)?)?,
        )?;

        for block in &self.blocks {
            x = block.forward(&x, &context, &time, &rotary)?;
        }

        let m = self
            .scale_shift_table
            .to_dtype(DType::F32)?
            .broadcast_add(&temb.to_dtype(DType::F32)?.unsqueeze(1)?)?;
        let (shift, scale) = (m.narrow(1, 0, 1)?, m.narrow(1, 1, 1)?);
        let x = modulate(&self.norm_out.forward(&x)?, &shift, &scale)?.to_dtype(x.dtype())?;
        let out = linear_per_clip(&self.proj_out, &x)?;
        let oc = self.cfg.out_channels;
        out.reshape(&[b, grid[0], grid[1], grid[2], pt, ph, pw, oc][..])?
            .permute(vec![0, 7, 1, 4, 2, 5, 3, 6])?
            .reshape((b, oc, f, h, w))
    }
}

// CPU kernels for the two element-wise hot spots, candle's versions of which are scalar
// and single-threaded (see `gelu_tanh` and `softmax_last_dim`).

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_in_query_blocks_equals_attention_at_once() {
        let cpu = &Device::Cpu;
        let q = Tensor::randn(0f32, 1., (1, 3, 37, 8), cpu).unwrap();
        let k = Tensor::randn(0f32, 1., (1, 3, 29, 8), cpu).unwrap();
        let v = Tensor::randn(0f32, 1., (1, 3, 29, 8), cpu).unwrap();
        let whole = attention(&q, &k, &v, 0.35, usize::MAX).unwrap();
        // 3 heads x 29 keys x 5 rows: blocks of 5 query rows, the last one of 2.
        let blocked = attention(&q, &k, &v, 0.35, 3 * 29 * 5).unwrap();
        let diff = (whole - blocked)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff <= 1e-6, "blocked attention differs by {diff}");
    }
}
