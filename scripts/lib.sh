# shellcheck shell=bash
# Shared helpers for the InsightFlow scripts. Source it, don't run it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Repository root (the parent of scripts/).
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Local state (Kafka jars and data, pid files, logs). Kept by `make down`.
DATA="${INSIGHTFLOW_DATA_DIR:-$REPO/.data}"
export REPO DATA

# cargo and the Rust toolchain live here.
export PATH="$HOME/.cargo/bin:$PATH"

log()  { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

# port_open HOST PORT: true if a TCP connection to HOST:PORT succeeds (1 s timeout).
port_open() {
  # shellcheck disable=SC2016 # $1/$2 expand in the inner bash
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# wait_for SECONDS DESCRIPTION CMD...: retry CMD every second until it succeeds.
# Returns 1 (after printing why) if it still fails after SECONDS.
wait_for() {
  local secs="$1" what="$2"; shift 2
  local i
  for ((i = 0; i < secs; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  warn "$what: not ready after ${secs}s"
  return 1
}

# running PID: true if PID is a live process. A killed process whose parent has not reaped it
# yet (a zombie: state Z in /proc/PID/stat) is not: this machine's init reaps late.
running() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(cut -d')' -f2 "/proc/$1/stat" 2>/dev/null | awk '{print $1}')"
  [[ "$state" != "Z" ]]
}

# pid_alive PIDFILE: true if PIDFILE exists and names a running process.
pid_alive() {
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  running "$pid"
}

# stop_pidfile NAME PIDFILE [SECONDS]: SIGTERM the process, wait up to SECONDS
# (default 20), then SIGKILL. Removes the pid file. Prints what happened.
stop_pidfile() {
  local name="$1" file="$2" secs="${3:-20}" pid i
  if ! pid_alive "$file"; then
    log "$name: not running"
    rm -f "$file"
    return 0
  fi
  pid="$(cat "$file")"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < secs; i++)); do
    if ! running "$pid"; then
      log "$name: stopped (pid $pid)"
      rm -f "$file"
      return 0
    fi
    sleep 1
  done
  kill -KILL "$pid" 2>/dev/null || true
  log "$name: did not exit within ${secs}s after SIGTERM, killed (pid $pid)"
  rm -f "$file"
}

# start_bg NAME PIDFILE LOGFILE CMD...: start CMD detached (setsid + nohup),
# stdout/stderr appended to LOGFILE, pid written to PIDFILE.
start_bg() {
  local name="$1" pidfile="$2" logfile="$3"; shift 3
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  printf '\n=== %s: starting at %s: %s\n' "$name" "$(date -Is)" "$*" >>"$logfile"
  setsid nohup "$@" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# show_log FILE [LINES]: print the last LINES (default 30) lines of FILE to stderr.
show_log() {
  local file="$1" n="${2:-30}"
  if [[ -f "$file" ]]; then
    printf -- '--- last %s lines of %s ---\n' "$n" "$file" >&2
    tail -n "$n" "$file" >&2
    printf -- '---\n' >&2
  else
    printf 'no log file at %s\n' "$file" >&2
  fi
}
