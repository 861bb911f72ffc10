#!/usr/bin/env bash
# `make bench`: measure InsightFlow against the physical limits of this machine, in one run.
#
# Every figure is a ratio against a baseline measured in the same run, back to back, over
# several rounds, and the medians are quoted (docs/BENCHMARKS.md explains the method).
# Writes bench/results/latest.json and bench/results/latest.md, and prints the table.
# Fails (non-zero) if any phase lost or doubled an event.
#
# Knobs (environment):
#   BENCH_QUICK=1          quick mode: 50,000 events, 5 s runs (the default is the full run the
#                          issue asks for: 1,000,000 events, 15 s runs)
#   BENCH_EVENTS=N         events in the worker drain phase (default 1000000; quick 50000)
#   BENCH_ROUNDS=3         rounds of every baseline/subject pair
#   BENCH_DURATION=S       measured seconds of each ingest and stats run (quick 5, full 15)
#   BENCH_CONCURRENCY=32   concurrent HTTP clients / producer lanes at saturation
#   BENCH_STATS_RATE=1000  requests/s for the Redis-backed stats endpoints
#   BENCH_FUNNEL_RATE=0.5  requests/s for the funnel analysis (MySQL). One analysis over 1 M
#                          events keeps both cores of a 2-core machine busy for ~0.6 s, so 2 req/s
#                          measures the queue, not the answer time the issue asks about
#   BENCH_PHASES="ingest worker freshness stats funnel scale retention"   which phases to run
#   BENCH_SCALE_EVENTS=N   events of the scale phase (1 then 3 workers against the local Redis
#                          Cluster, scripts/redis-cluster.sh; default BENCH_EVENTS / 2)
#   BENCH_FUNNEL_EVENTS=N  events of the funnel-at-scale phase (default 10000000; quick 1000000):
#                          scripts/bench-funnel-scale.sh, the funnel analysis beside MySQL's own
#                          index scan of the same rows
#   BENCH_RETENTION_ROWS=N raw events the retention phase removes (default 1000000), beside
#                          BENCH_RETENTION_KEEP recent ones it keeps (default 100000):
#                          scripts/bench-retention.sh, one pass of the retention job on an
#                          unpartitioned table (chunked DELETE) vs a partitioned one (DROP PARTITION)
#   BENCH_KEEP=1           keep the run's databases, Redis keys and broker data
#   BENCH_WORK_DIR=DIR     where the run's private brokers keep their logs, and the MySQL-alone
#                          baseline its LOAD DATA files (default .data/bench; /dev/shm keeps
#                          several GB of broker data off a full disk)
#   BENCH_BROKERS=h:p      use this Kafka cluster instead of a private broker per phase (its
#                          topics are then left in place)
#   BENCH_MYSQL_BUFFER_POOL=BYTES  InnoDB buffer pool for the run (default: a quarter of RAM in
#                          whole GiB, never below the server's own); restored afterwards
#   BENCH_PROFILE=1        sample the gateway (its batch-50 JSON saturation run of round 1, after
#                          the warm-up) and the worker (its first 1-instance drain, start to end)
#                          with perf at 999 Hz; the ten hottest frames (self time) in
#                          bench/results/profile-{gateway,worker}.txt
#   BENCH_MYSQL_LOAD_ROWS=N   rows per LOAD DATA file of the MySQL-alone baseline (default 20000)
#   BENCH_MYSQL_INSERT_ROWS=N rows per INSERT statement of the MySQL-alone baseline (default 2000)
#   BENCH_MYSQL_INSERT_TX=N   rows per transaction of the MySQL-alone INSERT (default 20000)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

QUICK="${BENCH_QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
  EVENTS="${BENCH_EVENTS:-50000}"
  DURATION="${BENCH_DURATION:-5}"
  MODE=quick
else
  EVENTS="${BENCH_EVENTS:-1000000}"
  DURATION="${BENCH_DURATION:-15}"
  MODE=full
fi
ROUNDS="${BENCH_ROUNDS:-3}"
CONCURRENCY="${BENCH_CONCURRENCY:-32}"
STATS_RATE="${BENCH_STATS_RATE:-1000}"
FUNNEL_RATE="${BENCH_FUNNEL_RATE:-0.5}"
PHASES="${BENCH_PHASES:-ingest worker freshness stats funnel scale retention}"
SEED=42

RUN_ID="$(date +%Y%m%d%H%M%S)$$"
WORK="${BENCH_WORK_DIR:-$DATA/bench}/$RUN_ID"
RESULTS="$WORK/results.jsonl"
OUT_DIR="$REPO/bench/results"
mkdir -p "$WORK" "$OUT_DIR"
: >"$RESULTS"

MYSQL_BASE="mysql://root@127.0.0.1:3306"
REDIS_URL="redis://127.0.0.1:6379/0"
# What workers are started against: the single Redis, or (the scale phase) the local cluster.
WORKER_REDIS_URL="$REDIS_URL"
WORKER_REDIS_CLUSTER=false
CLUSTER_PORTS="${REDIS_CLUSTER_PORTS:-7001 7002 7003}"
CLUSTER_URLS="$(for p in $CLUSTER_PORTS; do printf 'redis://127.0.0.1:%s,' "$p"; done)"
CLUSTER_URLS="${CLUSTER_URLS%,}"
# A private Kafka per phase (start_broker); BENCH_BROKERS=host:port uses an existing cluster.
BROKERS="${BENCH_BROKERS:-}"
# Set before anything can fail: the cleanup at exit reads it.
EXTERNAL_BROKERS="$BROKERS"
PREFIX_BASE="ifbench:$RUN_ID"
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

LG="$REPO/target/release/loadgen"
# The raw-stores baseline writes in the worker's batches (crates/worker/config/default.toml).
WORKER_BATCH="${WORKER__KAFKA__BATCH_MAX_EVENTS:-4000}"
INGEST_BIN="$REPO/target/release/ingest"
WORKER_BIN="$REPO/target/release/worker"

declare -A CPU_PIDS
# Everything this run creates, for the cleanup.
DATABASES=()
TOPICS=()
PIDS=()

# A free port below the kernel's ephemeral range: a port above it can be free to connect to yet
# held as the local end of one of the run's own client connections, and then a service
# cannot listen on it (seen: "cannot listen on 127.0.0.1:37738" mid-run).
EPHEMERAL_LOW="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
(( EPHEMERAL_LOW > 11000 )) || EPHEMERAL_LOW=32768
free_port() {
  local p
  while :; do
    p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
    port_open 127.0.0.1 "$p" || { echo "$p"; return; }
  done
}

stop_pid() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 30; i++)); do
    running "$pid" || return 0
    sleep 0.5
  done
  warn "pid $pid did not stop within 15 s after SIGTERM; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [[ "${BENCH_KEEP:-0}" != 1 ]]; then
    for db in "${DATABASES[@]}"; do drop_database "$db"; done
    unlink_keys "$PREFIX_BASE:*"
    rm -rf "$WORK"/kafka-*
  else
    log "bench: kept databases ${DATABASES[*]:-}, Redis keys $PREFIX_BASE:*, topics ${TOPICS[*]:-}"
  fi
  if [[ -n "$EXTERNAL_BROKERS" && ${#TOPICS[@]} -gt 0 ]]; then
    log "bench: left topics ${TOPICS[*]} in $BROKERS"
  fi
  restore_buffer_pool
  if [[ $status -ne 0 ]]; then
    warn "bench failed (exit $status); logs and partial results in $WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lg() { "$LG" "$@" --out "$RESULTS"; }
# A lost or doubled event fails the run, but only after every phase ran and the report is out.
FAILURES=()
must() { "$@" || FAILURES+=("$*"); }

vm_field() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# record_memory PHASE PROCESS PID: the process's peak RSS so far, as a result line.
record_memory() {
  local hwm rss
  hwm="$(vm_field "$3" VmHWM)"
  rss="$(vm_field "$3" VmRSS)"
  printf '{"phase":"memory","during":"%s","process":"%s","vmhwm_kb":%s,"vmrss_kb":%s}\n' \
    "$1" "$2" "${hwm:-0}" "${rss:-0}" | tee -a "$RESULTS"
}

wait_ready() {
  local name="$1" port="$2" pid="$3" log_file="$4" i
  for ((i = 0; i < 120; i++)); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/ready" 2>/dev/null; then return 0; fi
    running "$pid" || { show_log "$log_file" 40; die "$name exited during start-up"; }
    sleep 0.5
  done
  show_log "$log_file" 40
  die "$name not ready on port $port after 60 s"
}

# start_gateway TOPIC PORT: prints the pid.
start_gateway() {
  local log_file="$WORK/ingest-$2.log"
  INGEST__HTTP__PORT="$2" INGEST__KAFKA__BROKERS="$BROKERS" INGEST__KAFKA__TOPIC__NAME="$1" \
    INGEST__RATE_LIMIT__PER_IP_PER_SECOND=0 INGEST__RATE_LIMIT__PER_WRITE_KEY_PER_SECOND=0 \
    INGEST__AUTH__ALLOW_OPEN=true \
    INGEST__LOG__LEVEL="${BENCH_INGEST_LOG:-warn}" \
    "$INGEST_BIN" >>"$log_file" 2>&1 </dev/null &
  local pid=$!
  PIDS+=("$pid")
  wait_ready ingest "$2" "$pid" "$log_file"
  GATEWAY_PID=$pid
}

worker_env() { # DB PREFIX TOPIC GROUP PORT
  echo "WORKER__MYSQL__URL=$MYSQL_BASE/$1" "WORKER__REDIS__URL=$WORKER_REDIS_URL" \
    "WORKER__REDIS__CLUSTER=$WORKER_REDIS_CLUSTER" \
    "WORKER__REDIS__KEY_PREFIX=$2" "WORKER__KAFKA__BROKERS=$BROKERS" \
    "WORKER__KAFKA__TOPIC__NAME=$3" "WORKER__KAFKA__DEAD_LETTER_TOPIC=$3.dlq" \
    "WORKER__KAFKA__GROUP_ID=$4" "WORKER__HTTP__PORT=$5" \
    "WORKER__STATS__RATE_LIMIT_PER_SECOND=1000000" "WORKER__STATS__RATE_LIMIT_BURST=1000000" \
    "WORKER__STATS__ALLOW_OPEN=true" \
    "WORKER__LOG__LEVEL=${BENCH_WORKER_LOG:-warn}"
}

# drop_data_set DB PREFIX: a measured drain's database and Redis keys, once checked (unless
# BENCH_KEEP=1). Twelve 1 M-event databases do not fit the buffer pool: kept to the end, each
# round would start with less of it than the one before, and the stats phase would measure
# the disk.
drop_data_set() {
  [[ "${BENCH_KEEP:-0}" == 1 || -z "$1" ]] && return 0
  drop_database "$1"
  unlink_keys "$2:*"
}
# Used by drop_data_set and by the cleanup at exit.
drop_database() {
  mariadb -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS \`$1\`" 2>/dev/null ||
    warn "could not drop database $1"
}
unlink_keys() { # PATTERN
  redis-cli --scan --pattern "$1" 2>/dev/null | xargs -r -n 500 redis-cli unlink >/dev/null 2>&1 ||
    warn "could not delete Redis keys $1"
}

migrate_db() { # DB
  DATABASES+=("$1")
  # shellcheck disable=SC2046 # word splitting of the env list is intended
  env $(worker_env "$1" x x x 0) "$WORKER_BIN" migrate >>"$WORK/migrate.log" 2>&1 ||
    { show_log "$WORK/migrate.log" 30; die "worker migrate failed for $1"; }
}

# start_worker ROLE DB PREFIX TOPIC GROUP PORT: sets WORKER_PID.
start_worker() {
  local log_file="$WORK/worker-$6.log"
  # shellcheck disable=SC2046
  env $(worker_env "$2" "$3" "$4" "$5" "$6") "$WORKER_BIN" "$1" >>"$log_file" 2>&1 </dev/null &
  WORKER_PID=$!
  PIDS+=("$WORKER_PID")
  wait_ready worker "$6" "$WORKER_PID" "$log_file"
}

# start_group N DB PREFIX TOPIC GROUP NAME: N consuming workers in one group, joined one at a
# time, each member's CPU tracked as NAME1..NAMEn; sets PIDS_OF_GROUP and PORTS_OF_GROUP. Each
# join is waited out (every member already in is assigned once more for each one that joins),
# so a drain started afterwards measures consumption, not rebalances.
start_group() {
  local n="$1" i j port
  PIDS_OF_GROUP=()
  PORTS_OF_GROUP=()
  for ((i = 1; i <= n; i++)); do
    port="$(free_port)"
    start_worker consume "$2" "$3" "$4" "$5" "$port"
    PIDS_OF_GROUP+=("$WORKER_PID")
    PORTS_OF_GROUP+=("$port")
    CPU_PIDS[$6$i]="$WORKER_PID"
    for ((j = 0; j < i; j++)); do
      wait_for 60 "$6 $((j + 1)) assignment $((i - j))" assigned "${PORTS_OF_GROUP[$j]}" "$((i - j))" ||
        die "$6 $((j + 1)) was not (re-)assigned after member $i joined"
    done
  done
}

stop_tracked() {
  local pid="$1" keep=() p
  stop_pid "$pid"
  for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# sum_acknowledged STRING...: acknowledged_events summed over result lines containing every
# STRING (keys are printed in alphabetical order, so match them one by one).
sum_acknowledged() {
  local lines pattern
  lines="$(cat "$RESULTS")"
  for pattern in "$@"; do
    lines="$(grep -F -- "$pattern" <<<"$lines" || true)"
  done
  grep -oE '"acknowledged_events":[0-9]+' <<<"$lines" | cut -d: -f2 | awk '{s += $1} END {print s + 0}'
}

# profile_start NAME PID [DELAY]: with BENCH_PROFILE=1, samples PID's stacks with perf (999 Hz)
# from DELAY seconds on until profile_stop NAME; write_profiles then writes the ten hottest
# frames (self time, `perf report --no-children`) to bench/results/profile-NAME.txt.
PROFILES=()
declare -A PERF_PIDS
profile_start() {
  [[ "${BENCH_PROFILE:-0}" == 1 ]] || return 0
  have perf || { warn "BENCH_PROFILE=1 but perf is not installed (apt-get install linux-perf)"; return 0; }
  local data="$WORK/perf-$1.data"
  # shellcheck disable=SC2016 # expanded by the inner bash
  bash -c 'sleep "$1"; exec perf record -q -F 999 -g -p "$2" -o "$3"' _ "${3:-0}" "$2" "$data" \
    >>"$WORK/perf.log" 2>&1 &
  PERF_PIDS[$1]=$!
  PROFILES+=("$1")
}
profile_stop() {
  local pid="${PERF_PIDS[$1]:-}"
  [[ -n "$pid" ]] || return 0
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PERF_PIDS[$1]"
}
write_profiles() {
  local name data out
  for name in "${PROFILES[@]}"; do
    data="$WORK/perf-$name.data"
    out="$OUT_DIR/profile-$name.txt"
    [[ -s "$data" ]] || { warn "bench: no perf data for $name (see $WORK/perf.log)"; continue; }
    {
      echo "# perf record -F 999 -g, $name; perf report --no-children --sort dso,symbol: top 10 by self time"
      perf report -i "$data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
        grep -E '^# (Samples|Event count)' || true
      perf report -i "$data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -n 10 | sed -E 's/[[:space:]]+(-[[:space:]]+)*$//' || true
    } >"$out"
    [[ "${BENCH_KEEP:-0}" == 1 ]] || rm -f "$data"
    log "bench: profile of $name in bench/results/profile-$name.txt"
    sed 's/^/  /' "$out"
  done
}

# assigned PORT N: the worker on PORT has been assigned partitions at least N times.
assigned() {
  local n
  n="$(curl -fsS "http://127.0.0.1:$1/metrics" |
    awk '/^([a-z_]+_)?worker_rebalances_total\{kind="assign"\}/ {print $2}')"
  [[ -n "$n" ]] && awk -v a="$n" -v b="$2" 'BEGIN {exit !(a >= b)}'
}

new_topic() {
  TOPICS+=("$1" "$1.dlq")
  "$LG" topic --brokers "$BROKERS" create "$1" --partitions 8
}

# MariaDB's Debian default buffer pool (128 MiB) holds about 300k of our rows with their
# indexes; past that every insert reads index pages from disk, and the raw-stores baseline and
# the worker alike drop from ~11,000 to ~1,500 events/s (seen on 2026-11-22). A 1 M-event
# drain would then measure the disk, not us; a production MySQL is sized for its data set.
# Resized online (SET GLOBAL, MariaDB >= 10.2) and put back when the run ends.
BUFFER_POOL_ORIG=""
mysql_var() { mariadb -h127.0.0.1 -uroot -N -B -e "SELECT @@GLOBAL.$1" 2>/dev/null; }
grow_buffer_pool() {
  local want current
  # Whole GiB: the server rounds the size to its chunk size, and we wait for what we asked.
  want="${BENCH_MYSQL_BUFFER_POOL:-$(awk '/MemTotal/ {printf "%d", int($2 / 4 / 1048576) * 1073741824}' /proc/meminfo)}"
  current="$(mysql_var innodb_buffer_pool_size)" || { warn "bench: cannot read innodb_buffer_pool_size"; return 0; }
  if [[ -n "$current" && "$want" -gt "$current" ]]; then
    mariadb -h127.0.0.1 -uroot -e "SET GLOBAL innodb_buffer_pool_size = $want" ||
      { warn "bench: could not grow the InnoDB buffer pool to $want bytes"; return 0; }
    BUFFER_POOL_ORIG="$current"
    # The resize runs in the background; wait until its pages are there.
    wait_for 120 "the InnoDB buffer pool resize" buffer_pool_at_least "$want" ||
      warn "bench: buffer pool resize still running"
  fi
  log "bench: InnoDB buffer pool $(($(mysql_var innodb_buffer_pool_size) / 1048576)) MiB"
}
buffer_pool_at_least() {
  # The variable changes at once; the pages arrive as the resize runs (and a resize under
  # load can refuse row locks, error 1206). Pages total a little under the size: allow 5%.
  local bytes
  bytes="$(mariadb -h127.0.0.1 -uroot -N -B -e "SELECT (SELECT VARIABLE_VALUE FROM \
    information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_PAGES_TOTAL') \
    * @@innodb_page_size" 2>/dev/null)" || return 1
  [[ -n "$bytes" ]] && awk -v have="$bytes" -v want="$1" 'BEGIN {exit !(have >= want * 0.95)}'
}
restore_buffer_pool() {
  [[ -n "$BUFFER_POOL_ORIG" ]] || return 0
  mariadb -h127.0.0.1 -uroot -e "SET GLOBAL innodb_buffer_pool_size = $BUFFER_POOL_ORIG" 2>/dev/null ||
    warn "bench: could not restore innodb_buffer_pool_size to $BUFFER_POOL_ORIG"
  BUFFER_POOL_ORIG=""
}

# --- 0. dependencies and build ---------------------------------------------------------
"$REPO/scripts/deps.sh"
grow_buffer_pool
log "bench: cargo build --release (ingest, worker, loadgen)"
cargo build --release -p insightflow-ingest -p insightflow-worker -p insightflow-loadgen
log "bench: run $RUN_ID, mode $MODE, $EVENTS events, $ROUNDS rounds, ${DURATION}s runs, results in $WORK"

# start_broker NAME: a fresh private Apache Kafka for one phase (unless BENCH_BROKERS is set),
# the broker scripts/deps.sh runs, started by the same script: no phase reads another's
# topics, groups or page cache, and other engineers' tests on :9092 cannot skew a run.
start_broker() {
  if [[ -n "$EXTERNAL_BROKERS" ]]; then
    BROKERS="$EXTERNAL_BROKERS"
    return
  fi
  local port dir="$WORK/kafka-$1"
  port="$(free_port)"
  "$REPO/scripts/kafka.sh" start "$dir" "$port" >/dev/null
  BROKER_DIR="$dir"
  BROKER_PID="$(cat "$dir/kafka.pid")"
  PIDS+=("$BROKER_PID")
  CPU_PIDS[broker]="$BROKER_PID"
  BROKERS="127.0.0.1:$port"
  log "bench: private Kafka for $1 on $BROKERS (pid $BROKER_PID, log $dir/kafka.log)"
}
stop_broker() {
  if [[ -n "${BROKER_PID:-}" ]]; then
    stop_tracked "$BROKER_PID"
    unset 'CPU_PIDS[broker]'
    BROKER_PID=""
    [[ "${BENCH_KEEP:-0}" == 1 ]] || rm -rf "$BROKER_DIR"
  fi
}

# CPU seconds of the processes that can be the limit, per phase: which one ran out of CPU?
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
declare -A CPU_START
cpu_mark() {
  local name pid
  CPU_WALL_START=$(date +%s.%N)
  for name in "${!CPU_PIDS[@]}"; do
    pid="${CPU_PIDS[$name]}"
    CPU_START[$name]="$(cpu_ticks "$pid")"
  done
}
# cpu_record DURING [ROUND EVENTS]: the CPU seconds of every tracked process since cpu_mark, and
# with EVENTS, their microseconds per event (EVENTS: what the run wrote or acknowledged).
cpu_record() {
  local name pid now wall cpu extra=""
  wall="$(awk -v a="$CPU_WALL_START" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')"
  for name in "${!CPU_PIDS[@]}"; do
    pid="${CPU_PIDS[$name]}"
    now="$(cpu_ticks "$pid")"
    cpu="$(awk -v a="${CPU_START[$name]:-0}" -v b="$now" -v t="$CLK_TCK" 'BEGIN {print (b - a) / t}')"
    if [[ -n "${3:-}" && "${3:-0}" -gt 0 ]]; then
      extra="$(awk -v r="$2" -v n="$3" -v c="$cpu" \
        'BEGIN {printf ",\"round\":%d,\"events\":%d,\"us_per_event\":%.3f", r, n, c * 1e6 / n}')"
    fi
    printf '{"phase":"cpu","during":"%s","process":"%s","cpu_s":%s,"wall_s":%s%s}\n' "$1" "$name" \
      "$cpu" "$wall" "$extra" >>"$RESULTS"
  done
}
# last_acknowledged: acknowledged_events of the run's last result line.
last_acknowledged() {
  tail -n 1 "$RESULTS" | grep -oE '"acknowledged_events":[0-9]+' | cut -d: -f2 || echo 0
}
pid="$(pgrep -xo mariadbd || pgrep -xo mysqld || true)"; [[ -n "$pid" ]] && CPU_PIDS[mysql]="$pid"
pid="$(pgrep -xo redis-server || true)"; [[ -n "$pid" ]] && CPU_PIDS[redis]="$pid"

START_TS=$(date +%s)
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

# --- 1. ingest throughput: gateway vs raw producer -----------------------------------------
if has_phase ingest; then
  log "== phase 1: ingest throughput (gateway vs raw rdkafka producer)"
  start_broker ingest
  T_GW="ifbench.$RUN_ID.gateway"
  T_RAW="ifbench.$RUN_ID.raw"
  T_PIPE="ifbench.$RUN_ID.pipelined"
  new_topic "$T_GW"
  new_topic "$T_RAW"
  new_topic "$T_PIPE"
  PORT="$(free_port)"
  start_gateway "$T_GW" "$PORT"
  record_memory ingest-idle gateway "$GATEWAY_PID"
  CPU_PIDS[gateway]="$GATEWAY_PID"
  cpu_mark
  URL="http://127.0.0.1:$PORT/api/v1/events"
  common=(--duration "$DURATION" --warmup 1 --concurrency "$CONCURRENCY" --seed "$SEED")
  for batch in 50 1; do
    for ((r = 1; r <= ROUNDS; r++)); do
      tags=(--tag phase=ingest --tag "case=b$batch" --tag "round=$r" --tag load=saturation)
      # The limit: the bare producer, pipelined (its queue kept full, nothing waits for a
      # batch). The request batch does not change it, so it runs with the batches of 50 only.
      if [[ $batch == 50 ]]; then
        cpu_mark
        # One enqueuing thread per core: a single one gets one thread's share of a busy
        # machine (seen: 128-183 k ev/s in the bench, 337 k alone on a quieter minute).
        lg produce --pipelined --concurrency "$(nproc)" --brokers "$BROKERS" --topic "$T_PIPE" \
          --batch "$batch" --duration "$DURATION" --warmup 1 --seed "$SEED" --clk-tck "$CLK_TCK" \
          "${tags[@]}" --tag kind=raw_pipelined >/dev/null
        cpu_record "ingest-b$batch-raw_pipelined" "$r" "$(last_acknowledged)"
      fi
      cpu_mark
      lg produce --brokers "$BROKERS" --topic "$T_RAW" --batch "$batch" "${common[@]}" \
        --clk-tck "$CLK_TCK" "${tags[@]}" --tag kind=raw >/dev/null
      cpu_record "ingest-b$batch-raw" "$r" "$(last_acknowledged)"
      [[ $r == 1 && $batch == 50 ]] && profile_start gateway "$GATEWAY_PID" 1
      cpu_mark
      lg http --url "$URL" --batch "$batch" "${common[@]}" "${tags[@]}" --tag kind=gateway >/dev/null
      cpu_record "ingest-b$batch-gateway" "$r" "$(last_acknowledged)"
      profile_stop gateway
      cpu_mark
      lg http --url "$URL" --batch "$batch" --gzip "${common[@]}" "${tags[@]}" \
        --tag kind=gateway_gzip >/dev/null
      cpu_record "ingest-b$batch-gateway_gzip" "$r" "$(last_acknowledged)"
      grep -F "\"case\":\"b$batch\"" "$RESULTS" | grep -F "\"round\":$r," |
        grep -F '"load":"saturation"' |
        grep -oE '"events_per_s":[0-9.]+|"kind":"[a-z_]+"|"p99_ms":[0-9.]+' |
        paste -sd' ' | sed "s/^/  batch $batch round $r: /" || true
      grep -F "\"during\":\"ingest-b$batch-gateway\"" "$RESULTS" | grep -F '"process":"gateway"' |
        grep -F "\"round\":$r," | grep -oE '"us_per_event":[0-9.]+' |
        sed "s/^/  batch $batch round $r: gateway CPU /" || true
    done
    record_memory "ingest-saturation-b$batch" gateway "$GATEWAY_PID"
    # Half of the median saturation rate, as a fixed request rate.
    for kind in gateway gateway_gzip; do
      eps="$(grep "\"case\":\"b$batch\"" "$RESULTS" | grep '"load":"saturation"' |
        grep "\"kind\":\"$kind\"" | grep -oE '"events_per_s":[0-9.]+' | cut -d: -f2 | sort -n |
        awk '{a[NR] = $1} END {print (NR ? a[int((NR + 1) / 2)] : 0)}' || true)"
      rate="$(awk -v e="$eps" -v b="$batch" 'BEGIN {r = e / 2 / b; printf "%.1f", (r < 1 ? 1 : r)}')"
      gz=(); [[ "$kind" == gateway_gzip ]] && gz=(--gzip)
      lg http --url "$URL" --batch "$batch" "${gz[@]}" --rate "$rate" --concurrency 1024 \
        --duration "$DURATION" --warmup 1 --seed "$SEED" --tag phase=ingest --tag "case=b$batch" \
        --tag round=1 --tag load=half --tag "kind=$kind" >/dev/null
    done
  done
  record_memory ingest gateway "$GATEWAY_PID"
  cpu_record ingest
  unset 'CPU_PIDS[gateway]'
  stop_tracked "$GATEWAY_PID"
  gw_acked="$(sum_acknowledged '"phase":"ingest"' '"kind":"gateway')"
  raw_acked="$(sum_acknowledged '"phase":"ingest"' '"kind":"raw"')"
  pipe_acked="$(sum_acknowledged '"phase":"ingest"' '"kind":"raw_pipelined"')"
  must lg check --brokers "$BROKERS" --topic "$T_GW" --expect "$gw_acked" --tag phase=check --tag of=ingest-gateway
  must lg check --brokers "$BROKERS" --topic "$T_RAW" --expect "$raw_acked" --tag phase=check --tag of=ingest-raw
  must lg check --brokers "$BROKERS" --topic "$T_PIPE" --expect "$pipe_acked" --tag phase=check \
    --tag of=ingest-raw-pipelined
  stop_broker
fi

# --- 2 and 6. worker drain vs raw stores, 1 and 2 instances; growth -------------------------
STATS_DB=""
STATS_PREFIX=""
if has_phase worker; then
  log "== phase 2: worker drain of $EVENTS events vs MySQL alone, Redis alone and raw stores"
  start_broker worker
  for ((r = 1; r <= ROUNDS; r++)); do
    # The limits, back to back with this round's drains: MySQL alone (the same rows into an
    # identical user_events, LOAD DATA and multi-row INSERT; the better one is the baseline)
    # and Redis alone (the same aggregate updates, pipelined, no dedupe marks).
    for kind in mysql_load mysql_insert redis_alone; do
      db=""
      prefix="$PREFIX_BASE:${kind}r$r"
      case "$kind" in
        mysql_load) target=(--target mysql-load --batch "${BENCH_MYSQL_LOAD_ROWS:-20000}" --work-dir "$WORK") ;;
        mysql_insert) target=(--target mysql-insert --rows-per-statement "${BENCH_MYSQL_INSERT_ROWS:-2000}"
          --batch "${BENCH_MYSQL_INSERT_TX:-20000}") ;;
        redis_alone) target=(--target redis --redis-url "$REDIS_URL" --prefix "$prefix") ;;
      esac
      if [[ "$kind" == mysql_* ]]; then
        db="ifbench_${RUN_ID}_${kind}_r$r"
        migrate_db "$db"
        target+=(--mysql-url "$MYSQL_BASE/$db")
      fi
      cpu_mark
      lg stores "${target[@]}" --events "$EVENTS" --seed "$SEED" \
        --tag phase=worker --tag "kind=$kind" --tag "round=$r" >/dev/null
      cpu_record "drain-$kind" "$r" "$EVENTS"
      if [[ -n "$db" ]]; then
        must lg check --mysql-url "$MYSQL_BASE/$db" --expect "$EVENTS" --tag phase=check \
          --tag "of=$kind-r$r" >/dev/null
        drop_data_set "$db" "$prefix"
      else
        must lg check --redis-url "$REDIS_URL" --prefix "$prefix" --expect "$EVENTS" \
          --tag phase=check --tag "of=$kind-r$r" >/dev/null
        [[ "${BENCH_KEEP:-0}" == 1 ]] || unlink_keys "$prefix:*"
      fi
    done
    grep -F "\"round\":$r," "$RESULTS" | grep -F '"phase":"worker"' |
      grep -E '"kind":"(mysql_load|mysql_insert|redis_alone)"' |
      grep -oE '"events_per_s":[0-9.]+|"kind":"[a-z_]+"' | paste -sd' ' | sed "s/^/  round $r: /" ||
      true
    for n in 1 2; do
      # Raw stores, then the worker, back to back.
      db="ifbench_${RUN_ID}_raw${n}_r$r"
      prefix="$PREFIX_BASE:raw${n}r$r"
      migrate_db "$db"
      cpu_mark
      lg stores --mysql-url "$MYSQL_BASE/$db" --redis-url "$REDIS_URL" --prefix "$prefix" \
        --events "$EVENTS" --lanes "$n" --seed "$SEED" --batch "$WORKER_BATCH" \
        --tag phase=worker --tag "kind=raw$n" --tag "round=$r" >/dev/null
      cpu_record "drain-raw$n" "$r" "$EVENTS"
      must lg check --mysql-url "$MYSQL_BASE/$db" --redis-url "$REDIS_URL" --prefix "$prefix" \
        --expect "$EVENTS" --tag phase=check --tag "of=raw$n-r$r" >/dev/null
      drop_data_set "$db" "$prefix"

      db="ifbench_${RUN_ID}_w${n}_r$r"
      prefix="$PREFIX_BASE:w${n}r$r"
      group="ifbench-$RUN_ID-w$n-r$r"
      migrate_db "$db"
      # A fresh topic per drain, filled once every instance holds its partitions, so the
      # drain measures consumption, not the second instance's join rebalance.
      T_FILL="ifbench.$RUN_ID.fill.w$n.r$r"
      new_topic "$T_FILL"
      start_group "$n" "$db" "$prefix" "$T_FILL" "$group" worker
      pids=("${PIDS_OF_GROUP[@]}")
      lg produce --brokers "$BROKERS" --topic "$T_FILL" --fill "$EVENTS" --seed "$SEED" \
        --tag phase=fill --tag "of=worker$n-r$r" >/dev/null
      [[ $r == 1 && $n == 1 ]] && profile_start worker "${pids[0]}"
      cpu_mark
      must lg drain-wait --redis-url "$REDIS_URL" --prefix "$prefix" --expect "$EVENTS" \
        --timeout "$((EVENTS / 500 + 120))" \
        --pids "$(IFS=,; echo "${pids[*]}")" --clk-tck "$CLK_TCK" \
        --tag phase=worker --tag "kind=worker$n" --tag "round=$r" >/dev/null
      cpu_record "drain-worker$n" "$r" "$EVENTS"
      profile_stop worker
      for ((i = 1; i <= n; i++)); do unset "CPU_PIDS[worker$i]"; done
      # Let in-flight offsets commit, then make sure nothing more arrives (no doubles).
      sleep 2
      for i in "${!pids[@]}"; do
        record_memory "worker-drain-$n" "worker$((i + 1))" "${pids[$i]}" >/dev/null
        stop_tracked "${pids[$i]}"
      done
      must lg check --mysql-url "$MYSQL_BASE/$db" --redis-url "$REDIS_URL" --prefix "$prefix" \
        --expect "$EVENTS" --tag phase=check --tag "of=worker$n-r$r" >/dev/null
      tail -n 40 "$RESULTS" | grep -E "\"round\":$r" | grep -E "\"kind\":\"(raw|worker)$n\"" |
        grep -oE '"kind":"[a-z0-9]+"|"events_per_s":[0-9.]+' | paste -sd' ' | sed "s/^/  round $r: /" ||
        true
      # The last round's 1-instance data set serves the stats phase; every other one goes.
      if [[ $n == 1 ]] && has_phase stats; then
        drop_data_set "$STATS_DB" "$STATS_PREFIX"
        STATS_DB="$db"; STATS_PREFIX="$prefix"; STATS_TOPIC="$T_FILL"
      else
        drop_data_set "$db" "$prefix"
      fi
    done
  done
fi

# --- 4. stats API at a fixed rate -----------------------------------------------------------
if has_phase stats; then
  if [[ -z "$STATS_DB" ]]; then
    log "== phase 4: skipped (needs the data set of the worker phase)"
  else
    log "== phase 4: stats API at $STATS_RATE req/s against the $EVENTS-event data set"
    W_PORT="$(free_port)"
    start_worker serve "$STATS_DB" "$STATS_PREFIX" "$STATS_TOPIC" "ifbench-$RUN_ID-serve" "$W_PORT"
    base="http://127.0.0.1:$W_PORT"
    for ((r = 1; r <= ROUNDS; r++)); do
      lg stats --base "$base" --health-baseline --discover --rate "$STATS_RATE" --concurrency 256 \
        --duration "$DURATION" --warmup 1 \
        --endpoint 'events=/api/v1/stats/events?project={project}' \
        --endpoint 'online=/api/v1/online?project={project}|/api/v1/stats/online?project={project}' \
        --endpoint 'dashboard=/api/v1/dashboard?project={project}|/api/v1/stats/dashboard?project={project}' \
        --tag phase=stats --tag "round=$r" >/dev/null
      lg stats --base "$base" --health-baseline --rate "$FUNNEL_RATE" --concurrency 64 \
        --duration "$((DURATION * 2))" --warmup 1 \
        --endpoint 'funnel=/api/v1/funnels/purchase/analysis?project={project}|/api/v1/funnels/1/analysis?project={project}' \
        --tag phase=stats --tag "round=$r" --tag set=funnel >/dev/null
    done
    record_memory stats worker "$WORKER_PID"
    stop_tracked "$WORKER_PID"
  fi
fi

# --- 3. freshness ---------------------------------------------------------------------------
if has_phase freshness; then
  log "== phase 3: freshness (gateway 2xx -> visible in the stats API)"
  stop_broker
  start_broker freshness
  T_FRESH="ifbench.$RUN_ID.fresh"
  new_topic "$T_FRESH"
  db="ifbench_${RUN_ID}_fresh"
  prefix="$PREFIX_BASE:fresh"
  migrate_db "$db"
  GW_PORT="$(free_port)"
  start_gateway "$T_FRESH" "$GW_PORT"
  W_PORT="$(free_port)"
  start_worker all "$db" "$prefix" "$T_FRESH" "ifbench-$RUN_ID-fresh" "$W_PORT"
  # Steady state, not the group's first join: on a fresh broker that join also creates the
  # offsets topic, and the markers sent meanwhile would measure it (seen: p99 2.8 s).
  wait_for 60 "the freshness worker's assignment" assigned "$W_PORT" 1 ||
    die "the freshness worker got no partitions"
  lg freshness --ingest-url "http://127.0.0.1:$GW_PORT/api/v1/events" \
    --stats-url "http://127.0.0.1:$W_PORT/api/v1/stats/events?project=default" \
    --rate 50 --batch 10 --markers-per-s 20 --duration "$((DURATION * 4))" --seed "$SEED" \
    --tag phase=freshness --tag round=1 >/dev/null
  tail -n 1 "$RESULTS"
  sleep 2
  record_memory freshness gateway "$GATEWAY_PID"
  record_memory freshness worker "$WORKER_PID"
  stop_tracked "$GATEWAY_PID"
  acked="$(sum_acknowledged '"phase":"freshness"')"
  # Wait for the tail of the load to be applied before counting.
  "$LG" drain-wait --redis-url "$REDIS_URL" --prefix "$prefix" --expect "$acked" --timeout 60 >/dev/null ||
    true
  stop_tracked "$WORKER_PID"
  must lg check --mysql-url "$MYSQL_BASE/$db" --redis-url "$REDIS_URL" --prefix "$prefix" \
    --expect "$acked" --tag phase=check --tag of=freshness >/dev/null
fi

stop_broker

# --- 7. scale out: 1 then 3 workers on the Redis Cluster (issue 21) -------------------------------
# The same drain as phase 2, with every worker against the local three-master cluster
# (scripts/redis-cluster.sh) and the schema every migration gives (partitioned user_events
# once that migration is in). One consumer group of N members on an 8-partition topic, filled
# once every member holds its partitions. Reported: events/s of 3 workers over 1 (docs/SCALING.md).
unlink_cluster_keys() { # PREFIX: a project's keys share a slot, so one node holds them all
  local port
  for port in $CLUSTER_PORTS; do
    redis-cli -p "$port" --scan --pattern "$1:*" 2>/dev/null | awk '{print "UNLINK " $0}' |
      redis-cli -p "$port" >/dev/null 2>&1 || warn "could not delete cluster keys $1 on $port"
  done
}
if has_phase scale; then
  SCALE_EVENTS="${BENCH_SCALE_EVENTS:-$((EVENTS / 2))}"
  log "== phase 7: drain of $SCALE_EVENTS events by 1 and 3 workers on the Redis Cluster ($CLUSTER_PORTS)"
  "$REPO/scripts/redis-cluster.sh" start >/dev/null
  for port in $CLUSTER_PORTS; do # the nodes' CPU per drain, beside the workers' and MySQL's
    node_pid="$(redis-cli -p "$port" info server 2>/dev/null | awk -F: '/^process_id:/ {print $2+0}')"
    [[ -n "$node_pid" ]] && CPU_PIDS[redis$port]="$node_pid"
  done
  start_broker scale
  WORKER_REDIS_URL="$CLUSTER_URLS"
  WORKER_REDIS_CLUSTER=true
  for n in 1 3; do
    db="ifbench_${RUN_ID}_scale$n"
    prefix="$PREFIX_BASE:scale$n"
    migrate_db "$db"
    T_FILL="ifbench.$RUN_ID.scale.w$n"
    new_topic "$T_FILL"
    start_group "$n" "$db" "$prefix" "$T_FILL" "ifbench-$RUN_ID-scale$n" scale
    pids=("${PIDS_OF_GROUP[@]}")
    lg produce --brokers "$BROKERS" --topic "$T_FILL" --fill "$SCALE_EVENTS" --seed "$SEED" \
      --tag phase=fill --tag "of=scale$n" >/dev/null
    cpu_mark
    must lg drain-wait --redis-url "$CLUSTER_URLS" --redis-cluster --prefix "$prefix" \
      --expect "$SCALE_EVENTS" --timeout "$((SCALE_EVENTS / 300 + 120))" \
      --pids "$(IFS=,; echo "${pids[*]}")" --clk-tck "$CLK_TCK" \
      --tag phase=scale --tag "kind=scale$n" --tag round=1 >/dev/null
    cpu_record "drain-scale$n" 1 "$SCALE_EVENTS"
    for ((i = 1; i <= n; i++)); do unset "CPU_PIDS[scale$i]"; done
    sleep 2
    for pid in "${pids[@]}"; do stop_tracked "$pid"; done
    must lg check --mysql-url "$MYSQL_BASE/$db" --redis-url "$CLUSTER_URLS" --redis-cluster \
      --prefix "$prefix" --expect "$SCALE_EVENTS" --tag phase=check --tag "of=scale$n" >/dev/null
    if [[ "${BENCH_KEEP:-0}" != 1 ]]; then
      drop_database "$db"
      unlink_cluster_keys "$prefix"
    fi
  done
  WORKER_REDIS_URL="$REDIS_URL"
  WORKER_REDIS_CLUSTER=false
  for port in $CLUSTER_PORTS; do unset "CPU_PIDS[redis$port]"; done
  stop_broker
  rates="$(grep -F '"phase":"scale"' "$RESULTS" | grep -oE '"kind":"scale[13]"|"events_per_s":[0-9.]+' |
    paste -sd' ')"
  one="$(grep -F '"kind":"scale1"' "$RESULTS" | grep -F '"phase":"scale"' | grep -oE '"events_per_s":[0-9.]+' | cut -d: -f2)"
  three="$(grep -F '"kind":"scale3"' "$RESULTS" | grep -F '"phase":"scale"' | grep -oE '"events_per_s":[0-9.]+' | cut -d: -f2)"
  log "  $rates"
  [[ -n "$one" && -n "$three" ]] &&
    log "  3 workers / 1 worker: $(awk -v a="$three" -v b="$one" 'BEGIN {printf "%.2f", a / b}') (this machine: $(nproc) cores)"
fi

# --- 4. the funnel at scale (no Kafka: rows generated inside MariaDB) --------------------------
FUNNEL_TABLE=""
if has_phase funnel; then
  log "== phase 4: the funnel over ${BENCH_FUNNEL_EVENTS:-$([[ $QUICK == 1 ]] && echo 1000000 || echo 10000000)} events vs MySQL's index scan"
  FUNNEL_TABLE="$(BENCH_SKIP_BUILD=1 \
    BENCH_FUNNEL_EVENTS="${BENCH_FUNNEL_EVENTS:-$([[ $QUICK == 1 ]] && echo 1000000 || echo 10000000)}" \
    "$REPO/scripts/bench-funnel-scale.sh" | tail -n 3)" || FAILURES+=("funnel at scale")
fi

# --- 8. retention before and after partitioning (no Kafka: rows generated inside MariaDB) ----
RETENTION_TABLE=""
if has_phase retention; then
  log "== phase 8: retention of ${BENCH_RETENTION_ROWS:-1000000} raw events, chunked DELETE vs DROP PARTITION"
  RETENTION_TABLE="$("$REPO/scripts/bench-retention.sh" | tail -n 3)" || FAILURES+=("retention")
fi

for name in "${!PERF_PIDS[@]}"; do profile_stop "$name"; done
write_profiles

# --- report ---------------------------------------------------------------------------------
ELAPSED=$(($(date +%s) - START_TS))
"$LG" report --results "$RESULTS" --json-out "$OUT_DIR/latest.json" --markdown-out "$OUT_DIR/latest.md" \
  --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" --meta "mode=$MODE" --meta "events=$EVENTS" \
  --meta "rounds=$ROUNDS" --meta "run_seconds=$ELAPSED" --meta "duration_s=$DURATION" \
  --meta "concurrency=$CONCURRENCY" --meta "broker=${EXTERNAL_BROKERS:-private Apache Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml), KRaft}" --meta "stats_rate=$STATS_RATE" \
  --meta "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+dirty')" \
  --meta "cpu=$(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" \
  --meta "memory=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)" \
  --meta "mysql_buffer_pool_mib=$(($(mysql_var innodb_buffer_pool_size) / 1048576))" \
  --meta "load_average_at_start=$LOADAVG_START" \
  --meta "load_average_at_end=$(cut -d' ' -f1-3 /proc/loadavg)"
cp "$RESULTS" "$OUT_DIR/latest.jsonl"
if [[ ${#FAILURES[@]} -gt 0 ]] || grep '"phase":"check"' "$RESULTS" | grep -q '"ok":false'; then
  printf '  failed: %s\n' "${FAILURES[@]}" >&2
  die "events were lost or doubled, or a drain did not complete (see above and $WORK)"
fi
if [[ -n "$FUNNEL_TABLE" ]]; then
  log ""
  log "The funnel at scale (bench/results/funnel-scale.json):"
  log "$FUNNEL_TABLE"
fi
if [[ -n "$RETENTION_TABLE" ]]; then
  log ""
  log "Retention before and after partitioning (bench/results/retention.json):"
  log "$RETENTION_TABLE"
fi
log "bench: done in ${ELAPSED}s; bench/results/latest.json and latest.md written"
