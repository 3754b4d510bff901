//! UMT5 encoder and its tokenizer (transformers `UMT5EncoderModel`, `tokenizer.json`).
//!
//! The math follows transformers' `modeling_umt5.py` for the encoder stack: every block has its
//! own relative position bias (bidirectional buckets), attention scores are not scaled by
//! 1/sqrt(d_kv), the layer norm is T5's RMS norm (no mean subtraction, no bias), the feed
//! forward is gated with `gelu_new` (tanh approximation), and a final RMS norm closes the stack.

use std::path::Path;

use anyhow::Context as _;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use tokenizers::{PostProcessor as _, Tokenizer, TruncationDirection};

/// `text_encoder/config.json` (transformers `UMT5Config`); unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Umt5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
}

/// T5's layer norm: scale only, variance without mean subtraction, accumulated in f32.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let x = xs.to_dtype(DType::F32)?;
        let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        x.to_dtype(self.weight.dtype())?.broadcast_mul(&self.weight)
    }
}

/// transformers' `_relative_position_bucket` with `bidirectional=True` (the encoder), in f32
/// like torch so that positions on a bucket boundary land where transformers puts them.
fn relative_position_bucket(
    relative_position: i64,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let num_buckets = (num_buckets / 2) as i64;
    let mut bucket = if relative_position > 0 {
        num_buckets
    } else {
        0
    };
    let n = relative_position.abs();
    let max_exact = num_buckets / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let log_ratio = (n as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32)
            * (num_buckets - max_exact) as f32;
        let large = (max_exact + log_ratio as i64).min(num_buckets - 1);
        bucket += large;
    }
    bucket as u32
}

#[derive(Debug, Clone)]
struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    relative_attention_bias: Embedding,
    num_heads: usize,
    d_kv: usize,
    num_buckets: usize,
    max_distance: usize,
}

impl SelfAttention {
    fn load(cfg: &Umt5Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        Ok(Self {
            q: candle_nn::linear_no_bias(cfg.d_model, inner, vb.pp("q"))?,
            k: candle_nn::linear_no_bias(cfg.d_model, inner, vb.pp("k"))?,
            v: candle_nn::linear_no_bias(cfg.d_model, inner, vb.pp("v"))?,
            o: candle_nn::linear_no_bias(inner, cfg.d_model, vb.pp("o"))?,
            relative_attention_bias: candle_nn::embedding(
                cfg.relative_attention_num_buckets,
                cfg.num_heads,
                vb.pp("relative_attention_bias"),
            )?,
            num_heads: cfg.num_heads,
            d_kv: cfg.d_kv,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
        })
    }

    /// `compute_bias`: [1, H, L, L].
    fn position_bias(&self, len: usize, device: &Device) -> candle_core::Result<Tensor> {
        let buckets: Vec<u32> = (0..len as i64)
            .flat_map(|query| {
                (0..len as i64).map(move |key| {
                    relative_position_bucket(key - query, self.num_buckets, self.max_distance)
                })
            })
            .collect();
        let buckets = Tensor::from_vec(buckets, len * len, device)?;
        self.relative_attention_bias
            .forward(&buckets)?
            .reshape((len, len, self.num_heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)
    }

    /// `xs` [B, L, d_model] (already normed), `mask_bias` [B, 1, 1, L] additive.
    fn forward(&self, xs: &Tensor, mask_bias: &Tensor) -> candle_core::Result<Tensor> {
        let (b, l, _) = xs.dims3()?;
        let heads = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, l, self.num_heads, self.d_kv))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.q.forward(xs)?)?;
        let k = heads(self.k.forward(xs)?)?;
        let v = heads(self.v.forward(xs)?)?;
        // UMT5: no 1/sqrt(d_kv) scaling of the scores.
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        let bias = self
            .position_bias(l, xs.device())?
            .to_dtype(scores.dtype())?;
        let scores = scores.broadcast_add(&bias)?.broadcast_add(mask_bias)?;
        // The softmax in f32 for half dtypes: candle's sums the exponentials in the input
        // dtype, torch's accumulates in f32.
        let weights = super::cpu_ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
            .to_dtype(scores.dtype())?;
        let out =
            weights
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, l, self.num_heads * self.d_kv))?;
        self.o.forward(&out)
    }
}

/// `UMT5DenseGatedActDense`: wo(gelu_new(wi_0 x) * wi_1 x). In f16, `wo` is kept in f32 and
/// its output is f32, as transformers does for f16 (`_keep_in_fp32_modules = ["wo"]`): UMT5's
/// feed-forward outputs can exceed f16's range.
#[derive(Debug, Clone)]
struct GatedFeedForward {
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
}

impl GatedFeedForward {
    fn load(cfg: &Umt5Config, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            wi_0: candle_nn::linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_0"))?,
            wi_1: candle_nn::linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_1"))?,
            wo: candle_nn::linear_no_bias(cfg.d_ff, cfg.d_model, {
                let wo = vb.pp("wo");
                if vb.dtype() == DType::F16 {
                    wo.set_dtype(DType::F32)
                } else {
                    wo
                }
            })?,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        // The tanh approximation, transformers' `gelu_new`.
        let gate = super::cpu_ops::gelu_tanh(&self.wi_0.forward(xs)?)?;
        let linear = self.wi_1.forward(xs)?;
        let wo_dtype = self.wo.weight().dtype();
        self.wo.forward(&(gate * linear)?.to_dtype(wo_dtype)?)
    }
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attn: SelfAttention,
    ff_norm: RmsNorm,
    ff: GatedFeedForward,
}

impl Block {
    fn load(cfg: &Umt5Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let eps = cfg.layer_norm_epsilon;
        let attn = vb.pp("layer.0");
        let ff = vb.pp("layer.1");
        Ok(Self {
            attn_norm: RmsNorm::load(cfg.d_model, eps, attn.pp("layer_norm"))?,
            attn: SelfAttention::load(cfg, attn.pp("SelfAttention"))?,
            ff_norm: RmsNorm::load(cfg.d_model, eps, ff.pp("layer_norm"))?,
            ff: GatedFeedForward::load(cfg, ff.pp("DenseReluDense"))?,
        })
    }

    /// In f16 the residual stream turns f32 at the first feed-forward (torch promotes f16 +
    /// f32), and an f16 stream with an infinity is clamped as `UMT5Block` does.
    fn forward(&self, xs: &Tensor, mask_bias: &Tensor) -> candle_core::Result<Tensor> {
        let attn = self.attn.forward(&self.attn_norm.forward(xs)?, mask_bias)?;
        let xs = clamp_f16(&promoted_add(xs, &attn)?)?;
        let ff = self.ff.forward(&self.ff_norm.forward(&xs)?)?;
        clamp_f16(&promoted_add(&xs, &ff)?)
    }
}

/// `a + b`, in f32 when their dtypes differ (torch's type promotion for f16 + f32).
fn promoted_add(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if a.dtype() == b.dtype() {
        a + b
    } else {
        a.to_dtype(DType::F32)? + b.to_dtype(DType::F32)?
    }
}

/// `UMT5Block`'s f16 guard: when the f16 hidden states hold an infinity, every value is
/// clamped to ±(f16 max - 1000); otherwise (and for other dtypes) they pass unchanged.
fn clamp_f16(xs: &Tensor) -> candle_core::Result<Tensor> {
    if xs.dtype() != DType::F16 {
        return Ok(xs.clone());
    }
    let largest = xs
        .abs()?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    if largest.is_infinite() {
        let limit = 65504f32 - 1000.0;
        xs.clamp(-limit, limit)
    } else {
        Ok(xs.clone())
    }
}

/// The most negative finite value of `dtype`, the additive mask transformers uses.
fn dtype_min(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.389_531_389_251_535e38,
        DType::F64 => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}

/// transformers `UMT5EncoderModel`: token embeddings, the blocks, the final RMS norm.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    embed_tokens: Embedding,
    blocks: Vec<Block>,
    final_layer_norm: RmsNorm,
    config: Umt5Config,
    device: Device,
    dtype: DType,
}

impl TextEncoder {
    /// Loads the weights under the transformers names (`shared.weight`, or
    /// `encoder.embed_tokens.weight` when present, `encoder.block.{i}...`).
    pub fn load(config: Umt5Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let embed_vb = if vb.contains_tensor("encoder.embed_tokens.weight") {
            vb.pp("encoder.embed_tokens")
        } else {
            vb.pp("shared")
        };
        let embed_tokens = candle_nn::embedding(config.vocab_size, config.d_model, embed_vb)?;
        let enc = vb.pp("encoder");
        let blocks = (0..config.num_layers)
            .map(|i| Block::load(&config, enc.pp(format!("block.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let final_layer_norm = RmsNorm::load(
            config.d_model,
            config.layer_norm_epsilon,
            enc.pp("final_layer_norm"),
        )?;
        Ok(Self {
            embed_tokens,
            blocks,
            final_layer_norm,
            device: vb.device().clone(),
            dtype: vb.dtype(),
            config,
        })
    }

    pub fn config(&self) -> &Umt5Config {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// ids [B, L] u32 or i64, mask [B, L] (1 = token) -> last_hidden_state [B, L, d_model]
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let (mb, ml) = mask.dims2()?;
        if (mb, ml) != (b, l) {
            candle_core::bail!("text encoder: ids are [{b}, {l}] but the mask is [{mb}, {ml}]");
        }
        let ids = match ids.dtype() {
            DType::U32 | DType::I64 => ids.clone(),
            _ => ids.to_dtype(DType::U32)?,
        };
        // Padded keys get the dtype's min added to their scores, as transformers' eager mask.
        let keep = mask.to_dtype(DType::F32)?.ne(0f32)?;
        let zeros = Tensor::zeros((b, l), self.dtype, &self.device)?;
        let mins =
            Tensor::full(dtype_min(self.dtype), (b, l), &self.device)?.to_dtype(self.dtype)?;
        let mask_bias = keep
            .to_device(&self.device)?
            .where_cond(&zeros, &mins)?
            .reshape((b, 1, 1, l))?;
        let mut xs = self.embed_tokens.forward(&ids)?;
        for block in &self.blocks {
            xs = block.forward(&xs, &mask_bias)?;
        }
        self.final_layer_norm.forward(&xs)
    }
}

/// The UMT5 tokenizer (`tokenizer/tokenizer.json`).
#[derive(Clone)]
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer").finish_non_exhaustive()
    }
}

/// Python's `html.unescape` for the references prompts carry: `&amp; &lt; &gt; &quot; &#39;
/// &apos;` and numeric `&#N;` / `&#xH;`. A small hand version rather than another dependency;
/// the other HTML5 named references are left as they are.
fn html_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let replaced = rest.find(';').filter(|&end| end <= 12).and_then(|end| {
            let name = &rest[1..end];
            let ch = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let code = if let Some(hex) =
                        name.strip_prefix("#x").or_else(|| name.strip_prefix("#X"))
                    {
                        u32::from_str_radix(hex, 16).ok()
                    } else if let Some(dec) = name.strip_prefix('#') {
                        dec.parse::<u32>().ok()
                    } else {
                        None
                    };
                    code.and_then(char::from_u32).filter(|&c| c != '\0')
                }
            }?;
            Some((ch, end))
        });
        match replaced {
            Some((ch, end)) => {
                out.push(ch);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// WanPipeline's `prompt_clean` without ftfy: html unescape twice, strip, collapse runs of
/// whitespace (Python's `\s`, which also counts the \x1c-\x1f separators) to one space, strip.
fn prompt_clean(text: &str) -> String {
    let text = html_unescape(&html_unescape(text));
    text.split(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl PromptTokenizer {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("{}: not a tokenizer: {e}", path.display()))?;
        Ok(Self { tokenizer })
    }

    /// WanPipeline's prompt_clean (html unescape twice, collapse whitespace, trim; ftfy is not
    /// used), then encode with special tokens, truncate to max_len, pad with id 0 to max_len.
    /// Returns (ids, number of real tokens).
    pub fn encode(&self, prompt: &str, max_len: usize) -> anyhow::Result<(Vec<u32>, usize)> {
        let text = prompt_clean(prompt);
        let mut encoding = self
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?;
        // As transformers with `truncation=True, add_special_tokens=True`: the sequence is cut
        // to leave room for the special tokens the post-processor adds (the closing `</s>`).
        let added = self
            .tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        let room = max_len.checked_sub(added).with_context(|| {
            format!("max_len {max_len} leaves no room for {added} special tokens")
        })?;
        encoding.truncate(room, 0, TruncationDirection::Right);
        let encoding = self
            .tokenizer
            .post_process(encoding, None, true)
            .map_err(|e| anyhow::anyhow!("adding the special tokens: {e}"))?;
        let mut ids = encoding.get_ids().to_vec();
        ids.truncate(max_len);
        let n = ids.len();
        ids.resize(max_len, 0);
        Ok((ids, n))
    }
}

/// WanPipeline._get_t5_prompt_embeds: tokenize, encode with the mask, keep the first n real rows, zero the rest -> [1, max_len, d_model]
pub fn prompt_embeds(
    tok: &PromptTokenizer,
    enc: &TextEncoder,
    prompt: &str,
    max_len: usize,
    device: &Device,
) -> anyhow::Result<Tensor> {
    let (ids, n) = tok.encode(prompt, max_len)?;
    let model_device = enc.device();
    let mask: Vec<f32> = (0..max_len)
        .map(|i| if i < n { 1.0 } else { 0.0 })
        .collect();
    let ids = Tensor::from_vec(ids, (1, max_len), model_device)?;
    let mask = Tensor::from_vec(mask, (1, max_len), model_device)?;
    let hidden = enc.forward(&ids, &mask)?;
    let d_model = hidden.dim(2)?;
    let real = hidden.narrow(1, 0, n)?;
    let out = if n < max_len {
        let zeros = Tensor::zeros((1, max_len - n, d_model), hidden.dtype(), model_device)?;
        Tensor::cat(&[&real, &zeros], 1)?
    } else {
        real
    };
    Ok(out.to_device(device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' buckets for relative positions -150..=150 with UMT5-xxl's 32 buckets and
    /// max distance 128 (torch 2.15, f32), boundaries at 16, 32 and 64 included.
    const TORCH_BUCKETS_32_128: &str = "15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,15,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,14,13,13,13,13,13,13,13,13,13,13,13,13,13,13,13,13,13,13,12,12,12,12,12,12,12,12,12,12,12,12,12,12,11,11,11,11,11,11,11,11,11,10,10,10,10,10,10,10,9,9,9,9,8,8,8,8,7,6,5,4,3,2,1,0,17,18,19,20,21,22,23,24,24,24,24,25,25,25,25,26,26,26,26,26,26,26,27,27,27,27,27,27,27,27,27,28,28,28,28,28,28,28,28,28,28,28,28,28,28,29,29,29,29,29,29,29,29,29,29,29,29,29,29,29,29,29,29,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,30,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31,31";

    #[test]
    fn buckets_match_transformers() {
        let expected: Vec<u32> = TORCH_BUCKETS_32_128
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect();
        let ours: Vec<u32> = (-150..=150)
            .map(|r| relative_position_bucket(r, 32, 128))
            .collect();
        assert_eq!(ours, expected);
    }

    #[test]
    fn prompt_clean_unescapes_twice_and_collapses_whitespace() {
        assert_eq!(
            prompt_clean("  a &amp;amp; b\n\t c &lt;d&gt; &#39;e&#x27; &quot; &foo; & "),
            "a & b c <d> 'e' \" &foo; &"
        );
        assert_eq!(
            prompt_clean("blurry, low quality,  static"),
            "blurry, low quality, static"
        );
    }
}
