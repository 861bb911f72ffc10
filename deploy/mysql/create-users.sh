#!/usr/bin/env bash
# Creates InsightFlow's MySQL users, insightflow_worker and insightflow_migrate, with the
# passwords from the container's environment, and grants them what grants.sql says.
#
# docker-compose.yml mounts it into /docker-entrypoint-initdb.d: the mysql (and mariadb)
# image runs it once, on the first start of an empty data volume, against its temporary
# server that listens on its socket only. Later password changes are ALTER USER statements
# (docs/DEPLOY.md). It works whether the entrypoint executes or sources it: everything runs
# in a subshell, and a failure stops the entrypoint (the container does not come up).
#
# Environment: MYSQL_ROOT_PASSWORD (or MARIADB_ROOT_PASSWORD), INSIGHTFLOW_MYSQL_WORKER_PASSWORD,
# INSIGHTFLOW_MYSQL_MIGRATE_PASSWORD; optional INSIGHTFLOW_GRANTS_FILE (default
# /etc/insightflow/grants.sql) and SOCKET (default: the server's configured socket).

insightflow_create_users() (
  set -euo pipefail

  die() {
    printf 'insightflow create-users: %s\n' "$*" >&2
    exit 1
  }

  # Both passwords go into SQL string literals here and into mysql:// URLs in
  # docker-compose.yml: only URL-safe characters, so neither needs escaping.
  check_password() {
    local name="$1" value="${!1:-}"
    [[ -n "$value" ]] || die "$name is not set (e.g. $name=\$(openssl rand -hex 24) in .env)"
    [[ "$value" =~ ^[A-Za-z0-9._~-]{16,}$ ]] ||
      die "$name must be 16 or more of A-Z a-z 0-9 . _ ~ - (e.g. the output of openssl rand -hex 24)"
  }

  local grants="${INSIGHTFLOW_GRANTS_FILE:-/etc/insightflow/grants.sql}"
  local root_password="${MYSQL_ROOT_PASSWORD:-${MARIADB_ROOT_PASSWORD:-}}"
  [[ -n "$root_password" ]] || die "MYSQL_ROOT_PASSWORD is not set"
  [[ -r "$grants" ]] || die "cannot read the grants file $grants"
  check_password INSIGHTFLOW_MYSQL_WORKER_PASSWORD
  check_password INSIGHTFLOW_MYSQL_MIGRATE_PASSWORD

  local client server socket
  client="$(command -v mariadb || command -v mysql)" || die "no mariadb or mysql client"
  socket="${SOCKET:-}"
  if [[ -z "$socket" ]]; then
    server="$(command -v mariadbd || command -v mysqld)" || die "no mariadbd or mysqld"
    socket="$("$server" --verbose --help 2>/dev/null | awk '/^socket[ \t]/ { print $2; exit }')"
  fi
  [[ -n "$socket" ]] || die "cannot tell the server's socket; set SOCKET"

  # The root password reaches the client through an option file on a pipe, not argv.
  local escaped="${root_password//\\/\\\\}"
  escaped="${escaped//\"/\\\"}"
  {
    printf "CREATE USER IF NOT EXISTS 'insightflow_worker'@'%%' IDENTIFIED BY '%s';\n" \
      "$INSIGHTFLOW_MYSQL_WORKER_PASSWORD"
    printf "CREATE USER IF NOT EXISTS 'insightflow_migrate'@'%%' IDENTIFIED BY '%s';\n" \
      "$INSIGHTFLOW_MYSQL_MIGRATE_PASSWORD"
    cat "$grants"
  } | "$client" --defaults-extra-file=<(printf '[client]\npassword="%s"\n' "$escaped") \
    --protocol=socket --socket="$socket" -uroot
  printf 'insightflow create-users: created insightflow_worker and insightflow_migrate (%s)\n' \
    "$grants"
)

insightflow_create_users
