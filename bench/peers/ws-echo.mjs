// The Node `ws` echo peer (with bufferutil): every text or binary message
// goes back as it came. No compression, 64 MiB messages; ws turns Nagle off
// on every socket itself.
//
//   node ws-echo.mjs [PORT]          # PORT 0 (the default) picks a free port
//
// Prints `listening on ws://127.0.0.1:PORT/ (ws X, bufferutil native|fallback)`.

import { createRequire } from 'node:module';
import { WebSocketServer } from 'ws';

const require = createRequire(import.meta.url);
const port = Number(process.argv[2] ?? 0);

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
});

wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

wss.on('listening', () => {
  let native = 'fallback';
  try {
    require('bufferutil');
    native = 'native';
  } catch {}
  const version = require('ws/package.json').version;
  console.log(`listening on ws://127.0.0.1:${wss.address().port}/ (ws ${version}, bufferutil ${native})`);
});
