// The live feed: toggling subscriptions, updates arriving, resuming after a reconnect.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage, open, waitForCount, assertNoProblems, shot, WAIT, TEST_TIMEOUT } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const KEYS = ['stocks', 'crypto', 'weather'];

async function setToggle(page, key, on) {
  const box = page.getByTestId(`feed-toggle-${key}`);
  if ((await box.isChecked()) !== on) await page.locator(`label:has([data-testid="feed-toggle-${key}"])`).click();
  assert.equal(await box.isChecked(), on);
}

test('subscribing to stocks streams updates into its table', { timeout: TEST_TIMEOUT }, async () => {
  const page = await newPage(browser);
  await open(page, '/feed');
  await page.locator('[data-testid="conn-state"][data-state="open"]').waitFor();
  for (const key of KEYS) await setToggle(page, key, false);
  const before = Number(await page.getByTestId('feed-count-stocks').getAttribute('data-count'));

  await setToggle(page, 'stocks', true);
  await page.locator('[data-testid="feed-card-stocks"][data-subscribed="true"]').waitFor();
  await waitForCount(page, '[data-testid="feed-count-stocks"]', before + 2);
  assert.ok(await page.locator('[data-testid="feed-rows-stocks"] tr').count() >= 1, 'a row per symbol');
  assert.match(await page.getByTestId('feed-pos-stocks').textContent(), /^\S+\/\d+$/, 'position epoch/offset shown');
  const firstRow = await page.locator('[data-testid="feed-rows-stocks"] tr').first().textContent();
  assert.match(firstRow, /\$\d/, 'prices are formatted');

  // the other topics stay off: no update reaches them
  const crypto = Number(await page.getByTestId('feed-count-crypto').getAttribute('data-count'));
  await page.waitForTimeout(1200); // longer than two publishing intervals; not used to synchronize
  assert.equal(Number(await page.getByTestId('feed-count-crypto').getAttribute('data-count')), crypto);

  // all three on, for the picture
  await setToggle(page, 'crypto', true);
  await setToggle(page, 'weather', true);
  await waitForCount(page, '[data-testid="feed-count-weather"]', 2);
  await waitForCount(page, '[data-testid="feed-count-crypto"]', crypto + 2);
  await shot(page, 'feed');
  assertNoProblems(page);
  await page.context().close();
});

test('after the socket drops, ws.js resumes with since: no update missed or repeated', { timeout: TEST_TIMEOUT }, async () => {
  const page = await newPage(browser);
  await open(page, '/');
  const result = await page.evaluate(async (wait) => {
    const { SockeyeClient, wsUrl } = await import('/ws.js');
    const client = new SockeyeClient(wsUrl('/ws'), { initialDelay: 100, maxDelay: 500 });
    const offsets = [];
    const epochs = new Set();
    const gaps = [];
    const welcomes = [];
    client.addEventListener('message', (e) => {
      if (e.detail.topic !== 'feed:stocks') return;
      offsets.push(e.detail.position.offset);
      epochs.add(e.detail.position.epoch);
    });
    client.addEventListener('gap', (e) => gaps.push(e.detail));
    client.addEventListener('welcome', (e) => welcomes.push(e.detail.connection));
    const until = (cond, what) => new Promise((resolve, reject) => {
      const t0 = Date.now();
      const tick = () => (cond() ? resolve() : Date.now() - t0 > wait ? reject(new Error(`timed out: ${what}`)) : setTimeout(tick, 20));
      tick();
    });
    client.start();
    const ack = await client.subscribe('feed:stocks');
    await until(() => offsets.length >= 2, 'two updates');
    // drop the connection; the server keeps publishing meanwhile
    const before = offsets.length;
    client.ws.close(4001, 'test drops the connection');
    await until(() => welcomes.length >= 2, 'reconnect');
    await until(() => offsets.length >= before + 3, 'three more updates after the reconnect');
    client.stop();
    return { ackOffset: ack.position.offset, offsets, epochs: [...epochs], gaps, welcomes };
  }, WAIT);
  assert.equal(result.gaps.length, 0, 'no gap on a quick reconnect');
  assert.equal(result.epochs.length, 1, 'one epoch');
  assert.notEqual(result.welcomes[0], result.welcomes[1], 'a new connection');
  assert.ok(result.offsets[0] > result.ackOffset, 'messages come after the ack position');
  for (let i = 1; i < result.offsets.length; i++) {
    assert.equal(result.offsets[i], result.offsets[i - 1] + 1, `offsets consecutive across the reconnect: ${result.offsets.join(',')}`);
  }
  assertNoProblems(page);
  await page.context().close();
});
