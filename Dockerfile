# syntax=docker/dockerfile:1
#
# reelfarm container images: one image holds the three binaries (reelfarm-coordinator,
# reelfarm-worker, reelfarm); the Helm chart picks the binary with `command:`.
#
#   docker build -t REGISTRY/reelfarm:TAG .                                  # CPU
#   docker build --target runtime-cuda -t REGISTRY/reelfarm:TAG-cuda .       # GPU workers
#
# The CUDA image's binaries are built with `--features cuda` against NVIDIA's CUDA 13.0
# wheels (scripts/cuda-toolkit.sh: nvcc for candle's kernels, a libcuda link stub) and carry
# the wheels' runtime libraries (cuBLAS, cuRAND, NVRTC, cudart); libcuda itself comes from
# the node's driver through the NVIDIA container runtime (driver >= 580 for CUDA 13.0). Its
# worker needs that driver to start: CPU-only nodes run the CPU image. CUDA_COMPUTE_CAP
# (build arg, default 90: H100/H200) is the architecture candle's kernels are built for;
# reelfarm's own kernels are compiled by NVRTC at start for whatever device is there.
#
# The builder stage needs protoc (proto/build.rs compiles reelfarm/v1/*.proto with
# tonic-prost-build) and a C/C++ compiler (openh264-sys2 builds the OpenH264 encoder from
# source; nasm lets it use the x86 assembly kernels, it falls back to C without it;
# aws-lc-sys builds the TLS crypto of the S3 artifact store's client).

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build-env
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler g++ nasm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .

FROM build-env AS builder
# Cache mounts keep the registry and target dir between builds; the binaries are copied out
# of the cache mount because it is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/reelfarm-coordinator target/release/reelfarm-worker target/release/reelfarm /out/

FROM build-env AS builder-cuda
ARG CUDA_COMPUTE_CAP=90
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target-cuda \
    eval "$(scripts/cuda-toolkit.sh)" \
 && CARGO_TARGET_DIR=/src/target-cuda cargo build --release --locked --features cuda --bins \
 && mkdir -p /out/cuda-lib \
 && cp /src/target-cuda/release/reelfarm-coordinator /src/target-cuda/release/reelfarm-worker \
       /src/target-cuda/release/reelfarm /out/ \
 && cp -L "$CUDA_HOME"/lib/libcublas.so.13 "$CUDA_HOME"/lib/libcublasLt.so.13 \
       "$CUDA_HOME"/lib/libcurand.so.10 "$CUDA_HOME"/lib/libnvrtc.so.13 \
       "$CUDA_HOME"/lib/libnvrtc-builtins.so.13.0 "$CUDA_HOME"/lib/libcudart.so.13 /out/cuda-lib/

# What both runtime images share: the libraries the binaries need and the unprivileged user.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime-base
# ca-certificates: TLS to etcd and S3 endpoints; libstdc++6: OpenH264 is C++.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 reelfarm \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin reelfarm \
 && mkdir -p /var/lib/reelfarm/artifacts \
 && chown -R 10001:10001 /var/lib/reelfarm

FROM runtime-base AS runtime-cuda
COPY --from=builder-cuda /out/cuda-lib/ /usr/local/lib/reelfarm-cuda/
COPY --from=builder-cuda /out/reelfarm-coordinator /out/reelfarm-worker /out/reelfarm /usr/local/bin/
ENV LD_LIBRARY_PATH=/usr/local/lib/reelfarm-cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    REELFARM_ARTIFACTS=/var/lib/reelfarm/artifacts \
    REELFARM_ENGINE=cuda
USER 10001:10001
WORKDIR /var/lib/reelfarm
EXPOSE 7070 9464 9465
ENTRYPOINT ["/usr/local/bin/reelfarm-worker"]
CMD ["--http-listen", "0.0.0.0:9465"]

# The CPU image, last so that a plain `docker build .` makes it.
FROM runtime-base AS runtime
COPY --from=builder /out/reelfarm-coordinator /out/reelfarm-worker /out/reelfarm /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/reelfarm
# 7070: coordinator gRPC; 9464: coordinator /metrics and /healthz; 9465: worker /metrics
# and /healthz. The binaries listen on 127.0.0.1 by default: the chart passes 0.0.0.0. On
# 0.0.0.0 the coordinator starts only with authentication (--bootstrap-admin-key-file and
# --join-token-file, e.g. REELFARM_BOOTSTRAP_ADMIN_KEY_FILE and REELFARM_JOIN_TOKEN_FILE
# pointing at mounted secrets) or with --insecure given in so many words.
EXPOSE 7070 9464 9465
ENV REELFARM_ARTIFACTS=/var/lib/reelfarm/artifacts
ENTRYPOINT ["/usr/local/bin/reelfarm-coordinator"]
CMD ["--listen", "0.0.0.0:7070", "--http-listen", "0.0.0.0:9464"]
