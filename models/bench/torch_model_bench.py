#!/usr/bin/env python3
"""The PyTorch side of `reelfarm bench model`: one stage of a Wan 2.1 pipeline in diffusers +
PyTorch, on the plan, weights and inputs the Rust bench wrote, in f32 on CPU.

  python3 models/bench/torch_model_bench.py --stage {text,transformer,vae} --work DIR

DIR holds `plan.json` (model folder, threads, warm-up and timed runs, text length, prompt,
guidance scale) and `inputs.safetensors` (latents, timestep, prompt and negative contexts,
VAE latents). The stage is loaded the way diffusers loads it (`from_pretrained`), warmed up,
timed, and its last output written to DIR/torch-<stage>.safetensors (key `out`) so the bench
can compare it with ours. One JSON object goes to stdout: the timings, the load time, and
this process's memory from /proc/self/status (VmRSS before loading and after, VmHWM after
loading and, reset then, after the runs). Without torch, diffusers or transformers it prints {"skipped": "..."} and exits 0:
the bench never reports a number it did not measure.

The stages are what `WanPipeline.__call__` does:
  transformer: one denoising step with guidance, two `WanTransformer3DModel` forwards
               (prompt, negative prompt) and `uncond + scale * (cond - uncond)`;
  vae:         `AutoencoderKLWan.decode(latents)`;
  text:        `WanPipeline._get_t5_prompt_embeds(prompt)` (tokenizer, UMT5, trim/zero-pad).
"""
import argparse
import json
import os
import pathlib
import sys
import time


def status_mib(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", required=True, choices=["text", "transformer", "vae"])
    ap.add_argument("--work", required=True, type=pathlib.Path)
    args = ap.parse_args()
    plan = json.loads((args.work / "plan.json").read_text())
    # Before torch starts its thread pools.
    os.environ.setdefault("OMP_NUM_THREADS", str(plan["threads"]))
    try:
        import torch
        import diffusers
        import transformers
        from safetensors.torch import load_file, save_file
    except Exception as e:  # ImportError, or a broken install
        print(json.dumps({"skipped": f"{sys.executable} cannot import torch/diffusers/"
                                     f"transformers/safetensors: {e}"}))
        return 0

    torch.set_num_threads(plan["threads"])
    torch.set_grad_enabled(False)
    baseline = status_mib("VmRSS:")
    inputs = load_file(args.work / "inputs.safetensors")
    model_dir = pathlib.Path(plan["model_dir"])
    f32 = torch.float32
    # --device cuda / --dtype bf16 (older plans have neither: CPU, f32). Inputs are cast to
    # the model's dtype as WanPipeline does; the VAE stays in f32 on every device (as ours).
    device = torch.device(plan.get("device", "cpu"))
    dtype = {"f32": f32, "bf16": torch.bfloat16}[plan.get("dtype", "f32")]
    if device.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"skipped": "torch sees no CUDA device"}))
        return 0
    inputs = {k: v.to(device) for k, v in inputs.items()}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    started = time.perf_counter()
    if args.stage == "transformer":
        from diffusers import WanTransformer3DModel

        model = WanTransformer3DModel.from_pretrained(model_dir / "transformer",
                                                      torch_dtype=dtype).eval().to(device)
        latents, t = inputs["latents"].to(dtype), inputs["timestep"]
        prompt, negative = inputs["context"].to(dtype), inputs["negative"].to(dtype)
        scale = plan["guidance_scale"]

        def step():
            cond = model(hidden_states=latents, timestep=t, encoder_hidden_states=prompt,
                         return_dict=False)[0]
            uncond = model(hidden_states=latents, timestep=t, encoder_hidden_states=negative,
                           return_dict=False)[0]
            return uncond + scale * (cond - uncond)
    elif args.stage == "vae":
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.from_pretrained(model_dir / "vae", torch_dtype=f32).eval().to(device)
        latents = inputs["vae_latents"]

        def step():
            return vae.decode(latents, return_dict=False)[0]
    else:
        from diffusers import WanPipeline
        from transformers import AutoTokenizer, UMT5EncoderModel

        tokenizer = AutoTokenizer.from_pretrained(model_dir / "tokenizer")
        encoder = UMT5EncoderModel.from_pretrained(model_dir / "text_encoder",
                                                   torch_dtype=dtype).eval().to(device)
        pipe = WanPipeline(tokenizer=tokenizer, text_encoder=encoder, transformer=None, vae=None,
                           scheduler=None)

        def step():
            return pipe._get_t5_prompt_embeds(plan["prompt"], max_sequence_length=plan["text_len"],
                                              device=device, dtype=dtype)
    load_seconds = time.perf_counter() - started
    loaded = status_mib("VmRSS:")
    load_peak = status_mib("VmHWM:")
    # Resets VmHWM to the current RSS (Linux 4.0+): the peak read after the runs is theirs.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False

    with torch.inference_mode():
        for _ in range(plan["warmup"]):
            step()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = []
        for _ in range(plan["repeat"]):
            started = time.perf_counter()
            out = step()
            sync()
            seconds.append(time.perf_counter() - started)
    save_file({"out": out.float().cpu().contiguous()}, args.work / f"torch-{args.stage}.safetensors")

    ordered = sorted(seconds)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    print(json.dumps({
        "seconds": {"median": median, "min": ordered[0], "runs": seconds},
        "load_seconds": load_seconds,
        "rss_baseline_mib": baseline,
        "rss_after_load_mib": loaded,
        "load_peak_rss_mib": load_peak,
        "run_peak_rss_mib": status_mib("VmHWM:") if reset else None,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu_peak_allocated_mib": (torch.cuda.max_memory_allocated() / 2**20
                                   if device.type == "cuda" else None),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "diffusers": diffusers.__version__, "transformers": transformers.__version__},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
