#!/usr/bin/env bash
# Stop what `make run` started: ingest, worker and the local Kafka broker (a clean shutdown).
# All data (.data/, MariaDB, Redis) is kept. MariaDB and Redis are shared
# system services and are left running.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_pidfile ingest "$DATA/run/ingest.pid" 20
stop_pidfile worker "$DATA/run/worker.pid" 20
stop_pidfile shop "$DATA/run/shop.pid" 5
"$REPO/scripts/kafka.sh" stop "$DATA/kafka" 30
"$REPO/scripts/kafka.sh" stop "$DATA/kafka-test" 10
log "mariadb, redis: left running (shared system services); data kept in $DATA"
