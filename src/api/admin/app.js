// faaswap admin UI. Plain ES2020, no build step and no framework: the page is embedded in the
// binary and served under a strict CSP (scripts and styles from 'self' only), so everything is
// built here with DOM calls. It reads only the public API, as any client would.
//
// Names (functions, models, devices) come from the server and are user-chosen, so they are
// only ever written with textContent / attributes, never through innerHTML.
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'faaswap.token';
const EVENT_ROWS = 200; // rows kept in the event feed
const CHART_WINDOW_MS = 5 * 60 * 1000; // longest time span the latency chart shows
const POLL_MS = 2000;

let token = localStorage.getItem(TOKEN_KEY) || '';
const state = { devices: [], functions: [], series: new Map() }; // series: chart points per function
const rendered = { devices: '', functions: '', genNames: '', packages: '' }; // skip no-op re-renders

// ---------------------------------------------------------------------------------------------
// Small helpers

/** el('td', {class: 'x', 'data-testid': 'y'}, 'text', childNode, ...) */
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null) continue;
    if (k === 'class') e.className = v;
    else if (k.includes('-') || k === 'title') e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children.filter((c) => c != null).map((c) => (typeof c === 'number' ? String(c) : c)));
  return e;
}

function fmtBytes(n) {
  if (n == null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function fmtMs(x) {
  if (x == null || !Number.isFinite(x)) return '—';
  return `${x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : Math.round(x)} ms`;
}

function fmtTime(ts) {
  const d = new Date(ts);
  return `${d.toTimeString().slice(0, 8)}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

/** A colour per function, shared by the memory map and the chart: hues in order of first
 * sight, a golden angle apart, so that similar names (f1, f2, …) still look different. */
const colours = new Map();
function colour(name) {
  if (!colours.has(name)) colours.set(name, `hsl(${Math.round((colours.size * 137.508 + 250) % 360)} 55% 47%)`);
  return colours.get(name);
}

let messageTimer = 0;
function showMessage(text, kind = 'error') {
  const m = $('message');
  m.textContent = text;
  m.className = kind;
  m.hidden = false;
  clearTimeout(messageTimer);
  messageTimer = setTimeout(() => { m.hidden = true; }, 8000);
}

// ---------------------------------------------------------------------------------------------
// HTTP and WebSocket access with the operator's token

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (res.status === 401) askToken();
  if (!res.ok) {
    const msg = (data && data.error) || `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, data && data.code, msg);
  }
  return data;
}

// Browsers cannot set headers on a WebSocket, so the token travels as a query parameter.
function wsUrl(path) {
  const u = new URL(path, location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (token) u.search = `?token=${encodeURIComponent(token)}`;
  return u.href;
}

function askToken() {
  const d = $('token-dialog');
  if (d.open) return;
  $('token-input').value = token;
  d.showModal();
}

function setToken(value) {
  token = value.trim();
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  connectFeed(); // the feed was opened (or refused) with the old token
  refreshAll();
}

// ---------------------------------------------------------------------------------------------
// Devices: id, kind and memory map

function renderDevices(devices) {
  state.devices = devices;
  const key = JSON.stringify(devices);
  if (key === rendered.devices) return;
  rendered.devices = key;
  $('devices').replaceChildren(...devices.map(deviceCard));
}

function deviceCard(d) {
  const cap = d.capacity_bytes || 1;
  const bar = el('div', { class: 'memmap', 'data-testid': `memmap-${d.id}` });
  const legend = el('ul', { class: 'mem-legend' });
  for (const r of d.resident || []) {
    // Place each model where its pages are, so fragmentation is visible.
    const seg = el('div', { class: 'seg', title: `${r.function}: ${fmtBytes(r.bytes)} in ${r.pages} page(s) from page ${r.first_page}` },
      r.function);
    seg.style.left = `${(100 * r.first_page * d.page_bytes) / cap}%`;
    seg.style.width = `${Math.max(0.5, (100 * r.pages * d.page_bytes) / cap)}%`;
    seg.style.background = colour(r.function);
    if (r.function === d.executing) seg.classList.add('executing');
    bar.append(seg);
    const swatch = el('i', { class: 'swatch' });
    swatch.style.background = colour(r.function);
    legend.append(el('li', { 'data-function': r.function }, swatch, el('b', {}, r.function), ` ${fmtBytes(r.bytes)}`,
      el('span', { class: 'muted' }, ` (${r.pages} × ${fmtBytes(d.page_bytes)})`)));
  }
  legend.append(el('li', { class: 'free' }, el('i', { class: 'swatch free' }), `free ${fmtBytes(d.free_bytes)}`));
  // An unhealthy device gets no work until a health check passes.
  const status = d.healthy === false ? 'unhealthy' : d.executing ? `executing ${d.executing}` : d.busy ? 'busy' : 'idle';
  return el('div', { class: 'device', 'data-testid': `device-${d.id}`, 'data-device': d.id },
    el('div', { class: 'device-head' },
      el('strong', { class: 'device-id' }, d.id),
      el('span', { class: `kind kind-${d.kind}` }, d.kind),
      el('span', { class: `pill ${d.healthy === false ? 'unhealthy' : d.busy ? 'busy' : ''}` }, status)),
    bar, legend,
    el('div', { class: 'muted small' }, `${fmtBytes(d.used_bytes)} used of ${fmtBytes(d.capacity_bytes)}, pages of ${fmtBytes(d.page_bytes)}`));
}

// ---------------------------------------------------------------------------------------------
// Functions: table, invoke, SLO settings, undeploy

let armedUndeploy = null; // undeploy asks for a second click instead of a blocking confirm()

function renderFunctions(functions) {
  state.functions = functions;
  const key = JSON.stringify([functions, armedUndeploy]);
  if (key !== rendered.functions) {
    rendered.functions = key;
    const rows = functions.map(functionRow);
    if (!rows.length) rows.push(el('tr', {}, el('td', { colSpan: 7, class: 'muted' }, 'no function deployed')));
    $('functions').replaceChildren(...rows);
  }
  renderGenFunctions();
}

function functionRow(f) {
  const button = (action, label, cls) =>
    el('button', { type: 'button', class: cls, 'data-action': action, 'data-testid': `${action}-${f.name}` }, label);
  const armed = armedUndeploy === f.name;
  if (f.state === 'unavailable') {
    // Persisted but not served (its record unreadable or lost, its package changed): the
    // operator reads why and may delete it, which frees its name.
    return el('tr', { 'data-testid': `function-row-${f.name}`, 'data-function': f.name, class: 'unavailable' },
      el('td', { class: 'name' }, f.name),
      el('td', { colSpan: 5 }, el('span', { class: 'badge bad' }, f.unavailable.kind.replaceAll('_', ' ')),
        ' ', el('span', { class: 'muted' }, f.unavailable.reason)),
      el('td', { class: 'actions' },
        button('undeploy', armed ? 'Confirm delete' : 'Delete', armed ? 'danger armed' : 'danger')));
  }
  const slo = f.slo || {};
  const pct = `p${Math.round((slo.percentile ?? f.settings.slo_percentile) * 1000) / 10}`;
  const badge = slo.observed_ms == null
    ? el('span', { class: 'badge none' }, 'no data')
    : el('span', { class: `badge ${slo.compliant ? 'ok' : 'bad'}` }, slo.compliant ? 'met' : 'violated');
  return el('tr', { 'data-testid': `function-row-${f.name}`, 'data-function': f.name },
    el('td', { class: 'name' }, f.name),
    el('td', {}, f.model, el('span', { class: 'muted' }, ` ${f.model_type}`)),
    el('td', { class: 'num' }, f.queued),
    el('td', {}, badge),
    el('td', { class: 'num' }, `${fmtMs(slo.observed_ms)} @${pct} / ${fmtMs(slo.deadline_ms)}`,
      el('span', { class: 'muted' }, ` (${slo.window ?? 0} req)`)),
    el('td', { 'data-testid': `resident-${f.name}` }, f.resident_on.length ? f.resident_on.join(', ') : '—'),
    el('td', { class: 'actions' }, button('invoke', 'Invoke'), button('settings', 'SLO…'),
      button('undeploy', armed ? 'Confirm undeploy' : 'Undeploy', armed ? 'danger armed' : 'danger')));
}

$('functions').addEventListener('click', (e) => {
  const b = e.target.closest('button[data-action]');
  if (!b) return;
  const name = b.closest('tr').dataset.function;
  ({ invoke, settings: openSettings, undeploy })[b.dataset.action](name);
});

async function invoke(name) {
  const f = state.functions.find((x) => x.name === name);
  // A package with a tokenizer takes text; otherwise send a few token ids.
  const input = f && f.inputs.some((i) => i.name === 'text')
    ? { name: 'text', shape: [1], datatype: 'BYTES', data: ['hello world'] }
    : { name: 'input_ids', shape: [1, 3], datatype: 'INT64', data: [1, 2, 3] };
  const out = $('invoke-result');
  out.textContent = `invoking ${name}…`;
  try {
    const r = await api('POST', `/v2/models/${encodeURIComponent(name)}/infer`, { inputs: [input] });
    const p = r.parameters || {};
    const shapes = r.outputs.map((o) => `${o.name} [${o.shape.join('×')}]`).join(', ');
    out.textContent = `${name} → ${shapes} on ${p.device}: queue ${fmtMs(p.queue_ms)}, swap ${fmtMs(p.swap_ms)}`
      + ` (${p.swap_source || 'resident'}), execute ${fmtMs(p.execute_ms)}, total ${fmtMs(p.total_ms)}`;
  } catch (e) {
    out.textContent = `${name}: ${e.message}`;
  }
  scheduleRefresh();
}

function openSettings(name) {
  const f = state.functions.find((x) => x.name === name);
  if (!f) return;
  $('settings-name').textContent = name;
  $('settings-slo-ms').value = f.settings.slo_ms;
  $('settings-percentile').value = f.settings.slo_percentile;
  $('settings-max-batch').value = f.settings.max_batch;
  $('settings-dialog').showModal();
}

$('settings-form').addEventListener('submit', async () => {
  const name = $('settings-name').textContent;
  const settings = {
    slo_ms: Number($('settings-slo-ms').value),
    slo_percentile: Number($('settings-percentile').value),
    max_batch: Number($('settings-max-batch').value),
  };
  try {
    await api('PATCH', `/api/v1/functions/${encodeURIComponent(name)}`, { settings });
    showMessage(`${name}: SLO settings saved`, 'info');
  } catch (e) {
    showMessage(`${name}: ${e.message}`);
  }
  scheduleRefresh();
});
$('settings-cancel').addEventListener('click', () => $('settings-dialog').close());

async function undeploy(name) {
  if (armedUndeploy !== name) {
    armedUndeploy = name;
    renderFunctions(state.functions);
    setTimeout(() => { if (armedUndeploy === name) { armedUndeploy = null; renderFunctions(state.functions); } }, 4000);
    return;
  }
  armedUndeploy = null;
  try {
    await api('DELETE', `/api/v1/functions/${encodeURIComponent(name)}`);
    showMessage(`${name} undeployed`, 'info');
  } catch (e) {
    showMessage(`${name}: ${e.message}`);
  }
  refreshAll();
}

// ---------------------------------------------------------------------------------------------
// Deploy from the model repository

function renderPackages(index) {
  // The index also lists deployed functions by name; a function deployed under a name of its
  // own (model ≠ name) is not a package, so leave it out of the choices.
  const byName = new Map(state.functions.map((f) => [f.name, f]));
  const names = index.map((m) => m.name).filter((n) => !byName.has(n) || byName.get(n).model === n);
  const key = names.join('\n');
  if (key === rendered.packages) return;
  rendered.packages = key;
  const select = $('deploy-model');
  const keep = select.value;
  select.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
  if (names.includes(keep)) select.value = keep;
}

$('deploy-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('deploy-name').value.trim();
  const model = $('deploy-model').value;
  const slo = $('deploy-slo').value;
  const body = { name, model, settings: slo ? { slo_ms: Number(slo) } : {} };
  const status = $('deploy-status');
  $('deploy-submit').disabled = true;
  status.textContent = `deploying ${model} as ${name}…`;
  try {
    await api('POST', '/api/v1/functions', body);
    status.textContent = `deployed ${name}`;
    $('deploy-name').value = '';
    $('deploy-slo').value = '';
  } catch (err) {
    status.textContent = `deploy failed: ${err.message}`;
  } finally {
    $('deploy-submit').disabled = false;
  }
  refreshAll();
});

// ---------------------------------------------------------------------------------------------
// Refreshing: on relevant events (debounced) and every POLL_MS

let refreshTimer = 0;
let refreshing = false;

async function refresh() {
  if (refreshing) return scheduleRefresh();
  refreshing = true;
  try {
    const [devices, functions] = await Promise.all([api('GET', '/api/v1/devices'), api('GET', '/api/v1/functions')]);
    renderDevices(devices);
    renderFunctions(functions);
  } catch (e) {
    if (e.status !== 401) showMessage(`refresh failed: ${e.message}`);
  } finally {
    refreshing = false;
  }
}

async function refreshPackages() {
  try {
    renderPackages(await api('POST', '/v2/repository/index', {}));
  } catch (e) {
    if (e.status !== 401) showMessage(`repository index: ${e.message}`);
  }
}

function scheduleRefresh() {
  if (!refreshTimer) refreshTimer = setTimeout(() => { refreshTimer = 0; refresh(); }, 200);
}

async function refreshAll() {
  await refresh();
  await refreshPackages(); // after the functions: it filters by them
}

// ---------------------------------------------------------------------------------------------
// The event feed

let feed = null;
let feedRetries = 0;

function connectFeed() {
  if (feed) {
    const old = feed;
    feed = null; // so its close handler does not schedule a reconnect
    old.close();
  }
  const ws = new WebSocket(wsUrl('/api/v1/events'));
  feed = ws;
  setFeedStatus('connecting…', '');
  ws.onmessage = (m) => {
    if (feed !== ws) return;
    const ev = JSON.parse(m.data);
    if (ev.type === 'snapshot') {
      feedRetries = 0;
      setFeedStatus('live', 'ok');
      renderDevices(ev.devices);
      addEventRow(ev, `${ev.devices.length} device(s), ${ev.functions.length} function(s)`);
      refreshAll();
    } else {
      onEvent(ev);
    }
  };
  ws.onclose = (e) => {
    if (feed !== ws) return;
    feed = null;
    // Back off 0.5 s, 1 s, 2 s … up to 15 s; 1008 means this page fell behind the server.
    const delay = Math.min(15000, 500 * 2 ** feedRetries);
    feedRetries += 1;
    const why = e.code === 1008 ? 'dropped as too slow' : 'disconnected';
    setFeedStatus(`${why}, retrying in ${Math.round(delay / 100) / 10} s`, 'bad');
    setTimeout(() => { if (!feed) connectFeed(); }, delay);
  };
}

function setFeedStatus(text, cls) {
  const s = $('feed-status');
  s.textContent = `events: ${text}`;
  s.className = `pill ${cls}`;
}

function describe(ev) {
  switch (ev.type) {
    case 'deploy': return `${ev.function} ← ${ev.model} (${fmtBytes(ev.weight_bytes)})`;
    case 'undeploy': return ev.function;
    case 'swap_in': return `${ev.function} → ${ev.device} from ${ev.source === 'peer' ? `peer ${ev.from}` : 'host'}, `
      + `${fmtBytes(ev.bytes)} in ${fmtMs(ev.ms)}`;
    case 'evict': return `${ev.function} off ${ev.device} (${ev.reason})`;
    case 'execute': return `${ev.function} on ${ev.device}: batch ${ev.batch}, ${fmtMs(ev.ms)}`
      + `${ev.tokens != null ? `, ${ev.tokens} tokens` : ''}${ev.cancelled ? ', cancelled' : ''}`;
    case 'dropped': return `${ev.count} × ${ev.function} refused (${ev.reason})`;
    case 'device_fault': return `${ev.device} failed (${ev.fault}): ${ev.error}`;
    case 'device_healthy': return `${ev.device} passed its health check`;
    case 'slo': return `${ev.function} ${ev.compliant ? 'meets' : 'misses'} its SLO: ${fmtMs(ev.observed_ms)} `
      + `@p${Math.round(ev.percentile * 1000) / 10} / ${fmtMs(ev.deadline_ms)} over ${ev.requests} requests`;
    default: return JSON.stringify(ev);
  }
}

function addEventRow(ev, text = describe(ev)) {
  const list = $('events');
  list.prepend(el('li', { class: `ev ev-${ev.type}`, 'data-type': ev.type, 'data-function': ev.function },
    el('time', {}, fmtTime(ev.ts_ms || Date.now())), el('span', { class: 'type' }, ev.type), el('span', {}, text)));
  while (list.childElementCount > EVENT_ROWS) list.lastElementChild.remove();
}

function onEvent(ev) {
  addEventRow(ev);
  if (ev.type === 'execute' || ev.type === 'swap_in') addPoint(ev);
  if (ev.type === 'deploy' || ev.type === 'undeploy') refreshPackages();
  scheduleRefresh(); // residency, queues and SLO change with every event; debounced
}

// ---------------------------------------------------------------------------------------------
// Latency chart: execute ms per function (lines) and swap-in ms (triangles) over time

function addPoint(ev) {
  let s = state.series.get(ev.function);
  if (!s) state.series.set(ev.function, (s = { execute: [], swap_in: [] }));
  const points = s[ev.type];
  points.push([ev.ts_ms, ev.ms]);
  if (points.length > 1000) points.splice(0, points.length - 1000);
  requestDraw();
}

let drawPending = false;
function requestDraw() {
  if (!drawPending) { drawPending = true; requestAnimationFrame(() => { drawPending = false; drawChart(); }); }
}

function drawChart() {
  const canvas = $('latency-chart');
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr)) canvas.width = Math.round(w * dpr);
  if (canvas.height !== Math.round(h * dpr)) canvas.height = Math.round(h * dpr);
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const now = Date.now();
  let first = now;
  let max = 1;
  for (const s of state.series.values()) {
    for (const kind of ['execute', 'swap_in']) {
      s[kind] = s[kind].filter(([t]) => t >= now - CHART_WINDOW_MS);
      for (const [t, ms] of s[kind]) { max = Math.max(max, ms); first = Math.min(first, t); }
    }
  }
  // The time axis grows with the data, from 1 min up to CHART_WINDOW_MS, so that the first
  // minutes are not squeezed against the right edge.
  const span = Math.min(CHART_WINDOW_MS, Math.max(60000, (now - first) * 1.1));
  const t0 = now - span;
  // Round the y range up to 1, 2 or 5 × 10^k so the grid labels are readable.
  const step = 10 ** Math.floor(Math.log10(max));
  const top = [1, 2, 5, 10].map((m) => m * step).find((v) => v >= max);
  const L = 52; const R = 12; const T = 8; const B = 20;
  const x = (t) => L + ((t - t0) / span) * (w - L - R);
  const y = (ms) => h - B - (ms / top) * (h - T - B);
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#666';
  g.strokeStyle = '#e3e3e3';
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i += 1) {
    const v = (top * i) / 4;
    g.beginPath(); g.moveTo(L, y(v)); g.lineTo(w - R, y(v)); g.stroke();
    g.textAlign = 'right'; g.fillText(`${+v.toPrecision(3)} ms`, L - 4, y(v) + 4);
  }
  const tick = [10, 15, 30, 60].find((sec) => span / (sec * 1000) <= 6) * 1000;
  for (let ago = 0; ago <= span; ago += tick) {
    g.textAlign = ago === 0 ? 'right' : 'center';
    const label = ago === 0 ? 'now' : ago % 60000 ? `-${ago / 1000} s` : `-${ago / 60000} min`;
    g.fillText(label, x(now - ago), h - 5);
  }
  for (const [name, s] of state.series) {
    g.strokeStyle = g.fillStyle = colour(name);
    g.lineWidth = 1.5;
    g.beginPath();
    s.execute.forEach(([t, ms], i) => (i ? g.lineTo(x(t), y(ms)) : g.moveTo(x(t), y(ms))));
    g.stroke();
    for (const [t, ms] of s.execute) { g.beginPath(); g.arc(x(t), y(ms), 2, 0, 2 * Math.PI); g.fill(); }
    for (const [t, ms] of s.swap_in) {
      g.beginPath(); g.moveTo(x(t), y(ms) - 5); g.lineTo(x(t) - 4, y(ms) + 3); g.lineTo(x(t) + 4, y(ms) + 3);
      g.closePath(); g.fill();
    }
  }
  renderLegend();
}

function renderLegend() {
  const items = [];
  for (const [name, s] of state.series) {
    if (!s.execute.length && !s.swap_in.length) continue;
    const last = s.execute[s.execute.length - 1];
    const swatch = el('i', { class: 'swatch' });
    swatch.style.background = colour(name);
    items.push(el('li', { 'data-function': name }, swatch, name,
      el('span', { class: 'muted' }, ` last ${fmtMs(last && last[1])} · runs ${s.execute.length} · swaps ${s.swap_in.length}`)));
  }
  $('chart-legend').replaceChildren(...items);
}

// ---------------------------------------------------------------------------------------------
// Generation playground over /api/v1/functions/{name}/ws

let gen = null; // the socket of the running generation; null once it is done or stopped

function renderGenFunctions() {
  // Only the GPT-2 family generates; BERT functions answer /infer only.
  const names = state.functions.filter((f) => f.model_type === 'gpt2').map((f) => f.name);
  const key = names.join('\n');
  if (key === rendered.genNames) return;
  rendered.genNames = key;
  const select = $('gen-function');
  const keep = select.value;
  select.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
  if (names.includes(keep)) select.value = keep;
  else pickGenMode();
}

// Packages without a tokenizer take token ids only.
function pickGenMode() {
  const f = state.functions.find((x) => x.name === $('gen-function').value);
  if (f) $('gen-mode').value = f.inputs.some((i) => i.name === 'text') ? 'text' : 'ids';
}
$('gen-function').addEventListener('change', pickGenMode);

function setGenRunning(running) {
  $('gen-start').disabled = running;
  $('gen-stop').disabled = !running;
}

$('gen-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('gen-function').value;
  const raw = $('gen-prompt').value.trim();
  const req = { max_new_tokens: Number($('gen-max-tokens').value) || 16 };
  if ($('gen-mode').value === 'ids') {
    const ids = raw.split(/[\s,]+/).filter(Boolean).map(Number);
    if (!ids.length || ids.some((n) => !Number.isInteger(n) || n < 0)) {
      $('gen-timings').textContent = 'token ids must be non-negative integers separated by commas';
      return;
    }
    req.input_ids = ids;
  } else {
    req.text = raw;
  }
  const temperature = Number($('gen-temperature').value);
  if (temperature > 0) req.temperature = temperature;
  if ($('gen-ignore-eos').checked) req.ignore_eos = true;

  const out = $('gen-output');
  const timings = $('gen-timings');
  out.replaceChildren();
  timings.textContent = `generating with ${name}…`;
  const ws = new WebSocket(wsUrl(`/api/v1/functions/${encodeURIComponent(name)}/ws`));
  gen = ws;
  setGenRunning(true);
  const finish = (text) => {
    gen = null; // ready for the next prompt without waiting for the close handshake
    setGenRunning(false);
    timings.textContent = text;
  };
  ws.onopen = () => ws.send(JSON.stringify(req));
  ws.onmessage = (m) => {
    if (gen !== ws) return; // stopped: whatever still arrives is not shown
    const msg = JSON.parse(m.data);
    if (msg.type === 'token') {
      // Without a tokenizer a token has no text: show its id instead.
      const text = msg.text == null ? `[${msg.id}]` : msg.text;
      out.append(el('span', { class: msg.text == null ? 'tok id' : 'tok', 'data-id': msg.id, 'data-index': msg.index,
        title: `#${msg.index}: id ${msg.id}` }, text));
    } else if (msg.type === 'done') {
      const t = msg.timings;
      finish(`${msg.token_ids.length} tokens (${msg.finish_reason}) on ${msg.device}, `
        + `swap ${msg.swap_source || 'none'} — queue ${fmtMs(t.queue_ms)} · swap ${fmtMs(t.swap_ms)} · `
        + `first token ${fmtMs(t.first_token_ms)} · total ${fmtMs(t.total_ms)}`);
      ws.close();
    } else if (msg.type === 'error') {
      finish(`error (${msg.code}): ${msg.error}`); // the server closes the socket
    }
  };
  ws.onclose = (ev) => {
    if (gen === ws) finish(`connection closed (${ev.code}) after ${out.childElementCount} tokens`);
  };
});

// Closing the socket is how a client cancels: the server stops within one token.
$('gen-stop').addEventListener('click', () => {
  if (!gen) return;
  const ws = gen;
  gen = null;
  setGenRunning(false);
  $('gen-timings').textContent = `stopped after ${$('gen-output').childElementCount} tokens`;
  ws.close();
});

// ---------------------------------------------------------------------------------------------
// Start

$('token-button').addEventListener('click', askToken);
$('token-form').addEventListener('submit', () => setToken($('token-input').value));
$('token-clear').addEventListener('click', () => { $('token-dialog').close(); setToken(''); });
$('deploy-model').addEventListener('change', () => {
  if (!$('deploy-name').value) $('deploy-name').value = $('deploy-model').value;
});
window.addEventListener('resize', requestDraw);

connectFeed();
refreshAll();
setInterval(() => { refresh(); requestDraw(); }, POLL_MS);
