# Sourced by scripts/cuda-check.sh (CI, no GPU) and scripts/gpu-check.sh (on a GPU): the
# CUDA build and the CUDA tests they share. Expects the environment scripts/cuda-toolkit.sh
# prints, and the repository root as the working directory.

cuda_target="${CARGO_TARGET_DIR:-target}"
# The CPU and CUDA builds share target/debug/<bin> (the last build wins): the CUDA binaries
# are copied here once built.
cuda_bin="$cuda_target/cuda-bin"

# Builds every binary with `--features cuda` (into $cuda_bin) and the CUDA tests.
cuda_build() {
    cargo build --features cuda --bins
    mkdir -p "$cuda_bin"
    cp "$cuda_target"/debug/reelfarm-worker "$cuda_target"/debug/reelfarm-coordinator \
        "$cuda_target"/debug/reelfarm "$cuda_bin"/
    cargo test --features cuda -p reelfarm-worker -p reelfarm-models --lib --test cuda_parity --no-run
}

# Whether the NVIDIA driver's libcuda.so.1 is known to the loader.
cuda_has_driver() {
    { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libcuda\.so\.1 '
}

# Where no driver is installed, the link stub stands in for libcuda.so.1, so that the CUDA
# binaries start and report CUDA_ERROR_STUB_LIBRARY; with a driver, nothing changes.
cuda_stub_without_driver() {
    if ! cuda_has_driver; then
        export LD_LIBRARY_PATH="$CUDA_HOME/lib/stubs-run:$LD_LIBRARY_PATH"
        echo "no NVIDIA driver on this machine: the libcuda link stub answers CUDA_ERROR_STUB_LIBRARY" >&2
    fi
}

# The kernel gate (NVRTC + ptxas for sm_80/89/90, the register table, no spills), the
# CPU/CUDA parity of every kernel, the GPU gauges and the model engine on candle's CUDA
# device against diffusers' references (on_cuda). One cargo invocation for both packages:
# cargo resolves features per invocation, and reelfarm-models alone would rebuild candle
# (and nvcc its kernels) with another set.
cuda_tests() {
    cargo test --features cuda -p reelfarm-worker -p reelfarm-models --lib --test cuda_parity \
        -- engine::cuda metrics::gpu on_cuda --nocapture
}
