// gridwatch control-room page: fleet overview, active alarms, device pages with live charts.
// Live updates arrive over the API's Server-Sent Events stream, read with fetch() so the
// bearer token travels in a header (EventSource cannot send one) and never in a URL.
'use strict';

const SEVERITY_RANK = { critical: 4, high: 3, major: 3, warning: 2, medium: 2, minor: 1, low: 1, info: 0 };
const ROLE_RANK = { viewer: 0, operator: 1, crew: 2, engineer: 3, admin: 4 };
const CHARTS = [
  { title: 'Voltage (V)', fields: ['voltage_a', 'voltage_b', 'voltage_c'] },
  { title: 'Current (A)', fields: ['current_a', 'current_b', 'current_c'] },
  { title: 'Load (% of rating)', fields: ['load_pct'] },
  { title: 'Temperature (°C)', fields: ['oil_temp', 'winding_temp'] },
  { title: 'Active power (kW)', fields: ['active_power'] },
  { title: 'Frequency (Hz)', fields: ['frequency'] },
];
const COLORS = ['#f0b429', '#3fb950', '#58a6ff', '#d2a8ff', '#ff7b72'];
const UNIT_LABELS = { degC: '°C' };
const unitLabel = (u) => UNIT_LABELS[u] || u || '';

const state = {
  token: sessionStorage.getItem('gw_token') || '',
  me: null,
  devices: new Map(),
  alarms: new Map(),
  window: null,      // chart window of the open device page
  events: [],
  streamAbort: null,
  kpi: new Map(),    // "feeder:site/feeder" or "site:site" -> today's KPI report
};

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    // Styles go through the CSSOM: the page's CSP forbids inline style attributes.
    else if (k === 'style') Object.assign(e.style, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function banner(text) {
  const b = $('#banner');
  b.textContent = text || '';
  b.hidden = !text;
}

async function api(path, opts = {}) {
  const headers = Object.assign({ 'Accept': 'application/json' }, opts.headers || {});
  if (state.token) headers['Authorization'] = 'Bearer ' + state.token;
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method: opts.method || 'GET',
    headers,
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
  });
  if (res.status === 401) {
    banner('Log in with an API token to see the fleet.');
    throw new Error('unauthorized');
  }
  if (!res.ok) {
    let msg = res.status + ' ' + res.statusText;
    try { const j = await res.json(); if (j.error) msg = j.error; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

function role() { return state.me && state.me.role ? state.me.role : 'viewer'; }
function can(min) { return (ROLE_RANK[role()] || 0) >= ROLE_RANK[min]; }

function fmtTime(ns) {
  if (!ns) return '–';
  const d = typeof ns === 'number' ? new Date(ns / 1e6) : new Date(ns);
  return d.toLocaleString();
}
function fmtNum(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
}

// ---------------------------------------------------------------- data

function activeAlarms() {
  return [...state.alarms.values()]
    .filter((a) => a.state !== 'closed')
    .sort((a, b) => (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0)
      || (b.raised_at || 0) - (a.raised_at || 0));
}
function alarmsOf(deviceId) { return activeAlarms().filter((a) => a.device === deviceId); }

async function loadAll() {
  try {
    state.me = await api('/api/v1/whoami').catch(() => null);
    const devices = await api('/api/v1/devices');
    state.devices = new Map(devices.map((d) => [d.id, d]));
    const alarms = await api('/api/v1/alarms').catch(() => []);
    state.alarms = new Map((Array.isArray(alarms) ? alarms : alarms.items || []).map((a) => [a.id, a]));
    banner('');
  } catch (e) {
    if (e.message !== 'unauthorized') banner('Cannot reach gridwatch: ' + e.message);
  }
  renderLogin();
  render();
  startStream();
  refreshKpi();
}

// ---------------------------------------------------------------- live stream

function applyEvent(type, data) {
  if (type === 'device_status') {
    const d = state.devices.get(data.device);
    if (d) {
      d.status = data.to || d.status;
      if (data.at) d.last_seen = data.at;
      if (data.error !== undefined) d.last_error = data.error;
    }
  } else if (type === 'alarm') {
    const a = data.alarm || data;
    if (a && a.id !== undefined) state.alarms.set(a.id, a);
  } else if (type === 'reading') {
    const d = state.devices.get(data.device);
    if (d) {
      Object.assign(d.values = d.values || {}, data.values || {});
      d.last_seen = data.ts;
      d.status = d.status === 'unknown' ? 'online' : d.status;
    }
    appendToWindow(data);
  }
  scheduleRender();
}

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; render(); });
}

async function startStream() {
  if (state.streamAbort) state.streamAbort.abort();
  const ctrl = new AbortController();
  state.streamAbort = ctrl;
  const device = currentDevice();
  const path = '/api/v1/stream' + (device ? '?readings=' + encodeURIComponent(device) : '');
  let delay = 1000;
  while (!ctrl.signal.aborted) {
    try {
      const headers = { 'Accept': 'text/event-stream' };
      if (state.token) headers['Authorization'] = 'Bearer ' + state.token;
      const res = await fetch(path, { headers, signal: ctrl.signal });
      if (!res.ok || !res.body) throw new Error('stream ' + res.status);
      $('#live').classList.add('on');
      delay = 1000;
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let type = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) type = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
          }
          if (data.length) {
            try { applyEvent(type, JSON.parse(data.join('\n'))); } catch (_) { /* keep-alive or bad event */ }
          }
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    $('#live').classList.remove('on');
    // Reconnect with backoff; a resync picks up what happened meanwhile.
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 30000);
    if (!ctrl.signal.aborted) await resync();
  }
}

async function resync() {
  try {
    const devices = await api('/api/v1/devices');
    state.devices = new Map(devices.map((d) => [d.id, d]));
    const alarms = await api('/api/v1/alarms').catch(() => []);
    state.alarms = new Map((Array.isArray(alarms) ? alarms : alarms.items || []).map((a) => [a.id, a]));
    scheduleRender();
  } catch (_) { /* still down */ }
}

// The overview shows every device's latest values. Streaming every reading of a large
// fleet to each browser costs far more than refreshing the device summary now and then;
// status and alarms still arrive live on the stream.
const OVERVIEW_REFRESH_MS = 10000;
async function refreshValues() {
  if (currentDevice() || document.hidden || !state.devices.size) return;
  try {
    for (const n of await api('/api/v1/devices')) {
      const d = state.devices.get(n.id);
      if (d) Object.assign(d, n); else state.devices.set(n.id, n);
    }
    scheduleRender();
  } catch (_) { /* the stream's reconnect loop reports an outage */ }
}
setInterval(refreshValues, OVERVIEW_REFRESH_MS);

// Today's KPIs per site and feeder (the engine keeps them by time; a refresh with the
// values is plenty). A feeder id is "site/feeder": feeder names repeat across substations.
async function refreshKpi() {
  if (currentDevice() || document.hidden) return;
  const scopes = new Set();
  for (const d of state.devices.values()) {
    scopes.add('site\u0000' + d.site);
    scopes.add('feeder\u0000' + d.site + '/' + d.feeder);
  }
  for (const key of scopes) {
    const [scope, id] = key.split('\u0000');
    try {
      const r = await api('/api/v1/kpi?scope=' + scope + '&id=' + encodeURIComponent(id));
      state.kpi.set(scope + ':' + id, r);
    } catch (_) { state.kpi.delete(scope + ':' + id); }
  }
  scheduleRender();
}
setInterval(refreshKpi, OVERVIEW_REFRESH_MS);

function kpiPanel(scope, id) {
  const r = state.kpi.get(scope + ':' + id);
  if (!r) return el('div', { class: 'kpi muted', 'data-scope': scope, 'data-id': id }, 'KPIs today: –');
  const pct = (v) => (v === null || v === undefined ? '–' : v.toFixed(2) + ' %');
  const rel = r.reliability;
  const item = (k, label, value) => el('span', { 'data-k': k, title: label }, label + ' ', el('b', {}, value));
  return el('div', { class: 'kpi', 'data-scope': scope, 'data-id': id },
    'Today: ',
    item('voltage', 'voltage compliance', pct(r.voltage.compliance_pct)),
    item('frequency', 'frequency compliance', pct(r.frequency.compliance_pct)),
    item('saidi', 'SAIDI', rel.saidi_min.toFixed(2) + ' min'),
    item('saifi', 'SAIFI', rel.saifi.toFixed(3)),
    item('rs1', 'RS-1', rel.rs1_pct.toFixed(3) + ' %'),
    item('customers', 'customers', String(rel.customers_served)));
}

// ---------------------------------------------------------------- header and alarms

function renderCounts() {
  const devs = [...state.devices.values()];
  const by = (s) => devs.filter((d) => d.status === s).length;
  const inAlarm = new Set(activeAlarms().map((a) => a.device)).size;
  $('#counts').replaceChildren(
    el('span', { class: 'chip', id: 'count-total' }, el('b', {}, devs.length), ' devices'),
    el('span', { class: 'chip online', id: 'count-online' }, el('b', {}, by('online')), ' online'),
    el('span', { class: 'chip degraded', id: 'count-degraded' }, el('b', {}, by('degraded')), ' degraded'),
    el('span', { class: 'chip offline', id: 'count-offline' }, el('b', {}, by('offline') + by('unknown')), ' offline'),
    el('span', { class: 'chip inalarm', id: 'count-alarm' }, el('b', {}, inAlarm), ' in alarm'),
  );
}

function renderLogin() {
  const logged = !!state.token;
  $('#token').hidden = logged;
  $('#login-btn').hidden = logged;
  $('#logout-btn').hidden = !logged;
  $('#who').textContent = state.me ? (state.me.name || '') + ' (' + role() + ')' : '';
}

function alarmItem(a) {
  const actions = [];
  const detail = a.detail || {};
  if (can('operator') && !a.acked_at) {
    actions.push(el('button', { class: 'ack', 'data-alarm': a.id, onclick: () => ack(a) }, 'Acknowledge'));
  }
  if (can('operator') && !a.shelved && a.state !== 'cleared') {
    actions.push(el('button', { class: 'shelve', 'data-alarm': a.id, onclick: () => shelve(a) }, 'Shelve 1 h'));
  }
  return el('li', { class: 'alarm ' + (a.severity || '') + ' ' + (a.state || '') + (a.shelved ? ' shelved' : ''), 'data-alarm': a.id, 'data-state': a.state, 'data-device': a.device, 'data-rule': a.rule },
    el('div', {}, el('span', { class: 'sev' }, a.severity || ''), ' ',
      el('a', { href: '#/device/' + encodeURIComponent(a.device) }, a.device), ' · ', a.rule),
    el('div', { class: 'meta' }, [a.message || '', detail.value !== undefined ? ' · value ' + fmtNum(detail.value) : '',
      detail.limit !== undefined ? ' limit ' + fmtNum(detail.limit) : '', detail.unit ? ' ' + unitLabel(detail.unit) : ''].join('')),
    el('div', { class: 'meta state' }, a.state || '', a.shelved ? ' (shelved)' : '', a.acked_by ? ' by ' + a.acked_by : '',
      ' · since ', fmtTime(a.raised_at)),
    detail.location ? el('div', { class: 'meta' }, 'Location: ', detail.location) : null,
    detail.action ? el('div', { class: 'meta' }, 'First action: ', detail.action) : null,
    actions.length ? el('div', { class: 'actions' }, actions) : null);
}

function renderAlarms() {
  const list = activeAlarms();
  $('#alarm-count').textContent = '(' + list.length + ')';
  $('#alarms').replaceChildren(...(list.length ? list.map(alarmItem) : [el('li', { class: 'muted' }, 'No active alarms')]));
}

async function ack(a) {
  const comment = prompt('Acknowledge ' + a.device + ' ' + a.rule + ' — comment:', '') ;
  if (comment === null) return;
  try {
    const updated = await api('/api/v1/alarms/' + encodeURIComponent(a.id) + '/ack', { method: 'POST', body: { comment } });
    if (updated && updated.id !== undefined) state.alarms.set(updated.id, updated);
    render();
  } catch (e) { banner('Acknowledge failed: ' + e.message); }
}

async function shelve(a) {
  const comment = prompt('Shelve ' + a.device + ' ' + a.rule + ' for 1 hour — reason:', '');
  if (comment === null) return;
  try {
    const updated = await api('/api/v1/alarms/' + encodeURIComponent(a.id) + '/shelve', { method: 'POST', body: { for: '1h', comment } });
    if (updated && updated.id !== undefined) state.alarms.set(updated.id, updated);
    render();
  } catch (e) { banner('Shelve failed: ' + e.message); }
}

// ---------------------------------------------------------------- overview

function matches(d, q) {
  if (!q) return true;
  return [d.id, d.site, d.feeder, d.location, d.parent, d.kind].some((s) => s && s.toLowerCase().includes(q));
}

function tile(d) {
  const alarms = alarmsOf(d.id);
  const cls = ['tile', d.kind, d.status, alarms.length ? 'in-alarm' : ''].join(' ');
  const v = d.values || {};
  let sub = '';
  if (d.kind === 'transformer') {
    sub = [v.oil_temp !== undefined ? fmtNum(v.oil_temp) + ' °C' : '', v.active_power !== undefined ? fmtNum(v.active_power) + ' kW' : ''].filter(Boolean).join(' · ');
  } else if (v.voltage_a !== undefined) {
    sub = fmtNum(v.voltage_a) + ' V';
  }
  return el('a', { class: cls, href: '#/device/' + encodeURIComponent(d.id), 'data-device': d.id, 'data-status': d.status, title: d.last_error || d.status },
    el('div', { class: 'id' }, d.id), el('div', { class: 'sub' }, alarms.length ? alarms.length + ' alarm(s)' : sub || d.status));
}

function renderOverview() {
  const q = $('#search').value.trim().toLowerCase();
  const devs = [...state.devices.values()];
  const sites = new Map();
  for (const d of devs) {
    if (!sites.has(d.site)) sites.set(d.site, new Map());
    const feeders = sites.get(d.site);
    if (!feeders.has(d.feeder)) feeders.set(d.feeder, []);
    feeders.get(d.feeder).push(d);
  }
  const out = [];
  for (const [site, feeders] of [...sites].sort()) {
    const feederEls = [];
    for (const [feeder, list] of [...feeders].sort()) {
      const txs = list.filter((d) => d.kind === 'transformer');
      const children = (id) => list.filter((d) => d.parent === id);
      const orphans = list.filter((d) => d.kind !== 'transformer' && !txs.some((t) => t.id === d.parent));
      const rows = [];
      for (const t of txs) {
        const kids = children(t.id).filter((d) => matches(d, q));
        if (!matches(t, q) && !kids.length) continue;
        rows.push(el('div', { class: 'tx' }, tile(t), el('div', { class: 'meters' }, kids.map(tile))));
      }
      const lone = orphans.filter((d) => matches(d, q));
      if (lone.length) rows.push(el('div', { class: 'tx' }, el('div', { class: 'meters' }, lone.map(tile))));
      if (rows.length) feederEls.push(el('div', { class: 'feeder' }, el('h3', {}, 'Feeder ' + (feeder || '–')), kpiPanel('feeder', site + '/' + feeder), rows));
    }
    if (feederEls.length) out.push(el('div', { class: 'site' }, el('h2', {}, site || 'Unassigned site'), kpiPanel('site', site), feederEls));
  }
  $('#view').replaceChildren(...(out.length ? out : [el('p', { class: 'muted' }, state.devices.size ? 'No device matches.' : 'No devices.')]));
}

// ---------------------------------------------------------------- device page

function currentDevice() {
  const m = location.hash.match(/^#\/device\/(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

function appendToWindow(r) {
  const w = state.window;
  if (!w || w.device !== r.device || !r.values) return;
  const last = w.ts.length ? w.ts[w.ts.length - 1] : 0;
  if (r.ts <= last) return;
  w.ts.push(r.ts);
  w.fields.forEach((f, i) => {
    const v = f === 'load_pct' ? r.values.load_pct : r.values[f];
    w.values[i].push(v === undefined ? null : v);
  });
  const horizon = r.ts - 3600e9;
  while (w.ts.length && w.ts[0] < horizon) { w.ts.shift(); w.values.forEach((c) => c.shift()); }
}

function chart(spec, w) {
  const cols = spec.fields.map((f) => ({ f, i: w.fields.indexOf(f) })).filter((c) => c.i >= 0 && w.values[c.i].some((v) => v !== null));
  if (!cols.length || w.ts.length < 2) return null;
  const W = 600, H = 150, L = 46, B = 18;
  let lo = Infinity, hi = -Infinity;
  for (const c of cols) for (const v of w.values[c.i]) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const t0 = w.ts[0], t1 = w.ts[w.ts.length - 1];
  const x = (t) => L + (W - L - 4) * (t - t0) / Math.max(1, t1 - t0);
  const y = (v) => 4 + (H - B - 8) * (1 - (v - lo) / (hi - lo));
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
  };
  for (const v of [lo + pad, (lo + hi) / 2, hi - pad]) {
    add('line', { x1: L, x2: W, y1: y(v), y2: y(v), stroke: '#2a323c' });
    add('text', { x: 2, y: y(v) + 4, fill: '#8a96a3', 'font-size': 11 }, fmtNum(v));
  }
  add('text', { x: L, y: H - 3, fill: '#8a96a3', 'font-size': 11 }, new Date(t0 / 1e6).toLocaleTimeString());
  add('text', { x: W - 60, y: H - 3, fill: '#8a96a3', 'font-size': 11 }, new Date(t1 / 1e6).toLocaleTimeString());
  cols.forEach((c, k) => {
    let d = '';
    w.ts.forEach((t, j) => {
      const v = w.values[c.i][j];
      if (v === null) return;
      d += (d ? 'L' : 'M') + x(t).toFixed(1) + ' ' + y(v).toFixed(1);
    });
    add('path', { d, fill: 'none', stroke: COLORS[k % COLORS.length], 'stroke-width': 1.6, 'vector-effect': 'non-scaling-stroke' });
  });
  const legend = cols.map((c, k) => el('span', { style: { color: COLORS[k % COLORS.length] } }, ' ■ ' + c.f));
  return el('div', { class: 'chart', 'data-chart': spec.title }, el('div', { class: 'title' }, spec.title, legend), svg);
}

function maintenanceForm(d) {
  if (!can('crew')) return null;
  const form = el('form', { class: 'maint', id: 'maintenance-form' },
    el('select', { name: 'kind' }, ['inspection', 'repair', 'replacement', 'oil_sample', 'test'].map((k) => el('option', { value: k }, k))),
    el('input', { name: 'crew', placeholder: 'Crew' }),
    el('input', { name: 'parts', placeholder: 'Parts used' }),
    el('textarea', { name: 'findings', placeholder: 'Findings and notes' }),
    el('button', { class: 'primary', type: 'submit' }, 'Add maintenance record'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      await api('/api/v1/maintenance', { method: 'POST', body: {
        device: d.id, kind: f.get('kind'), crew: f.get('crew'), findings: f.get('findings'),
        parts: String(f.get('parts') || '').split(',').map((p) => p.trim()).filter(Boolean),
      } });
      form.reset();
      await loadEvents(d.id);
      render();
    } catch (e) { banner('Saving the record failed: ' + e.message); }
  });
  return form;
}

async function loadEvents(id) {
  try {
    const r = await api('/api/v1/events?device=' + encodeURIComponent(id) + '&limit=50');
    state.events = Array.isArray(r) ? r : r.items || [];
  } catch (_) { state.events = []; }
}

async function openDevice(id) {
  state.window = null;
  state.events = [];
  try {
    const w = await api('/api/v1/devices/' + encodeURIComponent(id) + '/history');
    state.window = Object.assign({ device: id }, w);
  } catch (_) { /* charts stay empty */ }
  await loadEvents(id);
  render();
}

function renderDevice(id) {
  const d = state.devices.get(id);
  if (!d) { $('#view').replaceChildren(el('p', {}, 'Unknown device ', id)); return; }
  const units = d.units || {};
  const values = Object.entries(d.values || {}).sort(([a], [b]) => a.localeCompare(b));
  const alarms = alarmsOf(id);
  const events = state.events.map((e) => el('tr', {},
    el('td', {}, fmtTime(e.ts)), el('td', {}, (e.kind || '').replace(/_/g, ' ')), el('td', {}, e.actor || ''),
    el('td', {}, typeof e.detail === 'object' ? JSON.stringify(e.detail) : e.detail || e.note || '')));
  $('#view').replaceChildren(...[
    el('h2', { id: 'device-title' }, d.id, ' ', el('span', { class: 'status-' + d.status, id: 'device-status' }, d.status)),
    el('div', { class: 'muted' }, [d.kind, d.site, 'feeder ' + d.feeder, d.location].filter(Boolean).join(' · '),
      d.parent ? el('span', {}, ' · under ', el('a', { href: '#/device/' + encodeURIComponent(d.parent) }, d.parent)) : null),
    el('div', { class: 'muted' }, 'last seen ', fmtTime(d.last_seen), d.last_error ? ' · ' + d.last_error : ''),
    el('h3', {}, 'Active alarms'),
    alarms.length ? el('ul', { class: 'alarms' }, alarms.map(alarmItem)) : el('p', { class: 'muted' }, 'None'),
    el('h3', {}, 'Latest values'),
    el('div', { class: 'grid', id: 'values' }, values.map(([k, v]) => el('div', { class: 'kv', 'data-field': k },
      el('div', { class: 'k' }, k), el('div', { class: 'v' }, fmtNum(v), ' ', unitLabel(units[k]))))),
    el('h3', {}, 'Last hour'),
    el('div', { class: 'charts' }, state.window ? CHARTS.map((c) => chart(c, state.window)) : el('p', { class: 'muted' }, 'No data yet')),
    el('h3', {}, 'History'),
    events.length ? el('table', { id: 'events' }, el('tr', {}, ['Time', 'Event', 'By', 'Detail'].map((h) => el('th', {}, h))), events)
      : el('p', { class: 'muted' }, 'No events recorded'),
    maintenanceForm(d)].filter(Boolean));
}

// ---------------------------------------------------------------- routing

let lastRoute = null;
function render() {
  renderCounts();
  renderAlarms();
  const id = currentDevice();
  if (id) {
    if (lastRoute !== location.hash) { lastRoute = location.hash; openDevice(id); startStream(); }
    // Keep a half-typed maintenance record: re-render only when the form is not in use.
    const form = $('#maintenance-form');
    if (form && form.contains(document.activeElement)) return;
    renderDevice(id);
  } else {
    if (lastRoute !== location.hash) { lastRoute = location.hash; state.window = null; startStream(); }
    renderOverview();
  }
}

window.addEventListener('hashchange', render);
$('#search').addEventListener('input', () => { if (currentDevice()) location.hash = '#/'; else render(); });
$('#login-btn').addEventListener('click', () => {
  state.token = $('#token').value.trim();
  sessionStorage.setItem('gw_token', state.token);
  $('#token').value = '';
  loadAll();
});
$('#token').addEventListener('keydown', (e) => { if (e.key === 'Enter') $('#login-btn').click(); });
$('#logout-btn').addEventListener('click', () => {
  state.token = '';
  state.me = null;
  sessionStorage.removeItem('gw_token');
  loadAll();
});
loadAll();
