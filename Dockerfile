# syntax=docker/dockerfile:1
# Image of the `engine` binary. Build: docker build -t engine .   (BuildKit is needed for the cache mounts)

# ---- build ---------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder

# rdkafka (librdkafka with ssl+zstd) is compiled from source: C/C++ toolchain, make, perl,
# pkg-config, and the OpenSSL / zlib / zstd headers. cmake is not needed by the default build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential perl pkg-config libssl-dev zlib1g-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The registry, git checkouts and target/ live in BuildKit caches, so rebuilds are incremental.
# The binary is copied out of the cached target/ (a cache mount is not part of the layer).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release -p engine --locked \
 && install -D -m 0755 target/release/engine /out/engine

# ---- runtime -------------------------------------------------------------------------------
FROM debian:bookworm-slim

# The binary links libssl3/libcrypto3 and zlib (zlib1g is already in the base image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /app \
      --shell /usr/sbin/nologin engine

WORKDIR /app
COPY --from=builder /out/engine /usr/local/bin/engine
COPY pipelines/ /app/pipelines/

USER engine

# `engine run` stops cleanly on SIGTERM (final checkpoint), so `docker stop` loses nothing.
ENTRYPOINT ["engine"]
CMD ["--help"]
