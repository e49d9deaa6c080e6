// Turns bench/run.sh's JSON lines into the "Echo server vs peers" section of
// docs/BENCHMARKS.md (markdown on stdout).
//
//   node bench/report.mjs RESULTS.jsonl STARTED MACHINE VERSIONS LOAD_BEFORE LOAD_AFTER DURATION WARMUP CONNECTIONS

import fs from 'node:fs';

const [file, started, machine, versions, loadBefore, loadAfter, duration, warmup, connections] =
  process.argv.slice(2);
const runs = fs.readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
// B and C run in rounds: each server's median round stands for it (by CPU
// per MB in B, by p50 in C), with every round kept for the tables.
const ROUNDED = { B: (r) => r.server_cpu_per_mb_us, C: (r) => r.latency.p50_us };
const rows = runs.filter((r) => !ROUNDED[r.matrix] || r.failed);
for (const [m, key] of Object.entries(ROUNDED)) {
  const rounds = {};
  for (const r of runs.filter((r) => r.matrix === m && !r.failed)) {
    (rounds[r.server] ??= []).push(r);
  }
  for (const rs of Object.values(rounds)) {
    const sorted = [...rs].sort((a, b) => key(a) - key(b));
    rows.push({ ...sorted[Math.floor((sorted.length - 1) / 2)], rounds: rs });
  }
}
const PEERS = ['tungstenite', 'fastwebsockets', 'ws', 'uws'];
const OURS = ['sockeye', 'sockeye-raw', 'sockeye-loop'];
const NAMES = {
  sockeye: 'sockeye (`serve` /echo)',
  'sockeye-raw': 'sockeye (`EchoServer`)',
  'sockeye-loop': 'sockeye (`sockeye-loop`)',
  tungstenite: 'tokio-tungstenite',
  fastwebsockets: 'fastwebsockets',
  ws: 'Node ws',
  uws: 'uWebSockets.js',
  'sockeye-ws': 'sockeye (`serve` /ws)',
  'ws-fanout': 'Node ws (ws-fanout.mjs)',
};
const out = [];
const p = (s = '') => out.push(s);
const f = (x, d = 0) =>
  x === null || x === undefined || Number.isNaN(x)
    ? '–'
    : Number(x).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
const of = (m) => rows.filter((r) => r.matrix === m && !r.failed);
const get = (m, s) => of(m).find((r) => r.server === s);
const name = (s) => NAMES[s] ?? s;
const cores = (c, who) => (c && c.wall_s ? c[`${who}_cpu_s`] / c.wall_s : null);
const writesPer = (r) =>
  r.cpu.server_syscalls ? r.cpu.server_syscalls.writes / Math.max(r.messages, 1) : null;

// The best peer by `key` (higher or lower is better).
function best(m, key, higher) {
  let b = null;
  for (const s of PEERS) {
    const r = get(m, s);
    if (!r) continue;
    const v = key(r);
    if (v === null || v === undefined) continue;
    if (b === null || (higher ? v > b.v : v < b.v)) b = { s, v };
  }
  return b;
}

p('## Echo server vs peers');
p();
p('Written by `bench/run.sh` (do not edit by hand; the analysis is in the next section).');
p('Each row is a fresh server process pinned to CPU 0 (`taskset -c 0`); the generator,');
p('`sockeye bench` (one thread, `sockeye_proto::Connection` over tokio sockets, Nagle off),');
p('is pinned to CPU 1. Every server has Nagle off, no compression, and accepts 64 MiB');
p('messages. Rust servers run one thread: a current-thread runtime, or');
p('`--threads 1` for `sockeye serve`. "Server CPU" is utime + stime of');
p('`/proc/PID/stat` read just before and after the measured window (10 ms ticks), divided by');
p('what was echoed in that window: on two shared cores it is the robust efficiency figure,');
p('while messages/s also depends on what else ran. MB = 10^6 bytes of echoed payload (the');
p('server read and wrote as much). "write/writev per echo" is `syscw` of `/proc/PID/io`, which counts');
p('only calls through the VFS: `write` and `writev`, not `send`; writes made with `send` show as 0');
p('(tokio-tungstenite\'s always, fastwebsockets\' and uWebSockets.js\' for small messages).');
p();
p(`- **Date:** ${started} UTC; load average ${loadBefore} before, ${loadAfter} after.`);
p(`- **Machine:** ${machine}.`);
p(`- **Versions:** ${versions}.`);
p(`- **Command:** \`DURATION=${duration} WARMUP=${warmup} bench/run.sh\` (windows of ${duration} s after ${warmup} s of warm-up; D: ${f(Number(connections))} connections).`);
p('- **Servers:** `sockeye (serve /echo)` is the framework endpoint (`sockeye serve --no-compression`);');
p('  `sockeye (EchoServer)` is `bench/examples/echo-server.rs` (a tokio task per connection);');
p('  `sockeye (sockeye-loop)` is `bench/examples/loop-echo.rs` (one mio event loop, no task per');
p('  connection); the peers are in `bench/peers/`.');
p();

// Targets.
p('### Targets');
p();
p('| scenario | measure | sockeye (serve /echo) | sockeye (EchoServer) | sockeye (sockeye-loop) | best peer | target | met |');
p('|---|---|---:|---:|---:|---:|---|---|');
const verdict = (ok) => (ok === null ? '–' : ok ? 'yes' : '**no**');
function targetRow(label, measure, m, key, higher, target, test, digits = 0, unit = '') {
  const b = best(m, key, higher);
  const vals = OURS.map((s) => (get(m, s) ? key(get(m, s)) : null));
  const oks = vals.map((v) => (v === null || v === undefined || !b ? null : test(v, b.v)));
  const met = oks.every((o) => o === null) ? null : oks.some((o) => o);
  const cell = (v, ok) => (v === null || v === undefined ? '–' : `${f(v, digits)}${unit}${ok === null ? '' : ok ? ' ✓' : ' ✗'}`);
  p(`| ${label} | ${measure} | ${vals.map((v, i) => cell(v, oks[i])).join(' | ')} | ${b ? `${f(b.v, digits)}${unit} (${name(b.s)})` : '–'} | ${target} | ${verdict(met)} |`);
}
targetRow('A', 'echoes/s', 'A', (r) => r.messages_per_s, true, '≥ 1.5 × best peer', (v, b) => v >= 1.5 * b);
targetRow('A', 'server CPU µs per echo', 'A', (r) => r.server_cpu_per_message_us, false, '≤ 0.5 × best peer', (v, b) => v <= 0.5 * b, 3);
targetRow('B', 'server CPU µs per MB', 'B', (r) => r.server_cpu_per_mb_us, false, '≤ 0.8 × best peer', (v, b) => v <= 0.8 * b);
targetRow('C', 'p50 µs', 'C', (r) => r.latency.p50_us, false, '≤ best peer', (v, b) => v <= b);
targetRow('C', 'p99 µs', 'C', (r) => r.latency.p99_us, false, '≤ best peer', (v, b) => v <= b);
{
  const u = get('D', 'uws');
  const uv = u ? u.kib_per_connection : null;
  const vals = OURS.map((s) => (get('D', s) ? get('D', s).kib_per_connection : null));
  const oks = vals.map((v) => (v === null || uv === null ? null : v < uv));
  const b = best('D', (r) => r.kib_per_connection, false);
  p(`| D | server RSS KiB per idle connection | ${vals.map((v) => f(v, 2)).join(' | ')} | ${b ? `${f(b.v, 2)} (${name(b.s)})` : '–'} | < uWebSockets.js (${f(uv, 2)}) | ${verdict(oks.every((o) => o === null) ? null : oks.some((o) => o))} |`);
}
targetRow('E', 'MB/s', 'E', (r) => r.mb_per_s, true, '≥ best peer', (v, b) => v >= b);
targetRow('E', 'server CPU µs per MB', 'E', (r) => r.server_cpu_per_mb_us, false, '(reported)', () => null);
{
  const s = get('F', 'sockeye-ws');
  const n = get('F', 'ws-fanout');
  const ok = s && n ? s.deliveries_per_s >= 2 * n.deliveries_per_s : null;
  p(`| F | deliveries/s (10k subscribers) | ${s ? f(s.deliveries_per_s) : '–'} | – | – | ${n ? `${f(n.deliveries_per_s)} (Node ws)` : '–'} | ≥ 2 × Node ws | ${verdict(ok)} |`);
}
// G: the proxy with one worker thread, as every server in the matrix runs one; its
// default (a thread per core) is listed beside it.
const gFraction = (threads) => {
  const fractions = [];
  for (const round of [1, 2]) {
    const d = get('G', `direct-${round}`);
    const x = get('G', `proxy-${threads}-${round}`);
    if (d && x) fractions.push(x.messages_per_s / d.messages_per_s);
  }
  return fractions.length ? fractions.reduce((a, b) => a + b, 0) / fractions.length : null;
};
{
  const one = gFraction(1);
  const dflt = gFraction('default');
  const cell = one === null ? '–' : `${f(one, 2)} (\`--threads 1\`; default threads ${dflt === null ? '–' : f(dflt, 2)})`;
  p(`| G | proxied / direct echoes/s | ${cell} | – | – | – | ≥ 0.70 | ${verdict(one === null ? null : one >= 0.7)} |`);
}
p();

function latencyCells(r) {
  const l = r.latency;
  return `${f(l.p50_us)} | ${f(l.p99_us)} | ${f(l.p999_us)}`;
}
function errors(r) {
  return r.errors ? `**${r.errors}** (${r.first_error})` : '0';
}
function echoTable(m, title) {
  const rs = of(m);
  if (!rs.length) return;
  p(`### ${title}`);
  p();
  p('| server | echoes/s | MB/s | server CPU µs/echo | server CPU µs/MB | server cores | write/writev per echo | p50 µs | p99 µs | p99.9 µs | generator CPU µs/echo | generator cores | errors |');
  p('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const r of rs) {
    p(`| ${name(r.server)} | ${f(r.messages_per_s)} | ${f(r.mb_per_s, 1)} | ${f(r.server_cpu_per_message_us, 3)} | ${f(r.server_cpu_per_mb_us)} | ${f(cores(r.cpu, 'server'), 2)} | ${f(writesPer(r), 3)} | ${latencyCells(r)} | ${f(r.client_cpu_per_message_us, 3)} | ${f(cores(r.cpu, 'client'), 2)} | ${errors(r)} |`);
  }
  p();
}
function roundsTable(m, by, what, cell) {
  if (!of(m).some((r) => r.rounds && r.rounds.length > 1)) return;
  p(`Each row above is the server's median round by ${by}. Every round, in the order run`);
  p('(the rounds take the servers in turn):');
  p();
  p(`| server | ${what}, each round |`);
  p('|---|---|');
  for (const r of of(m)) {
    p(`| ${name(r.server)} | ${r.rounds.map(cell).join(', ')} |`);
  }
  p();
}
echoTable('A', 'A: 100 connections, 20-byte text, 16 in flight each');
echoTable('B', 'B: 10 connections, 64 KiB binary, 4 in flight each');
roundsTable('B', 'server CPU per MB', 'server CPU µs per MB', (r) => f(r.server_cpu_per_mb_us));
echoTable('C', 'C: 1 connection, 20-byte text, ping-pong');
roundsTable('C', 'p50', 'p50 / p99 µs', (r) => `${f(r.latency.p50_us)} / ${f(r.latency.p99_us)}`);

if (of('D').length) {
  p(`### D: ${f(Number(connections))} idle connections`);
  p();
  p('Plain connections (`sockeye bench idle --protocol raw`: no subscription), held open; RSS is the median of 5 samples after 2 s of settling.');
  p();
  p('| server | opened | RSS before (KiB) | RSS open (KiB) | KiB per connection | errors |');
  p('|---|---:|---:|---:|---:|---|');
  for (const r of of('D')) {
    p(`| ${name(r.server)} | ${f(r.opened)} | ${f(r.rss_before_kib)} | ${f(r.rss_open_kib)} | ${f(r.kib_per_connection, 2)} | ${errors(r)} |`);
  }
  p();
}
echoTable('E', 'E: 1 connection, 16 MiB binary, ping-pong');

if (of('F').length) {
  p(`### F: fan-out, ${f(Number(connections))} subscribers, 100-byte messages`);
  p();
  p('As in the Fan-out section below (window 16, publisher capped at 190/s for both); sockeye is `sockeye serve`\'s JSON pub/sub at /ws, Node ws is `bench/peers/ws-fanout.mjs`.');
  p();
  p('| server | published/s | deliveries/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/delivery | generator CPU µs/delivery | errors |');
  p('|---|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const r of of('F')) {
    p(`| ${name(r.server)} | ${f(r.publishes_per_s)} | ${f(r.deliveries_per_s)} | ${latencyCells(r)} | ${f(r.server_cpu_per_delivery_us, 3)} | ${f(r.client_cpu_per_delivery_us, 3)} | ${errors(r)} |`);
  }
  p();
}

p('### G: through a proxy');
p();
p('Scenario A against `sockeye serve` directly and through `sockeye proxy`, unpinned: it shares both');
p('cores with the server and the generator. The proxy runs with `--threads 1` (every server in this');
p('matrix runs one thread) and with its default, a worker per core; two interleaved rounds. In the');
p('proxied rows the CPU column is the proxy\'s, not the server\'s.');
p();
p('| path | round | echoes/s | fraction of direct | CPU µs/echo (server direct, proxy proxied) | p50 µs | p99 µs | p99.9 µs | errors |');
p('|---|---:|---:|---:|---:|---:|---:|---:|---|');
for (const round of [1, 2]) {
  const d = get('G', `direct-${round}`);
  if (d) p(`| direct | ${round} | ${f(d.messages_per_s)} | 1.00 | ${f(d.server_cpu_per_message_us, 3)} | ${latencyCells(d)} | ${errors(d)} |`);
  for (const [threads, label] of [[1, '`sockeye proxy --threads 1`'], ['default', '`sockeye proxy` (a thread per core)']]) {
    const x = get('G', `proxy-${threads}-${round}`);
    if (x) p(`| ${label} | ${round} | ${f(x.messages_per_s)} | ${d ? f(x.messages_per_s / d.messages_per_s, 2) : '–'} | ${f(x.server_cpu_per_message_us, 3)} | ${latencyCells(x)} | ${errors(x)} |`);
  }
}
p('| tunnel (`sockeye http` / `sockeye tunnel-server`) | – | not in this matrix: see [Tunnel](#tunnel) (0.50–0.57 of direct, in-process bench) | | | | | | |');
p();

const failed = rows.filter((r) => r.failed);
for (const r of failed) p(`FAILED: ${r.matrix} ${r.server}: ${r.failed}`);
if (failed.length) p();

p('<details><summary>Raw results (one JSON line per run)</summary>');
p();
p('```');
for (const r of runs) p(JSON.stringify(r));
p('```');
p();
p('</details>');
console.log(out.join('\n'));
