#!/usr/bin/env bash
# The browser SDK's tests, everything included, for `make test` on a fresh machine:
#   1. scripts/browser-deps.sh: Debian's chromium if missing, npm ci in sdk/js;
#   2. the SDK: type check, build, bundle size budget, unit tests (vitest + happy-dom);
#   3. the Rust binaries (cargo build, debug) unless they are up to date;
#   4. a gateway, a worker and the demo shop on free ports, with their own Kafka topic,
#      consumer group, MySQL database and Redis key prefix, against the private test broker
#      (.data/kafka-test/port, from scripts/test-broker.sh) when it runs, else 127.0.0.1:9092;
#   5. the end-to-end suite (sdk/js/e2e, node:test + playwright-core) in headless Chromium;
# then stops what it started and deletes the database and Redis keys (E2E_KEEP=1 keeps them).
# Artifacts (logs, the dashboard screenshot) go to target/browser-artifacts/.
#
#   scripts/browser-test.sh            all of it
#   scripts/browser-test.sh --unit     steps 1-2 only (no services needed)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

started_at=$(date +%s)
[[ -t 1 ]] || export NO_COLOR=1 # plain logs in CI
SDK="$REPO/sdk/js"
ARTIFACTS="$REPO/target/browser-artifacts"
mkdir -p "$ARTIFACTS"

# 1. tools
"$REPO/scripts/browser-deps.sh"

# 2. the SDK
log "==> sdk/js: type check, build, size budget, unit tests"
(
  cd "$SDK"
  npm run --silent typecheck
  npm run --silent build
  npm run --silent size
  npx vitest run --reporter=default
)
if [[ "${1:-}" == "--unit" ]]; then
  log "==> browser tests: unit only, done in $(($(date +%s) - started_at)) s"
  exit 0
fi

# 3. the services' binaries, built only when a source is newer: right after `cargo test` they
# are current, and a plain `cargo build` would rebuild them without the dev-dependencies'
# features (insightflow-runtime/test-support), which the next `cargo test` undoes again.
INGEST_BIN="$REPO/target/debug/ingest"
WORKER_BIN="$REPO/target/debug/worker"
stale_bins() {
  local bin
  for bin in "$INGEST_BIN" "$WORKER_BIN"; do
    [[ -x "$bin" ]] || return 0
    [[ -z "$(find "$REPO/crates" "$REPO/migrations" "$REPO/web" "$REPO/Cargo.toml" "$REPO/Cargo.lock" \
      -newer "$bin" -type f -not -path '*/node_modules/*' -print -quit 2>/dev/null)" ]] || return 0
  done
  return 1
}
if [[ "${E2E_CARGO_BUILD:-auto}" == always ]] || stale_bins; then
  log "==> cargo build -p insightflow-ingest -p insightflow-worker (debug)"
  cargo build --quiet -p insightflow-ingest -p insightflow-worker
else
  log "==> target/debug/{ingest,worker}: newer than every source, not rebuilt (E2E_CARGO_BUILD=always to force)"
fi

# 4. what the services need, or how to get it
need() { # need NAME HOST PORT HOW
  port_open "$2" "$3" || die "$1 is not reachable at $2:$3: $4"
}
need MariaDB 127.0.0.1 3306 "start it with \`make deps\` (scripts/deps.sh)"
need Redis 127.0.0.1 6379 "start it with \`make deps\` (scripts/deps.sh)"
test_port_file="$DATA/kafka-test/port"
if [[ -s "$test_port_file" ]] && port_open 127.0.0.1 "$(cat "$test_port_file")"; then
  BROKERS="127.0.0.1:$(cat "$test_port_file")"
  log "kafka: the private test broker at $BROKERS"
else
  need Kafka 127.0.0.1 9092 "start the development broker with \`make deps\`, or a private one with scripts/test-broker.sh"
  BROKERS="127.0.0.1:9092"
  log "kafka: the development broker at $BROKERS (a topic of this run's own)"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
secret() { python3 -c "import secrets; print('$1' + secrets.token_hex(12))"; }

RUN="e2e_$(date +%Y%m%d%H%M%S)_$$"
RUN_DIR="$ARTIFACTS/$RUN"
mkdir -p "$RUN_DIR"
INGEST_PORT="$(free_port)"
WORKER_PORT="$(free_port)"
SHOP_PORT="$(free_port)"
DB="insightflow_$RUN"
PREFIX="insightflow-$RUN"
STATS_KEY="$(secret sk_e2e_)"
WRITE_KEYS="$(secret wk_e2e_)=journey,$(secret wk_e2e_)=restart,$(secret wk_e2e_)=default"

cleanup() {
  local status=$?
  set +e
  for svc in shop ingest worker; do
    [[ -f "$RUN_DIR/$svc.pid" ]] && stop_pidfile "$svc" "$RUN_DIR/$svc.pid" 15 >/dev/null
  done
  if [[ "${E2E_KEEP:-0}" == 1 ]]; then
    log "E2E_KEEP=1: kept database $DB and Redis keys $PREFIX:*"
  else
    if have mysql; then mysql -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS \`$DB\`" 2>/dev/null; fi
    if have redis-cli; then
      redis-cli --scan --pattern "$PREFIX:*" 2>/dev/null | xargs -r -n 500 redis-cli del >/dev/null 2>&1
    fi
  fi
  if ((status != 0)); then
    show_log "$RUN_DIR/ingest.log" 40
    show_log "$RUN_DIR/worker.log" 40
    warn "browser tests failed (logs and screenshots in ${RUN_DIR#"$REPO"/})"
  fi
  log "==> browser tests: $( ((status == 0)) && echo passed || echo FAILED ) in $(($(date +%s) - started_at)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The gateway is started by a launcher the e2e suite calls again after killing it.
{
  printf '#!/usr/bin/env bash\n# Starts this run'"'"'s gateway in the background (written by scripts/browser-test.sh).\nset -euo pipefail\n'
  printf 'export INGEST__HTTP__PORT=%q INGEST__KAFKA__BROKERS=%q INGEST__KAFKA__TOPIC__NAME=%q\n' "$INGEST_PORT" "$BROKERS" "$RUN.events"
  printf 'export INGEST__AUTH__WRITE_KEYS=%q INGEST__LOG__FORMAT=json\n' "$WRITE_KEYS"
  printf 'printf "\\n=== ingest: starting at %%s\\n" "$(date -Is)" >>%q\n' "$RUN_DIR/ingest.log"
  printf 'setsid nohup %q >>%q 2>&1 </dev/null &\n' "$INGEST_BIN" "$RUN_DIR/ingest.log"
  printf 'echo $! >%q\n' "$RUN_DIR/ingest.pid"
} >"$RUN_DIR/start-ingest.sh"
chmod +x "$RUN_DIR/start-ingest.sh"

export WORKER__HTTP__PORT="$WORKER_PORT" WORKER__KAFKA__BROKERS="$BROKERS"
export WORKER__KAFKA__TOPIC__NAME="$RUN.events" WORKER__KAFKA__DEAD_LETTER_TOPIC="$RUN.events.dlq"
export WORKER__KAFKA__GROUP_ID="$RUN" WORKER__MYSQL__URL="mysql://root@127.0.0.1:3306/$DB"
export WORKER__REDIS__KEY_PREFIX="$PREFIX" WORKER__STATS__API_KEYS="$STATS_KEY=*:admin"
export WORKER__LOG__FORMAT=json

log "==> services: ingest :$INGEST_PORT, worker :$WORKER_PORT, shop :$SHOP_PORT; topic $RUN.events, database $DB"
"$WORKER_BIN" migrate >>"$RUN_DIR/worker.log" 2>&1 || { show_log "$RUN_DIR/worker.log"; die "worker migrate failed"; }
"$RUN_DIR/start-ingest.sh"
start_bg worker "$RUN_DIR/worker.pid" "$RUN_DIR/worker.log" "$WORKER_BIN" all
"$REPO/demo/shop/prepare.sh" >/dev/null
start_bg shop "$RUN_DIR/shop.pid" "$RUN_DIR/shop.log" python3 -m http.server --bind 127.0.0.1 --directory "$REPO/demo/shop" "$SHOP_PORT"

ready() { curl -fsS -o /dev/null "$1"; }
wait_for 90 "ingest" ready "http://127.0.0.1:$INGEST_PORT/ready" || die "the gateway did not get ready (log: ${RUN_DIR#"$REPO"/}/ingest.log)"
wait_for 90 "worker" ready "http://127.0.0.1:$WORKER_PORT/ready" || die "the worker did not get ready (log: ${RUN_DIR#"$REPO"/}/worker.log)"
wait_for 20 "shop" ready "http://127.0.0.1:$SHOP_PORT/" || die "the demo shop server did not start (log: ${RUN_DIR#"$REPO"/}/shop.log)"

# 5. end to end
log "==> e2e: headless Chromium ($(/usr/bin/chromium --version 2>/dev/null)) against them"
export E2E_SHOP_URL="http://127.0.0.1:$SHOP_PORT" E2E_INGEST_URL="http://127.0.0.1:$INGEST_PORT"
export E2E_WORKER_URL="http://127.0.0.1:$WORKER_PORT" E2E_STATS_KEY="$STATS_KEY" E2E_WRITE_KEYS="$WRITE_KEYS"
export E2E_INGEST_PIDFILE="$RUN_DIR/ingest.pid" E2E_INGEST_START="$RUN_DIR/start-ingest.sh"
export E2E_ARTIFACTS="$ARTIFACTS"
(cd "$SDK" && node --test --test-concurrency=1 --test-reporter=spec e2e/)
