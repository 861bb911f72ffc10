# InsightFlow developer tasks. `make help` lists them.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: help deps run down test browser-test bench fuzz fmt lint migrate clean-data

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## install if missing and start local Redis, MariaDB and Kafka (Apache Kafka, KRaft)
	scripts/deps.sh

run: ## build, migrate and start ingest (:8080) and worker (:8081) in the background
	scripts/run.sh

down: ## stop ingest, worker and the local Kafka (keeps data; MariaDB/Redis stay up)
	scripts/down.sh
	scripts/redis-cluster.sh stop

test: deps ## fmt check, clippy, tests (Rust, browser), compose and deploy validation (what CI runs)
	@echo "==> cargo fmt --check"
	cargo fmt --all -- --check
	@echo "==> cargo clippy"
	cargo clippy --workspace --all-targets -- -D warnings
	@echo "==> cargo test, then the browser tests, against a fresh broker (scripts/test-broker.sh)"
	scripts/test-broker.sh
	# The abuse suite holds 2,000+ idle connections (both ends in one process).
	ulimit -n 8192 2>/dev/null || ulimit -n "$$(ulimit -Hn)"; \
	  TEST_KAFKA_BROKERS=127.0.0.1:$$(cat $${INSIGHTFLOW_DATA_DIR:-.data}/kafka-test/port) RUST_BACKTRACE=1 cargo test --workspace \
	  && npm --prefix web/dashboard test \
	  && scripts/browser-test.sh \
	  && status=0 || status=$$?; scripts/test-broker.sh stop; exit $$status
	@echo "==> the fuzz target builds"
	cargo check --manifest-path fuzz/Cargo.toml
	@echo "==> validate docker-compose.yml"
	scripts/validate-compose.sh
	@echo "==> validate the Kubernetes manifests, alert rules and dashboard, end to end against the services"
	scripts/validate-deploy.sh

browser-test: ## the browser SDK: unit tests, then end-to-end in headless Chromium (needs make deps and a broker)
	scripts/browser-test.sh

bench: ## run the benchmark (scripts/bench.sh; one phase: BENCH_PHASES=retention make bench)
	@if [[ -x scripts/bench.sh ]]; then scripts/bench.sh; \
	else echo "make bench: not yet implemented (issue 6)" >&2; exit 1; fi

fuzz: ## fuzz the gateway's body parser for FUZZ_SECONDS (needs nightly and cargo-fuzz)
	cargo +nightly fuzz run body_parser -- -max_total_time=$${FUZZ_SECONDS:-300}

fmt: ## format all Rust code
	cargo fmt --all

lint: ## clippy with warnings as errors
	cargo clippy --workspace --all-targets -- -D warnings

migrate: ## apply database migrations (worker migrate)
	cargo run --release -p insightflow-worker --bin worker -- migrate

clean-data: down ## stop everything, then delete local data (.data)
	rm -rf .data
