// The uWebSockets.js echo peer: every text or binary message goes back as
// it came. No compression, 64 MiB messages and send buffer (so that a
// 16 MiB echo is never dropped for backpressure), no idle timeout; uSockets
// turns Nagle off on every socket itself.
//
//   node uws-echo.mjs [PORT]          # PORT 0 (the default) picks a free port
//
// Prints `listening on ws://127.0.0.1:PORT/ (uWebSockets.js X)`.
// The npm package is @trufflesuite/uws-js-unofficial 20.30: the official
// builds of uWebSockets.js need glibc 2.38, this machine has 2.36.

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const uWS = require('@trufflesuite/uws-js-unofficial');
const port = Number(process.argv[2] ?? 0);

uWS
  .App()
  .ws('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 64 * 1024 * 1024,
    maxBackpressure: 64 * 1024 * 1024,
    idleTimeout: 0,
    message: (ws, message, isBinary) => {
      ws.send(message, isBinary);
    },
  })
  .listen('127.0.0.1', port, (token) => {
    if (!token) {
      console.error(`cannot listen on port ${port}`);
      process.exit(1);
    }
    const version = require('@trufflesuite/uws-js-unofficial/package.json').version;
    console.log(`listening on ws://127.0.0.1:${uWS.us_socket_local_port(token)}/ (uWebSockets.js ${version})`);
  });
