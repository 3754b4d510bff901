#!/usr/bin/env bash
# The CUDA compile gate, run by the test command (scripts/test.sh) on machines with no GPU:
#
# 1. builds every binary with `--features cuda` against the PyPI toolkit and the libcuda
#    link stub (scripts/cuda-toolkit.sh);
# 2. compiles engine/cuda/kernels.cu with NVRTC for sm_80, sm_89 and sm_90, assembles each
#    with ptxas, prints registers per kernel and fails on any register spill;
# 3. runs the CUDA tests (kernel parity, model-engine parity, GPU gauges) and the CUDA
#    worker binary with the stub as the loader's libcuda.so.1: without a driver the GPU tests
#    say "skipped: no CUDA driver", `--engine cuda` must refuse to start and `--engine auto`
#    must fall back to the CPU with its log line.
#
# On a machine with a GPU, scripts/gpu-check.sh runs the same tests for real.
# Usage: scripts/cuda-check.sh   (REELFARM_SKIP_CUDA_CHECK=1 in the environment skips it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf 'cuda-check: %s\n' "$*" >&2; }

if [ -n "${REELFARM_SKIP_CUDA_CHECK:-}" ]; then
    log "skipped: REELFARM_SKIP_CUDA_CHECK is set"
    exit 0
fi

eval "$(scripts/cuda-toolkit.sh)"
log "toolkit: $(nvcc --version | tail -1)"
source scripts/lib/cuda.sh

started=$SECONDS
cuda_build
log "CUDA build: $((SECONDS - started)) s"
# On a GPU machine the real libcuda.so.1 is found and the tests run on the device.
cuda_stub_without_driver
cuda_tests

worker="$cuda_bin/reelfarm-worker"
if cuda_has_driver; then
    log "a driver is installed: skipping the no-driver start-up checks"
    exit 0
fi
common=(--coordinator http://127.0.0.1:9 --http-listen 127.0.0.1:0 --artifacts "$(mktemp -d)")
if out=$("$worker" --engine cuda "${common[@]}" 2>&1); then
    log "reelfarm-worker --engine cuda started without a driver"; exit 1
fi
grep -q "no CUDA driver" <<<"$out" || { log "--engine cuda refused without naming the driver: $out"; exit 1; }
log "--engine cuda without a driver: $(grep -o -- '--engine cuda: .*' <<<"$out" | head -1)"
out=$(timeout 5 "$worker" --engine auto "${common[@]}" 2>&1 || true)
grep -q "engine auto: no CUDA driver" <<<"$out" || { log "--engine auto did not log its fallback: $out"; exit 1; }
log "--engine auto without a driver: falls back to cpu, as logged"
# The chart's production (GPU) scenario: the CUDA worker accepts every argument it renders.
REELFARM_CUDA_WORKER="$worker" cargo test --test helm_chart \
    gpu_workers_request_a_gpu_run_the_cuda_image_and_accept_their_arguments -- --nocapture
log "ok"
