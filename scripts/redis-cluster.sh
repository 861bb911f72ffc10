#!/usr/bin/env bash
# A local Redis Cluster for the tests (idempotent):
#   scripts/redis-cluster.sh start   three masters on 127.0.0.1:7001-7003, no replicas, data in
#                                    .data/redis-cluster/<port>; waits until cluster_state:ok
#   scripts/redis-cluster.sh stop    shuts them down (data kept; `make clean-data` deletes it)
#   scripts/redis-cluster.sh status  prints CLUSTER INFO of the first node
# Ports: REDIS_CLUSTER_PORTS (default "7001 7002 7003"). The tests find it through
# TEST_REDIS_CLUSTER (default 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003).
# Nothing is persisted (no RDB, no AOF): like the single Redis of scripts/deps.sh, a restarted
# node comes back empty and the worker rebuilds its aggregates from MySQL.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORTS="${REDIS_CLUSTER_PORTS:-7001 7002 7003}"
HOST=127.0.0.1
DIR="$DATA/redis-cluster"
read -r -a PORT_LIST <<<"$PORTS"
FIRST="${PORT_LIST[0]}"

node_ping() { [[ "$(redis-cli -h "$HOST" -p "$1" ping 2>/dev/null)" == "PONG" ]]; }
cluster_ok() { redis-cli -h "$HOST" -p "$FIRST" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }
# Slots assigned to any node, as the first node sees them.
slots_assigned() {
  redis-cli -h "$HOST" -p "$FIRST" cluster info 2>/dev/null |
    awk -F: '/^cluster_slots_assigned:/ {gsub(/\r/, "", $2); print $2}'
}

start() {
  { have redis-server && have redis-cli; } ||
    die "redis-server/redis-cli not found: run scripts/deps.sh (it installs redis-server)"
  local port
  for port in "${PORT_LIST[@]}"; do
    if node_ping "$port"; then
      continue
    fi
    port_open "$HOST" "$port" && die "port $port is taken by something that is not Redis"
    mkdir -p "$DIR/$port"
    # nodes.conf keeps the node's id and slots across restarts, so a restarted node rejoins
    # the cluster (empty) instead of being a stranger to it.
    redis-server --daemonize yes --bind "$HOST" --port "$port" \
      --cluster-enabled yes --cluster-config-file "$DIR/$port/nodes.conf" \
      --cluster-node-timeout 5000 --save "" --appendonly no --dir "$DIR/$port" \
      --pidfile "$DIR/$port/redis.pid" --logfile "$DIR/$port/redis.log"
    wait_for 30 "redis-cluster node $port" node_ping "$port" ||
      { show_log "$DIR/$port/redis.log"; die "redis node $port did not answer PING"; }
  done
  if [[ "$(slots_assigned)" != "16384" ]]; then
    local nodes=()
    for port in "${PORT_LIST[@]}"; do nodes+=("$HOST:$port"); done
    log "redis-cluster: creating the cluster of ${nodes[*]}"
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  fi
  wait_for 60 "redis-cluster state" cluster_ok ||
    { redis-cli -h "$HOST" -p "$FIRST" cluster info || true; die "the cluster is not cluster_state:ok"; }
  log "redis-cluster: ready on $(printf "$HOST:%s " "${PORT_LIST[@]}")(data $DIR)"
}

stop() {
  local port
  for port in "${PORT_LIST[@]}"; do
    if pid_alive "$DIR/$port/redis.pid"; then
      # SIGTERM: a clean shutdown (nothing to save: persistence is off).
      stop_pidfile "redis-cluster node $port" "$DIR/$port/redis.pid" 10
    elif node_ping "$port"; then
      redis-cli -h "$HOST" -p "$port" shutdown nosave >/dev/null 2>&1 || true
      log "redis-cluster node $port: stopped"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) redis-cli -h "$HOST" -p "$FIRST" cluster info ;;
  *) die "usage: $0 start|stop|status" ;;
esac
