#!/usr/bin/env bash
# The funnel at scale (issue 16): GET /funnels/{id}/analysis over BENCH_FUNNEL_EVENTS raw events
# (default 10,000,000: 20,000 users over 7 days; half page views, then product views, clicks,
# cart adds and purchases), beside MySQL's own index scan of the same rows in the same run,
# which is the floor: the analysis has to read every step event of the range.
#
#   scripts/bench-funnel-scale.sh
#
# The rows are generated inside MariaDB (its SEQUENCE engine), 1 M per statement, into a
# database of their own, dropped at the end (about 310 MB per million rows while it lasts).
# The worker serves the stats API on a free port with a statement limit high enough to measure
# rather than refuse (WORKER__STATS__QUERY_TIMEOUT_MS=120000). Prints a table and writes
# bench/results/funnel-scale.json. Settings: BENCH_FUNNEL_EVENTS, BENCH_FUNNEL_RUNS (5).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

EVENTS="${BENCH_FUNNEL_EVENTS:-10000000}"
RUNS="${BENCH_FUNNEL_RUNS:-5}"
CHUNK=1000000
RUN_ID="$(date +%s)$$"
DB="iffunnel_${RUN_ID}"
PREFIX="iffunnel:${RUN_ID}"
MYSQL=(mysql -uroot -h127.0.0.1 -P3306)
OUT="$REPO/bench/results"
mkdir -p "$OUT"

EPHEMERAL_LOW="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
(( EPHEMERAL_LOW > 11000 )) || EPHEMERAL_LOW=32768
PORT=""
while [[ -z "$PORT" ]] || port_open 127.0.0.1 "$PORT"; do
  PORT=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
done

WORKER_PID=""
cleanup() {
  [[ -n "$WORKER_PID" ]] && kill "$WORKER_PID" 2>/dev/null || true
  "${MYSQL[@]}" -e "DROP DATABASE IF EXISTS \`$DB\`" 2>/dev/null || true
  redis-cli --scan --pattern "${PREFIX}:*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$REPO/scripts/deps.sh" >/dev/null
if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
  log "==> building the worker (release)"
  cargo build --release -p insightflow-worker --quiet
fi
WORKER="$REPO/target/release/worker"
export WORKER__MYSQL__URL="mysql://root@127.0.0.1:3306/$DB"
export WORKER__REDIS__KEY_PREFIX="$PREFIX"

log "==> $EVENTS events into $DB"
"${MYSQL[@]}" -e "CREATE DATABASE \`$DB\`"
"$WORKER" migrate >/dev/null
started=$(date +%s)
for ((first = 1; first <= EVENTS; first += CHUNK)); do
  last=$((first + CHUNK - 1 < EVENTS ? first + CHUNK - 1 : EVENTS))
  "${MYSQL[@]}" "$DB" -e "
    INSERT INTO user_events (project, event_id, event_type, distinct_id, page_path,
                             event_time, timestamp_source, received_at)
    SELECT 'default', CONCAT('e', seq),
      ELT(1 + (seq * 2654435761 % 100 >= 50) + (seq * 2654435761 % 100 >= 70)
            + (seq * 2654435761 % 100 >= 82) + (seq * 2654435761 % 100 >= 90),
          'page_view', 'product_view', 'click', 'cart_add', 'purchase'),
      CONCAT('u', (seq * 7919) % 20000),
      ELT(1 + seq % 5, '/', '/pricing', '/products/1', '/products/2', '/blog'),
      UTC_TIMESTAMP(3) - INTERVAL (seq % 604800) SECOND, 'client', UTC_TIMESTAMP(3)
    FROM seq_${first}_to_${last}"
done
"${MYSQL[@]}" "$DB" -e "ANALYZE TABLE user_events" >/dev/null
log "    generated in $(( $(date +%s) - started )) s"

WORKER__STATS__ALLOW_OPEN=true WORKER__HTTP__PORT="$PORT" WORKER__LOG__LEVEL=warn \
  WORKER__STATS__QUERY_TIMEOUT_MS=120000 "$WORKER" serve >"$OUT/funnel-scale-worker.log" 2>&1 &
WORKER_PID=$!
wait_for 60 "worker serve" curl -sf "http://127.0.0.1:$PORT/health" || die "worker serve did not start"

# The funnel the migration seeds: page_view -> product_view -> cart_add -> purchase, 24 h.
FUNNEL_URL="http://127.0.0.1:$PORT/api/v1/projects/default/funnels/1/analysis"
SCAN="SELECT COUNT(*) FROM user_events FORCE INDEX (ix_user_events_type_time_user)
      WHERE project = 'default' AND event_time >= UTC_TIMESTAMP() - INTERVAL 7 DAY
      AND event_type IN ('page_view', 'product_view', 'cart_add', 'purchase')"
scan_s=()
funnel_s=()
for ((i = 0; i < RUNS; i++)); do
  t0=$(date +%s%N)
  rows=$("${MYSQL[@]}" "$DB" -N -e "$SCAN")
  scan_s+=("$(awk -v n=$(( $(date +%s%N) - t0 )) 'BEGIN {printf "%.3f", n / 1e9}')")
  read -r code seconds < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$FUNNEL_URL")
  [[ "$code" == "200" ]] || die "the funnel analysis answered $code"
  funnel_s+=("$seconds")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
scan_median=$(median "${scan_s[@]}")
funnel_median=$(median "${funnel_s[@]}")
ratio=$(awk -v f="$funnel_median" -v s="$scan_median" 'BEGIN {printf "%.2f", f / s}')
printf '{"phase":"funnel_scale","events":%s,"step_rows":%s,"runs":%s,"index_scan_s":[%s],"funnel_s":[%s],"index_scan_median_s":%s,"funnel_median_s":%s,"funnel_over_scan":%s}\n' \
  "$EVENTS" "$rows" "$RUNS" "$(IFS=,; echo "${scan_s[*]}")" "$(IFS=,; echo "${funnel_s[*]}")" \
  "$scan_median" "$funnel_median" "$ratio" | tee "$OUT/funnel-scale.json"
log ""
log "| events | step rows | MySQL index scan alone (median) | funnel analysis (median) | funnel / scan |"
log "|---|---|---|---|---|"
log "| $EVENTS | $rows | ${scan_median} s | ${funnel_median} s | ${ratio} |"
