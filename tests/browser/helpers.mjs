// Shared by the browser tests: the server's URL, Chromium, bounded waits.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

/** Base URL of the server under test, e.g. http://127.0.0.1:41234 (run.sh sets it). */
export const BASE = (process.env.SOCKEYE_URL || '').replace(/\/+$/, '');
if (!BASE) {
  throw new Error('SOCKEYE_URL is not set: run tests/browser/run.sh, or set it to a running `sockeye serve`');
}

/** Every wait in these tests is bounded by this (ms). */
export const WAIT = 10_000;

/** Per-test limit for node:test (ms). */
export const TEST_TIMEOUT = 60_000;

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    timeout: 30_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
}

/**
 * A page in a fresh context (its own storage: two of them are two users),
 * with bounded default timeouts. Uncaught page errors, failed requests and
 * console errors are collected in `page.problems`; `assertNoProblems(page)`
 * fails the test on any.
 */
export async function newPage(browser, { width = 1280, height = 860 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  context.setDefaultTimeout(WAIT);
  context.setDefaultNavigationTimeout(WAIT);
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (err) => page.problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') page.problems.push(`console error: ${msg.text()}`);
  });
  page.on('requestfailed', (req) => {
    // sockets the page closes on purpose show up as aborted requests
    if (req.resourceType() !== 'websocket') page.problems.push(`request failed: ${req.url()} ${req.failure()?.errorText}`);
  });
  page.on('response', (res) => {
    if (res.status() >= 400) page.problems.push(`HTTP ${res.status()} for ${res.url()}`);
  });
  return page;
}

export function assertNoProblems(page) {
  assert.deepEqual(page.problems, [], `problems on ${page.url()}`);
}

/** Opens `path` on the server and waits for the page's scripts to have run. */
export async function open(page, urlPath) {
  const res = await page.goto(BASE + urlPath, { waitUntil: 'load' });
  assert.equal(res.status(), 200, `GET ${urlPath}`);
  return res;
}

/** Waits (bounded) until the element's data-count attribute is at least `n`; returns it. */
export async function waitForCount(page, selector, n, timeout = WAIT) {
  try {
    const handle = await page.waitForFunction(
      ([sel, min]) => {
        const el = document.querySelector(sel);
        const v = el ? Number(el.dataset.count) : NaN;
        return v >= min ? v : false;
      },
      [selector, n],
      { timeout },
    );
    return handle.jsonValue();
  } catch (err) {
    const now = await page.locator(selector).getAttribute('data-count').catch(() => null);
    throw new Error(`${selector}: data-count did not reach ${n} in ${timeout} ms (it is ${now})`, { cause: err });
  }
}

/** Screenshot to $SOCKEYE_SCREENSHOTS/NAME.png when that is set (for looking at the pages). */
export async function shot(page, name) {
  const dir = process.env.SOCKEYE_SCREENSHOTS;
  if (!dir) return;
  fs.mkdirSync(dir, { recursive: true });
  await page.evaluate(() => { document.activeElement?.blur(); window.scrollTo(0, 0); });
  await page.screenshot({ path: path.join(dir, `${name}.png`), fullPage: true });
}

/** A name no earlier run against the same server used. */
export function unique(prefix) {
  return `${prefix}${Date.now().toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
}
