// The WebSocket tester against the server's echo endpoint.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, launch, newPage, open, assertNoProblems, shot, TEST_TIMEOUT } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const entry = (page, attrs, text) =>
  page.locator(`[data-testid="log-entry"]${attrs}`, text === undefined ? {} : { hasText: text });

test('echo: text and binary come back; disconnect closes with 1000', { timeout: TEST_TIMEOUT }, async () => {
  const page = await newPage(browser);
  await open(page, '/tester');
  const host = new URL(BASE).host;
  assert.equal(await page.getByTestId('tester-url').inputValue(), `ws://${host}/echo`);

  await page.getByTestId('tester-connect').click();
  await entry(page, '[data-event="open"]').waitFor();
  await page.locator('[data-testid="tester-state"][data-state="open"]').waitFor();

  // text
  await page.getByTestId('tester-input').fill('hello, echo 👋');
  await page.getByTestId('tester-send').click();
  await entry(page, '[data-dir="out"][data-type="text"]', 'hello, echo 👋').waitFor();
  await entry(page, '[data-dir="in"][data-type="text"]', 'hello, echo 👋').waitFor();

  // binary, typed as hex
  await page.locator('label:has([data-testid="tester-mode-binary"])').click();
  await page.getByTestId('tester-input').fill('de ad be ef 00 ff');
  await page.getByTestId('tester-send').click();
  await entry(page, '[data-dir="in"][data-type="binary"]', 'de ad be ef 00 ff').waitFor();
  assert.match(await entry(page, '[data-dir="in"][data-type="binary"]').first().textContent(), /binary 6 B/);

  // bad hex is refused before sending
  await page.getByTestId('tester-input').fill('xyz');
  await page.getByTestId('tester-send').click();
  await page.getByTestId('tester-send-error').waitFor();
  assert.equal(await entry(page, '[data-dir="out"]').count(), 2);

  // bufferedAmount is shown (0 once everything left)
  await page.locator('[data-testid="tester-buffered"][data-value="0"]').waitFor();
  assert.equal(await page.getByTestId('tester-sent').textContent(), '2 messages');
  assert.equal(await page.getByTestId('tester-received').textContent(), '2 messages');
  await shot(page, 'tester');

  await page.getByTestId('tester-disconnect').click();
  const close = entry(page, '[data-event="close"]');
  await close.waitFor();
  assert.equal(await close.getAttribute('data-code'), '1000');
  assert.equal(await close.getAttribute('data-clean'), 'true');
  assert.match(await close.textContent(), /code=1000 .*wasClean=true/);
  await page.locator('[data-testid="tester-state"][data-state="closed"]').waitFor();

  // clear log
  await page.getByTestId('tester-clear').click();
  assert.equal(await entry(page, '').count(), 0);

  assertNoProblems(page);
  await page.context().close();
});

test('subprotocols are offered and the chosen one is shown', { timeout: TEST_TIMEOUT }, async () => {
  const page = await newPage(browser);
  await open(page, '/tester');
  await page.getByTestId('tester-protocols').fill('sockeye.test, other');
  await page.getByTestId('tester-connect').click();
  await entry(page, '[data-event="open"]').waitFor();
  assert.equal(await page.getByTestId('tester-protocol').textContent(), 'sockeye.test');
  await page.getByTestId('tester-disconnect').click();
  await entry(page, '[data-event="close"][data-code="1000"]').waitFor();
  assertNoProblems(page);
  await page.context().close();
});
