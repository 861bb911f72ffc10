#!/usr/bin/env bash
# Retention before and after time partitioning (issue 21 item 2): one pass of the retention job
# removing BENCH_RETENTION_ROWS raw events (default 1,000,000) past raw_event_days (90), beside
# BENCH_RETENTION_KEEP recent ones (default 100,000) that stay, on two databases in the same run:
#
#   before  the schema up to 20261129140000 (user_events unpartitioned, UNIQUE (project,
#           event_id)): the job deletes rows `chunk_rows` (5000) at a time, as it did
#   after   the same rows, then migration 20261129150000 (timed: event_ids filled, the table
#           partitioned by day): the job expires event_ids in chunks and drops whole days
#
# Both passes are the job's own code (crates/worker/examples/retention_once.rs calls
# retention::run_once), so the figure is what an operator gets. The rows are generated inside
# MariaDB (its SEQUENCE engine): old ones spread over the 10 days from 91 to 101 days ago,
# recent ones over the last day. Both databases are dropped at the end.
#
#   scripts/bench-retention.sh
#
# Prints a table and writes bench/results/retention.json. Hold /tmp/insightflow-bench.lock
# (flock) when running it beside other work.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

ROWS="${BENCH_RETENTION_ROWS:-1000000}"
KEEP="${BENCH_RETENTION_KEEP:-100000}"
PARTITIONED=20261129150000
RUN_ID="$(date +%s)$$"
BEFORE="ifret_before_${RUN_ID}"
AFTER="ifret_after_${RUN_ID}"
PREFIX="ifret:${RUN_ID}"
MYSQL=(mysql -uroot -h127.0.0.1 -P3306)
OUT="$REPO/bench/results"
LOGS="$(mktemp -d)"
mkdir -p "$OUT"

cleanup() {
  rm -rf "$LOGS"
  for db in "$BEFORE" "$AFTER"; do
    "${MYSQL[@]}" -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true
  done
  redis-cli --scan --pattern "${PREFIX}*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$REPO/scripts/deps.sh" >/dev/null
# Built even under BENCH_SKIP_BUILD: bench.sh builds the binaries, not the examples.
log "==> building the retention pass (release)"
cargo build --release -p insightflow-worker --example retention_once --quiet
PASS="$REPO/target/release/examples/retention_once"

now_ns() { date +%s%N; }
field() { grep -oE "\"$2\":[0-9.]+" <<<"$1" | cut -d: -f2; }
seconds_since() { awk -v n=$(( $(now_ns) - $1 )) 'BEGIN {printf "%.3f", n / 1e9}'; }

# A database at the schema before partitioning, holding the run's rows.
populate() {
  local db="$1"
  "${MYSQL[@]}" -e "CREATE DATABASE \`$db\`"
  for file in migrations/*.sql; do
    (( $(basename "$file" | cut -d_ -f1) < PARTITIONED )) || continue
    "${MYSQL[@]}" "$db" <"$file"
  done
  # Old rows: 91 to 101 days ago. Recent ones: the last day. Each with an origin, as stored.
  "${MYSQL[@]}" "$db" -e "
    INSERT INTO user_events (project, event_id, event_type, distinct_id, page_path, event_time,
                             timestamp_source, received_at, kafka_partition, kafka_offset)
    SELECT 'default', CONCAT('old', seq), IF(seq % 3 = 0, 'click', 'page_view'),
      CONCAT('u', (seq * 7919) % 20000), ELT(1 + seq % 5, '/', '/pricing', '/a', '/b', '/blog'),
      UTC_TIMESTAMP(3) - INTERVAL 91 DAY - INTERVAL (seq * 7 % 864000) SECOND, 'client',
      UTC_TIMESTAMP(3), seq % 4, seq
    FROM seq_1_to_${ROWS};
    INSERT INTO user_events (project, event_id, event_type, distinct_id, page_path, event_time,
                             timestamp_source, received_at, kafka_partition, kafka_offset)
    SELECT 'default', CONCAT('new', seq), 'page_view', CONCAT('u', (seq * 7919) % 20000), '/',
      UTC_TIMESTAMP(3) - INTERVAL (seq % 86400) SECOND, 'client', UTC_TIMESTAMP(3),
      seq % 4, ${ROWS} + seq
    FROM seq_1_to_${KEEP};
    ANALYZE TABLE user_events;" >/dev/null
}

# The pass's figures; its log line (JSON) goes to $2 (the job logs where its time went).
pass() {
  local db="$1"
  WORKER__MYSQL__URL="mysql://root@127.0.0.1:3306/$db" WORKER__REDIS__KEY_PREFIX="${PREFIX}:$db" \
    WORKER__RETENTION__RAW_EVENT_DAYS=90 WORKER__LOG__FORMAT=json \
    RUST_LOG=warn,insightflow_worker::retention=info "$PASS" >"$2"
  tail -n 1 "$2"
}

log "==> $ROWS old + $KEEP recent raw events, twice"
started=$(now_ns)
populate "$BEFORE"
populate "$AFTER"
log "    generated in $(seconds_since "$started") s"

migration="$(WORKER__MYSQL__URL="mysql://root@127.0.0.1:3306/$AFTER" WORKER__LOG__LEVEL=warn \
  "$PASS" apply-partitioning | tail -n 1)"
migration_s=$(field "$migration" seconds)
log "    migration $PARTITIONED over $((ROWS + KEEP)) rows: ${migration_s} s"

log "==> retention pass, unpartitioned (chunked DELETE)"
before="$(pass "$BEFORE" "$LOGS/before.log")"
log "    $before"
log "==> retention pass, partitioned (DROP PARTITION)"
after="$(pass "$AFTER" "$LOGS/after.log")"
log "    $after"
job="$(grep -F 'retention: dropped raw events' "$LOGS/after.log" | tail -n 1)"
expire_s=$(awk -v n="$(field "$job" expire_ms)" 'BEGIN {printf "%.3f", n / 1000}')
drop_s=$(awk -v n="$(field "$job" drop_ms)" 'BEGIN {printf "%.3f", n / 1000}')
late_s=$(awk -v n="$(field "$job" late_ms)" 'BEGIN {printf "%.3f", n / 1000}')
log "    of which: event_ids expiry ${expire_s} s, counting and dropping the days ${drop_s} s, late rows ${late_s} s"

count() { "${MYSQL[@]}" "$1" -N -e "SELECT COUNT(*) FROM user_events"; }
before_left=$(count "$BEFORE")
after_left=$(count "$AFTER")
ids_left=$("${MYSQL[@]}" "$AFTER" -N -e "SELECT COUNT(*) FROM event_ids")
for n in "$(field "$before" deleted)" "$(field "$after" deleted)"; do
  [[ "$n" == "$ROWS" ]] || die "a pass deleted $n rows, expected $ROWS"
done
for n in "$before_left" "$after_left" "$ids_left"; do
  [[ "$n" == "$KEEP" ]] || die "a pass left $n rows (or dedupe rows), expected $KEEP"
done

before_s=$(field "$before" seconds)
after_s=$(field "$after" seconds)
ratio=$(awk -v b="$before_s" -v a="$after_s" 'BEGIN {printf "%.1f", b / a}')
printf '{"phase":"retention","rows_removed":%s,"rows_kept":%s,"chunk_rows":5000,"chunked_delete_s":%s,"partitioned_pass_s":%s,"event_ids_expiry_s":%s,"partition_drop_s":%s,"late_rows_s":%s,"chunked_over_partitioned":%s,"migration_s":%s}\n' \
  "$ROWS" "$KEEP" "$before_s" "$after_s" "$expire_s" "$drop_s" "$late_s" "$ratio" "$migration_s" | tee "$OUT/retention.json"
log ""
log "| rows removed (kept) | chunked DELETE, unpartitioned | partitioned pass | of which event_ids expiry / count + DROP PARTITION | before / after | migration of the table |"
log "|---|---|---|---|---|---|"
log "| $ROWS ($KEEP) | ${before_s} s | ${after_s} s | ${expire_s} s / ${drop_s} s | ${ratio}x | ${migration_s} s |"
