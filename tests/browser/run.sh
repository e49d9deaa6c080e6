#!/usr/bin/env bash
# Runs the headless Chromium tests of the pages against a fresh `sockeye serve`.
#
#   tests/browser/run.sh                       # builds nothing: needs target/release/sockeye
#   SOCKEYE_URL=http://127.0.0.1:3000 tests/browser/run.sh   # against a server you run
#   SOCKEYE_BIN=path/to/sockeye tests/browser/run.sh         # another binary
#   SOCKEYE_SCREENSHOTS=/tmp/shots tests/browser/run.sh      # also save a PNG per page
#
# Starts the server on 127.0.0.1:0, reads the address it got from its log line
# "listening on http://127.0.0.1:PORT", runs `node --test` on the test files,
# stops the server by its PID and exits with node's status.  Needs node >= 20,
# /usr/bin/chromium (Debian's chromium) and `npm ci` done here (scripts/test.sh
# does both).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
START_TIMEOUT=${SOCKEYE_START_TIMEOUT:-30}   # seconds for the server to log its address

if [[ ! -d "$HERE/node_modules/playwright-core" ]]; then
  echo "browser tests: run 'npm ci' in $HERE first (scripts/test.sh does)" >&2
  exit 2
fi

SERVER_PID=""
LOG=""
stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    # bounded: give it 5 s to exit, then make sure
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

if [[ -z "${SOCKEYE_URL:-}" ]]; then
  BIN="${SOCKEYE_BIN:-$ROOT/target/release/sockeye}"
  if [[ ! -x "$BIN" ]]; then
    echo "browser tests: $BIN not found; build it with: cargo build --release -p sockeye-cli" >&2
    exit 2
  fi
  mkdir -p "$ROOT/target/test-logs"
  LOG="$ROOT/target/test-logs/browser-server.log"
  : >"$LOG"

  # The server's stderr comes through a pipe that this shell reads line by line
  # until the address shows up (read -t bounds the wait; no sleeping). stdout
  # goes to the log file. $! is the server itself (exec).
  exec {SERVER_FD}< <(NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" exec "$BIN" serve --addr 127.0.0.1:0 2>&1 >>"$LOG")
  SERVER_PID=$!

  ADDR=""
  deadline=$((SECONDS + START_TIMEOUT))
  while (( SECONDS < deadline )); do
    line=""
    if ! IFS= read -r -t $((deadline - SECONDS)) -u "$SERVER_FD" line; then
      break   # timed out, or the server closed its stderr (exited)
    fi
    printf '%s\n' "$line" >>"$LOG"
    if [[ $line =~ listening\ on\ http://([^[:space:][:cntrl:]]+) ]]; then
      ADDR="${BASH_REMATCH[1]}"
      break
    fi
  done
  if [[ -z "$ADDR" ]]; then
    echo "browser tests: the server did not log 'listening on http://ADDR' (at level info: check RUST_LOG) within ${START_TIMEOUT}s; its output:" >&2
    cat "$LOG" >&2
    exit 1
  fi
  # keep draining the server's stderr into the log so it never blocks on a full pipe
  cat <&"$SERVER_FD" >>"$LOG" &
  exec {SERVER_FD}<&-
  export SOCKEYE_URL="http://$ADDR"
  echo "browser tests: server pid $SERVER_PID at $SOCKEYE_URL (log: $LOG)"
else
  echo "browser tests: against $SOCKEYE_URL"
fi

cd "$HERE"
rc=0
node --test --test-reporter=spec --test-concurrency=1 ./*.test.mjs || rc=$?
if (( rc != 0 )) && [[ -n "$LOG" ]]; then
  echo "browser tests: failed; the server's log is $LOG (last lines follow)" >&2
  tail -n 30 "$LOG" >&2
fi
stop_server
exit "$rc"
