// The sockeye tunnel inspector: loads /api, then follows /api/live.
// Records are kept by id; a live event replaces the record it names.
'use strict';

const state = {
  tab: 'http',
  requests: new Map(),   // id -> summary
  websockets: new Map(), // id -> summary
  tunnels: new Map(),    // name -> tunnel
  selected: null,        // {kind: 'http'|'ws', id}
  messages: new Map(),   // websocket id -> Map(seq -> message), for the selected one
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function time(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function size(n) {
  if (n === undefined || n === null) return '';
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1024 / 1024).toFixed(1) + ' MiB';
}

function duration(ms) {
  if (ms === undefined || ms === null) return '';
  if (ms < 1) return (ms * 1000).toFixed(0) + ' µs';
  if (ms < 1000) return ms.toFixed(1) + ' ms';
  return (ms / 1000).toFixed(2) + ' s';
}

function content(c) {
  if (!c) return '';
  if ('text' in c) return c.text;
  return '(binary, base64) ' + c.base64;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const type = response.headers.get('content-type') || '';
  const body = type.includes('json') ? await response.json() : await response.text();
  if (!response.ok) throw new Error((body && body.error) || response.statusText);
  return body;
}

// ---- lists ----

function renderTunnels() {
  const box = $('tunnels');
  box.replaceChildren(...[...state.tunnels.values()].map((t) => el('div', { class: 'tunnel', 'data-testid': 'tunnel', dataset: { name: t.name } },
    el('strong', {}, t.name),
    el('a', { href: t.public_url, target: '_blank', rel: 'noopener' }, t.public_url),
    el('span', { class: 'muted' }, '→ ' + t.local),
    el('span', { class: 'state ' + t.status, 'data-testid': 'tunnel-state', title: t.reason || '' }, t.status),
    t.capture_frames ? el('span', { class: 'badge' }, 'capturing frames') : null,
  )));
}

function statusClass(status) {
  return status ? 's' + String(status)[0] : '';
}

function renderLists() {
  const httpBody = $('http-list').tBodies[0];
  const wsBody = $('ws-list').tBodies[0];
  const requests = [...state.requests.values()].sort((a, b) => b.id - a.id);
  const sockets = [...state.websockets.values()].sort((a, b) => b.id - a.id);
  httpBody.replaceChildren(...requests.map((r) => el('tr', {
    'data-testid': 'request-row', dataset: { id: r.id },
    class: state.selected && state.selected.kind === 'http' && state.selected.id === r.id ? 'selected' : '',
    onclick: () => select('http', r.id),
  },
    el('td', {}, time(r.started_ms)),
    el('td', {}, r.method, r.replay_of ? el('span', { class: 'badge' }, 'replay') : null),
    el('td', { class: 'path', title: r.uri }, r.uri),
    el('td', { class: statusClass(r.status), 'data-testid': 'request-status' }, r.error ? 'error' : (r.status || '…')),
    el('td', {}, duration(r.duration_ms)),
    el('td', {}, r.upgrade ? 'WebSocket' : size(r.response_size)),
  )));
  wsBody.replaceChildren(...sockets.map((w) => el('tr', {
    'data-testid': 'ws-row', dataset: { id: w.id },
    class: state.selected && state.selected.kind === 'ws' && state.selected.id === w.id ? 'selected' : '',
    onclick: () => select('ws', w.id),
  },
    el('td', {}, time(w.opened_ms)),
    el('td', { class: 'path', title: w.uri }, w.uri),
    el('td', { 'data-testid': 'ws-state' }, w.open ? 'open' : 'closed ' + (w.close ? w.close.code : '')),
    el('td', { 'data-testid': 'ws-messages-up' }, w.client_to_backend.messages),
    el('td', { 'data-testid': 'ws-messages-down' }, w.backend_to_client.messages),
    el('td', {}, size(w.client_to_backend.bytes) + ' / ' + size(w.backend_to_client.bytes)),
  )));
  $('count-http').textContent = requests.length;
  $('count-ws').textContent = sockets.length;
  const shown = state.tab === 'http' ? requests.length : sockets.length;
  $('empty').classList.toggle('hidden', shown > 0);
}

function setTab(tab) {
  state.tab = tab;
  $('tab-http').setAttribute('aria-selected', String(tab === 'http'));
  $('tab-ws').setAttribute('aria-selected', String(tab === 'ws'));
  $('http-list').classList.toggle('hidden', tab !== 'http');
  $('ws-list').classList.toggle('hidden', tab !== 'ws');
  renderLists();
}

// ---- details ----

function headers(list) {
  return el('dl', { class: 'kv' }, ...list.flatMap(([name, value]) => [el('dt', {}, name), el('dd', {}, value)]));
}

function bodyView(title, body) {
  if (!body || body.size === 0) return el('p', { class: 'muted' }, title + ': empty');
  const note = body.whole ? size(body.size) : `${size(body.shown)} of ${size(body.size)} shown`;
  return el('div', {}, el('h4', {}, `${title} (${note})`), el('pre', { class: 'body' }, content(body.content)));
}

async function select(kind, id) {
  state.selected = { kind, id };
  renderLists();
  const pane = $('detail');
  try {
    if (kind === 'http') {
      const r = await api(`/api/requests/${id}`);
      pane.replaceChildren(
        el('h3', {}, `${r.method} ${r.uri}`),
        el('p', {}, el('span', { class: statusClass(r.status) }, r.status || (r.error ? 'failed' : 'pending')),
          ' · ', duration(r.duration_ms), ' · from ', r.remote, r.source === 'tunnel' ? ' · answered by the tunnel' : ''),
        r.error ? el('p', { class: 'notice' }, r.error) : null,
        el('div', { class: 'actions' },
          r.upgrade ? null : el('button', { type: 'button', 'data-testid': 'replay', onclick: () => replay(id) }, 'Replay'),
          r.websocket ? el('button', { type: 'button', onclick: () => { setTab('ws'); select('ws', r.websocket); } }, 'Show the WebSocket') : null),
        el('div', { class: 'result', id: 'action-result' }),
        el('h4', {}, 'Request headers'), headers(r.request_headers),
        bodyView('Request body', r.request_body),
        el('h4', {}, 'Response headers'), headers(r.response_headers),
        bodyView('Response body', r.response_body),
      );
    } else {
      const w = await api(`/api/websockets/${id}`);
      state.messages.set(id, new Map((w.messages || []).map((m) => [m.seq, m])));
      renderWebsocket(w);
    }
  } catch (error) {
    pane.replaceChildren(el('p', { class: 'notice' }, String(error.message || error)));
  }
}

function renderWebsocket(w) {
  const pane = $('detail');
  const up = w.client_to_backend, down = w.backend_to_client;
  const messages = [...(state.messages.get(w.id) || new Map()).values()].sort((a, b) => a.seq - b.seq);
  pane.replaceChildren(
    el('h3', {}, `WebSocket ${w.uri}`),
    el('p', { 'data-testid': 'ws-detail-state' }, w.open ? 'open' : `closed with ${w.close ? w.close.code : '?'}${w.close && w.close.reason ? ' "' + w.close.reason + '"' : ''} by ${w.close ? w.close.by : '?'}`,
      ' · ', duration(w.duration_ms),
      w.protocol ? ' · subprotocol ' + w.protocol : '',
      w.extensions ? ' · ' + w.extensions : ''),
    el('dl', { class: 'kv' },
      el('dt', {}, 'client → local'), el('dd', { 'data-testid': 'detail-up' }, `${up.messages} messages, ${up.frames} frames, ${size(up.bytes)}${up.last_ms ? ', last ' + time(up.last_ms) : ''}`),
      el('dt', {}, 'local → client'), el('dd', { 'data-testid': 'detail-down' }, `${down.messages} messages, ${down.frames} frames, ${size(down.bytes)}${down.last_ms ? ', last ' + time(down.last_ms) : ''}`)),
    el('div', { class: 'actions' },
      w.capture ? el('a', { href: `/api/websockets/${w.id}/export`, 'data-testid': 'export', download: `websocket-${w.id}.sh` }, 'Export as a sockeye connect script') : null),
    el('div', { class: 'result', id: 'action-result' }),
    w.capture ? el('h4', {}, 'Messages' + (w.dropped_messages ? ` (the first ${w.dropped_messages} no longer kept)` : ''))
      : el('p', { class: 'muted' }, 'Frame capture is off for this tunnel: start it with --capture-frames to see messages.'),
    w.capture ? el('ol', { class: 'timeline', 'data-testid': 'timeline' }, ...messages.map((m) => messageRow(w, m))) : null,
    el('h4', {}, 'Handshake request headers'), headers(w.request_headers || []),
  );
}

function messageRow(w, m) {
  const out = m.direction === 'client_to_backend';
  const ratio = m.compression_ratio ? ` · deflated to ${size(m.wire_size)} (${Math.round(m.compression_ratio * 100)}%)` : '';
  const preview = m.opcode === 'close' ? `${m.close_code || ''} ${m.close_reason || ''}` : content(m.preview);
  return el('li', { class: m.opcode === 'close' ? 'close' : '', 'data-testid': 'message', dataset: { seq: m.seq } },
    el('span', { class: 'muted' }, time(m.at_ms).slice(0, 8)),
    el('span', { class: out ? 'dir-out' : 'dir-in', title: out ? 'client → local server' : 'local server → client' }, out ? '↑' : '↓'),
    el('span', {}, m.opcode),
    el('span', { title: m.compressed ? `${m.wire_size} bytes on the wire` : '' }, size(m.size) + ratio),
    el('span', { class: 'preview', title: preview }, preview + (m.whole ? '' : ' …')),
    out && m.whole && (m.opcode === 'text' || m.opcode === 'binary')
      ? el('button', { type: 'button', class: 'small', 'data-testid': 'resend', onclick: () => resend(w.id, m.seq) }, 'Resend')
      : el('span'),
  );
}

async function replay(id) {
  const out = $('action-result');
  try {
    const result = await api(`/api/requests/${id}/replay`, { method: 'POST' });
    out.textContent = `replayed as request ${result.id}: ${result.request && result.request.status}`;
  } catch (error) {
    out.textContent = 'replay failed: ' + error.message;
  }
}

async function resend(id, seq) {
  const out = $('action-result');
  try {
    const result = await api(`/api/websockets/${id}/messages/${seq}/resend`, { method: 'POST' });
    out.textContent = `sent on a new connection to ${result.url}; replies: ` +
      (result.replies.length ? result.replies.map((r) => content(r.preview)).join(' | ') : 'none within a second');
  } catch (error) {
    out.textContent = 'resend failed: ' + error.message;
  }
}

// ---- live ----

function onEvent(event) {
  if (event.type === 'request') {
    state.requests.set(event.request.id, event.request);
  } else if (event.type === 'websocket') {
    const w = event.websocket;
    state.websockets.set(w.id, w);
    if (state.selected && state.selected.kind === 'ws' && state.selected.id === w.id) {
      const kept = state.messages.get(w.id) || new Map();
      for (const m of event.messages || []) kept.set(m.seq, m);
      state.messages.set(w.id, kept);
      api(`/api/websockets/${w.id}`).then((detail) => {
        if (state.selected && state.selected.id === w.id) {
          for (const m of detail.messages || []) kept.set(m.seq, m);
          renderWebsocket(detail);
        }
      }).catch(() => {});
    }
  } else if (event.type === 'tunnel') {
    state.tunnels.set(event.tunnel.name, event.tunnel);
    renderTunnels();
  }
  renderLists();
}

async function loadAll() {
  const [tunnels, requests, sockets] = await Promise.all([
    api('/api/tunnels'), api('/api/requests'), api('/api/websockets'),
  ]);
  for (const t of tunnels.tunnels) state.tunnels.set(t.name, t);
  for (const r of requests.requests) state.requests.set(r.id, r);
  for (const w of sockets.websockets) state.websockets.set(w.id, w);
  renderTunnels();
  renderLists();
}

let retry = 500;
function connectLive() {
  const live = $('live');
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/live`);
  ws.onopen = () => {
    retry = 500;
    live.textContent = 'live';
    live.dataset.state = 'live';
    // Subscribed first, then the snapshot: nothing falls between the two.
    loadAll().catch((error) => { live.textContent = 'failed to load: ' + error.message; });
  };
  ws.onmessage = (message) => {
    try { onEvent(JSON.parse(message.data)); } catch (error) { console.error(error); }
  };
  ws.onclose = () => {
    live.textContent = 'disconnected, retrying…';
    live.dataset.state = 'down';
    setTimeout(connectLive, retry);
    retry = Math.min(retry * 2, 5000);
  };
}

$('tab-http').addEventListener('click', () => setTab('http'));
$('tab-ws').addEventListener('click', () => setTab('ws'));
$('clear').addEventListener('click', async () => {
  await api('/api/requests', { method: 'DELETE' }).catch(() => {});
  state.requests.clear();
  for (const [id, w] of state.websockets) if (!w.open) state.websockets.delete(id);
  renderLists();
});
connectLive();
