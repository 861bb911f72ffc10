#!/usr/bin/env bash
# Stop what `make run` started: ingest, worker and the local Tansu broker.
# All data (.data/, MariaDB, Redis) is kept. MariaDB and Redis are shared
# system services and are left running.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_pidfile ingest "$DATA/run/ingest.pid" 20
stop_pidfile worker "$DATA/run/worker.pid" 20
stop_pidfile tansu "$DATA/tansu/tansu.pid" 20
stop_pidfile tansu-test "$DATA/tansu-test/tansu.pid" 10
log "mariadb, redis: left running (shared system services); data kept in $DATA"
