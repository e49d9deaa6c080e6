// The index page: every link on it resolves; the assets and endpoints it names exist.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, launch, newPage, open, assertNoProblems, shot, WAIT, TEST_TIMEOUT } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('every link on the index resolves with HTTP 200', { timeout: TEST_TIMEOUT }, async () => {
  const page = await newPage(browser);
  await open(page, '/');
  const hrefs = await page.locator('a[href]').evaluateAll((as) => [...new Set(as.map((a) => a.href))]);
  const local = hrefs.filter((h) => new URL(h).origin === new URL(BASE).origin);
  assert.deepEqual(hrefs.filter((h) => !local.includes(h)), [], 'no link leaves the server');
  for (const path of ['/chat', '/feed', '/dashboard', '/tester', '/metrics']) {
    assert.ok(local.some((h) => new URL(h).pathname === path), `the index links to ${path}`);
  }
  for (const href of local) {
    const res = await page.request.get(href, { timeout: WAIT, maxRedirects: 0 });
    assert.equal(res.status(), 200, `GET ${href}`);
  }
  // the echo link opens the tester on this server's /echo
  const echo = new URL(await page.getByTestId('link-echo').evaluate((a) => a.href));
  assert.equal(echo.pathname, '/tester');
  assert.equal(echo.searchParams.get('url'), `ws://${new URL(BASE).host}/echo`);
  await shot(page, 'index');
  assertNoProblems(page);
  await page.context().close();
});

test('assets have the content types browsers need; every page links home', { timeout: TEST_TIMEOUT }, async () => {
  const page = await newPage(browser);
  const types = {
    '/': /^text\/html/, '/chat': /^text\/html/, '/feed': /^text\/html/, '/dashboard': /^text\/html/, '/tester': /^text\/html/,
    '/app.css': /^text\/css/, '/ws.js': /^(text|application)\/javascript/,
  };
  for (const [path, type] of Object.entries(types)) {
    const res = await page.request.get(BASE + path, { timeout: WAIT });
    assert.equal(res.status(), 200, `GET ${path}`);
    assert.match(res.headers()['content-type'] || '', type, `content-type of ${path}`);
  }
  for (const path of ['/chat', '/feed', '/dashboard', '/tester']) {
    await open(page, path);
    assert.equal(await page.getByTestId('nav-home').getAttribute('href'), '/');
  }
  assertNoProblems(page);
  await page.context().close();
});

test('the WebSocket endpoints the index names accept connections', { timeout: TEST_TIMEOUT }, async () => {
  const page = await newPage(browser);
  await open(page, '/');
  const result = await page.evaluate((wait) => Promise.all(['/echo', '/ws'].map((path) => new Promise((resolve) => {
    const ws = new WebSocket(`ws://${location.host}${path}`);
    const timer = setTimeout(() => resolve(`${path}: no open in ${wait} ms`), wait);
    ws.onopen = () => { clearTimeout(timer); ws.close(1000); resolve(`${path}: open`); };
    ws.onclose = (e) => { clearTimeout(timer); resolve(`${path}: closed ${e.code}`); };
  }))), WAIT);
  assert.deepEqual(result, ['/echo: open', '/ws: open']);
  assertNoProblems(page);
  await page.context().close();
});
