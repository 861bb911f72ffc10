#!/usr/bin/env bash
# Validate a compose file (default: docker-compose.yml), then check that it is safe as
# written. Exits non-zero, naming each problem, if it is not.
#
# 1. The Compose specification JSON schema, with check-jsonschema from PyPI. It reads the
#    raw file, so the ${VAR:?...} references need no values here.
# 2. Our rules, read with PyYAML (both tools live in $DATA/venv, installed on first use):
#    - only the ingest service publishes ports on every interface; every other published
#      port is bound to 127.0.0.1, and no service uses network_mode: host;
#    - a port named by a *__HTTP__METRICS_LISTEN variable is not published (/metrics is
#      for the compose network's Prometheus only);
#    - every environment variable whose name contains PASSWORD, KEYS, SECRET or TOKEN is a
#      single ${VAR:?message} reference, never a literal, a default (${VAR:-x}) or a bare
#      pass-through; a password inside a URL (scheme://user:password@host) likewise;
#    - the gateway and the stats API are never open: ingest sets INGEST__AUTH__WRITE_KEYS,
#      worker-serve sets WORKER__STATS__API_KEYS, nothing sets WORKER__STATS__ALLOW_OPEN=true
#      or INGEST__AUTH__ALLOW_OPEN=true, and Grafana has no anonymous access;
#    - ingest, worker-consume and worker-serve set stop_grace_period to at least 20s (the
#      gateway's drain is 10 s for requests in flight, then up to 10 s of Kafka flush);
#    - worker-consume can be scaled (`docker compose up --scale worker-consume=N`): no
#      container_name, no published port;
#    - least privilege in MySQL: migrate connects as insightflow_migrate, the worker roles as
#      insightflow_worker (deploy/mysql/grants.sql), nothing as root;
#    - every bind-mounted ./path exists (a moved config file would otherwise become an empty
#      directory in the container).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FILE="${1:-$REPO/docker-compose.yml}"
[[ -f "$FILE" ]] || die "no such file: $FILE"

VENV="$DATA/venv"
CHECK="$VENV/bin/check-jsonschema"
PYTHON="$VENV/bin/python"
if [[ ! -x "$CHECK" ]] || ! "$PYTHON" -c 'import yaml' 2>/dev/null; then
  log "validate-compose: installing check-jsonschema and PyYAML into $VENV"
  [[ -x "$PYTHON" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check check-jsonschema pyyaml
fi

if "$CHECK" --builtin-schema vendor.compose-spec "$FILE"; then
  log "validate-compose: $FILE is valid (compose-spec schema)"
else
  die "validate-compose: $FILE does not match the compose-spec schema"
fi

if "$PYTHON" - "$FILE" <<'PY'; then
import os
import re
import sys

import yaml

PUBLIC_SERVICE = "ingest"
LOOPBACK = "127.0.0.1"
GRACE_SERVICES = ("ingest", "worker-consume", "worker-serve")
MIN_GRACE_SECONDS = 20
# Keys without which a service would answer anyone.
REQUIRED_KEYS = {"ingest": "INGEST__AUTH__WRITE_KEYS", "worker-serve": "WORKER__STATS__API_KEYS"}
# Settings that open a service to anyone when true.
OPENING_SETTINGS = ("__STATS__ALLOW_OPEN", "__AUTH__ALLOW_OPEN", "GF_AUTH_ANONYMOUS_ENABLED")
# Run as N copies with `docker compose up --scale NAME=N`.
SCALABLE_SERVICES = ("worker-consume",)
# The MySQL user each service's WORKER__MYSQL__URL must name (deploy/mysql/grants.sql).
MYSQL_USERS = {
    "migrate": "insightflow_migrate",
    "worker-consume": "insightflow_worker",
    "worker-serve": "insightflow_worker",
}
SECRET_NAME = re.compile(r"PASSWORD|KEYS|SECRET|TOKEN", re.IGNORECASE)
# The whole value is one ${NAME:?message} reference with a message.
REQUIRED_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}$")
# scheme://user:password@ ... (the password part up to the last @ before the host).
URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/:@]*:(?P<password>.*)@[^@]*$")

path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    compose = yaml.safe_load(f)
problems = []
base_dir = os.path.dirname(os.path.abspath(path))


def published_ports(entry):
    """(host_ip, published, target) of one `ports` entry; host_ip "" means all interfaces."""
    if isinstance(entry, dict):
        return str(entry.get("host_ip", "")), str(entry.get("published", "")), str(entry.get("target", ""))
    text = str(entry).split("/")[0]
    host_ip = ""
    if text.startswith("["):  # [::1]:8081:8081
        host_ip, _, text = text[1:].partition("]:")
    parts = text.split(":")
    if len(parts) == 3:
        host_ip, published, target = parts
    elif len(parts) == 2:
        published, target = parts
    else:  # "8081": the container port on a random host port, on every interface
        published, target = "", parts[0]
    return host_ip, published, target


def environment(service):
    """The service's environment as (name, value or None for a bare pass-through)."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return [(str(k), None if v is None else str(v)) for k, v in env.items()]
    pairs = []
    for item in env:
        name, sep, value = str(item).partition("=")
        pairs.append((name, value if sep else None))
    return pairs


def seconds(duration):
    """A compose duration (1m30s, 30s, 500ms) in seconds, or None if unreadable."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    text = str(duration).strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * units[u] for n, u in parts)


for name, service in (compose.get("services") or {}).items():
    service = service or {}
    if service.get("network_mode") == "host":
        problems.append(f"{name}: network_mode: host publishes every port it listens on")

    targets = set()
    for entry in service.get("ports") or []:
        host_ip, published, target = published_ports(entry)
        targets.add(target.split("-")[0])
        if name != PUBLIC_SERVICE and host_ip != LOOPBACK:
            where = f"host IP {host_ip}" if host_ip else "every interface"
            problems.append(
                f"{name}: port {entry!r} is published on {where}; only {PUBLIC_SERVICE} may be "
                f"public, bind it to {LOOPBACK} (\"{LOOPBACK}:{published or target}:{target}\") "
                f"or do not publish it"
            )

    env = environment(service)
    required = REQUIRED_KEYS.get(name)
    if required and required not in {var for var, _ in env}:
        problems.append(f"{name}: no {required}; without keys it answers anyone")
    for var, value in env:
        if var.endswith(OPENING_SETTINGS) and str(value).lower() in ("true", "1", "yes"):
            problems.append(f"{name}: {var}={value} opens the service to anyone")
        if var.endswith("__HTTP__METRICS_LISTEN") and value:
            port = value.rpartition(":")[2]
            if port in targets:
                problems.append(
                    f"{name}: {var}={value} but port {port} is published; /metrics must stay "
                    f"on the compose network"
                )
        if SECRET_NAME.search(var):
            if value is None or not REQUIRED_REF.match(value):
                shown = "a bare pass-through" if value is None else f"{value!r}"
                problems.append(
                    f"{name}: environment {var} is {shown}; a secret must be a "
                    f"${{VAR:?message}} reference, e.g. ${{INSIGHTFLOW_X:?set INSIGHTFLOW_X in .env}}"
                )
        elif value:
            url = URL_PASSWORD.match(value)
            if url and not REQUIRED_REF.match(url.group("password")):
                problems.append(
                    f"{name}: environment {var} holds a URL whose password is not a "
                    f"${{VAR:?message}} reference"
                )

    if name in SCALABLE_SERVICES:
        if "container_name" in service:
            problems.append(
                f"{name}: container_name {service['container_name']!r} allows one container only; "
                f"`docker compose up --scale {name}=N` needs it gone"
            )
        if service.get("ports"):
            problems.append(
                f"{name}: publishes {service['ports']!r}; a second copy could not bind the same "
                f"host port, so `--scale {name}=N` fails"
            )

    expected_user = MYSQL_USERS.get(name)
    for var, value in env:
        if var.endswith("__MYSQL__URL") and value:
            user = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://([^:@/]*)", value)
            user = user.group(1) if user else ""
            if user == "root":
                problems.append(f"{name}: {var} connects as root; use a least-privilege user")
            elif expected_user and user != expected_user:
                problems.append(
                    f"{name}: {var} connects as {user!r}, not {expected_user!r} "
                    f"(deploy/mysql/grants.sql)"
                )
    if expected_user and not any(var.endswith("__MYSQL__URL") for var, _ in env):
        problems.append(f"{name}: no WORKER__MYSQL__URL naming {expected_user}")

    for volume in service.get("volumes") or []:
        source = volume.get("source", "") if isinstance(volume, dict) else str(volume).split(":")[0]
        if source.startswith((".", "/")) and not os.path.exists(os.path.join(base_dir, source)):
            problems.append(f"{name}: bind mount source {source!r} does not exist")

    if name in GRACE_SERVICES:
        grace = service.get("stop_grace_period")
        if grace is None:
            problems.append(
                f"{name}: no stop_grace_period; Docker's default 10s kills it before its drain "
                f"ends (set e.g. stop_grace_period: 30s)"
            )
        elif seconds(grace) is None:
            problems.append(f"{name}: stop_grace_period {grace!r} is not a duration (e.g. 30s)")
        elif seconds(grace) < MIN_GRACE_SECONDS:
            problems.append(
                f"{name}: stop_grace_period {grace!r} is under {MIN_GRACE_SECONDS}s (10 s for "
                f"requests in flight, then up to 10 s of flush)"
            )

for name in GRACE_SERVICES:
    if name not in (compose.get("services") or {}):
        problems.append(f"no {name} service")

for problem in problems:
    print(f"validate-compose: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
  log "validate-compose: $FILE is safe as written (ports, secrets, keys, stop grace periods, scaling, MySQL users, mounts)"
else
  die "validate-compose: $FILE breaks the rules above"
fi
