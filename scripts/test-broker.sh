#!/usr/bin/env bash
# A fresh Kafka-compatible broker for one `make test` run: Tansu with in-memory storage on a
# free port of 127.0.0.1 (or $TEST_KAFKA_PORT), written to .data/tansu-test/port.
#   scripts/test-broker.sh        start it (stopping the previous one)
#   scripts/test-broker.sh stop   stop it
#
# Why not the development broker on :9092: Tansu 0.6 with sqlite storage slows down as it
# accumulates records and stalls while deleting topics (see docs/BENCHMARKS.md), so tests
# against a long-lived broker would depend on its history. A fresh broker per run makes the
# test suite independent of what ran before. It is still the real broker over the real wire
# protocol; only its storage is not durable, which no test relies on.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DIR="$DATA/tansu-test"
PID="$DIR/tansu.pid"
LOG="$DIR/tansu.log"

stop_pidfile tansu-test "$PID" 10 >/dev/null 2>&1 || true
if [[ "${1:-}" == "stop" ]]; then
  log "test broker: stopped"
  exit 0
fi

have tansu || die "tansu is not installed: run scripts/deps.sh (make deps) first"
PORT="${TEST_KAFKA_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
if port_open 127.0.0.1 "$PORT"; then
  die "port $PORT is taken; set TEST_KAFKA_PORT to a free port"
fi
rm -rf "$DIR"
mkdir -p "$DIR"
echo "$PORT" >"$DIR/port"
(
  cd "$DIR"
  start_bg tansu-test "$PID" "$LOG" \
    tansu broker --storage-engine "memory://tansu/" \
    --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT"
)
if ! wait_for 30 "test broker" port_open 127.0.0.1 "$PORT"; then
  show_log "$LOG" 30
  die "the test broker did not open 127.0.0.1:$PORT"
fi
log "test broker: tansu (memory storage) on 127.0.0.1:$PORT (pid $(cat "$PID"), log $LOG)"
