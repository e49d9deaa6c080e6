// Client on Node `ws`, a peer of sockeye's interop tests.
//
//   node client.mjs ws://HOST:PORT/
//
// Against an echo server (interop/*/echo*server*): sends a text and a binary
// message and checks their echoes, then sends "close:4001:bye" and checks that
// the server closes with 4001 "bye". Exits 0 on success; otherwise prints what
// failed and exits 1.
import { WebSocket } from 'ws';

const url = process.argv[2];
if (!url) {
  console.error('usage: client.mjs URL');
  process.exit(2);
}

const TEXT = 'hello from node ws \u00e9\u2603';
const BINARY = Buffer.alloc(256 * 1024);
for (let i = 0; i < BINARY.length; i++) BINARY[i] = i % 251;

function fail(what) {
  console.log(`FAIL: ${what}`);
  process.exit(1);
}

setTimeout(() => fail('timed out after 30 s'), 30_000).unref();

const ws = new WebSocket(url, { maxPayload: 32 * 1024 * 1024 });
const steps = ['text', 'binary', 'close'];
let step = 0;

ws.on('open', () => ws.send(TEXT));
ws.on('message', (data, isBinary) => {
  switch (steps[step++]) {
    case 'text':
      if (isBinary) fail('text echo: came back as binary');
      if (data.toString('utf8') !== TEXT) fail(`text echo: got ${JSON.stringify(data.toString('utf8').slice(0, 80))}`);
      ws.send(BINARY, { binary: true });
      break;
    case 'binary':
      if (!isBinary) fail('binary echo: came back as text');
      if (!BINARY.equals(data)) fail(`binary echo: ${data.length} bytes differ from the ${BINARY.length} sent`);
      ws.send('close:4001:bye');
      break;
    default:
      fail(`close: expected the server to close, got a message (${data.length} bytes)`);
  }
});
ws.on('close', (code, reason) => {
  if (step !== 2) fail(`closed early (at the ${steps[step]} step): ${code} ${JSON.stringify(reason.toString())}`);
  if (code !== 4001 || reason.toString() !== 'bye') fail(`close: expected 4001 "bye", got ${code} ${JSON.stringify(reason.toString())}`);
  console.log('ok');
  process.exit(0);
});
ws.on('error', (e) => fail(`error: ${e.message}`));
