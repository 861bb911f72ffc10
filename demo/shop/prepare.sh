#!/usr/bin/env bash
# Makes demo/shop servable by any static file server (`make run` uses python3 -m http.server):
#   1. builds the SDK if its bundle is missing or older than its sources (npm ci + build in sdk/js),
#   2. copies the <script> bundle here as insightflow.min.js (not committed),
#   3. with ENDPOINT and WRITE_KEY, writes config.js (not committed) pointing the shop at them.
# usage: demo/shop/prepare.sh [ENDPOINT WRITE_KEY]
#   e.g. demo/shop/prepare.sh http://127.0.0.1:8080 "$(cat .data/write-key)"
set -euo pipefail
SHOP="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SDK="$SHOP/../../sdk/js"
BUNDLE="$SDK/dist/insightflow.min.js"

command -v npm >/dev/null 2>&1 || { echo "error: npm is missing: the demo shop needs the SDK built with Node 20+ and npm" >&2; exit 1; }
newest_source="$(find "$SDK/src" "$SDK/package.json" "$SDK/package-lock.json" -newer "$BUNDLE" 2>/dev/null | head -1 || true)"
if [[ ! -f "$BUNDLE" || -n "$newest_source" ]]; then
  echo "demo shop: building the SDK (sdk/js)"
  if [[ ! -f "$SDK/node_modules/.package-lock.json" || "$SDK/package-lock.json" -nt "$SDK/node_modules/.package-lock.json" ]]; then
    (cd "$SDK" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  (cd "$SDK" && npm run --silent build)
fi
cp "$BUNDLE" "$SHOP/insightflow.min.js"
cp "$BUNDLE.map" "$SHOP/insightflow.min.js.map"

if [[ $# -ge 2 ]]; then
  # JSON-encode both values: a key is opaque text.
  python3 - "$1" "$2" >"$SHOP/config.js.tmp" <<'PY'
import json, sys
print("// Written by demo/shop/prepare.sh (make run); not committed.")
print("window.INSIGHTFLOW_CONFIG = " + json.dumps({"endpoint": sys.argv[1], "writeKey": sys.argv[2]}) + ";")
PY
  mv "$SHOP/config.js.tmp" "$SHOP/config.js"
  echo "demo shop: config.js points at $1"
fi
