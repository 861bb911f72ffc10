# syntax=docker/dockerfile:1
# InsightFlow ingest image. Build from the repository root:
#   docker build -f deploy/ingest.Dockerfile -t insightflow/ingest:local .

FROM rust:1.95-bookworm AS builder
# cmake + a C toolchain build the bundled librdkafka (rdkafka crate).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p insightflow-ingest \
 && install -D -m 0755 target/release/ingest /out/ingest

FROM debian:bookworm-slim
# ca-certificates for TLS, curl for the container healthcheck.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin insightflow
COPY --from=builder /out/ingest /usr/local/bin/ingest
USER insightflow
# Listen on all interfaces inside the container (the service default is 127.0.0.1).
ENV INGEST__HTTP__HOST=0.0.0.0 \
    INGEST__HTTP__PORT=8080
EXPOSE 8080
CMD ["ingest"]
