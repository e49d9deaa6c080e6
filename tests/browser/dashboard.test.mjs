// The dashboard: metric samples arrive and the chart is drawn.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage, open, waitForCount, assertNoProblems, shot, TEST_TIMEOUT } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('metrics update live and the chart canvas is drawn', { timeout: TEST_TIMEOUT }, async () => {
  const page = await newPage(browser);
  await open(page, '/dashboard');
  const canvas = page.getByTestId('dashboard-chart');
  await canvas.waitFor();
  const box = await canvas.boundingBox();
  assert.ok(box.width > 200 && box.height > 150, `canvas has a size: ${JSON.stringify(box)}`);

  await page.locator('[data-testid="conn-state"][data-state="open"]').waitFor();
  // three samples: the second one gives the first rates, the third a line
  await waitForCount(page, '[data-testid="dashboard-samples"]', 3, 15_000);

  // this page's own connection is counted
  const conns = await page.locator('[data-testid="metric-connections"] [data-role="value"]').textContent();
  assert.ok(Number(conns.replace(/,/g, '')) >= 1, `connections: ${conns}`);
  for (const id of ['metric-messages-out', 'metric-rss', 'metric-uptime']) {
    const v = await page.locator(`[data-testid="${id}"] [data-role="value"]`).textContent();
    assert.notEqual(v, '–', `${id} has a value`);
  }

  // the canvas has the series' colours on it, not just a blank grid
  const drawn = await canvas.evaluate((c) => {
    const ctx = c.getContext('2d');
    const { data } = ctx.getImageData(0, 0, c.width, c.height);
    const css = getComputedStyle(document.documentElement);
    const hex = css.getPropertyValue('--accent').trim();
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    let inked = 0, accent = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] > 0) inked++;
      if (data[i + 3] > 200 && Math.abs(data[i] - r) < 8 && Math.abs(data[i + 1] - g) < 8 && Math.abs(data[i + 2] - b) < 8) accent++;
    }
    return { inked, accent };
  });
  assert.ok(drawn.inked > 1000, `the chart drew something: ${JSON.stringify(drawn)}`);
  assert.ok(drawn.accent > 20, `the connections line is drawn: ${JSON.stringify(drawn)}`);
  await shot(page, 'dashboard');
  assertNoProblems(page);
  await page.context().close();
});
