// sockeye's browser client for the JSON protocol (docs/PROTOCOL.md).
//
//   import { SockeyeClient, wsUrl } from '/ws.js';
//   const client = new SockeyeClient(wsUrl('/ws', { user: 'alice' }));
//   client.addEventListener('message', (e) => console.log(e.detail.topic, e.detail.data));
//   client.start();
//   await client.subscribe('feed:stocks');
//
// It reconnects with exponential backoff (with jitter) when the socket drops,
// and on every new connection subscribes and joins again with `since` set to
// the last position it handled per topic, so a page misses nothing and sees
// nothing twice (or gets a `gap` event when the server's history no longer
// reaches back that far).
//
// Events (CustomEvent, the frame or a summary in `detail`):
//   state     {state, attempt, retryIn}   state: idle | connecting | open | reconnecting | closed
//   welcome   the welcome frame           (the connection is ready)
//   message   a message frame             (duplicates already dropped)
//   gap       a gap frame
//   presence  a presence frame
//   members   a members frame
//   ack       an ack frame
//   error     an error frame              (requests also reject their promise)
//   close     {code, reason, wasClean}    (before reconnecting)

/** Valid user ids: what the server accepts in `?user=`. */
export const USER_RE = /^[A-Za-z0-9_-]{1,32}$/;
/** Valid topic and room names. */
export const TOPIC_RE = /^[A-Za-z0-9_.:-]{1,128}$/;

/** ws:// (or wss:// on an https page) URL of `path` on this page's host. */
export function wsUrl(path, params = {}) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = new URL(path, `${scheme}//${location.host}`);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
  }
  return url.toString();
}

/** An error frame as an Error: `code` is the protocol's error code. */
export class ProtocolError extends Error {
  constructor(frame) {
    super(frame.message || frame.code || 'error');
    this.name = 'ProtocolError';
    this.code = frame.code || 'closed';
    this.frame = frame;
  }
}

const DEFAULTS = {
  initialDelay: 500, // ms before the first retry
  maxDelay: 10_000, // ms, ceiling of the backoff
  factor: 2,
  jitter: 0.3, // a retry waits between (1 - jitter) and 1 times the delay
  connectTimeout: 10_000, // ms for the socket to open and the welcome to arrive
  requestTimeout: 10_000, // ms for an answer to a request
};

export class SockeyeClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.state = 'idle';
    this.user = null;
    this.connection = null;
    this.attempt = 0; // failed attempts since the last welcome
    this.ws = null;
    this._subs = new Map(); // topic -> { kind: 'subscribe' | 'join', position, waiters }
    this._pending = new Map(); // id -> { resolve, reject, timer }
    this._nextId = 1;
    this._retryTimer = null;
    this._connectTimer = null;
    this._stopped = true;
    this._onOnline = () => {
      if (this.state === 'reconnecting') this._connectNow();
    };
  }

  /** Connects (and keeps reconnecting until stop()). */
  start() {
    if (!this._stopped) return this;
    this._stopped = false;
    this.attempt = 0;
    window.addEventListener('online', this._onOnline);
    this._connectNow();
    return this;
  }

  /** Closes the socket and stops reconnecting. Subscriptions are forgotten. */
  stop(code = 1000, reason = 'bye') {
    this._stopped = true;
    window.removeEventListener('online', this._onOnline);
    clearTimeout(this._retryTimer);
    clearTimeout(this._connectTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(code, reason);
    }
    this._failPending('client stopped');
    for (const sub of this._subs.values()) this._settleWaiters(sub, null, new ProtocolError({ code: 'closed', message: 'client stopped' }));
    this._subs.clear();
    this._setState('closed');
  }

  get isOpen() {
    return this.state === 'open';
  }

  /** Subscribes to `topic`, now and after every reconnect. Resolves with the ack. */
  subscribe(topic) {
    return this._track(topic, 'subscribe');
  }

  /** Joins `room` (subscribe + presence), now and after every reconnect. */
  join(room) {
    return this._track(room, 'join');
  }

  unsubscribe(topic) {
    this._untrack(topic);
    return this.isOpen ? this.request({ type: 'unsubscribe', topic }) : Promise.resolve(null);
  }

  leave(room) {
    this._untrack(room);
    return this.isOpen ? this.request({ type: 'leave', room }) : Promise.resolve(null);
  }

  /** Resolves with the members frame. */
  members(room) {
    return this.request({ type: 'members', room });
  }

  /** Resolves with the ack (its position is the new message's). */
  publish(topic, data) {
    return this.request({ type: 'publish', topic, data });
  }

  /** Last position handled for `topic` ({epoch, offset}) or null. */
  position(topic) {
    return this._subs.get(topic)?.position ?? null;
  }

  /** Topics and rooms this client keeps subscribed. */
  topics() {
    return [...this._subs.keys()];
  }

  /** Sends a request with a fresh id; resolves with the answer, rejects with a ProtocolError. */
  request(frame) {
    if (!this.isOpen) {
      return Promise.reject(new ProtocolError({ code: 'closed', message: 'not connected' }));
    }
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new ProtocolError({ code: 'timeout', message: `no answer to ${frame.type} in ${this.options.requestTimeout} ms` }));
      }, this.options.requestTimeout);
      this._pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  // ---- internals -----------------------------------------------------------

  _track(topic, kind) {
    let sub = this._subs.get(topic);
    if (!sub) {
      sub = { kind, position: null, waiters: [] };
      this._subs.set(topic, sub);
    } else if (kind === 'join') {
      sub.kind = 'join';
    }
    const done = new Promise((resolve, reject) => sub.waiters.push({ resolve, reject }));
    if (this.isOpen) this._sendSub(topic, sub);
    return done;
  }

  _untrack(topic) {
    const sub = this._subs.get(topic);
    if (!sub) return;
    this._subs.delete(topic);
    this._settleWaiters(sub, null, null);
  }

  _settleWaiters(sub, value, error) {
    const waiters = sub.waiters.splice(0);
    for (const w of waiters) (error ? w.reject(error) : w.resolve(value));
  }

  _sendSub(topic, sub) {
    const frame = sub.kind === 'join' ? { type: 'join', room: topic } : { type: 'subscribe', topic };
    if (sub.position) frame.since = { epoch: sub.position.epoch, offset: sub.position.offset };
    this.request(frame).then(
      (ack) => {
        if (this._subs.get(topic) !== sub) return;
        if (!sub.position && ack.position) sub.position = ack.position;
        this._settleWaiters(sub, ack, null);
      },
      (err) => {
        if (this._subs.get(topic) !== sub) return;
        if (err.code === 'closed' || err.code === 'timeout') return; // retried on the next connection
        this._subs.delete(topic); // refused (too_many_topics, forbidden, ...): do not retry
        this._settleWaiters(sub, null, err);
      },
    );
  }

  _connectNow() {
    clearTimeout(this._retryTimer);
    if (this._stopped) return;
    this._setState(this.attempt === 0 && !this.user ? 'connecting' : 'reconnecting', { retryIn: 0 });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._emit('close', { code: 0, reason: String(err), wasClean: false });
      this._scheduleRetry();
      return;
    }
    this.ws = ws;
    this._connectTimer = setTimeout(() => {
      if (this.ws === ws && this.state !== 'open') ws.close(4000, 'connect timeout');
    }, this.options.connectTimeout);
    ws.onmessage = (ev) => this._onFrame(ev.data);
    ws.onclose = (ev) => this._onClose(ws, ev);
    ws.onerror = () => {}; // onclose follows and carries the details
  }

  _onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    switch (frame.type) {
      case 'welcome':
        clearTimeout(this._connectTimer);
        this.user = frame.user;
        this.connection = frame.connection;
        this.attempt = 0;
        this._setState('open');
        this._emit('welcome', frame);
        for (const [topic, sub] of this._subs) this._sendSub(topic, sub);
        return;
      case 'ack':
      case 'members':
        this._answer(frame, null);
        this._emit(frame.type, frame);
        return;
      case 'error':
        this._answer(frame, new ProtocolError(frame));
        this._emit('error', frame);
        return;
      case 'message': {
        const sub = this._subs.get(frame.topic);
        if (sub && frame.position) {
          const last = sub.position;
          if (last && last.epoch === frame.position.epoch && frame.position.offset <= last.offset) return; // seen
          sub.position = frame.position;
        }
        this._emit('message', frame);
        return;
      }
      case 'gap': {
        const sub = this._subs.get(frame.topic);
        if (sub) sub.position = null; // the next ack or message sets it again
        this._emit('gap', frame);
        return;
      }
      default:
        this._emit(frame.type, frame);
    }
  }

  _answer(frame, error) {
    if (frame.id === undefined || frame.id === null) return;
    const p = this._pending.get(frame.id);
    if (!p) return;
    this._pending.delete(frame.id);
    clearTimeout(p.timer);
    if (error) p.reject(error);
    else p.resolve(frame);
  }

  _onClose(ws, ev) {
    if (this.ws !== ws) return;
    clearTimeout(this._connectTimer);
    this.ws = null;
    this._failPending('connection closed');
    this._emit('close', { code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
    if (this._stopped) return;
    if (ev.code === 1008) {
      // policy violation: retrying would only be refused again
      this._stopped = true;
      this._setState('closed', { code: ev.code, reason: ev.reason });
      return;
    }
    this._scheduleRetry();
  }

  _scheduleRetry() {
    this.attempt += 1;
    const { initialDelay, maxDelay, factor, jitter } = this.options;
    const base = Math.min(maxDelay, initialDelay * factor ** (this.attempt - 1));
    const delay = Math.round(base * (1 - jitter * Math.random()));
    this._setState('reconnecting', { retryIn: delay, retryAt: Date.now() + delay });
    this._retryTimer = setTimeout(() => this._connectNow(), delay);
  }

  _failPending(why) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new ProtocolError({ code: 'closed', message: why }));
    }
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit('state', { state, attempt: this.attempt, ...extra });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * Shows the client's state in `el` (the nav bar's status pill): sets
 * `data-state` and a short text, with a countdown while waiting to retry.
 */
export function bindStatus(client, el) {
  let countdown = null;
  const show = (d) => {
    clearInterval(countdown);
    el.dataset.state = d.state;
    const label = el.querySelector('.status-text') || el;
    switch (d.state) {
      case 'open':
        label.textContent = 'connected';
        el.title = `connected as ${client.user} (${client.connection})`;
        break;
      case 'connecting':
        label.textContent = 'connecting…';
        break;
      case 'reconnecting': {
        if (!d.retryAt) {
          label.textContent = 'reconnecting…';
          break;
        }
        const tick = () => {
          const s = Math.max(0, Math.ceil((d.retryAt - Date.now()) / 1000));
          label.textContent = s > 0 ? `offline · retry in ${s}s` : 'reconnecting…';
        };
        tick();
        countdown = setInterval(tick, 250);
        el.title = `attempt ${d.attempt}`;
        break;
      }
      case 'closed':
        label.textContent = 'disconnected';
        break;
      default:
        label.textContent = 'idle';
    }
  };
  client.addEventListener('state', (e) => show(e.detail));
  show({ state: client.state });
}

/** Escapes nothing: builds DOM nodes. `h('li', {class: 'x'}, 'text', child)` */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** "14:03:07" (or with milliseconds) in the browser's locale-neutral 24 h form. */
export function clock(date = new Date(), ms = false) {
  const p = (n, w = 2) => String(n).padStart(w, '0');
  const base = `${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}`;
  return ms ? `${base}.${p(date.getMilliseconds(), 3)}` : base;
}
