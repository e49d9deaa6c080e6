#!/usr/bin/env bash
# Fan-out and idle-connection benchmarks, sockeye next to Node `ws`, in one go.
#
#   bench/run-fanout-idle.sh            # the full run (~5 minutes)
#   QUICK=1 bench/run-fanout-idle.sh    # small counts, to check the script itself
#
# For each server (`sockeye serve` and bench/peers/ws-fanout.mjs), a fresh
# process per scenario, pinned to CPU 0, with the generator (`sockeye bench`,
# one thread) pinned to CPU 1:
#   fanout  100-byte messages, at most RATE publications/s (see below), for
#           each SUBSCRIBERS/WINDOW pair of RUNS (default "1000/16 10000/1
#           10000/16"): WINDOW publications may be in flight (not yet delivered
#           to every subscriber). Window 1 times one message's fan-out alone;
#           window 16 lets deliveries queue up, which is where writes coalesce.
#   idle    10,000 connections (sockeye: each subscribed to one topic),
#           RSS growth per connection
# then prints a markdown table and the raw JSON lines. Writes nothing into the
# repository (figures are copied into docs/BENCHMARKS.md by hand, with the date
# and machine this prints first).
#
# RATE: `sockeye serve`'s /ws limits each connection to 200 messages/s (a
# rate_limited error answers the rest), so one publisher can publish at most
# 200/s there. Both servers get the same cap (default 190/s) so the figures
# are comparable; at 10,000 subscribers 190/s is 1.9 M deliveries/s, more than
# either server delivers on one core, so there the window is what paces.
#
# Environment: RUNS, CONNECTIONS (10000), DURATION (10 s), RATE (190), HOLD (35 s: past both servers' 30 s
# heartbeat, so every idle connection answers one ping), SERVER_CPU (0), CLIENT_CPU (1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -n "${QUICK:-}" ]]; then
  : "${RUNS:=200/1 200/16}" "${CONNECTIONS:=500}" "${DURATION:=2}" "${HOLD:=1}"
fi
RUNS="${RUNS:-1000/16 10000/1 10000/16}"
CONNECTIONS="${CONNECTIONS:-10000}"
DURATION="${DURATION:-10}"
RATE="${RATE:-190}"
HOLD="${HOLD:-35}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
SIZE=100

# 10,000 connections need as many descriptors in each process.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < CONNECTIONS + 100 )); then
  echo "warning: ulimit -n is $(ulimit -n), below the $CONNECTIONS connections asked for" >&2
fi

echo "==> building (cargo build --release -p sockeye-cli)" >&2
cargo build --release -p sockeye-cli >&2
SOCKEYE="$ROOT/target/${CARGO_BUILD_TARGET:-}/release/sockeye"
[[ -x "$SOCKEYE" ]] || SOCKEYE="${CARGO_TARGET_DIR:-$ROOT/target}/release/sockeye"

PEERS="$ROOT/bench/peers"
if ! command -v node >/dev/null; then
  echo "node is required for the reference server (apt-get install nodejs npm)" >&2
  exit 1
fi
if [[ ! -d "$PEERS/node_modules/ws" || ! -d "$PEERS/node_modules/bufferutil" ]]; then
  echo "==> npm ci in bench/peers" >&2
  (cd "$PEERS" && npm ci --no-audit --no-fund >&2)
fi

WORK="$(mktemp -d)"
SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT

# start_server sockeye|node: starts a fresh server on CPU $SERVER_CPU; sets SERVER_PID and URL.
start_server() {
  local log="$WORK/server.log" line=""
  : >"$log"
  case "$1" in
    sockeye)
      # One core, so one tokio worker (the default is one per CPU of the machine).
      NO_COLOR=1 RUST_LOG=info taskset -c "$SERVER_CPU" \
        "$SOCKEYE" serve --addr 127.0.0.1:0 --threads 1 2>"$log" &
      ;;
    node)
      taskset -c "$SERVER_CPU" node "$PEERS/ws-fanout.mjs" 0 >"$log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 100); do
    line="$(grep -ao 'listening on [^ ]*://127\.0\.0\.1:[0-9]*' "$log" | head -1 || true)"
    [[ -n "$line" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; echo "the $1 server exited" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "$line" ]] || { cat "$log" >&2; echo "the $1 server did not say where it listens" >&2; exit 1; }
  URL="ws://127.0.0.1:${line##*:}/ws"
  if [[ "$1" == node ]]; then PEER_LINE="$(head -1 "$log" | sed 's/.*(\(.*\))$/\1/')"; fi
  sleep 0.5   # let it finish starting before RSS is read
}

# bench SERVER ARGS...: runs the generator on CPU $CLIENT_CPU against a fresh server; appends JSON.
RESULTS="$WORK/results.jsonl"
bench() {
  local server="$1"; shift
  local protocol=sockeye
  [[ "$server" == node ]] && protocol=raw
  start_server "$server"
  echo "==> $server: sockeye bench $* ($URL)" >&2
  local out
  if out="$(taskset -c "$CLIENT_CPU" "$SOCKEYE" bench "$@" --url "$URL" --protocol "$protocol" \
      --server-pid "$SERVER_PID" --json)"; then
    echo "$out" | sed "s/^{/{\"server\":\"$server\",/" >>"$RESULTS"
    echo "$out" >&2
  else
    echo "{\"server\":\"$server\",\"failed\":\"sockeye bench $*\"}" >>"$RESULTS"
  fi
  stop_server
  sleep 1   # the closed connections' sockets go away before the next run
}

echo "==> machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)" >&2
echo "==> load before: $(uptime)" >&2

for run in $RUNS; do
  for server in sockeye node; do
    bench "$server" fanout --subscribers "${run%/*}" --window "${run#*/}" --size "$SIZE" \
      --duration "$DURATION" --rate "$RATE"
  done
done
for server in sockeye node; do
  bench "$server" idle --connections "$CONNECTIONS" --hold "$HOLD"
done

echo "==> load after: $(uptime)" >&2

# The table (node is here anyway: it parses the JSON lines).
node - "$RESULTS" "$(date -u +%Y-%m-%d)" "$(nproc)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
  "$("$SOCKEYE" --version)" "${PEER_LINE:-}" <<'EOF'
const fs = require('fs');
const [file, date, nproc, cpu, sockeye, peer] = process.argv.slice(2);
const rows = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const f = (x, d = 0) => (x === null || x === undefined ? '–' : Number(x).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }));
console.log(`${date}, ${nproc} cores (${cpu}); ${sockeye}; node reference: ${peer}\n`);
console.log('| server | subscribers | window | published/s | deliveries/s | p50 µs | p99 µs | p99.9 µs | server CPU (cores) | server µs/delivery | server writes/delivery | generator CPU (cores) | generator µs/delivery | errors |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows.filter((r) => r.scenario === 'fanout')) {
  const c = r.cpu;
  const writes = c.server_syscalls ? c.server_syscalls.writes / Math.max(r.deliveries, 1) : null;
  console.log(`| ${r.server} | ${f(r.subscribers)} | ${r.window} | ${f(r.publishes_per_s)} | ${f(r.deliveries_per_s)} | ${f(r.latency.p50_us)} | ${f(r.latency.p99_us)} | ${f(r.latency.p999_us)} | ${f(c.server_cpu_s / c.wall_s, 2)} | ${f(r.server_cpu_per_delivery_us, 2)} | ${f(writes, 3)} | ${f(c.client_cpu_s / c.wall_s, 2)} | ${f(r.client_cpu_per_delivery_us, 2)} | ${r.errors} |`);
}
console.log('\n| server | connections | RSS before (KiB) | RSS open (KiB) | KiB per connection | after hold (KiB/conn) | pings answered | errors |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows.filter((r) => r.scenario === 'idle')) {
  console.log(`| ${r.server} | ${f(r.opened)} | ${f(r.rss_before_kib)} | ${f(r.rss_open_kib)} | ${f(r.kib_per_connection, 2)} | ${f(r.kib_per_connection_end, 2)} | ${f(r.pings)} | ${r.errors} |`);
}
for (const r of rows.filter((r) => r.failed)) console.log(`\nFAILED: ${r.server}: ${r.failed}`);
console.log('\nraw results:\n```');
for (const r of rows) console.log(JSON.stringify(r));
console.log('```');
EOF
