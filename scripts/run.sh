#!/usr/bin/env bash
# `make run`: start the dependencies, build and migrate, then run ingest and
# worker in the background. Stop everything with `make down`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

INGEST_PORT="${INGEST__HTTP__PORT:-8080}"
WORKER_PORT="${WORKER__HTTP__PORT:-8081}"
RUN_DIR="$DATA/run"
mkdir -p "$RUN_DIR"

# 1. dependencies
"$REPO/scripts/deps.sh"

# 2. build
log "build: cargo build --release -p insightflow-ingest -p insightflow-worker"
cargo build --release -p insightflow-ingest -p insightflow-worker

# 3. migrations
log "migrate: target/release/worker migrate"
target/release/worker migrate

# 4. the stats API's key: made once, kept in .data (never committed), readable by this user only.
# A WORKER__STATS__API_KEYS already in the environment wins.
KEY_FILE="$DATA/stats-api-key"
if [[ ! -s "$KEY_FILE" ]]; then
  (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$KEY_FILE")
  log "stats API: made a key for this machine in $KEY_FILE"
fi
STATS_KEY="$(cat "$KEY_FILE")"
# The local key reads every project and may write funnels (admin scope): it is the owner's.
export WORKER__STATS__API_KEYS="${WORKER__STATS__API_KEYS:-$STATS_KEY=*:admin}"
# The gateway's write key for project `default` (write keys ship inside web pages: they name a
# project, they are not secrets; the gateway still refuses events without one).
WRITE_KEY_FILE="$DATA/write-key"
if [[ ! -s "$WRITE_KEY_FILE" ]]; then
  (umask 077 && python3 -c 'import secrets; print("wk_" + secrets.token_hex(12))' >"$WRITE_KEY_FILE")
  log "ingest: made a write key for project default in $WRITE_KEY_FILE"
fi
WRITE_KEY="$(cat "$WRITE_KEY_FILE")"
export INGEST__AUTH__WRITE_KEYS="${INGEST__AUTH__WRITE_KEYS:-$WRITE_KEY=default}"

# 5. start the services (restart them if a previous `make run` left them up)
for svc in worker ingest; do
  if pid_alive "$RUN_DIR/$svc.pid"; then
    log "$svc: already running (pid $(cat "$RUN_DIR/$svc.pid")), restarting it with the new build"
    stop_pidfile "$svc" "$RUN_DIR/$svc.pid" 20
  fi
  start_bg "$svc" "$RUN_DIR/$svc.pid" "$RUN_DIR/$svc.log" "$REPO/target/release/$svc"
  log "$svc: started (pid $(cat "$RUN_DIR/$svc.pid"), log $RUN_DIR/$svc.log)"
done

# 6. wait for readiness
ready() { curl -fsS -o /dev/null "http://127.0.0.1:$1/ready"; }
for pair in "ingest:$INGEST_PORT" "worker:$WORKER_PORT"; do
  svc="${pair%%:*}" port="${pair##*:}"
  if ! wait_for 60 "$svc (http://127.0.0.1:$port/ready)" ready "$port"; then
    show_log "$RUN_DIR/ingest.log" 30
    show_log "$RUN_DIR/worker.log" 30
    die "$svc is not ready; see the logs above (stop with: make down)"
  fi
  log "$svc: ready on http://127.0.0.1:$port"
done

# 6b. the demo shop: static files, with the SDK bundle and a config.js made by prepare.sh
SHOP_PORT="${SHOP_PORT:-8000}"
if have npm; then
  "$REPO/demo/shop/prepare.sh" "http://127.0.0.1:$INGEST_PORT" "$WRITE_KEY"
  if pid_alive "$RUN_DIR/shop.pid"; then stop_pidfile shop "$RUN_DIR/shop.pid" 5; fi
  start_bg shop "$RUN_DIR/shop.pid" "$RUN_DIR/shop.log" \
    python3 -m http.server --bind 127.0.0.1 --directory "$REPO/demo/shop" "$SHOP_PORT"
  wait_for 10 "demo shop" curl -fsS -o /dev/null "http://127.0.0.1:$SHOP_PORT/" \
    || warn "the demo shop did not start; see $RUN_DIR/shop.log"
else
  warn "npm is missing: the demo shop needs Node 20+ to build the SDK; not started"
fi

# 7. how to use it
cat <<MSG

InsightFlow is running:
  ingest          http://127.0.0.1:$INGEST_PORT   (metrics: http://127.0.0.1:$INGEST_PORT/metrics)
  worker / stats  http://127.0.0.1:$WORKER_PORT   (metrics: http://127.0.0.1:$WORKER_PORT/metrics)
  demo shop       http://127.0.0.1:$SHOP_PORT/   (sends to the gateway with the write key $WRITE_KEY)
  dashboard       http://127.0.0.1:$WORKER_PORT/ui/   (paste the stats API key below)
  logs            $RUN_DIR/{ingest,worker,shop}.log

Try it:
  curl -sS -X POST http://127.0.0.1:$INGEST_PORT/api/v1/events -H 'Content-Type: application/json' -H 'X-Write-Key: $WRITE_KEY' -d '{"events":[{"event_type":"page_view","user_id":"u1","page":{"url":"https://shop.example/","path":"/"}},{"event_type":"click","user_id":"u1"}]}'
  curl -sS -H 'Authorization: Bearer $STATS_KEY' 'http://127.0.0.1:$WORKER_PORT/api/v1/stats/events?project=default'

The gateway takes events with the write key $WRITE_KEY (project default, kept in $WRITE_KEY_FILE).
The stats API answers only with a key: $STATS_KEY (kept in $KEY_FILE, every project, admin).

make down to stop.
MSG
