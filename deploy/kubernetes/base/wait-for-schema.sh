#!/bin/bash
# Init container of the worker's consume and serve pods: waits until the database holds the
# schema this release needs, i.e. until the migrate Job (worker migrate) has applied migration
# $INSIGHTFLOW_SCHEMA_VERSION or a later one. Without it a consumer would fail on its first
# write and crash-loop, and the stats API would answer 500s; waiting here keeps the pod in
# Init (visible in `kubectl get pods`), restarts nothing, and lets a rolling update stall
# with the old pods still serving until the Job is done.
#
# It reads sqlx's bookkeeping table as the worker's own MySQL user (SELECT on the database
# is all it needs). Runs in the mysql image (its `mysql` client and bash), read-only root
# filesystem: the password reaches the client through a pipe, never argv or a file.
#
# Environment: INSIGHTFLOW_MYSQL_HOST, INSIGHTFLOW_MYSQL_PORT, INSIGHTFLOW_MYSQL_DATABASE,
# INSIGHTFLOW_SCHEMA_VERSION (ConfigMap insightflow-worker), MYSQL_WORKER_PASSWORD (Secret).
set -euo pipefail

: "${INSIGHTFLOW_MYSQL_HOST:?}" "${INSIGHTFLOW_MYSQL_PORT:?}" "${INSIGHTFLOW_MYSQL_DATABASE:?}"
: "${INSIGHTFLOW_SCHEMA_VERSION:?}" "${MYSQL_WORKER_PASSWORD:?}"
[[ "$INSIGHTFLOW_SCHEMA_VERSION" =~ ^[0-9]+$ ]] ||
  { echo "wait-for-schema: INSIGHTFLOW_SCHEMA_VERSION must be a migration number" >&2; exit 2; }

user=insightflow_worker
where="$INSIGHTFLOW_MYSQL_HOST:$INSIGHTFLOW_MYSQL_PORT/$INSIGHTFLOW_MYSQL_DATABASE"
query="SELECT COALESCE(MAX(version), 0) FROM \`$INSIGHTFLOW_MYSQL_DATABASE\`._sqlx_migrations WHERE success = 1"
escaped="${MYSQL_WORKER_PASSWORD//\\/\\\\}"
escaped="${escaped//\"/\\\"}"

attempt=0
while true; do
  # The answer is the last line; a client warning may come before it.
  if output="$(mysql --defaults-extra-file=<(printf '[client]\npassword="%s"\n' "$escaped") \
      --protocol=tcp -h "$INSIGHTFLOW_MYSQL_HOST" -P "$INSIGHTFLOW_MYSQL_PORT" -u "$user" \
      --get-server-public-key --connect-timeout=5 -N -B -e "$query" 2>&1)" &&
    current="${output##*$'\n'}" && [[ "$current" =~ ^[0-9]+$ ]]; then
    if ((current >= INSIGHTFLOW_SCHEMA_VERSION)); then
      echo "wait-for-schema: $where is at migration $current (this release needs $INSIGHTFLOW_SCHEMA_VERSION)"
      exit 0
    fi
    reason="at migration $current"
  else
    # No database or table yet (the Job has not run), MySQL unreachable, or a wrong password.
    reason="${output//$'\n'/ }"
  fi
  # Every 5 s; said once a minute, so the log shows why the pod waits without flooding it.
  if ((attempt % 12 == 0)); then
    echo "wait-for-schema: waiting for migration $INSIGHTFLOW_SCHEMA_VERSION on $where ($reason); is the insightflow-migrate Job done? kubectl logs job/insightflow-migrate"
  fi
  attempt=$((attempt + 1))
  sleep 5
done
