#!/usr/bin/env bash
# A fresh, private Apache Kafka for one `make test` run, on a free port of 127.0.0.1 (or
# $TEST_KAFKA_PORT) with its own temporary log directory; the port is written to
# .data/kafka-test/port.
#   scripts/test-broker.sh        start it (stopping and deleting the previous one)
#   scripts/test-broker.sh stop   stop it and delete its data
#
# Why not the development broker on :9092: the suite then never depends on what a long-lived
# broker has accumulated (topics, groups, offsets), and `make test` never disturbs `make run`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DIR="$DATA/kafka-test"

"$REPO/scripts/kafka.sh" stop "$DIR" 10 >/dev/null
rm -rf "$DIR"
if [[ "${1:-}" == "stop" ]]; then
  log "test broker: stopped"
  exit 0
fi

PORT="${TEST_KAFKA_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
mkdir -p "$DIR"
"$REPO/scripts/kafka.sh" start "$DIR" "$PORT"
echo "$PORT" >"$DIR/port"
