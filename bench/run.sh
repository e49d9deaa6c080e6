#!/usr/bin/env bash
# The echo-server matrix: sockeye next to its peers, one run, one machine, and
# the result written into docs/BENCHMARKS.md ("Echo server vs peers").
#
#   bench/run.sh                      # the full matrix (~15 minutes with DURATION=10)
#   DURATION=5 bench/run.sh           # shorter windows
#   QUICK=1 bench/run.sh              # 1 s windows, 500 idle connections, no docs update
#
# Servers (a fresh process per scenario, pinned to CPU $SERVER_CPU):
#   sockeye          `sockeye serve --no-compression`, its framework endpoint /echo,
#                    --threads 1 (one worker for the one core)
#   sockeye-raw      bench/examples/echo-server.rs: sockeye_server::EchoServer
#   sockeye-loop     bench/examples/loop-echo.rs: sockeye_loop::Server, one mio loop
#                    (sockeye::WebSocket, a task per connection), current-thread runtime
#   tungstenite      tokio-tungstenite 0.30 (bench/peers/rust), current-thread runtime
#   fastwebsockets   fastwebsockets 0.10 + hyper 1 (bench/peers/rust), current-thread runtime
#   ws               Node ws 8 with bufferutil (bench/peers/ws-echo.mjs)
#   uws              uWebSockets.js 20.30 (bench/peers/uws-echo.mjs)
# The generator (`sockeye bench`, one thread) is pinned to CPU $CLIENT_CPU.
#
# Scenarios (the issue's matrix):
#   A  echo: 100 connections, 20-byte text, 16 in flight each
#   B  echo: 10 connections, 64 KiB binary, 4 in flight each
#   C  echo: 1 connection, 20-byte text, ping-pong (1 in flight)
#   B and C run in ROUNDS rounds (default 3) that take the servers in turn:
#   their figures follow the machine's state from one minute to the next
#   (C's p50 moved between 14 and 22 µs for every server alike; B settles
#   either with the server waking per message or with messages queued,
#   fastwebsockets measured 296 and 447 µs/MB in two runs), so each server's
#   median round is reported (by CPU per MB in B, by p50 in C) and every
#   round is listed
#   D  idle: $CONNECTIONS connections held open, server RSS per connection
#   E  large: 1 connection, 16 MiB binary, ping-pong
#   F  fan-out: 10,000 subscribers, 100-byte messages (sockeye /ws vs Node ws,
#      as bench/run-fanout-idle.sh; window 16, rate cap 190/s)
#   G  scenario A through `sockeye proxy` (unpinned; --threads 1, then its default) in
#      front of `sockeye serve`
#
# Environment: DURATION (10 s), WARMUP (1 s), CONNECTIONS (10000), HOLD (2 s),
# SERVERS (all of the above), SCENARIOS ("A B C D E F G"), SERVER_CPU (0),
# CLIENT_CPU (1), DOCS (1: rewrite the section in docs/BENCHMARKS.md; QUICK sets 0),
# ROUNDS (3, for B and C; QUICK sets 1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -n "${QUICK:-}" ]]; then
  : "${DURATION:=1}" "${WARMUP:=0.5}" "${CONNECTIONS:=500}" "${HOLD:=0.5}" "${DOCS:=0}" "${ROUNDS:=1}"
fi
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-1}"
CONNECTIONS="${CONNECTIONS:-10000}"
HOLD="${HOLD:-2}"
SERVERS="${SERVERS:-sockeye sockeye-raw sockeye-loop tungstenite fastwebsockets ws uws}"
SCENARIOS="${SCENARIOS:-A B C D E F G}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
DOCS="${DOCS:-1}"
ROUNDS="${ROUNDS:-3}"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < CONNECTIONS + 100 )); then
  echo "warning: ulimit -n is $(ulimit -n), below the $CONNECTIONS connections asked for" >&2
fi

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
echo "==> building (cargo build --release -p sockeye-cli -p sockeye-bench --bin sockeye --example echo-server --example loop-echo)" >&2
cargo build --release -p sockeye-cli -p sockeye-bench --bin sockeye --example echo-server --example loop-echo >&2
SOCKEYE="$TARGET_DIR/release/sockeye"
RAW_ECHO="$TARGET_DIR/release/examples/echo-server"
LOOP_ECHO="$TARGET_DIR/release/examples/loop-echo"
PEERS="$ROOT/bench/peers"
"$PEERS/build.sh"
RUST_PEERS="$PEERS/rust/target/release"

WORK="$(mktemp -d)"
PIDS=()
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT

# wait_listening LOG PID NAME: prints the port the process says it listens on.
wait_listening() {
  local log="$1" pid="$2" name="$3" line=""
  for _ in $(seq 100); do
    line="$(grep -ao 'listening on [^ ]*://127\.0\.0\.1:[0-9]*' "$log" | head -1 || true)"
    [[ -n "$line" ]] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "$name exited" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "$line" ]] || { cat "$log" >&2; echo "$name did not say where it listens" >&2; exit 1; }
  echo "${line##*:}"
}

# start_server NAME: a fresh server on CPU $SERVER_CPU; sets SERVER_PID, URL, and VERSION[NAME].
declare -A VERSION
start_server() {
  local name="$1" log="$WORK/$1.log" path=/ port
  : >"$log"
  case "$name" in
    sockeye|sockeye-ws)
      NO_COLOR=1 RUST_LOG=info taskset -c "$SERVER_CPU" \
        "$SOCKEYE" serve --addr 127.0.0.1:0 --threads 1 --no-compression --max-message-size $((64 << 20)) 2>"$log" &
      path=/echo; [[ "$name" == sockeye-ws ]] && path=/ws ;;
    sockeye-raw) taskset -c "$SERVER_CPU" "$RAW_ECHO" 0 >"$log" 2>&1 & path=/echo ;;
    sockeye-loop) taskset -c "$SERVER_CPU" "$LOOP_ECHO" 0 >"$log" 2>&1 & path=/echo ;;
    tungstenite) taskset -c "$SERVER_CPU" "$RUST_PEERS/tungstenite-echo" 0 >"$log" 2>&1 & ;;
    fastwebsockets) taskset -c "$SERVER_CPU" "$RUST_PEERS/fastwebsockets-echo" 0 >"$log" 2>&1 & ;;
    ws) taskset -c "$SERVER_CPU" node "$PEERS/ws-echo.mjs" 0 >"$log" 2>&1 & ;;
    uws) taskset -c "$SERVER_CPU" node "$PEERS/uws-echo.mjs" 0 >"$log" 2>&1 & ;;
    ws-fanout) taskset -c "$SERVER_CPU" node "$PEERS/ws-fanout.mjs" 0 >"$log" 2>&1 & path=/ws ;;
    *) echo "unknown server $name" >&2; exit 1 ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  port="$(wait_listening "$log" "$SERVER_PID" "$name")"
  [[ -n "$port" ]] || exit 1
  URL="ws://127.0.0.1:$port$path"
  VERSION[$name]="$(grep -ao '([^)]*)$' "$log" | head -1 | tr -d '()' || true)"
  sleep 0.3   # let it finish starting before RSS and CPU are read
}

RESULTS="$WORK/results.jsonl"
# record SCENARIO SERVER ARGS...: runs the generator on CPU $CLIENT_CPU; appends JSON.
record() {
  local scenario="$1" server="$2"; shift 2
  echo "==> $scenario $server: sockeye bench $*" >&2
  local out
  if out="$(taskset -c "$CLIENT_CPU" "$SOCKEYE" bench "$@" --json 2>"$WORK/bench.log")"; then
    echo "$out" | sed "s/^{/{\"matrix\":\"$scenario\",\"server\":\"$server\",\"round\":${ROUND:-1},/" >>"$RESULTS"
    echo "$out" >&2
  else
    cat "$WORK/bench.log" >&2
    echo "{\"matrix\":\"$scenario\",\"server\":\"$server\",\"failed\":\"sockeye bench $*\"}" >>"$RESULTS"
  fi
}

# run SCENARIO SERVER ARGS...: a fresh server, then the generator against it.
run() {
  local scenario="$1" server="$2"; shift 2
  start_server "$server"
  record "$scenario" "$server" "$@" --url "$URL" --server-pid "$SERVER_PID"
  stop_all
  sleep 1   # closed sockets go away before the next run
}

T=(--duration "$DURATION" --warmup "$WARMUP")
MACHINE="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr)"
echo "==> machine: $MACHINE" >&2
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
STARTED="$(date -u '+%Y-%m-%d %H:%M')"

for scenario in $SCENARIOS; do
  case "$scenario" in
    A) for s in $SERVERS; do run A "$s" echo --connections 100 --size 20 --in-flight 16 "${T[@]}"; done ;;
    B) for ROUND in $(seq "$ROUNDS"); do
         for s in $SERVERS; do
           run B "$s" echo --connections 10 --size 65536 --binary --in-flight 4 "${T[@]}"
         done
       done
       ROUND=1 ;;
    C) for ROUND in $(seq "$ROUNDS"); do
         for s in $SERVERS; do run C "$s" echo --connections 1 --size 20 --in-flight 1 "${T[@]}"; done
       done
       ROUND=1 ;;
    D) for s in $SERVERS; do
         run D "$s" idle --protocol raw --connections "$CONNECTIONS" --hold "$HOLD"
       done ;;
    E) for s in $SERVERS; do run E "$s" large "${T[@]}"; done ;;
    F) run F sockeye-ws fanout --protocol sockeye --subscribers "$CONNECTIONS" --window 16 --size 100 --rate 190 "${T[@]}"
       run F ws-fanout fanout --protocol raw --subscribers "$CONNECTIONS" --window 16 --size 100 --rate 190 "${T[@]}" ;;
    G) # Direct, then through the proxy with one worker thread (as every server here runs
       # one) and with its default (one per core), interleaved; the proxy is unpinned.
       for round in 1 2; do
         start_server sockeye
         backend="$URL"
         record G "direct-$round" echo --connections 100 --size 20 --in-flight 16 "${T[@]}" \
           --url "$backend" --server-pid "$SERVER_PID"
         for threads in 1 default; do
           threads_arg=()
           [[ "$threads" == default ]] || threads_arg=(--threads "$threads")
           NO_COLOR=1 RUST_LOG=info "$SOCKEYE" proxy --listen 127.0.0.1:0 --to "${backend%/echo}" \
             "${threads_arg[@]}" 2>"$WORK/proxy.log" &
           proxy_pid=$!
           PIDS+=("$proxy_pid")
           port="$(wait_listening "$WORK/proxy.log" "$proxy_pid" proxy)"
           [[ -n "$port" ]] || exit 1
           # The report's "server" CPU is the proxy's here.
           record G "proxy-$threads-$round" echo --connections 100 --size 20 --in-flight 16 "${T[@]}" \
             --url "ws://127.0.0.1:$port/echo" --server-pid "$proxy_pid"
           kill "$proxy_pid"
           wait "$proxy_pid" 2>/dev/null || true
         done
         stop_all
         sleep 1
       done ;;
    *) echo "unknown scenario $scenario" >&2; exit 1 ;;
  esac
done

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
VERSIONS="sockeye $("$SOCKEYE" --version | awk '{print $2}') (commit $(git rev-parse --short HEAD)), $(rustc --version | cut -d' ' -f1-2), Node $(node --version)"
for s in tungstenite fastwebsockets ws uws; do
  [[ -n "${VERSION[$s]:-}" ]] && VERSIONS="$VERSIONS; ${VERSION[$s]}"
done

TABLE="$WORK/table.md"
node "$ROOT/bench/report.mjs" "$RESULTS" "$STARTED" "$MACHINE" "$VERSIONS" "$LOAD_BEFORE" "$LOAD_AFTER" \
  "$DURATION" "$WARMUP" "$CONNECTIONS" >"$TABLE"
cat "$TABLE"

if [[ "$DOCS" == 1 ]]; then
  node - "$ROOT/docs/BENCHMARKS.md" "$TABLE" <<'EOF'
const fs = require('fs');
const [doc, table] = process.argv.slice(2);
const text = fs.readFileSync(doc, 'utf8');
const start = text.indexOf('## Echo server vs peers');
if (start < 0) throw new Error('no "## Echo server vs peers" section in ' + doc);
const next = text.indexOf('\n## ', start + 3);
const end = next < 0 ? text.length : next + 1;
fs.writeFileSync(doc, text.slice(0, start) + fs.readFileSync(table, 'utf8').trimEnd() + '\n\n' + text.slice(end));
EOF
  echo "==> wrote the section into docs/BENCHMARKS.md" >&2
fi
