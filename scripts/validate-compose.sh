#!/usr/bin/env bash
# Validate a compose file (default: docker-compose.yml) against the Compose
# specification JSON schema, using check-jsonschema from PyPI (installed into
# $DATA/venv on first use). Exits non-zero if the file is invalid.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FILE="${1:-$REPO/docker-compose.yml}"
[[ -f "$FILE" ]] || die "no such file: $FILE"

VENV="$DATA/venv"
CHECK="$VENV/bin/check-jsonschema"
if [[ ! -x "$CHECK" ]]; then
  log "validate-compose: installing check-jsonschema into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check check-jsonschema
fi

if "$CHECK" --builtin-schema vendor.compose-spec "$FILE"; then
  log "validate-compose: $FILE is valid (compose-spec schema)"
else
  die "validate-compose: $FILE does not match the compose-spec schema"
fi
