#!/usr/bin/env bash
# How many events of one project one Redis Cluster node applies per second (docs/SCALING.md,
# "Redis Cluster"): the measurement test `one_project_on_one_node_events_per_second` against
# the local cluster (scripts/redis-cluster.sh), in release mode, holding the bench lock.
#   BENCH_EVENTS=200000 scripts/bench-redis-cluster.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
"$REPO/scripts/redis-cluster.sh" start
flock /tmp/insightflow-bench.lock \
  cargo test --release -p insightflow-worker --test it -- --ignored --nocapture \
  exactly_once::cluster::one_project_on_one_node_events_per_second
