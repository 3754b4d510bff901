#!/usr/bin/env bash
# Makes a CUDA 13.0 toolkit from NVIDIA's PyPI wheels (no system CUDA, no GPU needed) and
# prints the environment that builds reelfarm with `--features cuda`:
#
#   eval "$(scripts/cuda-toolkit.sh)"
#   cargo build --release --features cuda --bin reelfarm-worker
#
# Into .cuda-toolkit/ (or $REELFARM_CUDA_TOOLKIT): a virtualenv with the wheels of
# tools/cuda/requirements.txt (nvcc, ptxas, NVRTC, the CUDA runtime, cuBLAS, cuRAND), the
# unversioned .so links a linker looks for, and lib/stubs/libcuda.so, a link stub of the
# driver API made from the toolkit's cuda.h (tools/cuda/make_libcuda_stub.py): the wheels
# ship no libcuda, which only the NVIDIA driver installs. A binary linked this way needs the
# real driver to start; CI puts lib/stubs-run/ (the stub as libcuda.so.1) on the loader
# path only to run the CUDA tests, which then skip with "no CUDA driver".
#
# Variables printed: CUDA_HOME, PATH, LD_LIBRARY_PATH (NVRTC and cuBLAS at run time),
# CUDARC_CUDA_VERSION (cudarc's bindings), CUDA_COMPUTE_CAP (the architecture candle's
# kernels are built for; default 80, whose PTX the driver also JIT-compiles for sm_89/sm_90;
# set it to 90 to build for H100/H200 natively).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
toolkit="${REELFARM_CUDA_TOOLKIT:-$root/.cuda-toolkit}"
log() { printf 'cuda-toolkit: %s\n' "$*" >&2; }

stamp="$toolkit/.installed"
if [ ! -f "$stamp" ] || ! cmp -s "$stamp" tools/cuda/requirements.txt; then
    log "installing NVIDIA's CUDA wheels into $toolkit (about 1.2 GB)"
    rm -rf "$toolkit"
    python3 -m venv "$toolkit/venv" >&2 || {
        # Debian's python3 needs python3-venv for ensurepip.
        log "python3 -m venv failed; installing python3-venv"
        sudo_cmd=(); [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$toolkit/venv" >&2
    }
    # No pip cache: it would keep a second copy of the 1.2 GB of wheels.
    "$toolkit/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        -r tools/cuda/requirements.txt >&2
    cp tools/cuda/requirements.txt "$stamp"
fi

cuda_home="$(echo "$toolkit"/venv/lib/python3*/site-packages/nvidia/cu13)"
[ -x "$cuda_home/bin/nvcc" ] || { log "no nvcc under $cuda_home"; exit 1; }
lib="$cuda_home/lib"
# The linker asks for libX.so; the wheels ship libX.so.N.
for so in cublas cublasLt curand nvrtc cudart; do
    versioned="$(cd "$lib" && ls "lib$so.so."* 2>/dev/null | grep -E "^lib$so\.so\.[0-9]+$" | head -1)"
    [ -n "$versioned" ] || { log "no lib$so.so.N in $lib"; exit 1; }
    ln -sf "$versioned" "$lib/lib$so.so"
done
if [ ! -f "$lib/stubs/libcuda.so" ]; then
    mkdir -p "$lib/stubs" "$lib/stubs-run"
    python3 tools/cuda/make_libcuda_stub.py "$cuda_home/include/cuda.h" "$toolkit/libcuda_stub.c"
    cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$lib/stubs/libcuda.so" "$toolkit/libcuda_stub.c"
    ln -sf ../stubs/libcuda.so "$lib/stubs-run/libcuda.so.1"
fi

cat <<ENV
export CUDA_HOME='$cuda_home'
export PATH='$cuda_home/bin':"\$PATH"
export LD_LIBRARY_PATH='$lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-80}
ENV
