# syntax=docker/dockerfile:1
#
# reelfarm container image: one image holds the three binaries (reelfarm-coordinator,
# reelfarm-worker, reelfarm); the Helm chart picks the binary with `command:`.
#
#   docker build -t REGISTRY/reelfarm:TAG .
#
# The builder stage needs protoc (proto/build.rs compiles reelfarm/v1/*.proto with
# tonic-prost-build) and a C/C++ compiler (openh264-sys2 builds the OpenH264 encoder from
# source; nasm lets it use the x86 assembly kernels, it falls back to C without it;
# aws-lc-sys builds the TLS crypto of the S3 artifact store's client).

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler g++ nasm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binaries are copied out
# of the cache mount because it is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/reelfarm-coordinator target/release/reelfarm-worker target/release/reelfarm /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to etcd and S3 endpoints; libstdc++6: OpenH264 is C++.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 reelfarm \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin reelfarm \
 && mkdir -p /var/lib/reelfarm/artifacts \
 && chown -R 10001:10001 /var/lib/reelfarm
COPY --from=builder /out/reelfarm-coordinator /out/reelfarm-worker /out/reelfarm /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/reelfarm
# 7070: coordinator gRPC; 9464: coordinator /metrics and /healthz; 9465: worker /metrics
# and /healthz. The binaries listen on 127.0.0.1 by default: the chart passes 0.0.0.0.
EXPOSE 7070 9464 9465
ENV REELFARM_ARTIFACTS=/var/lib/reelfarm/artifacts
ENTRYPOINT ["/usr/local/bin/reelfarm-coordinator"]
CMD ["--listen", "0.0.0.0:7070", "--http-listen", "0.0.0.0:9464"]
