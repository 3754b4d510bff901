#!/usr/bin/env python3
"""Records diffusers' flow-matching samplers as Wan runs them, for the Rust ports in
../src/schedulers to equal (tests/scheduler_parity.rs).

For each (num_inference_steps, shift) in CASES, both samplers are run on a fixed random sample of
shape [1, 4, 3, 4, 6] with a fixed sequence of random "model outputs" (flow predictions):

  FlowMatchEulerDiscreteScheduler(shift=shift)                     -> euler-<steps>-<shift>.safetensors
  UniPCMultistepScheduler.from_config(wan-tiny-a scheduler config,  -> unipc-<steps>-<shift>.safetensors
                                      flow_shift=shift)

Each file holds: timesteps (f64, diffusers' values), sigmas (f32, with the terminal one),
initial (f32 sample), model_outputs ([steps, ...] f32), samples ([steps, ...] f32: the sample after
each step). Usage (from the repository root):

  /tmp/oracle/bin/python models/oracle/make_scheduler_references.py

Everything is seeded: running it again gives the same files (same package versions).
"""
import json
import pathlib

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures"
OUT = FIXTURES / "schedulers"
CASES = [(3, 3.0), (7, 5.0), (1, 3.0)]
SHAPE = (1, 4, 3, 4, 6)


def run(scheduler, steps, seed):
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(SHAPE, generator=g, dtype=torch.float32)
    initial = sample.clone()
    outputs, samples = [], []
    for t in scheduler.timesteps:
        model_output = torch.randn(SHAPE, generator=g, dtype=torch.float32)
        sample = scheduler.step(model_output, t, sample, return_dict=False)[0]
        outputs.append(model_output)
        samples.append(sample.clone())
    return {
        "timesteps": scheduler.timesteps.to(torch.float64).contiguous(),
        "sigmas": scheduler.sigmas.to(torch.float32).contiguous(),
        "initial": initial.contiguous(),
        "model_outputs": torch.stack(outputs).contiguous(),
        "samples": torch.stack(samples).contiguous(),
    }


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    config = json.loads((FIXTURES / "wan-tiny-a" / "scheduler" / "scheduler_config.json").read_text())
    for k, (steps, shift) in enumerate(CASES):
        euler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
        save_file(run(euler, steps, 1000 + k), str(OUT / f"euler-{steps}-{shift}.safetensors"))
        unipc = UniPCMultistepScheduler.from_config(config, flow_shift=shift)
        save_file(run(unipc, steps, 2000 + k), str(OUT / f"unipc-{steps}-{shift}.safetensors"))
    for p in sorted(OUT.iterdir()):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    main()
