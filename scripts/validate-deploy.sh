#!/usr/bin/env bash
# Check the operators' files: the Kubernetes manifests, the alert rules and the Grafana
# dashboard, and that what they refer to exists in the running services. Offline once its
# tools are installed (first run: a few minutes; then they are reused from
# $DATA/deploy-tools). Exits non-zero, naming each problem, on any failure.
#
# 1. Renders deploy/kubernetes/base and overlays/production with kustomize (built from the
#    Go module proxy), with a throwaway secrets.env, and validates every object:
#    - built-in kinds against the Kubernetes OpenAPI schemas, strictly (unknown fields are
#      errors), for the oldest and the newest Kubernetes version we claim (kubernetes-validate);
#    - KEDA's ScaledObject and the operator's ServiceMonitor (and alerts.yml wrapped as a
#      PrometheusRule) against their CRD schemas, types and unknown fields
#      (scripts/deploy/validate-crds.mjs, models from the npm registry);
#    - our rules (scripts/deploy/check_manifests.py): security contexts, resources, probes,
#      grace periods, disruption budgets, autoscalers, partitions, secrets, MySQL users,
#      the schema version.
# 2. promtool (Debian's prometheus package): the compose Prometheus config, the rules, and
#    their unit tests; every alert has a runbook section in docs/OPERATIONS.md and tests that
#    fire and stay quiet; the dashboard's structure.
# 3. End to end, against the local MariaDB, Redis and Kafka (scripts/deps.sh; the private test
#    broker when .data/kafka-test/port exists), each with this run's own database, key
#    prefix, topics and group: starts target/debug/ingest, `worker consume` and `worker
#    serve`, sends events (some invalid, some duplicated, some over a rate limit), stats
#    requests and two poison messages, then checks that every metric name the rules and the
#    dashboard use is exported; then runs a real Prometheus over both services with the
#    alert rules and asks it for the ingest rate, the rules' health and the group's lag.
#
# Usage: scripts/validate-deploy.sh [--static]   (--static: steps 1 and 2 only)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATIC_ONLY=0
[[ "${1:-}" == "--static" ]] && STATIC_ONLY=1

TOOLS="$DATA/deploy-tools"
KUSTOMIZE_VERSION=v5.8.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CONFLUENT_KAFKA_VERSION=2.16.1
PYYAML_VERSION=6.0.4
NPM_PACKAGES=(@kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0 typescript@5.9.3)
# The oldest Kubernetes these manifests claim (PodDisruptionBudget's unhealthyPodEvictionPolicy
# is GA from 1.31), and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS=(1.31.0 1.37.0)

KUSTOMIZE="$TOOLS/bin/kustomize"
PY="$TOOLS/venv/bin/python"
PROMETHEUS="$TOOLS/prometheus/usr/bin/prometheus"
PROMTOOL="$TOOLS/prometheus/usr/bin/promtool"
HELPERS="$REPO/scripts/deploy"
# Where the local services are (scripts/deps.sh starts them there; REDIS_PORT as in deps.sh).
REDIS_PORT="${REDIS_PORT:-6379}"
STARTED=$SECONDS

step() { log "==> validate-deploy: $* ($((SECONDS - STARTED)) s)"; }

# --- tools (installed once, then reused) ----------------------------------------------------
install_tools() {
  mkdir -p "$TOOLS/bin"
  if [[ ! -x "$KUSTOMIZE" ]] || [[ "$(cat "$TOOLS/kustomize.version" 2>/dev/null)" != "$KUSTOMIZE_VERSION" ]]; then
    have go || die "validate-deploy: Go is needed once to build kustomize (go install)"
    log "validate-deploy: building kustomize $KUSTOMIZE_VERSION (go install, once)"
    GOBIN="$TOOLS/bin" GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    echo "$KUSTOMIZE_VERSION" >"$TOOLS/kustomize.version"
  fi
  local pip_want="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION confluent-kafka==$CONFLUENT_KAFKA_VERSION pyyaml==$PYYAML_VERSION"
  if [[ ! -x "$PY" ]] || [[ "$(cat "$TOOLS/venv.version" 2>/dev/null)" != "$pip_want" ]]; then
    log "validate-deploy: installing $pip_want into $TOOLS/venv (once)"
    [[ -x "$PY" ]] || python3 -m venv "$TOOLS/venv"
    # shellcheck disable=SC2086 # the list is word-split on purpose
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check $pip_want
    echo "$pip_want" >"$TOOLS/venv.version"
  fi
  if [[ "$(cat "$TOOLS/npm.version" 2>/dev/null)" != "${NPM_PACKAGES[*]}" ]]; then
    have npm || die "validate-deploy: npm is needed once for the CRD models (apt-get install nodejs npm)"
    log "validate-deploy: installing ${NPM_PACKAGES[*]} into $TOOLS/npm (once)"
    mkdir -p "$TOOLS/npm"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" "${NPM_PACKAGES[@]}"
    echo "${NPM_PACKAGES[*]}" >"$TOOLS/npm.version"
  fi
  if [[ ! -x "$PROMTOOL" || ! -x "$PROMETHEUS" ]]; then
    # The binaries of Debian's package, unpacked: installing it would start a Prometheus
    # service on :9090 on this machine.
    log "validate-deploy: unpacking Debian's prometheus package into $TOOLS/prometheus (once)"
    mkdir -p "$TOOLS/debs"
    rm -f "$TOOLS"/debs/prometheus_*.deb
    if ! (cd "$TOOLS/debs" && apt-get download prometheus >/dev/null 2>&1); then
      apt-get update -qq
      (cd "$TOOLS/debs" && apt-get download prometheus >/dev/null)
    fi
    dpkg-deb -x "$TOOLS"/debs/prometheus_*.deb "$TOOLS/prometheus"
  fi
}

# --- 1. Kubernetes manifests ----------------------------------------------------------------
validate_manifests() {
  local copy="$WORK/kubernetes" overlay
  cp -r "$REPO/deploy/kubernetes" "$copy"
  overlay="$copy/overlays/production"
  # The real secrets.env is never committed; render with throwaway values that the checks
  # can recognise anywhere they leak to.
  rm -f "$overlay/secrets.env"
  sed -E 's/^([A-Z_]+)=$/\1=dummy-secret-0123456789abcdef/' "$overlay/secrets.env.example" >"$overlay/secrets.env"
  if git -C "$REPO" ls-files --error-unmatch deploy/kubernetes/overlays/production/secrets.env >/dev/null 2>&1; then
    die "validate-deploy: deploy/kubernetes/overlays/production/secrets.env is committed; remove it from git and rotate its values"
  fi
  git -C "$REPO" check-ignore -q deploy/kubernetes/overlays/production/secrets.env ||
    die "validate-deploy: secrets.env is not git-ignored (deploy/kubernetes/overlays/production/.gitignore)"

  "$KUSTOMIZE" build "$copy/base" >"$WORK/base.yaml" || die "validate-deploy: kustomize cannot render the base"
  "$KUSTOMIZE" build "$overlay" >"$WORK/production.yaml" || die "validate-deploy: kustomize cannot render the production overlay"
  log "validate-deploy: rendered base ($(grep -c '^kind:' "$WORK/base.yaml") objects) and production ($(grep -c '^kind:' "$WORK/production.yaml") objects)"

  # Built-in kinds to the Kubernetes schemas; custom resources (and alerts.yml as the
  # PrometheusRule operators would apply) to JSON for the CRD check.
  "$PY" - "$WORK" "$REPO/deploy/prometheus/alerts.yml" <<'PY'
import json, sys
import yaml
work, alerts = sys.argv[1], sys.argv[2]
custom = []
for name in ("base", "production"):
    docs = [d for d in yaml.safe_load_all(open(f"{work}/{name}.yaml")) if d]
    builtin = [d for d in docs if "." not in d["apiVersion"].split("/")[0] or d["apiVersion"].split("/")[0].endswith(".k8s.io")]
    custom += [d for d in docs if d not in builtin]
    with open(f"{work}/{name}-builtin.yaml", "w") as f:
        yaml.safe_dump_all(builtin, f)
custom.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
               "metadata": {"name": "insightflow", "labels": {"app.kubernetes.io/name": "insightflow"}},
               "spec": yaml.safe_load(open(alerts))})
json.dump(custom, open(f"{work}/custom.json", "w"))
PY
  local version name
  for name in base production; do
    for version in "${KUBERNETES_VERSIONS[@]}"; do
      "$TOOLS/venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$version" "$WORK/$name-builtin.yaml" ||
        die "validate-deploy: the $name manifests do not match the Kubernetes $version schemas (above)"
    done
  done
  log "validate-deploy: every built-in object matches the Kubernetes ${KUBERNETES_VERSIONS[*]} schemas (strict)"
  node "$HELPERS/validate-crds.mjs" "$WORK/custom.json" "$TOOLS/npm" ||
    die "validate-deploy: a custom resource does not match its CRD (above)"
  "$PY" "$HELPERS/check_manifests.py" "$WORK/base.yaml" "$REPO" ||
    die "validate-deploy: the base manifests break our rules (above)"
  "$PY" "$HELPERS/check_manifests.py" "$WORK/production.yaml" "$REPO" --overlay ||
    die "validate-deploy: the production manifests break our rules (above)"
}

# --- 2. Prometheus rules and the dashboard ----------------------------------------------------
validate_monitoring() {
  "$PROMTOOL" check config "$REPO/deploy/prometheus/prometheus.yml" >"$WORK/promtool.log" 2>&1 ||
    { cat "$WORK/promtool.log" >&2; die "validate-deploy: promtool check config failed"; }
  "$PROMTOOL" check rules "$REPO/deploy/prometheus/alerts.yml" ||
    die "validate-deploy: promtool check rules failed"
  "$PROMTOOL" test rules "$REPO/deploy/prometheus/tests/alerts_test.yml" ||
    die "validate-deploy: promtool test rules failed"
  "$PY" "$HELPERS/check_monitoring.py" rules "$REPO/deploy/prometheus/alerts.yml" \
    "$REPO/deploy/prometheus/tests/alerts_test.yml" "$REPO/docs/OPERATIONS.md" ||
    die "validate-deploy: the alert rules break our rules (above)"
  "$PY" "$HELPERS/check_monitoring.py" dashboard "$REPO/deploy/grafana/insightflow.json" \
    "$REPO/deploy/grafana/provisioning/datasources/prometheus.yml" ||
    die "validate-deploy: the dashboard breaks our rules (above)"
}

# --- 3. End to end ----------------------------------------------------------------------------
PIDS=()
RUN_ID=""
KAFKA=""
cleanup() {
  local status=$? pid i
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 40; i++)); do running "$pid" || break; sleep 0.5; done
    if running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  if [[ -n "$RUN_ID" ]]; then
    mariadb -h127.0.0.1 -P3306 -uroot -e "DROP DATABASE IF EXISTS ifdeploy_$RUN_ID" >/dev/null 2>&1 || true
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --scan --pattern "ifdeploy:$RUN_ID:*" 2>/dev/null |
      xargs -r -n 500 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" del >/dev/null 2>&1 || true
    if [[ -n "$KAFKA" ]]; then
      "$PY" "$HELPERS/kafka_tool.py" delete-topics "$KAFKA" \
        "ifdeploy.$RUN_ID.events" "ifdeploy.$RUN_ID.events.dlq" >/dev/null 2>&1 || true
    fi
  fi
  if [[ $status -eq 0 ]]; then
    rm -rf "$WORK"
  else
    warn "validate-deploy: failed after $((SECONDS - STARTED)) s; logs and files kept in $WORK"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

start() {
  local name="$1"; shift
  # New session: its own process group, out of reach of this shell's signals.
  setsid "$@" >"$WORK/logs/$name.log" 2>&1 </dev/null &
  PIDS+=("$!")
  echo "$!" >"$WORK/logs/$name.pid"
}

wait_ready() {
  local name="$1" url="$2" pid
  pid="$(cat "$WORK/logs/$name.pid")"
  for ((i = 0; i < 90; i++)); do
    http_ok "$url" && return 0
    running "$pid" || { show_log "$WORK/logs/$name.log" 40; die "validate-deploy: $name exited during start-up"; }
    sleep 1
  done
  show_log "$WORK/logs/$name.log" 40
  die "validate-deploy: $name is not ready after 90 s ($url)"
}

post_events() {
  local forwarded_for="$1" body="$2"
  curl -sS -o /dev/null -w '%{http_code}\n' --max-time 10 -X POST "http://127.0.0.1:$INGEST_PORT/api/v1/events" \
    -H 'Content-Type: application/json' -H "X-Write-Key: $WRITE_KEY" -H "X-Forwarded-For: $forwarded_for" \
    -d "$body"
}

end_to_end() {
  local mysql_url brokers_file="$DATA/kafka-test/port"
  # The dependencies, each with its address and how to start it.
  port_open 127.0.0.1 3306 || die "validate-deploy: MariaDB is not reachable at 127.0.0.1:3306; start it with scripts/deps.sh (make deps)"
  port_open 127.0.0.1 "$REDIS_PORT" || die "validate-deploy: Redis is not reachable at 127.0.0.1:$REDIS_PORT; start it with scripts/deps.sh (make deps)"
  if [[ -f "$brokers_file" ]] && port_open 127.0.0.1 "$(cat "$brokers_file")"; then
    KAFKA="127.0.0.1:$(cat "$brokers_file")"
  else
    KAFKA=127.0.0.1:9092
    port_open 127.0.0.1 9092 || die "validate-deploy: Kafka is not reachable at 127.0.0.1:9092; start it with scripts/deps.sh (make deps)"
  fi

  if [[ -n "${INSIGHTFLOW_DEPLOY_BIN_DIR:-}" ]]; then
    BIN="$INSIGHTFLOW_DEPLOY_BIN_DIR"
  else
    BIN="$REPO/target/debug"
    # Built when missing or older than a source file (`make test` has just built them: no
    # second build, whose feature set could differ from the workspace's and recompile).
    if [[ ! -x "$BIN/ingest" || ! -x "$BIN/worker" ]] ||
      [[ -n "$(find "$REPO/crates" "$REPO/migrations" "$REPO/Cargo.lock" -newer "$BIN/worker" -type f -print -quit)" ]] ||
      [[ -n "$(find "$REPO/crates" "$REPO/Cargo.lock" -newer "$BIN/ingest" -type f -print -quit)" ]]; then
      log "validate-deploy: building the services (cargo build -p insightflow-ingest -p insightflow-worker)"
      (cd "$REPO" && cargo build --quiet -p insightflow-ingest -p insightflow-worker) ||
        die "validate-deploy: cargo build -p insightflow-ingest -p insightflow-worker failed"
    fi
  fi
  [[ -x "$BIN/ingest" && -x "$BIN/worker" ]] || die "validate-deploy: no ingest and worker binaries in $BIN"

  RUN_ID="$(date +%s)_$$"
  WRITE_KEY=wk_validate_0001
  STATS_KEY="validate-deploy-$RUN_ID"
  local topic="ifdeploy.$RUN_ID.events"
  mysql_url="mysql://root@127.0.0.1:3306/ifdeploy_$RUN_ID"
  mkdir -p "$WORK/logs"
  INGEST_PORT="$(free_port)"
  local ingest_metrics consume_port consume_metrics serve_port serve_metrics prometheus_port
  ingest_metrics="$(free_port)"; consume_port="$(free_port)"; consume_metrics="$(free_port)"
  serve_port="$(free_port)"; serve_metrics="$(free_port)"; prometheus_port="$(free_port)"
  log "validate-deploy: run $RUN_ID against Kafka $KAFKA, MariaDB 127.0.0.1:3306 (ifdeploy_$RUN_ID), Redis 127.0.0.1:$REDIS_PORT (ifdeploy:$RUN_ID:)"

  local -a worker_env=(
    WORKER__HTTP__HOST=127.0.0.1
    WORKER__KAFKA__BROKERS="$KAFKA"
    WORKER__KAFKA__GROUP_ID="ifdeploy-$RUN_ID"
    WORKER__KAFKA__TOPIC__NAME="$topic"
    WORKER__KAFKA__TOPIC__PARTITIONS=2
    WORKER__KAFKA__DEAD_LETTER_TOPIC="$topic.dlq"
    WORKER__KAFKA__SESSION_TIMEOUT_MS=6000
    WORKER__KAFKA__LAG_PROBE_INTERVAL_MS=1000
    WORKER__KAFKA__STATISTICS_INTERVAL_MS=1000
    WORKER__MYSQL__URL="$mysql_url"
    WORKER__REDIS__URL="redis://127.0.0.1:$REDIS_PORT/0"
    WORKER__REDIS__KEY_PREFIX="ifdeploy:$RUN_ID"
    WORKER__STATS__API_KEYS="$STATS_KEY=*:admin"
  )
  env "${worker_env[@]}" "$BIN/worker" migrate >"$WORK/logs/migrate.log" 2>&1 ||
    { show_log "$WORK/logs/migrate.log"; die "validate-deploy: worker migrate failed on ifdeploy_$RUN_ID"; }

  # A per-IP bucket of 3 requests, refilled every 5 s, and X-Forwarded-For believed from
  # 127.0.0.1: each client address below is its own bucket, so only the burst gets 429.
  start ingest env INGEST__HTTP__HOST=127.0.0.1 INGEST__HTTP__PORT="$INGEST_PORT" \
    INGEST__HTTP__METRICS_LISTEN="127.0.0.1:$ingest_metrics" INGEST__HTTP__TRUSTED_PROXIES=127.0.0.1/32 \
    INGEST__KAFKA__BROKERS="$KAFKA" INGEST__KAFKA__TOPIC__NAME="$topic" INGEST__KAFKA__TOPIC__PARTITIONS=2 \
    INGEST__AUTH__WRITE_KEYS="$WRITE_KEY=default" \
    INGEST__RATE_LIMIT__PER_IP_PER_SECOND=0.2 INGEST__RATE_LIMIT__PER_IP_BURST=3 \
    "$BIN/ingest"
  wait_ready ingest "http://127.0.0.1:$INGEST_PORT/ready"
  start worker-consume env "${worker_env[@]}" WORKER__HTTP__PORT="$consume_port" \
    WORKER__HTTP__METRICS_LISTEN="127.0.0.1:$consume_metrics" "$BIN/worker" consume
  start worker-serve env "${worker_env[@]}" WORKER__HTTP__PORT="$serve_port" \
    WORKER__HTTP__METRICS_LISTEN="127.0.0.1:$serve_metrics" "$BIN/worker" serve

  # Prometheus from the start, so that its rates have samples before and after the traffic.
  cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $REPO/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: insightflow-ingest
    static_configs:
      - targets: ["127.0.0.1:$ingest_metrics"]
        labels: {role: ingest}
  - job_name: insightflow-worker
    static_configs:
      - targets: ["127.0.0.1:$consume_metrics"]
        labels: {role: worker-consume}
      - targets: ["127.0.0.1:$serve_metrics"]
        labels: {role: worker-serve}
EOF
  start prometheus "$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port"
  wait_ready worker-consume "http://127.0.0.1:$consume_port/ready"
  wait_ready worker-serve "http://127.0.0.1:$serve_port/ready"
  wait_ready prometheus "http://127.0.0.1:$prometheus_port/-/ready"
  step "services and Prometheus are up"

  # Traffic: batches with an invalid event (rejected) and an id sent in every batch
  # (duplicates), each from its own client address; a burst from one address (429);
  # stats requests, one without a key; two poison messages (dead letters, offset gaps).
  local i codes=""
  for ((i = 1; i <= 10; i++)); do
    codes+="$(post_events "198.51.100.$i" "{\"events\":[
      {\"event_type\":\"page_view\",\"user_id\":\"u$i\",\"page\":{\"url\":\"https://shop.example/p/$i\"}},
      {\"event_type\":\"click\",\"user_id\":\"u$i\",\"element\":{\"selector\":\"#buy\",\"x\":1,\"y\":2}},
      {\"event_id\":\"validate-deploy-$RUN_ID\",\"event_type\":\"purchase\",\"user_id\":\"u1\"},
      {\"event_type\":\"\",\"user_id\":\"u$i\"}]}") "
  done
  for ((i = 1; i <= 6; i++)); do
    codes+="$(post_events 203.0.113.9 '{"events":[{"event_type":"page_view","user_id":"burst"}]}') "
  done
  log "validate-deploy: gateway answers: $codes"
  [[ "$codes" == *200* ]] || die "validate-deploy: the gateway accepted no event (answers: $codes); see $WORK/logs/ingest.log"
  [[ "$codes" == *429* ]] || die "validate-deploy: the burst got no 429 (answers: $codes)"
  local path
  for path in "/api/v1/stats/events?project=default" "/api/v1/online?project=default" \
    "/api/v1/summary?project=default" "/api/v1/dashboard?project=default" "/api/v1/funnels?project=default"; do
    curl -sS -o /dev/null --max-time 10 -H "Authorization: Bearer $STATS_KEY" "http://127.0.0.1:$serve_port$path"
  done
  curl -sS -o /dev/null --max-time 10 "http://127.0.0.1:$serve_port/api/v1/stats/events?project=default"
  "$PY" "$HELPERS/kafka_tool.py" poison "$KAFKA" "$topic" ||
    die "validate-deploy: cannot write the poison messages to $topic"
  step "traffic sent"

  # Every metric name the rules and the dashboard use is exported. Counters with labels
  # appear once incremented: retry while the worker catches up.
  local checked=1
  for ((i = 0; i < 60; i++)); do
    curl -fsS --max-time 5 "http://127.0.0.1:$ingest_metrics/metrics" >"$WORK/ingest.metrics" &&
      curl -fsS --max-time 5 "http://127.0.0.1:$consume_metrics/metrics" >"$WORK/worker-consume.metrics" &&
      curl -fsS --max-time 5 "http://127.0.0.1:$serve_metrics/metrics" >"$WORK/worker-serve.metrics" &&
      "$PY" "$HELPERS/check_monitoring.py" metrics "$REPO/deploy/prometheus/alerts.yml" \
        "$REPO/deploy/grafana/insightflow.json" "$WORK"/*.metrics >"$WORK/metrics-check.log" 2>&1 &&
      { checked=0; break; }
    sleep 1
  done
  cat "$WORK/metrics-check.log" >&2
  [[ $checked -eq 0 ]] || die "validate-deploy: metric names above are used by deploy/prometheus/alerts.yml or deploy/grafana/insightflow.json but not exported by the services (scrapes kept in $WORK/*.metrics)"

  # The real Prometheus: its targets are up, its rules evaluate without error, and it answers
  # the ingest rate and the group's lag.
  local api="http://127.0.0.1:$prometheus_port/api/v1" answered=1
  for ((i = 0; i < 60; i++)); do
    post_events "198.51.100.200" '{"events":[{"event_type":"page_view","user_id":"prom"}]}' >/dev/null
    answered=0
    "$PY" - "$api" >"$WORK/prometheus-check.log" 2>&1 <<'PY' || answered=$?
import json, sys, urllib.parse, urllib.request
api = sys.argv[1]
def get(path, **params):
    url = f"{api}/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]
targets = get("targets")["activeTargets"]
down = [t["scrapeUrl"] for t in targets if t["health"] != "up"]
assert len(targets) == 3 and not down, f"targets not up: {down or targets}"
rate = get("query", query="sum(rate(ingest_events_accepted_total[1m]))")["result"]
assert rate and float(rate[0]["value"][1]) > 0, f"ingest rate: {rate}"
lag = get("query", query="topic:worker_group_lag_messages:sum")["result"]
assert lag, "topic:worker_group_lag_messages:sum: no sample yet"
rules = [r for g in get("rules")["groups"] for r in g["rules"]]
bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] == "err"]
if bad:
    print("rules failing in Prometheus: " + "; ".join(bad))
    sys.exit(2)
pending = [r["name"] for r in rules if r["health"] != "ok"]
assert not pending, f"rules not evaluated yet: {pending}"
print(f"prometheus: 3 targets up; sum(rate(ingest_events_accepted_total[1m])) = {float(rate[0]['value'][1]):.3f}/s; "
      f"group lag {lag[0]['value'][1]}; {len(rules)} rules evaluate without error")
PY
    # 0: all answered; 2: a rule fails, which waiting does not mend.
    [[ $answered -eq 0 || $answered -eq 2 ]] && break
    sleep 1
  done
  cat "$WORK/prometheus-check.log"
  [[ $answered -eq 0 ]] || { show_log "$WORK/logs/prometheus.log" 20; die "validate-deploy: Prometheus did not answer as expected (above)"; }
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/validate-deploy.XXXXXX")"
trap cleanup EXIT

step "tools"
install_tools
step "Kubernetes manifests"
validate_manifests
step "Prometheus rules and the Grafana dashboard"
validate_monitoring
if [[ $STATIC_ONLY -eq 0 ]]; then
  step "end to end: the services export what the rules and the dashboard use"
  end_to_end
fi
step "all checks passed"
