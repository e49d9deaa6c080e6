// The Node reference for `sockeye bench fanout --protocol raw` and `sockeye bench idle`:
// a `ws` server (with bufferutil) that broadcasts the idiomatic way, by looping
// over wss.clients and sending each message to every other open client.
//
//   node ws-fanout.mjs [PORT]          # PORT 0 (the default) picks a free port
//
// Prints `listening on ws://127.0.0.1:PORT/ws (ws X, bufferutil native|fallback)`.
// Heartbeats as in the ws README ("How to detect and close broken connections"):
// every HEARTBEAT_MS (default 30000, as `sockeye serve`; 0 turns them off) each
// client is pinged and terminated if it did not answer the previous ping.

import { createRequire } from 'node:module';
import { WebSocketServer, WebSocket } from 'ws';

const require = createRequire(import.meta.url);
const port = Number(process.argv[2] ?? 0);
const heartbeatMs = Number(process.env.HEARTBEAT_MS ?? 30000);

const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });

function heartbeat() {
  this.isAlive = true;
}

wss.on('connection', (ws) => {
  ws.isAlive = true;
  ws.on('pong', heartbeat);
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    for (const client of wss.clients) {
      if (client !== ws && client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
});

if (heartbeatMs > 0) {
  const interval = setInterval(() => {
    for (const ws of wss.clients) {
      if (ws.isAlive === false) {
        ws.terminate();
        continue;
      }
      ws.isAlive = false;
      ws.ping();
    }
  }, heartbeatMs);
  wss.on('close', () => clearInterval(interval));
}

wss.on('listening', () => {
  const { version } = require('ws/package.json');
  let native = 'fallback';
  try {
    const path = require('node-gyp-build').path(
      require.resolve('bufferutil/package.json').replace(/package\.json$/, ''),
    );
    native = path ? 'native' : 'fallback';
  } catch {
    native = 'missing';
  }
  console.log(
    `listening on ws://127.0.0.1:${wss.address().port}/ws (ws ${version}, bufferutil ${native}, node ${process.version})`,
  );
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const ws of wss.clients) ws.terminate();
    wss.close(() => process.exit(0));
  });
}
