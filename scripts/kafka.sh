#!/usr/bin/env bash
# The local Apache Kafka broker: Kafka 4.x in KRaft mode, one process that is both broker and
# controller, run on the machine's JDK from jars that Maven fetches (scripts/kafka/pom.xml).
#
#   scripts/kafka.sh fetch                 fetch the jars into $KAFKA_LIBS (cached; idempotent)
#   scripts/kafka.sh start DIR PORT        format DIR once, start a broker on 127.0.0.1:PORT with
#                                          its data, pid and log under DIR; wait until it answers
#                                          metadata requests. A broker already running from DIR is
#                                          left alone.
#   scripts/kafka.sh stop DIR [SECONDS]    SIGTERM (a clean shutdown), SIGKILL after SECONDS (30)
#   scripts/kafka.sh ready HOST:PORT       exit 0 if the broker answers a metadata request
#
# Knobs: KAFKA_HEAP_OPTS (default -Xms512m -Xmx1g), KAFKA_LIBS (default .data/kafka-libs),
# KAFKA_READY_SECONDS (default 90).
#
# Used by scripts/deps.sh (the development broker on :9092, data in .data/kafka),
# scripts/test-broker.sh (a fresh broker per `make test`), scripts/bench.sh (one per phase) and
# the crash tests (a private broker they kill -9 and restart on the same DIR).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_CONF="$REPO/scripts/kafka"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_CONF/pom.xml")"
KAFKA_LIBS="${KAFKA_LIBS:-$DATA/kafka-libs}"
STAMP="$KAFKA_LIBS/.version"

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

fetch() {
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KAFKA_VERSION" ]]; then
    return 0
  fi
  have java || die "java not found: Kafka $KAFKA_VERSION needs a JDK 17 or newer (apt-get install openjdk-17-jre-headless)"
  have mvn || die "mvn not found: the Kafka jars are fetched with Maven (apt-get install maven)"
  log "kafka: fetching Apache Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$KAFKA_LIBS"
  if ! mvn -q -B -f "$KAFKA_CONF/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" >"$KAFKA_LIBS.fetch.log" 2>&1; then
    show_log "$KAFKA_LIBS.fetch.log" 40
    die "kafka: Maven could not fetch the broker's jars (log above)"
  fi
  [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka: no kafka_2.13-$KAFKA_VERSION.jar after the fetch"
  echo "$KAFKA_VERSION" >"$STAMP"
}

java_cp() { java -cp "$KAFKA_LIBS/*" "$@"; }

ready() {
  java_cp -Dlog4j2.configurationFile="$KAFKA_CONF/tools-log4j2.yaml" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "$1" --list \
    --command-config "$KAFKA_CONF/tools.properties" >/dev/null 2>&1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# server.properties for a single combined broker + controller. Written on every start, so a
# restart on the same DIR takes the current settings; the controller port is kept from the
# first start (it names the quorum's only voter).
write_config() {
  local dir="$1" port="$2" controller_port
  if [[ -f "$dir/controller-port" ]]; then
    controller_port="$(cat "$dir/controller-port")"
  else
    controller_port="$(free_port)"
    echo "$controller_port" >"$dir/controller-port"
  fi
  cat >"$dir/server.properties" <<EOF
# Written by scripts/kafka.sh; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
# The services create their topics (with their partition counts); nothing else may.
auto.create.topics.enable=false
num.partitions=1
# One broker: every internal topic has one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# A group's first member starts consuming at once instead of after 3 s (local use only).
group.initial.rebalance.delay.ms=0
# Local brokers do not need a week of history.
log.retention.hours=24
EOF
}

start() {
  local dir="$1" port="$2" pidfile log cluster_id i
  [[ "$port" =~ ^[0-9]+$ ]] || die "kafka: PORT must be a number, got '$port'"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  pidfile="$dir/kafka.pid"
  log="$dir/kafka.log"
  if pid_alive "$pidfile"; then
    log "kafka: already running from $dir (pid $(cat "$pidfile"))"
    return 0
  fi
  if port_open 127.0.0.1 "$port"; then
    die "kafka: 127.0.0.1:$port is taken by another process"
  fi
  fetch
  write_config "$dir" "$port"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    cluster_id="$(java_cp kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java_cp -Dlog4j2.configurationFile="$KAFKA_CONF/tools-log4j2.yaml" kafka.tools.StorageTool format \
      --cluster-id "$cluster_id" --config "$dir/server.properties" >>"$log" 2>&1 ||
      { show_log "$log" 20; die "kafka: formatting $dir/data failed"; }
    log "kafka: formatted KRaft storage in $dir/data (cluster $cluster_id)"
  fi
  # The JVM options of Kafka's own kafka-server-start.sh, with a bounded heap.
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of options
  start_bg kafka "$pidfile" "$log" \
    java ${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_CONF/log4j2.yaml" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties"
  for ((i = 0; i < ${KAFKA_READY_SECONDS:-90}; i++)); do
    if ready "127.0.0.1:$port"; then
      log "kafka: Apache Kafka $KAFKA_VERSION ready on 127.0.0.1:$port (pid $(cat "$pidfile"), data $dir/data, log $log)"
      return 0
    fi
    pid_alive "$pidfile" || { show_log "$log" 40; die "kafka: the broker exited during start-up"; }
    sleep 1
  done
  show_log "$log" 40
  die "kafka: no metadata answer from 127.0.0.1:$port after ${KAFKA_READY_SECONDS:-90}s"
}

case "${1:-}" in
  fetch) fetch ;;
  start) [[ $# -eq 3 ]] || usage; start "$2" "$3" ;;
  stop) [[ $# -ge 2 ]] || usage; stop_pidfile kafka "$2/kafka.pid" "${3:-30}" ;;
  ready) [[ $# -eq 2 ]] || usage; fetch; ready "$2" ;;
  *) usage ;;
esac
