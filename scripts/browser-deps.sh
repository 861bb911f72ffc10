#!/usr/bin/env bash
# What the browser tests need, installed if missing (idempotent, says what it did):
#   - Chromium from Debian's `chromium` package (/usr/bin/chromium). Nothing here or in the
#     tests downloads a browser: they drive this one with playwright-core.
#   - the SDK's Node packages (`npm ci` in sdk/js), from its package-lock.json.
# Needs Node 20+ and npm on PATH (they are not installed here).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"

# 1. Chromium
if [[ -x "$CHROMIUM" ]]; then
  log "chromium: present ($("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM"))"
else
  have apt-get || die "chromium is missing at $CHROMIUM and apt-get is not available: install Debian's chromium package (or set CHROMIUM_PATH)"
  SUDO=""
  [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  log "chromium: installing Debian's chromium package (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
  [[ -x "$CHROMIUM" ]] || die "apt-get installed chromium but $CHROMIUM is missing"
  log "chromium: installed ($("$CHROMIUM" --version 2>/dev/null))"
fi

# 2. Node packages of the SDK (and its tests)
have node || die "node is missing: install Node.js 20+ (Debian: apt-get install nodejs npm)"
have npm || die "npm is missing: install npm"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
(( node_major >= 20 )) || die "Node $(node --version) is too old: the SDK's tools need Node 20+"

SDK="$REPO/sdk/js"
stamp="$SDK/node_modules/.package-lock.json"
if [[ -f "$stamp" && "$stamp" -nt "$SDK/package-lock.json" ]]; then
  log "sdk/js: node_modules up to date with package-lock.json"
else
  log "sdk/js: npm ci"
  (cd "$SDK" && npm ci --no-audit --no-fund --loglevel=error)
fi
