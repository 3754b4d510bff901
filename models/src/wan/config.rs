//! `transformer/config.json` of a Wan model, as diffusers writes it for
//! `WanTransformer3DModel`. Unknown keys are ignored; settings this engine does not implement
//! are refused by [`TransformerConfig::check`], naming the key.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct TransformerConfig {
    pub patch_size: [usize; 3],
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub text_dim: usize,
    pub freq_dim: usize,
    pub ffn_dim: usize,
    pub num_layers: usize,
    pub cross_attn_norm: bool,
    pub qk_norm: Option<String>,
    pub eps: f64,
    #[serde(default)]
    pub image_dim: Option<usize>,
    #[serde(default)]
    pub added_kv_proj_dim: Option<usize>,
    pub rope_max_seq_len: usize,
}

impl TransformerConfig {
    /// The model's width (`heads x head_dim`).
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Refuses what the text-to-video engine does not run: image conditioning (I2V),
    /// other q/k norms, a head size the 3-D rotary split cannot cover.
    pub fn check(&self) -> Result<(), String> {
        if self.image_dim.is_some() || self.added_kv_proj_dim.is_some() {
            return Err(
                "image_dim/added_kv_proj_dim: image-to-video models are not supported".into(),
            );
        }
        if self.qk_norm.as_deref() != Some("rms_norm_across_heads") {
            return Err(format!(
                "qk_norm: {:?} is not supported (rms_norm_across_heads is)",
                self.qk_norm
            ));
        }
        if !self.attention_head_dim.is_multiple_of(2) || self.attention_head_dim < 6 {
            return Err(format!(
                "attention_head_dim: {} is not an even number of at least 6",
                self.attention_head_dim
            ));
        }
        if self.patch_size.contains(&0) {
            return Err("patch_size: a zero entry".into());
        }
        Ok(())
    }
}
