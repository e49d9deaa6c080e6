#!/usr/bin/env bash
# Run the Autobahn|Testsuite against sockeye.   Usage: conformance/run.sh [server|client|both]
#
#   server  Autobahn's fuzzingclient -> `sockeye serve` echo endpoint (ws://127.0.0.1:PORT/echo)
#   client  examples/autobahn_client  -> Autobahn's fuzzingserver
#   both    the two roles at the same time (default); fails if either fails
#
# Assumes the release binaries are built (scripts/test.sh does that), in target/ or
# $CARGO_TARGET_DIR:
#   target/release/sockeye                  `sockeye serve --addr 127.0.0.1:PORT`
#   target/release/examples/autobahn_client `autobahn_client ws://127.0.0.1:PORT`
#
# Environment (all optional):
#   SOCKEYE_QUICK=1            leave out 12.* and 13.* except the samples 12.1.* and 13.1.*
#                              (337 of 517 cases; for local iteration)
#   SOCKEYE_CASES='1.*,2.*'    case patterns to run (default '*': all 517)
#   SOCKEYE_EXCLUDE='9.*'      case patterns to leave out (default none)
#   SOCKEYE_SERVER_CMD         server testee, a bash command; $PORT is set (exported) and it must
#                              serve an echo endpoint at ws://127.0.0.1:$PORT$SOCKEYE_SERVER_PATH
#   SOCKEYE_SERVER_PATH        default /echo
#   SOCKEYE_CLIENT_CMD         client testee, a bash command; $AUTOBAHN_URL and $AUTOBAHN_AGENT are
#                              exported (Autobahn client-driver protocol, see README.md)
#   SOCKEYE_AUTOBAHN_TIMEOUT   limit per role in seconds (default 2400)
#   AUTOBAHN_AGENT             agent name in the reports (default sockeye)
#   AUTOBAHN_VENV              the suite's venv (default ${XDG_CACHE_HOME:-~/.cache}/sockeye/autobahn-venv)
#   SOCKEYE_REPORTS            where the reports go (default conformance/reports)
#   SOCKEYE_RESULTS_MD         where a full run writes its results page (default conformance/RESULTS.md;
#                              not written when a *_CMD override is set, unless this is given)
#
# Reports: conformance/reports/{server,client}/ (or $SOCKEYE_REPORTS/...) (index.html, index.json, wstest.log,
# testee.log / client.log, summary.json, run.json).  Exit 0 only when every selected case
# is OK, NON-STRICT or INFORMATIONAL (UNIMPLEMENTED, FAILED and a missing result fail),
# 1 on failed cases, 2 when the run itself could not be done.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
AB="$HERE/autobahn"
ROLE="${1:-both}"

export AUTOBAHN_VENV="${AUTOBAHN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sockeye/autobahn-venv}"
export AUTOBAHN_AGENT="${AUTOBAHN_AGENT:-sockeye}"
export PYTHONWARNINGS="ignore:pkg_resources is deprecated:UserWarning"
export PYTHONUNBUFFERED=1   # wstest.log is read for progress while the suite runs
export NO_COLOR=1           # plain testee logs (tracing-subscriber honours it)
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in conformance/autobahn/
PY="$AUTOBAHN_VENV/bin/python"
REPORTS="${SOCKEYE_REPORTS:-$HERE/reports}"
TIMEOUT="${SOCKEYE_AUTOBAHN_TIMEOUT:-2400}"
SERVER_PATH="${SOCKEYE_SERVER_PATH:-/echo}"

# ---- case selection -------------------------------------------------------
QUICK_EXCLUDE='12.2.*,12.3.*,12.4.*,12.5.*,13.2.*,13.3.*,13.4.*,13.5.*,13.6.*,13.7.*'
CASES="${SOCKEYE_CASES:-*}"
EXCLUDE="${SOCKEYE_EXCLUDE:-}"
if [[ "${SOCKEYE_QUICK:-0}" == 1 ]]; then
  EXCLUDE="${EXCLUDE:+$EXCLUDE,}$QUICK_EXCLUDE"
fi
FULL=0
[[ ( "$CASES" == '*' ) && -z "$EXCLUDE" ]] && FULL=1

# ---- testees --------------------------------------------------------------
q() { printf '%q' "$1"; }
TARGET="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET" == /* ]] || TARGET="$ROOT/$TARGET"
SERVER_BIN="$TARGET/release/sockeye"
CLIENT_BIN="$TARGET/release/examples/autobahn_client"
SERVER_CMD="${SOCKEYE_SERVER_CMD:-exec $(q "$SERVER_BIN") serve --addr \"127.0.0.1:\$PORT\"}"
CLIENT_CMD="${SOCKEYE_CLIENT_CMD:-exec $(q "$CLIENT_BIN") \"\$AUTOBAHN_URL\"}"

say() { echo "autobahn $ROLE: $*"; }
utc() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Stop a process we started (by PID; with "group", its process group, made by setsid).
stop_pid() {
  local pid="$1" target="$1"
  [[ "${2:-}" == group ]] && target="-$1"
  if kill -0 -- "$target" 2>/dev/null; then
    kill -TERM -- "$target" 2>/dev/null || true
    # give it up to 5 s to exit on its own (polling for its exit), then force it
    for _ in $(seq 50); do kill -0 -- "$target" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "$target" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Print the end of a log to help with a failed run.
show_tail() {
  [[ -s "$1" ]] || return 0
  say "last lines of $1:"
  tail -n "${2:-15}" "$1" | sed 's/^/    /'
}

# A line of progress every 2 minutes while wstest runs (stopped by PID when the run ends).
start_progress() {
  "$PY" "$AB/abtool.py" progress "$ROLE" "$1" "$2" 120 </dev/null &
  PROGRESS_PID=$!
}
stop_progress() {
  [[ -n "$PROGRESS_PID" ]] || return 0
  kill "$PROGRESS_PID" 2>/dev/null || true
  wait "$PROGRESS_PID" 2>/dev/null || true
  PROGRESS_PID=""
}

prepare_out() {
  OUT="$REPORTS/$ROLE"
  mkdir -p "$OUT"
  # never summarise stale results from an earlier run
  rm -f "$OUT"/index.json "$OUT"/index.html "$OUT"/*_case_*.json "$OUT"/*_case_*.html \
        "$OUT"/twisted.log "$OUT"/wstest.log "$OUT"/testee.log "$OUT"/client.log \
        "$OUT"/summary.json "$OUT"/summary.txt "$OUT"/run.json "$OUT"/verdict.txt \
        "$OUT"/fuzzingclient.json "$OUT"/fuzzingserver.json
  "$PY" "$AB/abtool.py" meta "$OUT" role="$ROLE" started="$(utc)" full="$FULL" \
    cases="$CASES" exclude="$EXCLUDE" agent="$AUTOBAHN_AGENT" quick="${SOCKEYE_QUICK:-0}"
}

# Number of cases a spec selects (for progress messages).
count_cases() {
  "$PY" -W ignore -c 'import json, sys; sys.path.insert(0, sys.argv[2]); import abtool
print(len(abtool.expected_cases(json.load(open(sys.argv[1])))))' "$1" "$AB"
}

# Summarise the role's run, record it in run.json, leave the verdict line in verdict.txt.
#   $1 = 0 if the run went through, 1 if it went through with trouble (testee or
#   client died, wstest failed), 2 if it could not be done; $2 = why, for "NOT RUN".
finish_role() {
  local run_rc="$1" src=0 rc
  if [[ -f "$OUT/fuzzingclient.json" || -f "$OUT/fuzzingserver.json" ]]; then
    "$PY" "$AB/abtool.py" summarize "$ROLE" "$OUT" "$AUTOBAHN_AGENT" | tee "$OUT/summary.txt" || src=$?
  else
    say "NOT RUN: ${2:-see above}" | tee "$OUT/summary.txt"
    src=2
  fi
  tail -n 1 "$OUT/summary.txt" > "$OUT/verdict.txt"
  rc=$src
  [[ $run_rc -ne 0 ]] && rc=$run_rc
  "$PY" "$AB/abtool.py" meta "$OUT" seconds="$(( SECONDS - ROLE_T0 ))" exit="$rc"
  say "finished in $(( SECONDS - ROLE_T0 ))s: $( ((rc == 0)) && echo PASS || echo FAIL) (exit $rc)"
  return "$rc"
}

# ---- server role: fuzzingclient -> our echo server ------------------------
TESTEE_PID="" WSTEST_PID="" PROGRESS_PID="" CLIENT_PID=""
cleanup_role() {
  stop_progress
  [[ -n "$CLIENT_PID" ]] && { stop_pid "$CLIENT_PID"; CLIENT_PID=""; }
  [[ -n "$WSTEST_PID" ]] && { stop_pid "$WSTEST_PID"; WSTEST_PID=""; }
  [[ -n "$TESTEE_PID" ]] && { stop_pid "$TESTEE_PID" group; TESTEE_PID=""; }
  return 0
}

run_server_role() {
  prepare_out || return 2
  if [[ -z "${SOCKEYE_SERVER_CMD:-}" && ! -x "$SERVER_BIN" ]]; then
    finish_role 2 "missing $SERVER_BIN; build it: cargo build --release --workspace --bins --examples"
    return 2
  fi
  "$PY" "$AB/abtool.py" meta "$OUT" testee="$SERVER_CMD" || return 2

  local port="" url="" spec="" attempt st=0
  for attempt in 1 2 3; do
    port="$("$PY" "$AB/abtool.py" free-port)" || return 2
    url="ws://127.0.0.1:$port$SERVER_PATH"
    spec="$("$PY" "$AB/abtool.py" spec server "$OUT" "$url" "$CASES" "$EXCLUDE")" || return 2
    # own session/process group, so that stopping it also stops anything it spawned
    PORT="$port" SOCKEYE_PORT="$port" setsid bash -c "$SERVER_CMD" >"$OUT/testee.log" 2>&1 </dev/null &
    TESTEE_PID=$!
    st=0
    "$PY" "$AB/abtool.py" wait-port 127.0.0.1 "$port" 60 "$TESTEE_PID" || st=$?
    [[ $st -eq 0 ]] && break
    if [[ $st -eq 3 ]]; then
      wait "$TESTEE_PID" 2>/dev/null && st=0 || st=$?
      say "testee exited (status $st) before listening on port $port (attempt $attempt)"
      show_tail "$OUT/testee.log"
      TESTEE_PID=""
      # a port taken between choosing and binding is worth another try; anything else is not
      grep -qi 'in use' "$OUT/testee.log" && continue
    else
      say "testee did not listen on 127.0.0.1:$port within 60s"
      show_tail "$OUT/testee.log"
    fi
    cleanup_role
    finish_role 2 || true
    return 2
  done
  [[ -n "$TESTEE_PID" ]] || { finish_role 2 || true; return 2; }

  local total rc=0 t0=$SECONDS
  total="$(count_cases "$spec")" || { cleanup_role; return 2; }
  say "testee up (pid $TESTEE_PID): $SERVER_CMD"
  say "running $total cases [$CASES] minus [$EXCLUDE] against $url (log: $OUT/wstest.log)"
  ( cd "$OUT" && WSTEST_TWISTED_LOG="$OUT/twisted.log" \
      exec timeout -k 10 "$TIMEOUT" "$PY" "$AB/wstest_logged.py" -m fuzzingclient -s "$spec" ) \
    >"$OUT/wstest.log" 2>&1 </dev/null &
  WSTEST_PID=$!
  start_progress "$OUT/wstest.log" "$total"
  wait "$WSTEST_PID" || rc=$?
  WSTEST_PID=""
  stop_progress
  say "wstest finished in $(( SECONDS - t0 ))s (exit $rc)"
  [[ $rc -eq 124 || $rc -eq 137 ]] && say "TIMED OUT after ${TIMEOUT}s (SOCKEYE_AUTOBAHN_TIMEOUT)"

  local run_rc=0
  if ! kill -0 "$TESTEE_PID" 2>/dev/null; then
    local trc=0; wait "$TESTEE_PID" 2>/dev/null || trc=$?
    say "the testee died during the run (exit status $trc)"
    show_tail "$OUT/testee.log" 30
    TESTEE_PID=""
    run_rc=1
  fi
  cleanup_role
  if [[ $rc -ne 0 ]]; then
    say "wstest exited with $rc"
    show_tail "$OUT/wstest.log"
    run_rc=1
  fi
  finish_role "$run_rc"
}

# ---- client role: our client -> fuzzingserver -----------------------------
run_client_role() {
  prepare_out || return 2
  if [[ -z "${SOCKEYE_CLIENT_CMD:-}" && ! -x "$CLIENT_BIN" ]]; then
    finish_role 2 "missing $CLIENT_BIN; build it: cargo build --release --workspace --bins --examples"
    return 2
  fi
  "$PY" "$AB/abtool.py" meta "$OUT" testee="$CLIENT_CMD" || return 2

  local port="" attempt st=0 spec
  for attempt in 1 2 3; do
    port="$("$PY" "$AB/abtool.py" free-port)" || return 2
    spec="$("$PY" "$AB/abtool.py" spec client "$OUT" "ws://127.0.0.1:$port" "$CASES" "$EXCLUDE")" || return 2
    ( cd "$OUT" && WSTEST_TWISTED_LOG="$OUT/twisted.log" \
        exec "$PY" "$AB/wstest_logged.py" -m fuzzingserver -s "$spec" --webport 0 ) \
      >"$OUT/wstest.log" 2>&1 </dev/null &
    WSTEST_PID=$!
    st=0
    "$PY" "$AB/abtool.py" wait-port 127.0.0.1 "$port" 60 "$WSTEST_PID" || st=$?
    [[ $st -eq 0 ]] && break
    if [[ $st -eq 3 ]]; then
      wait "$WSTEST_PID" 2>/dev/null || true
      WSTEST_PID=""
      say "fuzzingserver exited before listening on port $port (attempt $attempt)"
      show_tail "$OUT/wstest.log"
      grep -qi 'in use' "$OUT/wstest.log" && continue
    else
      say "fuzzingserver did not listen on 127.0.0.1:$port within 60s"
      show_tail "$OUT/wstest.log"
    fi
    cleanup_role
    finish_role 2 || true
    return 2
  done
  [[ -n "$WSTEST_PID" ]] || { finish_role 2 || true; return 2; }

  export AUTOBAHN_URL="ws://127.0.0.1:$port"
  local total crc=0 t0=$SECONDS
  total="$(count_cases "$spec")" || { cleanup_role; return 2; }
  say "fuzzingserver up on $AUTOBAHN_URL with $total cases [$CASES] minus [$EXCLUDE]"
  say "running client (log: $OUT/client.log): $CLIENT_CMD"
  timeout -k 10 "$TIMEOUT" bash -c "$CLIENT_CMD" >"$OUT/client.log" 2>&1 </dev/null &
  CLIENT_PID=$!
  start_progress "$OUT/wstest.log" "$total"
  wait "$CLIENT_PID" || crc=$?
  CLIENT_PID=""
  stop_progress
  say "client finished in $(( SECONDS - t0 ))s (exit $crc)"
  [[ $crc -eq 124 || $crc -eq 137 ]] && say "TIMED OUT after ${TIMEOUT}s (SOCKEYE_AUTOBAHN_TIMEOUT)"

  # write the reports even if the client skipped or failed its own updateReports
  local urc=0
  "$PY" "$AB/abtool.py" update-reports 127.0.0.1 "$port" "$AUTOBAHN_AGENT" || urc=$?
  cleanup_role
  local run_rc=0
  if [[ $crc -ne 0 || $urc -ne 0 ]]; then
    say "client command exited with $crc, report update with $urc"
    show_tail "$OUT/client.log"
    run_rc=1
  fi
  finish_role "$run_rc"
}

write_results_md() {
  [[ $FULL -eq 1 ]] || return 0
  local dest="${SOCKEYE_RESULTS_MD:-}" r ran=0
  if [[ -z "$dest" ]]; then
    [[ -z "${SOCKEYE_SERVER_CMD:-}${SOCKEYE_CLIENT_CMD:-}" ]] || return 0
    dest="$HERE/RESULTS.md"
  fi
  for r in server client; do [[ -f "$REPORTS/$r/summary.json" ]] && ran=1; done
  [[ $ran -eq 1 ]] || return 0
  "$HERE/summarize-to-markdown" "$dest" || true
}

# ---- main -----------------------------------------------------------------
ROLE_T0=$SECONDS
case "$ROLE" in
  server|client)
    trap 'cleanup_role; exit 130' INT TERM HUP
    if [[ -z "${_SOCKEYE_ROLE_CHILD:-}" ]]; then
      "$AB/setup.sh" || { echo "autobahn: setup failed" >&2; exit 2; }
    fi
    rc=0
    "run_${ROLE}_role" || rc=$?
    trap - INT TERM HUP
    cleanup_role
    [[ -z "${_SOCKEYE_ROLE_CHILD:-}" ]] && write_results_md
    exit "$rc"
    ;;
  both)
    "$AB/setup.sh" || { echo "autobahn: setup failed" >&2; exit 2; }
    echo "autobahn: running server and client roles concurrently$([[ $FULL -eq 1 ]] && echo ' (full suite)')"
    _SOCKEYE_ROLE_CHILD=1 bash "$HERE/run.sh" server & SPID=$!
    _SOCKEYE_ROLE_CHILD=1 bash "$HERE/run.sh" client & CPID=$!
    trap 'kill -TERM $SPID $CPID 2>/dev/null; wait $SPID $CPID 2>/dev/null; exit 130' INT TERM HUP
    src=0; crc=0
    wait "$SPID" || src=$?
    wait "$CPID" || crc=$?
    trap - INT TERM HUP
    write_results_md
    echo "autobahn: ---- summary ($(( SECONDS - ROLE_T0 ))s) ----"
    for r in server client; do
      if [[ -s "$REPORTS/$r/verdict.txt" ]]; then cat "$REPORTS/$r/verdict.txt"
      else echo "autobahn $r: no result"; fi
    done
    if [[ $src -eq 0 && $crc -eq 0 ]]; then
      echo "autobahn: PASS (server and client)"
      exit 0
    fi
    echo "autobahn: FAIL (server exit $src, client exit $crc)"
    (( src == 2 || crc == 2 )) && exit 2
    exit 1
    ;;
  -h|--help|help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    ;;
  *)
    echo "usage: conformance/run.sh [server|client|both]   (--help for the settings)" >&2
    exit 2
    ;;
esac
