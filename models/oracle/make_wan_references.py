#!/usr/bin/env python3
"""Builds small randomly initialised Wan 2.1 text-to-video pipelines with diffusers and records
diffusers' own outputs on them: the reference the Rust model code in ../src must equal.

Each config is saved with `WanPipeline.save_pretrained` in the diffusers folder layout that
operators download (model_index.json, transformer/, vae/, text_encoder/, tokenizer/,
scheduler/), to ../tests/fixtures/<name>/, with `references.safetensors` beside it:

  text.prompt_ids / text.negative_ids      tokenizer ids (padded to max_sequence_length)
  text.prompt_embeds / text.negative_embeds   WanPipeline._get_t5_prompt_embeds (trimmed, zero-padded)
  transformer.latents / .timestep / .context / .out   one WanTransformer3DModel forward
  vae.latents / vae.decoded                AutoencoderKLWan.decode (normalised latents in, video out)
  vae.video / vae.encoded_mean             AutoencoderKLWan.encode(...).latent_dist.mean
  sample.initial / sample.unipc            WanPipeline(..., latents=initial, output_type="latent")
  sample.euler                             the same with FlowMatchEulerDiscreteScheduler

The prompts and call parameters are in `references.json`. Usage (from the repository root):

  python3 -m venv /tmp/oracle && /tmp/oracle/bin/pip install -r models/oracle/requirements.txt
  /tmp/oracle/bin/python models/oracle/make_wan_references.py

Everything is seeded: running it again gives the same files (same package versions).
"""
import json
import pathlib
import shutil

import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, decoders
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures"

WORDS = (
    "a an the robot dancing in cyberpunk city red ball bouncing on wooden floor blue cube falling "
    "slowly green glass sphere rolling across table blurry low quality static worst"
).split()

# Two tiny configs that differ in every dimension the code reads, so nothing is hard-coded.
CONFIGS = {
    "wan-tiny-a": dict(
        text=dict(d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4),
        transformer=dict(num_attention_heads=2, attention_head_dim=12, ffn_dim=40, num_layers=2, freq_dim=16),
        vae=dict(base_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True],
                 attn_scales=[], scale_factor_temporal=4),
        z_dim=4, frames=9, height=32, width=48, max_len=12, steps=3,
    ),
    "wan-tiny-b": dict(
        text=dict(d_model=24, d_kv=6, d_ff=40, num_layers=3, num_heads=2),
        transformer=dict(num_attention_heads=3, attention_head_dim=8, ffn_dim=36, num_layers=1, freq_dim=8),
        vae=dict(base_dim=4, dim_mult=[1, 2, 1, 2], num_res_blocks=2, temperal_downsample=[False, True, False],
                 attn_scales=[], scale_factor_temporal=2),
        z_dim=6, frames=5, height=16, width=32, max_len=10, steps=2,
    ),
}

PROMPT = "a red ball bouncing on the wooden floor"
NEGATIVE = "blurry, low quality,  static"
GUIDANCE = 5.0
FLOW_SHIFT = 3.0


def tokenizer():
    """A small Unigram tokenizer with T5's special tokens and T5's </s> post-processor."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [
        ("\u2581" + w, -1.0 - i * 0.01) for i, w in enumerate(WORDS)
    ] + [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz,."]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=512,
    )


def build(name, cfg):
    torch.manual_seed(0)
    tok = tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tok), relative_attention_num_buckets=8, relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
        layer_norm_epsilon=1e-6, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, tie_word_embeddings=False, **cfg["text"],
    )).eval()
    z = cfg["z_dim"]
    g = torch.Generator().manual_seed(1)
    vae = AutoencoderKLWan(
        z_dim=z,
        latents_mean=(torch.randn(z, generator=g) * 0.5).tolist(),
        latents_std=(torch.rand(z, generator=g) + 0.5).tolist(),
        scale_factor_spatial=2 ** (len(cfg["vae"]["dim_mult"]) - 1),
        **cfg["vae"],
    ).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), in_channels=z, out_channels=z, text_dim=cfg["text"]["d_model"],
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64,
        **cfg["transformer"],
    ).eval()
    # Random init leaves the output projections near zero in some diffusers classes; make every
    # weight matter so the comparison tests every path.
    with torch.no_grad():
        for module in (text_encoder, vae, transformer):
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
        flow_shift=FLOW_SHIFT,
    )
    return WanPipeline(tokenizer=tok, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer)


@torch.no_grad()
def record(name, cfg, pipe):
    refs = {}
    L = cfg["max_len"]
    for key, text in (("prompt", PROMPT), ("negative", NEGATIVE)):
        ids = pipe.tokenizer(text, padding="max_length", max_length=L, truncation=True,
                             add_special_tokens=True, return_tensors="pt").input_ids
        refs[f"text.{key}_ids"] = ids.to(torch.int64)
        refs[f"text.{key}_embeds"] = pipe._get_t5_prompt_embeds(text, max_sequence_length=L)

    g = torch.Generator().manual_seed(2)
    z, tf, s = cfg["z_dim"], pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
    lat_shape = (1, z, (cfg["frames"] - 1) // tf + 1, cfg["height"] // s, cfg["width"] // s)

    latents = torch.randn(lat_shape, generator=g)
    timestep = torch.tensor([737.0])
    context = refs["text.prompt_embeds"].clone()
    refs["transformer.latents"] = latents
    refs["transformer.timestep"] = timestep
    refs["transformer.context"] = context
    refs["transformer.out"] = pipe.transformer(latents, timestep, context, return_dict=False)[0]

    vae_latents = torch.randn(lat_shape, generator=g)
    refs["vae.latents"] = vae_latents
    refs["vae.decoded"] = pipe.vae.decode(vae_latents, return_dict=False)[0]
    video = torch.rand((1, 3, cfg["frames"], cfg["height"], cfg["width"]), generator=g) * 2 - 1
    refs["vae.video"] = video
    refs["vae.encoded_mean"] = pipe.vae.encode(video).latent_dist.mean

    initial = torch.randn(lat_shape, generator=g)
    refs["sample.initial"] = initial
    call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=cfg["height"], width=cfg["width"],
                num_frames=cfg["frames"], num_inference_steps=cfg["steps"], guidance_scale=GUIDANCE,
                max_sequence_length=L, output_type="latent")
    refs["sample.unipc"] = pipe(latents=initial.clone(), **call).frames
    unipc = pipe.scheduler
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT, num_train_timesteps=1000)
    refs["sample.euler"] = pipe(latents=initial.clone(), **call).frames
    pipe.scheduler = unipc

    out = FIXTURES / name
    save_file({k: v.contiguous().float() if v.is_floating_point() else v.contiguous()
               for k, v in refs.items()}, out / "references.safetensors")
    (out / "references.json").write_text(json.dumps(dict(
        prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=GUIDANCE, flow_shift=FLOW_SHIFT,
        num_frames=cfg["frames"], height=cfg["height"], width=cfg["width"],
        max_sequence_length=L, num_inference_steps=cfg["steps"], transformer_timestep=737.0,
        versions=dict(torch=torch.__version__, diffusers=__import__("diffusers").__version__,
                      transformers=__import__("transformers").__version__),
    ), indent=2) + "\n")


def main():
    torch.set_num_threads(2)
    for name, cfg in CONFIGS.items():
        out = FIXTURES / name
        shutil.rmtree(out, ignore_errors=True)
        pipe = build(name, cfg)
        pipe.save_pretrained(out, safe_serialization=True)
        record(name, cfg, pipe)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"{name}: {out} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
