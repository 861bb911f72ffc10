#!/usr/bin/env bash
# Make the local dependencies of InsightFlow ready (idempotent):
#   Redis   on ${REDIS_HOST:-127.0.0.1}:${REDIS_PORT:-6379}
#   MariaDB on 127.0.0.1:3306 (root, empty password)
#   Kafka   on 127.0.0.1:9092 (Tansu, a Kafka-wire-compatible broker, sqlite storage)
# It does not create databases or run migrations: `worker migrate` does that.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APT_UPDATED=0
apt_install() {
  have apt-get || die "apt-get not found; install $* by hand"
  if [[ $APT_UPDATED -eq 0 ]]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Redis -------------------------------------------------------------------
REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"

redis_ping() { [[ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]; }

if have redis-cli && redis_ping; then
  log "redis: already running on $REDIS_HOST:$REDIS_PORT"
else
  if ! have redis-server; then
    log "redis: not installed, installing redis-server with apt-get..."
    apt_install redis-server
  fi
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 30 redis redis_ping || { show_log /var/log/redis/ci.log; die "redis did not answer PING"; }
  log "redis: started on $REDIS_HOST:$REDIS_PORT"
fi

# --- MariaDB -----------------------------------------------------------------
MYSQL_HOST=127.0.0.1
MYSQL_PORT=3306

mysql_ping() { mysqladmin -h"$MYSQL_HOST" -P"$MYSQL_PORT" -uroot ping >/dev/null 2>&1; }
# TCP login as root with an empty password (what the services use).
mysql_tcp_login() { mariadb -h"$MYSQL_HOST" -P"$MYSQL_PORT" -uroot -e 'SELECT 1' >/dev/null 2>&1; }

if have mysqladmin && mysql_ping; then
  log "mariadb: already running on $MYSQL_HOST:$MYSQL_PORT"
else
  if [[ ! -x /usr/sbin/mariadbd ]]; then
    log "mariadb: not installed, installing mariadb-server with apt-get..."
    apt_install mariadb-server
  fi
  mkdir -p /run/mysqld
  chown mysql:mysql /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_for 60 mariadb mysql_ping || { show_log /var/log/mysql/error.log; die "mariadb did not answer ping"; }
  log "mariadb: started on $MYSQL_HOST:$MYSQL_PORT"
fi
# Debian's root@localhost uses unix_socket auth only; allow an empty password over TCP too.
if ! mysql_tcp_login; then
  log "mariadb: enabling empty-password TCP login for root"
  mariadb -uroot -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket"
  mysql_tcp_login || die "mariadb: root still cannot log in over TCP with an empty password"
fi

# --- Kafka (Tansu) -----------------------------------------------------------
KAFKA_HOST=127.0.0.1
KAFKA_PORT=9092
TANSU_DIR="$DATA/tansu"
TANSU_PID="$TANSU_DIR/tansu.pid"
TANSU_LOG="$TANSU_DIR/tansu.log"
# shellcheck disable=SC2054 # the comma is part of --features
TANSU_INSTALL=(cargo install tansu --version 0.6.0 --locked --features dynostore,libsql)

if ! have tansu; then
  if pgrep -f "cargo install tansu" >/dev/null; then
    log "tansu: an install is already in progress (log: /tmp/tansu-install.log), waiting for it..."
    while pgrep -f "cargo install tansu" >/dev/null; do sleep 10; done
  fi
  if ! have tansu; then
    log "tansu: installing (first time, builds from source: ~10-20 min): ${TANSU_INSTALL[*]}"
    "${TANSU_INSTALL[@]}"
  fi
  have tansu || die "tansu: install finished but no tansu binary on PATH (~/.cargo/bin)"
fi

if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
  if pid_alive "$TANSU_PID"; then
    log "kafka: already running on $KAFKA_HOST:$KAFKA_PORT (tansu pid $(cat "$TANSU_PID"))"
  else
    log "kafka: already running on $KAFKA_HOST:$KAFKA_PORT (not started by this script)"
  fi
else
  mkdir -p "$TANSU_DIR"
  # Tansu resolves sqlite:// paths relative to its working directory, so run it
  # from $TANSU_DIR: the data lives in $TANSU_DIR/tansu.db. Verified command line:
  #   cd .data/tansu && tansu broker --storage-engine sqlite://tansu.db \
  #     --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092
  (
    cd "$TANSU_DIR"
    start_bg tansu "$TANSU_PID" "$TANSU_LOG" \
      tansu broker \
      --storage-engine "sqlite://tansu.db" \
      --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
      --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT"
  )
  if ! wait_for 30 kafka port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    show_log "$TANSU_LOG" 30
    die "tansu did not open $KAFKA_HOST:$KAFKA_PORT"
  fi
  log "kafka: started tansu on $KAFKA_HOST:$KAFKA_PORT (pid $(cat "$TANSU_PID"), data $TANSU_DIR/tansu.db, log $TANSU_LOG)"
fi

log "deps ready: redis=$REDIS_HOST:$REDIS_PORT mysql=$MYSQL_HOST:$MYSQL_PORT kafka=$KAFKA_HOST:$KAFKA_PORT"
