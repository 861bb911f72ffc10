#!/usr/bin/env bash
# Make the local dependencies of InsightFlow ready (idempotent):
#   Redis   on ${REDIS_HOST:-127.0.0.1}:${REDIS_PORT:-6379}
#   MariaDB on 127.0.0.1:3306 (root, empty password)
#   Kafka   on 127.0.0.1:9092 (Apache Kafka 4.x, KRaft, data in .data/kafka: scripts/kafka.sh)
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
# The local Redis Cluster the tests also run against (three masters, 7001-7003).
"$REPO/scripts/redis-cluster.sh" start

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

# --- Kafka ---------------------------------------------------------------------
# Apache Kafka in KRaft mode on the JDK, jars fetched with Maven (scripts/kafka.sh).
KAFKA_HOST=127.0.0.1
KAFKA_PORT=9092
KAFKA_DIR="$DATA/kafka"

if ! have java || ! have mvn; then
  log "kafka: no JDK or Maven, installing openjdk-17-jre-headless and maven with apt-get..."
  apt_install openjdk-17-jre-headless maven
fi
if pid_alive "$KAFKA_DIR/kafka.pid"; then
  log "kafka: already running on $KAFKA_HOST:$KAFKA_PORT (pid $(cat "$KAFKA_DIR/kafka.pid"), data $KAFKA_DIR/data)"
elif port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
  "$REPO/scripts/kafka.sh" ready "$KAFKA_HOST:$KAFKA_PORT" ||
    die "$KAFKA_HOST:$KAFKA_PORT is open but does not answer as a Kafka broker; free the port"
  log "kafka: already running on $KAFKA_HOST:$KAFKA_PORT (not started by this script)"
else
  "$REPO/scripts/kafka.sh" start "$KAFKA_DIR" "$KAFKA_PORT"
fi

log "deps ready: redis=$REDIS_HOST:$REDIS_PORT mysql=$MYSQL_HOST:$MYSQL_PORT kafka=$KAFKA_HOST:$KAFKA_PORT"
