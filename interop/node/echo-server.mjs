// Echo server on Node `ws`, a peer of sockeye's interop tests.
//
//   node echo-server.mjs [--compress]
//
// Binds 127.0.0.1:0 and prints "listening on PORT". Echoes text as text and
// binary as binary (messages up to 32 MiB); the text "close:CODE:REASON" makes
// it close with that code and reason. permessage-deflate only with --compress.
import { WebSocketServer } from 'ws';

const compress = process.argv.slice(2).includes('--compress');
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  maxPayload: 32 * 1024 * 1024,
  perMessageDeflate: compress,
});

wss.on('listening', () => {
  console.log(`listening on ${wss.address().port}`);
});

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      const text = data.toString('utf8');
      if (text.startsWith('close:')) {
        const [, code, ...reason] = text.split(':');
        ws.close(Number(code), reason.join(':'));
        return;
      }
      ws.send(text, { binary: false });
      return;
    }
    ws.send(data, { binary: true });
  });
  ws.on('error', () => {});
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
