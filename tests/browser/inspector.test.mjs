// The tunnel inspector, end to end: a tunnel server and an agent (both the
// real `sockeye` binary) expose the server under test (run.sh's `sockeye
// serve`) at ws-app.tunnel.localhost; Chromium uses the tester page through
// the tunnel while a second page watches the inspector.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE, WAIT, launch, newPage, assertNoProblems, shot, TEST_TIMEOUT } from './helpers.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = process.env.SOCKEYE_BIN || path.join(ROOT, 'target/release/sockeye');

const children = [];

/** Starts `sockeye ARGS`; resolves with the first match of `pattern` in its output. */
function start(args, pattern) {
  const child = spawn(BIN, args, {
    env: { ...process.env, NO_COLOR: '1', RUST_LOG: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sockeye ${args[0]} did not print ${pattern} within ${WAIT} ms:\n${output}`)), WAIT);
    const onData = (chunk) => {
      output += chunk;
      const match = output.match(pattern);
      if (match) {
        clearTimeout(timer);
        resolve(match);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`sockeye ${args[0]} exited with ${code}:\n${output}`));
    });
  });
}

let browser;
let publicUrl;
let inspectorUrl;

before(async () => {
  browser = await launch();
  const [, serverAddr] = await start(
    ['tunnel-server', '--domain', 'tunnel.localhost', '--addr', '127.0.0.1:0', '--token', 'browser-test'],
    /listening on (127\.0\.0\.1:\d+)/,
  );
  const local = new URL(BASE).host;
  const agent = start(
    ['http', local, '--server', `ws://${serverAddr}`, '--subdomain', 'ws-app', '--token', 'browser-test',
      '--inspect', '127.0.0.1:0', '--capture-frames'],
    /inspector: (http:\/\/127\.0\.0\.1:\d+)[\s\S]*(http:\/\/ws-app\.tunnel\.localhost:\d+)/,
  );
  [, inspectorUrl, publicUrl] = await agent;
});

after(async () => {
  await browser?.close();
  for (const child of children) {
    if (child.exitCode === null) child.kill('SIGTERM');
  }
});

test('the inspector shows the tester page, its upgrade and message counts live', { timeout: TEST_TIMEOUT }, async () => {
  const inspector = await newPage(browser);
  await inspector.goto(inspectorUrl, { waitUntil: 'load' });
  await inspector.locator('[data-testid="live-status"]', { hasText: 'live' }).waitFor();
  await inspector.locator('[data-testid="tunnel"][data-name="ws-app"] [data-testid="tunnel-state"]', { hasText: 'connected' }).waitFor();

  // A visitor uses the tester through the tunnel (*.localhost is loopback in Chromium).
  const visitor = await newPage(browser);
  const res = await visitor.goto(`${publicUrl}/tester`, { waitUntil: 'load' });
  assert.equal(res.status(), 200);
  assert.equal(await visitor.getByTestId('tester-url').inputValue(), `ws://${new URL(publicUrl).host}/echo`);
  await visitor.getByTestId('tester-connect').click();
  await visitor.locator('[data-testid="tester-state"][data-state="open"]').waitFor();
  for (const text of ['first through the tunnel', 'second through the tunnel']) {
    await visitor.getByTestId('tester-input').fill(text);
    await visitor.getByTestId('tester-send').click();
    await visitor.locator('[data-testid="log-entry"][data-dir="in"][data-type="text"]', { hasText: text }).waitFor();
  }

  // The page request and the upgrade are listed as they happen.
  await inspector.locator('[data-testid="request-row"]', { hasText: '/tester' }).first().waitFor();
  const upgrade = inspector.locator('[data-testid="request-row"]', { hasText: '/echo' }).first();
  await upgrade.waitFor();
  assert.equal(await upgrade.getByTestId('request-status').textContent(), '101');

  // The WebSocket, with its message counts each way, updated live.
  await inspector.getByTestId('tab-ws').click();
  const row = inspector.locator('[data-testid="ws-row"]', { hasText: '/echo' }).first();
  await row.locator('[data-testid="ws-messages-up"]', { hasText: '2' }).waitFor();
  await row.locator('[data-testid="ws-messages-down"]', { hasText: '2' }).waitFor();
  assert.equal(await row.getByTestId('ws-state').textContent(), 'open');

  // Its captured timeline, and the resend button answering with the echo.
  await row.click();
  const timeline = inspector.getByTestId('timeline');
  await timeline.locator('[data-testid="message"]', { hasText: 'second through the tunnel' }).first().waitFor();
  assert.equal(await timeline.locator('[data-testid="message"]').count(), 4);
  await timeline.locator('[data-testid="message"]', { hasText: 'first through the tunnel' }).getByTestId('resend').click();
  await inspector.locator('#action-result', { hasText: 'replies: first through the tunnel' }).waitFor();

  // The visitor leaves: the close shows up with its code.
  await visitor.getByTestId('tester-disconnect').click();
  await row.locator('[data-testid="ws-state"]', { hasText: 'closed 1000' }).waitFor();
  await shot(inspector, 'inspector');
  assertNoProblems(inspector);
  assertNoProblems(visitor);
});
