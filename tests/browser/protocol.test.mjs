// The JSON protocol at /ws, frame by frame, from a browser (docs/PROTOCOL.md).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage, open, assertNoProblems, unique, WAIT, TEST_TIMEOUT } from './helpers.mjs';

let browser, page;
before(async () => {
  browser = await launch();
  page = await newPage(browser);
  await open(page, '/');
  // window.session(user) opens /ws and returns a handle: send(obj), next(match) -> { frame, seq }
  await page.evaluate((wait) => {
    window.session = (user) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://${location.host}/ws${user ? `?user=${user}` : ''}`);
      const frames = []; // [{ frame, seq, used }]
      const waiters = [];
      let seq = 0;
      const matches = (f, match) => Object.entries(match).every(([k, v]) => JSON.stringify(f[k]) === JSON.stringify(v));
      // next(match) resolves with the first unused frame like `match` (and its arrival number, seq)
      const check = () => {
        for (const w of [...waiters]) {
          const hit = frames.find((e) => !e.used && matches(e.frame, w.match));
          if (hit) {
            hit.used = true;
            waiters.splice(waiters.indexOf(w), 1);
            clearTimeout(w.timer);
            w.resolve({ frame: hit.frame, seq: hit.seq });
          }
        }
      };
      const s = {
        send: (obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)),
        next: (match) => new Promise((res, rej) => {
          const w = { match, resolve: res, timer: setTimeout(() => rej(new Error(`no frame like ${JSON.stringify(match)} in ${wait} ms; have ${JSON.stringify(frames.filter((e) => !e.used).map((e) => e.frame))}`)), wait) };
          waiters.push(w);
          check();
        }),
        unused: () => frames.filter((e) => !e.used),
        close: () => ws.close(1000),
      };
      ws.onmessage = (e) => { frames.push({ frame: JSON.parse(e.data), seq: seq++, used: false }); check(); };
      ws.onopen = () => resolve(s);
      ws.onerror = () => reject(new Error('cannot open /ws'));
    });
  }, WAIT);
});
after(async () => {
  await page?.context().close();
  await browser?.close();
});

/** Runs `body(s)` in the page with a fresh session `s` as user `user`; returns its result. */
function inPage(user, body) {
  return page.evaluate(async ([u, src]) => {
    const s = await window.session(u);
    try {
      return await (0, eval)(`(${src})`)(s);
    } finally {
      s.close();
    }
  }, [user, body.toString()]);
}

test('welcome carries the user from ?user=, or an anon-<n> name', { timeout: TEST_TIMEOUT }, async () => {
  const named = await inPage('carol_1', async (s) => (await s.next({ type: 'welcome' })).frame);
  assert.equal(named.user, 'carol_1');
  assert.equal(typeof named.connection, 'string');
  const anon = await inPage('', async (s) => (await s.next({ type: 'welcome' })).frame);
  assert.match(anon.user, /^anon-\d+$/);
  assert.notEqual(anon.connection, named.connection);
});

test('errors echo the id and keep the connection open', { timeout: TEST_TIMEOUT }, async () => {
  const r = await inPage('dave', async (s) => {
    await s.next({ type: 'welcome' });
    s.send('not json');
    const badJson = (await s.next({ type: 'error' })).frame;
    s.send({ type: 'frobnicate', id: 7 });
    const unknown = (await s.next({ type: 'error', id: 7 })).frame;
    s.send({ type: 'subscribe', id: 'x1' });
    const missing = (await s.next({ type: 'error', id: 'x1' })).frame;
    s.send({ type: 'publish', id: 'p1', topic: 'feed:stocks', data: { price: 1 } });
    const forbidden = (await s.next({ type: 'error', id: 'p1' })).frame;
    s.send({ type: 'members', id: 8, room: 'chat:nobody-here' });
    const members = (await s.next({ type: 'members', id: 8 })).frame;
    return { badJson, unknown, missing, forbidden, members };
  });
  assert.equal(r.badJson.code, 'bad_json');
  assert.equal(r.unknown.code, 'unknown_type');
  assert.equal(r.missing.code, 'missing_field');
  assert.equal(r.forbidden.code, 'forbidden');
  for (const e of [r.badJson, r.unknown, r.missing, r.forbidden]) assert.equal(typeof e.message, 'string');
  assert.deepEqual([r.members.users, r.members.count], [[], 0]);
});

test('publish, ack and message carry positions; since from another epoch gives a gap, then the ack', { timeout: TEST_TIMEOUT }, async () => {
  const topic = unique('test:');
  const r = await inPage('erin', async function (s) {
    const topic = this_topic; // replaced below
    await s.next({ type: 'welcome' });
    s.send({ type: 'subscribe', id: 1, topic });
    const sub = (await s.next({ type: 'ack', id: 1 })).frame;
    s.send({ type: 'publish', id: 2, topic, data: { n: 1 } });
    const pub = (await s.next({ type: 'ack', id: 2 })).frame;
    const msg = (await s.next({ type: 'message', topic })).frame;
    s.send({ type: 'unsubscribe', id: 3, topic });
    const unsub = (await s.next({ type: 'ack', id: 3 })).frame;
    s.send({ type: 'subscribe', id: 4, topic, since: { epoch: 'no-such-epoch', offset: 1 } });
    const gap = await s.next({ type: 'gap', topic });
    const ack = await s.next({ type: 'ack', id: 4 });
    return { sub, pub, msg, unsub, gap: gap.frame, ackAfterGap: ack.frame, gapFirst: gap.seq < ack.seq };
  }.toString().replace('this_topic', JSON.stringify(topic)));
  assert.equal(r.sub.op, 'subscribe');
  assert.equal(r.sub.topic, topic);
  assert.equal(r.sub.position.offset, 0, 'a new topic is at offset 0');
  assert.equal(typeof r.sub.position.epoch, 'string');
  assert.equal(r.pub.op, 'publish');
  assert.deepEqual(r.pub.position, { epoch: r.sub.position.epoch, offset: 1 });
  assert.deepEqual(r.msg.data, { n: 1 });
  assert.equal(r.msg.from, 'erin');
  assert.deepEqual(r.msg.position, r.pub.position);
  assert.equal(r.unsub.op, 'unsubscribe');
  assert.equal(typeof r.gap.message, 'string');
  assert.ok(r.gapFirst, 'the gap comes before the ack');
  assert.deepEqual(r.ackAfterGap.position, r.pub.position, 'the ack after a gap has the latest position');
});

test('join and leave announce presence; members lists distinct users', { timeout: TEST_TIMEOUT }, async () => {
  const room = unique('chat:t');
  const r = await page.evaluate(async (room) => {
    const a = await window.session('frank');
    const b = await window.session('grace');
    try {
      await a.next({ type: 'welcome' });
      await b.next({ type: 'welcome' });
      a.send({ type: 'join', id: 1, room });
      const ackA = (await a.next({ type: 'ack', id: 1 })).frame;
      const selfJoin = (await a.next({ type: 'presence', room })).frame;
      b.send({ type: 'join', id: 1, room });
      await b.next({ type: 'ack', id: 1 });
      const seen = (await a.next({ type: 'presence', room, user: 'grace' })).frame;
      // a second connection of a user already there is not announced
      const a2 = await window.session('frank');
      await a2.next({ type: 'welcome' });
      a2.send({ type: 'join', id: 1, room });
      await a2.next({ type: 'ack', id: 1 });
      a.send({ type: 'members', id: 2, room });
      const members = await a.next({ type: 'members', id: 2 });
      const extra = a.unused().filter((e) => e.frame.type === 'presence' && e.frame.user === 'frank' && e.seq < members.seq).map((e) => e.frame);
      a2.close();
      b.send({ type: 'leave', id: 2, room });
      const leaveAck = (await b.next({ type: 'ack', id: 2 })).frame;
      const left = (await a.next({ type: 'presence', room, user: 'grace' })).frame;
      return { ackA, selfJoin, seen, members: members.frame, extra, leaveAck, left };
    } finally {
      a.close();
      b.close();
    }
  }, room);
  assert.equal(r.ackA.op, 'join');
  assert.equal(r.ackA.room, room);
  assert.deepEqual(r.selfJoin, { type: 'presence', room, event: 'join', user: 'frank', count: 1 });
  assert.deepEqual(r.seen, { type: 'presence', room, event: 'join', user: 'grace', count: 2 });
  assert.deepEqual([r.members.users, r.members.count], [['frank', 'grace'], 2]);
  assert.deepEqual(r.extra, [], 'a second connection of frank is not announced');
  assert.equal(r.leaveAck.op, 'leave');
  assert.deepEqual(r.left, { type: 'presence', room, event: 'leave', user: 'grace', count: 1 });
  assertNoProblems(page);
});
