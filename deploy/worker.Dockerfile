# syntax=docker/dockerfile:1
# InsightFlow worker image. Build from the repository root:
#   docker build -f deploy/worker.Dockerfile -t insightflow/worker:local .

# The worker embeds the live dashboard (web/dashboard), which crates/stats-api/build.rs builds with
# Node.js 20+ and npm: taken from the official Node image (Debian bookworm ships Node 18).
FROM node:20-bookworm-slim AS node

FROM rust:1.95-bookworm AS builder
# cmake + a C toolchain build the bundled librdkafka (rdkafka crate).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake build-essential \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s /usr/local/lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && node --version && npm --version
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p insightflow-worker \
 && install -D -m 0755 target/release/worker /out/worker

FROM debian:bookworm-slim
# ca-certificates for TLS, curl for the container healthcheck.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin insightflow
# migrations/ are embedded into the binary at compile time: no files needed at runtime.
COPY --from=builder /out/worker /usr/local/bin/worker
USER insightflow
# Listen on all interfaces inside the container (the service default is 127.0.0.1).
ENV WORKER__HTTP__HOST=0.0.0.0 \
    WORKER__HTTP__PORT=8081
EXPOSE 8081
# No arguments = consume Kafka + serve HTTP; `worker migrate` applies the migrations.
CMD ["worker"]
