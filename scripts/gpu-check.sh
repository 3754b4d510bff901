#!/usr/bin/env bash
# Every GPU check in one command, for a machine with an NVIDIA GPU and its driver (made for
# one H100/H200: about 8 minutes, most of it the build). Writes JSON into $OUT when set
# (else a temporary folder, printed at the end):
#
#   gpu-tests.log            every CUDA test (kernel gate + CPU/CUDA parity of every kernel,
#                            model engine on CUDA against diffusers), run on the device
#   bench-pipeline.json      the reference pipeline: a 10 s 1080p 24 fps clip with audio on
#                            the CUDA engine (goal: at most 10 s on one H100), and a small
#                            clip on cpu and cuda in the same run (the same-run baseline)
#   bench-model.json         Wan 2.1 1.3B architecture, random weights, 480x832 x 81 frames,
#                            bf16: seconds per denoising step (CFG: two forwards), ours on
#                            candle's CUDA device beside diffusers + PyTorch (SDPA) on the
#                            same GPU (goal: at least 1.0x). PyTorch's side needs a Python
#                            with CUDA torch and diffusers: REELFARM_TORCH_PYTHON (default
#                            python3); without them its side says "skipped".
#   bench-batch.json         batching across jobs on the tiny model, bf16: 4 clips one after
#                            another against the same 4 as one batch (--max-batch 4), and
#                            whether each batched clip equals its run alone bit for bit
#   nvidia-smi.txt, versions.txt
#
# Needs network access for the toolchain wheels on first use (scripts/cuda-toolkit.sh), or
# a .cuda-toolkit/ made beforehand. CUDA_COMPUTE_CAP defaults to 90 (H100/H200) here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$(mktemp -d -t reelfarm-gpu-check-XXXX)}"
mkdir -p "$OUT"
log() { printf 'gpu-check: %s\n' "$*" >&2; }
started=$SECONDS

command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || log "no nvidia-smi"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
eval "$(scripts/cuda-toolkit.sh)"
source scripts/lib/cuda.sh
{ nvcc --version | tail -1; rustc --version; git rev-parse HEAD 2>/dev/null || true; } > "$OUT/versions.txt"

# The dev profile: dependencies, the worker and the models build at opt-level 2 (Cargo.toml),
# which is what the GPU work runs in; the bench drivers themselves are thin.
cuda_build
log "built in $((SECONDS - started)) s"
target="$cuda_bin"

cuda_tests 2>&1 | tee "$OUT/gpu-tests.log"
if grep -q "skipped: no CUDA driver" "$OUT/gpu-tests.log"; then
    log "the GPU tests skipped: this machine's driver is not usable (see gpu-tests.log)"
    exit 1
fi

"$target/reelfarm" bench pipeline --engine cpu,cuda --sizes 320x180 --seconds 2 --fps 12 \
    > "$OUT/bench-pipeline-small.json"
"$target/reelfarm" bench pipeline --engine cuda --sizes 1920x1080 --seconds 10 --fps 24 \
    > "$OUT/bench-pipeline.json"
"$target/reelfarm" bench model --config 1.3b --device cuda --dtype bf16 \
    --frames 81 --height 480 --width 832 --stages transformer --warmup 1 --repeat 3 \
    --python "${REELFARM_TORCH_PYTHON:-python3}" > "$OUT/bench-model.json"
"$target/reelfarm" bench batch --device cuda --dtype bf16 --batch 4 --repeat 5 \
    > "$OUT/bench-batch.json"
log "done in $((SECONDS - started)) s; results in $OUT"
