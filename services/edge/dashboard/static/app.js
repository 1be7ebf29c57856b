// app.js — the cachepool dashboard. Plain JavaScript, no dependencies beyond
// chart.js (CPChart). It reads the edge's manager API, polls it on a schedule,
// refreshes early when a live event (GET /api/events, server-sent events)
// says something changed, and sends the admin token (kept in localStorage)
// as "Authorization: Bearer <token>" on every mutating call.
(function () {
  'use strict';

  const $ = (sel) => document.querySelector(sel);
  const TOKEN_KEY = 'cachepool.adminToken';
  const MAX_EVENTS = 200;
  const API = '/api/manager';

  // ---------- formatting ----------

  const nf = new Intl.NumberFormat();
  function fmtInt(v) {
    return v == null ? '—' : nf.format(Math.round(v));
  }
  function fmtCompact(v) {
    if (v == null || !isFinite(v)) return '—';
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + 'G';
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + 'k';
    return Number.isInteger(v) ? String(v) : v.toFixed(a < 10 ? 1 : 0);
  }
  function fmtBytes(v) {
    if (v == null || !isFinite(v)) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let x = Math.abs(v);
    while (x >= 1024 && i < units.length - 1) {
      x /= 1024;
      i++;
    }
    const s = i === 0 ? String(Math.round(x)) : x.toFixed(x >= 100 ? 0 : x >= 10 ? 1 : 2);
    return (v < 0 ? '-' : '') + s + ' ' + units[i];
  }
  function fmtPct(v) {
    if (v == null || !isFinite(v)) return '—';
    const p = v * 100;
    return (p === 0 || p === 100 || p >= 10 ? p.toFixed(0) : p.toFixed(1)) + '%';
  }
  function pad2(n) {
    return String(n).padStart(2, '0');
  }
  function clock(t) {
    const d = t instanceof Date ? t : new Date(t);
    if (isNaN(d)) return '—';
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }
  function ago(t) {
    const d = t instanceof Date ? t : new Date(t);
    if (isNaN(d) || d.getFullYear() < 2000) return '—';
    const s = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
    if (s < 60) return s + 's ago';
    if (s < 3600) return Math.floor(s / 60) + 'm ago';
    return Math.floor(s / 3600) + 'h ago';
  }
  function shortID(id) {
    return id && id.length > 10 ? id.slice(0, 4) + '…' + id.slice(-4) : id || '—';
  }
  function lastNum(arr) {
    for (let i = (arr || []).length - 1; i >= 0; i--) {
      if (arr[i] != null && isFinite(arr[i])) return {v: arr[i], i};
    }
    return null;
  }

  // h builds an element: h('td', {class: 'num'}, 'text', child, ...).
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === 'class') e.className = attrs[k];
      else if (k === 'dataset') Object.assign(e.dataset, attrs[k]);
      else if (k === 'style') Object.assign(e.style, attrs[k]); // CSSOM: allowed by the page's CSP
      else if (attrs[k] != null) e.setAttribute(k, attrs[k]);
    }
    for (const c of children) {
      if (c == null) continue;
      e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  function badge(text, color) {
    return h('span', {class: 'badge ' + (color || 'grey')}, text);
  }
  const STATE_COLORS = {
    active: 'green', starting: 'blue', draining: 'amber', standby: 'grey', failed: 'red',
    queued: 'grey', running: 'blue', applied: 'green', rejected: 'amber',
    grow: 'blue', shrink: 'purple', none: 'grey',
  };
  function stateBadge(s) {
    return badge(s || '—', STATE_COLORS[s] || 'grey');
  }
  function terminal(s) {
    return s === 'applied' || s === 'rejected' || s === 'failed';
  }

  // ---------- the API ----------

  class ApiError extends Error {
    constructor(status, message, content) {
      super(message);
      this.status = status;
      this.content = content;
    }
  }

  function token() {
    try {
      return localStorage.getItem(TOKEN_KEY) || '';
    } catch (_) {
      return '';
    }
  }

  // api calls the edge and resolves to the envelope's content. A failure
  // rejects with ApiError carrying the envelope's error.message. A 401 on a
  // mutating call asks for the admin token once and retries with it.
  async function api(method, path, body) {
    const mutating = method !== 'GET';
    for (let attempt = 0; ; attempt++) {
      const headers = {Accept: 'application/json'};
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      const tok = token();
      if (mutating && tok) headers.Authorization = 'Bearer ' + tok;
      let res;
      try {
        res = await fetch(path, {method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body)});
      } catch (e) {
        throw new ApiError(0, 'the edge is unreachable (' + e.message + ')');
      }
      let env = null;
      try {
        env = await res.json();
      } catch (_) {
        env = null;
      }
      const message = env && env.error && env.error.message ? env.error.message : 'HTTP ' + res.status + ' ' + res.statusText;
      if (res.status === 401 && mutating && attempt === 0) {
        if (await askToken(message)) continue;
      }
      if (!res.ok || !env || env.success !== 'true') {
        throw new ApiError(res.status, message, env && env.content);
      }
      return env.content;
    }
  }

  // ---------- toasts, banner, dialogs ----------

  function toast(text, kind) {
    const t = h('div', {class: 'toast ' + (kind || '')}, text);
    $('#toasts').appendChild(t);
    setTimeout(() => t.remove(), kind === 'err' ? 9000 : 5000);
  }

  const failing = new Map(); // source -> message
  function setFailure(source, err) {
    if (err) failing.set(source, err.message);
    else failing.delete(source);
    const b = $('#banner');
    b.hidden = failing.size === 0;
    b.textContent = [...failing.entries()].map(([s, m]) => s + ': ' + m).join(' · ');
  }

  let tokenPrompt = null;
  // askToken shows the token dialog and resolves true once a token is saved,
  // false when cancelled. Concurrent callers share one dialog.
  function askToken(reason) {
    if (tokenPrompt) return tokenPrompt;
    const dlg = $('#token-dialog');
    $('#token-text').textContent = reason
      ? reason + ' — enter the admin token this edge was started with (--admin-token). It is kept in this browser only.'
      : 'Changes to the pool need the admin token this edge was started with (--admin-token). It is kept in this browser only.';
    $('#token-input').value = token();
    tokenPrompt = new Promise((resolve) => {
      const done = (saved) => {
        $('#token-form').onsubmit = null;
        $('#token-cancel').onclick = null;
        $('#token-forget').onclick = null;
        dlg.onclose = null;
        if (dlg.open) dlg.close();
        tokenPrompt = null;
        resolve(saved);
      };
      $('#token-form').onsubmit = (ev) => {
        ev.preventDefault();
        const v = $('#token-input').value.trim();
        try {
          if (v) localStorage.setItem(TOKEN_KEY, v);
          else localStorage.removeItem(TOKEN_KEY);
        } catch (_) { /* storage disabled: the token lasts for this attempt only */ }
        updateTokenButton();
        done(v !== '');
      };
      $('#token-cancel').onclick = () => done(false);
      $('#token-forget').onclick = () => {
        try {
          localStorage.removeItem(TOKEN_KEY);
        } catch (_) { /* nothing stored */ }
        updateTokenButton();
        done(false);
      };
      dlg.onclose = () => done(false);
    });
    dlg.showModal();
    $('#token-input').focus();
    return tokenPrompt;
  }
  function updateTokenButton() {
    $('#btn-token').textContent = token() ? 'Admin token ✓' : 'Admin token';
  }

  // confirmAction shows the in-page confirm dialog; resolves true on confirm.
  // With typed set, the confirm button stays disabled until it is typed.
  function confirmAction({title, text, yes, typed}) {
    const dlg = $('#confirm');
    $('#confirm-title').textContent = title;
    $('#confirm-text').textContent = text;
    const yesBtn = $('#confirm-yes');
    yesBtn.textContent = yes || 'Confirm';
    const typeLabel = $('#confirm-type-label');
    const typeInput = $('#confirm-type');
    typeLabel.hidden = !typed;
    typeInput.value = '';
    yesBtn.disabled = !!typed;
    typeInput.oninput = () => {
      yesBtn.disabled = typeInput.value.trim() !== typed;
    };
    return new Promise((resolve) => {
      const done = (v) => {
        yesBtn.onclick = null;
        $('#confirm-no').onclick = null;
        dlg.onclose = null;
        if (dlg.open) dlg.close();
        resolve(v);
      };
      yesBtn.onclick = () => done(true);
      $('#confirm-no').onclick = () => done(false);
      dlg.onclose = () => done(false);
      dlg.showModal();
      (typed ? typeInput : $('#confirm-no')).focus();
    });
  }

  // ---------- schedule ----------

  // loop runs fn now and then every ms after it finishes; kick() runs it
  // again soon (coalescing bursts of kicks into one call).
  function loop(name, ms, fn) {
    let timer = null;
    let running = false;
    let again = false;
    async function run() {
      clearTimeout(timer);
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        await fn();
        setFailure(name, null);
      } catch (e) {
        setFailure(name, e);
      }
      running = false;
      $('#updated').textContent = 'updated ' + clock(new Date());
      if (again) {
        again = false;
        timer = setTimeout(run, 150);
      } else {
        timer = setTimeout(run, ms);
      }
    }
    let kickTimer = null;
    return {
      start: run,
      kick() {
        clearTimeout(kickTimer);
        kickTimer = setTimeout(run, 250);
      },
    };
  }

  // ---------- stats and charts ----------

  const charts = {};
  function setupCharts() {
    const base = {height: 170};
    charts.rates = CPChart.line($('#chart-rates'), Object.assign({}, base, {format: fmtPct, min: 0, max: 1, label: 'miss and hit rate'}));
    charts.nodes = CPChart.line($('#chart-nodes'), Object.assign({}, base, {format: (v) => String(v), integer: true, step: true, label: 'nodes'}));
    charts.requests = CPChart.line($('#chart-requests'), Object.assign({}, base, {format: fmtCompact, label: 'requests per minute'}));
    charts.items = CPChart.line($('#chart-items'), Object.assign({}, base, {format: fmtCompact, label: 'items'}));
    charts.bytes = CPChart.line($('#chart-bytes'), Object.assign({}, base, {format: fmtBytes, label: 'bytes'}));
  }

  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();

  async function refreshStats() {
    const s = await api('GET', API + '/aggregate_stats');
    const times = s.timestamps || [];
    const one = (values, col, name) => ({times, series: [{name, color: color(col), values: values || []}]});
    charts.rates.update({times, series: [
      {name: 'miss', color: color('--red'), values: s.miss_rate || []},
      {name: 'hit', color: color('--green'), values: s.hit_rate || []},
    ]});
    charts.nodes.update(one(s.number_of_nodes, '--accent', 'nodes'));
    charts.requests.update(one(s.number_of_requests_served_per_minute, '--teal', 'requests/min'));
    charts.items.update(one(s.number_of_items_in_cache, '--purple', 'items'));
    charts.bytes.update(one(s.total_size_of_items_in_cache, '--amber', 'bytes'));

    const miss = lastNum(s.miss_rate);
    const hit = lastNum(s.hit_rate);
    const n = times.length;
    $('#kpi-miss').textContent = miss ? fmtPct(miss.v) : '—';
    $('#kpi-hit').textContent = hit ? fmtPct(hit.v) : '—';
    $('#kpi-miss-sub').textContent = n ? 'bucket at ' + clock(times[n - 1]).slice(0, 5) : 'no buckets yet';
    $('#kpi-rpm').textContent = n ? fmtCompact(s.number_of_requests_served_per_minute[n - 1]) : '—';
    const bucket = s.bucket_ms ? (s.bucket_ms >= 60000 ? s.bucket_ms / 60000 + ' min' : s.bucket_ms / 1000 + ' s') : '';
    $('#stats-note').textContent = n + ' bucket' + (n === 1 ? '' : 's') + (bucket ? ' of ' + bucket : '') + ' · refreshing every 5 s';
  }

  // ---------- pool and node table ----------

  let knownNodes = null;
  let totalPartitions = 0;

  async function refreshPool() {
    const [list, size] = await Promise.all([api('GET', API + '/pool_node_list'), api('GET', API + '/poolsize')]);
    totalPartitions = size.partitions || totalPartitions;
    const nodes = list.nodes || [];
    const body = h('tbody');
    const seen = new Set();
    for (const n of nodes) {
      seen.add(n.id);
      const share = totalPartitions ? Math.round((100 * n.partitions) / totalPartitions) : 0;
      const tr = h('tr', {dataset: {node: n.id}, class: knownNodes && !knownNodes.has(n.id) ? 'flash' : null},
        h('td', {class: 'mono'}, n.id),
        h('td', null, stateBadge(n.state)),
        h('td', {class: 'num', title: share + '% of ' + totalPartitions}, h('span', {class: 'share'}, h('i', {style: {width: share + '%'}})), fmtInt(n.partitions)),
        h('td', {class: 'num items'}, fmtInt(n.items)),
        h('td', {class: 'num', title: fmtInt(n.bytes) + ' B'}, fmtBytes(n.bytes)),
        h('td', {class: 'num muted'}, n.last_seen ? ago(n.last_seen) : '—'));
      body.appendChild(tr);
    }
    if (!nodes.length) body.appendChild(h('tr', {class: 'empty'}, h('td', {colspan: 6}, 'no nodes')));
    knownNodes = seen;
    $('#node-table tbody').replaceWith(body);

    const active = size.size;
    $('#pill-size').textContent = active + (active === 1 ? ' node' : ' nodes') + (size.target && size.target !== active ? ' → ' + size.target : '');
    $('#pill-size').title = 'active nodes; target ' + size.target + ', at most ' + size.max_nodes;
    $('#pill-epoch').textContent = 'epoch ' + size.epoch;
    $('#pill-pending').hidden = !size.pending;
    $('#pill-pending').textContent = size.pending + ' pending';
    $('#kpi-nodes').textContent = String(active);
    $('#kpi-nodes-sub').textContent = 'target ' + size.target + ' · max ' + size.max_nodes;
    $('#btn-grow').title = 'queue a resize by +1 (max ' + size.max_nodes + ')';
    const items = nodes.reduce((a, n) => a + (n.items || 0), 0);
    const bytes = nodes.reduce((a, n) => a + (n.bytes || 0), 0);
    $('#kpi-items').textContent = fmtCompact(items);
    $('#kpi-bytes').textContent = fmtBytes(bytes);
    $('#kpi-items-sub').textContent = $('#kpi-bytes-sub').textContent = 'now, on ' + nodes.length + (nodes.length === 1 ? ' node' : ' nodes');
    setMode(size.resize_pool_option);
    if (size.migration) showMigration(size.migration);
  }

  // ---------- migration ----------

  let migrationHide = null;
  function showMigration(m) {
    const box = $('#migration');
    clearTimeout(migrationHide);
    const frac = m.total_keys > 0 ? m.moved_keys / m.total_keys : m.done ? 1 : 0;
    $('#migration-bar').style.width = (100 * Math.min(1, frac)).toFixed(1) + '%';
    $('#migration-text').textContent = (m.done ? 'complete: ' : '') + fmtInt(m.moved_keys) + ' / ' + fmtInt(m.total_keys) + ' keys · ' +
      m.partitions_moving + ' partitions · epoch ' + m.epoch;
    $('#migration-bytes').textContent = fmtBytes(m.moved_bytes) + ' of ' + fmtBytes(m.total_bytes) + ' moved' + (m.request_id ? ' · request ' + shortID(m.request_id) : '');
    box.hidden = false;
    if (m.done) migrationHide = setTimeout(() => (box.hidden = true), 6000);
  }

  // ---------- resize ----------

  const tracked = new Map(); // request id -> row element in #resize-status

  function describeCommand(c) {
    if (!c) return '—';
    if (c.change) return c.change > 0 ? '+1' : '−1';
    if (c.target) return '→ ' + c.target;
    return '—';
  }
  function sizeText(st) {
    return st.from_size || st.to_size ? (st.from_size || '?') + ' → ' + (st.to_size || '?') : '';
  }
  function took(st) {
    const hist = st.history || [];
    if (hist.length < 2) return '';
    const ms = new Date(hist[hist.length - 1].at) - new Date(hist[0].at);
    return isFinite(ms) ? ' in ' + (ms < 1000 ? ms + ' ms' : (ms / 1000).toFixed(1) + ' s') : '';
  }

  function renderTracked(st) {
    const box = $('#resize-status');
    let row = tracked.get(st.request_id);
    if (!row) {
      row = h('div', {class: 'resize-row'});
      tracked.set(st.request_id, row);
      box.prepend(row);
      while (box.children.length > 3) {
        const old = box.lastElementChild;
        for (const [id, r] of tracked) if (r === old) tracked.delete(id);
        old.remove();
      }
    }
    row.textContent = '';
    row.dataset.status = st.status;
    if (!terminal(st.status)) row.appendChild(h('span', {class: 'spinner'}));
    row.appendChild(h('span', null, describeCommand(st.command) + ' '));
    row.appendChild(stateBadge(st.status));
    let text = ' request ' + shortID(st.request_id);
    if (st.status === 'queued') text += st.sequence ? ' queued as #' + st.sequence : ' queued';
    if (st.status === 'running') text += ' running ' + sizeText(st);
    if (st.status === 'applied') text += ': ' + sizeText(st) + ' nodes' + took(st);
    if (st.status === 'rejected' || st.status === 'failed') text += ': ' + (st.reason || 'no reason given');
    row.appendChild(h('span', {class: 'muted'}, text));
    box.hidden = false;
  }

  async function resize(change) {
    const btn = change === 'increase' ? $('#btn-grow') : $('#btn-shrink');
    btn.disabled = true;
    let st;
    try {
      st = await api('POST', API + '/poolsize/manual', {change});
    } catch (e) {
      if (e.content && e.content.request_id) renderTracked(e.content);
      toast('Resize ' + change + ' failed: ' + e.message, 'err');
      return;
    } finally {
      btn.disabled = false;
    }
    renderTracked(st);
    loops.queue.kick();
    loops.pool.kick();
    follow(st);
  }

  // follow long-polls a request until it is terminal, then reports the outcome.
  async function follow(st) {
    while (!terminal(st.status)) {
      try {
        st = await api('GET', API + '/poolsize/requests/' + encodeURIComponent(st.request_id) + '?wait=25s');
      } catch (e) {
        if (e.status >= 400 && e.status < 500) return toast('Lost track of request ' + shortID(st.request_id) + ': ' + e.message, 'err');
        await new Promise((r) => setTimeout(r, 2000));
        continue;
      }
      renderTracked(st);
    }
    const what = describeCommand(st.command) + ' node';
    if (st.status === 'applied') toast(what + ' applied: ' + sizeText(st) + ' nodes' + took(st), 'ok');
    else toast(what + ' ' + st.status + ': ' + (st.reason || ''), 'err');
    loops.pool.kick();
    loops.queue.kick();
  }

  async function refreshQueue() {
    const l = await api('GET', API + '/poolsize/requests');
    const reqs = (l.requests || []).slice(0, 25);
    const body = h('tbody');
    for (const r of reqs) {
      body.appendChild(h('tr', {dataset: {request: r.request_id}},
        h('td', {class: 'mono', title: r.request_id}, shortID(r.request_id)),
        h('td', {class: 'nowrap'}, describeCommand(r.command) + ' ', r.command && r.command.source === 'scaler' ? badge('scaler', 'purple') : badge(r.command ? r.command.source || 'manual' : '—', 'blue')),
        h('td', {title: r.reason || ''}, stateBadge(r.status)),
        h('td', {class: 'muted why', title: r.reason || ''}, sizeText(r) || r.reason || ''),
        h('td', {class: 'num muted'}, ago(r.occurred_at || (r.history && r.history.length ? r.history[r.history.length - 1].at : null)))));
      if (tracked.has(r.request_id)) renderTracked(r);
    }
    if (!reqs.length) body.appendChild(h('tr', {class: 'empty'}, h('td', {colspan: 5}, 'no requests yet')));
    $('#resize-queue tbody').replaceWith(body);
  }

  async function refreshDecisions() {
    const l = await api('GET', API + '/scaler/decisions');
    const ds = (l.decisions || []).slice(0, 25);
    const body = h('tbody');
    for (const d of ds) {
      body.appendChild(h('tr', null,
        h('td', {class: 'muted'}, clock(d.occurred_at)),
        h('td', null, stateBadge(d.action)),
        h('td', {class: 'num'}, d.miss_rate == null ? '—' : fmtPct(d.miss_rate)),
        h('td', {class: 'nowrap'}, d.target && d.action !== 'none' ? d.nodes + ' → ' + d.target : d.nodes > 0 ? String(d.nodes) : '—'),
        h('td', {class: 'why', title: d.reason || ''}, d.reason || '')));
    }
    if (!ds.length) body.appendChild(h('tr', {class: 'empty'}, h('td', {colspan: 5}, 'no decisions yet (the scaler decides in automatic mode)')));
    $('#decisions tbody').replaceWith(body);
  }

  // ---------- mode and automatic parameters ----------

  let currentMode = '';
  let autoDirty = false;
  let cacheDirty = false;

  function setMode(mode) {
    if (!mode) return;
    currentMode = mode;
    $('#mode-manual').setAttribute('aria-pressed', String(mode === 'manual'));
    $('#mode-automatic').setAttribute('aria-pressed', String(mode === 'automatic'));
    const pill = $('#pill-mode');
    pill.textContent = mode;
    pill.className = 'pill ' + (mode === 'automatic' ? 'auto' : 'manual');
  }

  function fillAuto(p) {
    if (autoDirty || !p) return;
    $('#auto-max').value = p.max_miss_rate_threshold;
    $('#auto-min').value = p.min_miss_rate_threshold;
    $('#auto-expand').value = p.expand_ratio;
    $('#auto-shrink').value = p.shrink_ratio;
  }

  function modeHelp(p) {
    if (!p) return '';
    if (currentMode === 'automatic') {
      return 'Each scaler tick: grow ×' + p.expand_ratio + ' above ' + fmtPct(p.max_miss_rate_threshold) +
        ' misses, shrink ×' + p.shrink_ratio + ' below ' + fmtPct(p.min_miss_rate_threshold) + '.';
    }
    return 'The pool changes only on request. The parameters below are kept for automatic mode.';
  }

  async function refreshConfig() {
    const [mode, cache] = await Promise.all([api('GET', API + '/poolsize/config'), api('GET', API + '/cache/config')]);
    setMode(mode.resize_pool_option);
    const params = mode.stored_parameters || mode.resize_pool_parameters;
    fillAuto(params);
    $('#mode-help').textContent = modeHelp(params);
    if (!cacheDirty) {
      $('#cache-capacity').value = cache.capacity;
      $('#cache-policy').value = cache.replacement_policy;
    }
  }

  async function switchMode(mode) {
    if (mode === currentMode) return;
    try {
      const m = await api('POST', API + '/mode', {mode});
      setMode(m.resize_pool_option);
      toast('Resize mode: ' + m.resize_pool_option, 'ok');
    } catch (e) {
      toast('Could not switch to ' + mode + ': ' + e.message, 'err');
    }
    loops.config.kick();
  }

  function numberField(id) {
    const raw = $(id).value.trim();
    return raw === '' ? undefined : Number(raw);
  }

  function showFormResult(prefix, err, okText) {
    const errBox = $('#' + prefix + '-error');
    const okBox = $('#' + prefix + '-ok');
    errBox.hidden = !err;
    errBox.textContent = err ? err.message : '';
    okBox.hidden = !okText;
    okBox.textContent = okText || '';
  }

  async function saveAuto(ev) {
    ev.preventDefault();
    const body = {};
    const fields = {max_miss_rate_threshold: '#auto-max', min_miss_rate_threshold: '#auto-min', expand_ratio: '#auto-expand', shrink_ratio: '#auto-shrink'};
    for (const k in fields) {
      const v = numberField(fields[k]);
      if (v !== undefined) body[k] = v;
    }
    const btn = $('#auto-save');
    btn.disabled = true;
    try {
      const m = await api('POST', API + '/poolsize/automatic', body);
      autoDirty = false;
      setMode(m.resize_pool_option);
      fillAuto(m.resize_pool_parameters);
      showFormResult('auto', null, 'Saved. The pool is in automatic mode.');
    } catch (e) {
      // The server changed nothing; keep the operator's input so it can be fixed.
      showFormResult('auto', e, null);
    } finally {
      btn.disabled = false;
    }
    loops.config.kick();
  }

  async function saveCache(ev) {
    ev.preventDefault();
    const body = {replacement_policy: $('#cache-policy').value};
    const cap = numberField('#cache-capacity');
    if (cap !== undefined) body.capacity = cap;
    const btn = $('#cache-save');
    btn.disabled = true;
    try {
      const c = await api('POST', API + '/cache/config', body);
      cacheDirty = false;
      $('#cache-capacity').value = c.capacity;
      $('#cache-policy').value = c.replacement_policy;
      showFormResult('cache', null, 'Applied to every node: ' + c.capacity + ' MB, ' + c.replacement_policy + '.');
    } catch (e) {
      showFormResult('cache', e, null);
    } finally {
      btn.disabled = false;
    }
  }

  // ---------- clearing ----------

  async function clearCache() {
    const yes = await confirmAction({
      title: 'Clear the cache?',
      text: 'Every cache node drops all its items. Images stay in the store, so the next reads are misses that refill the cache.',
      yes: 'Clear cache',
    });
    if (!yes) return;
    try {
      const r = await api('DELETE', API + '/cache/clear');
      toast('Cache cleared: ' + fmtInt(r.items) + ' items (' + fmtBytes(r.bytes) + ')' + (r.nodes ? ' from ' + r.nodes + ' nodes' : ''), 'ok');
    } catch (e) {
      toast('Clear cache failed: ' + e.message, 'err');
    }
    loops.pool.kick();
    loops.stats.kick();
  }

  async function clearData() {
    const yes = await confirmAction({
      title: 'Delete all data?',
      text: 'This deletes every key, every stored image and every cached item. It cannot be undone.',
      yes: 'Delete everything',
      typed: 'delete',
    });
    if (!yes) return;
    try {
      const r = await api('DELETE', API + '/data/clear');
      toast('Deleted ' + fmtInt(r.rows) + ' keys, ' + fmtInt(r.objects) + ' objects, ' + fmtInt(r.cached_items) + ' cached items', 'ok');
    } catch (e) {
      toast('Delete all data failed: ' + e.message, 'err');
    }
    loops.pool.kick();
    loops.stats.kick();
  }

  // ---------- live events ----------

  let paused = false;
  let skipped = 0;

  function eventName(subject) {
    // cachepool.v1.<domain>.evt.<name>[.<id>] -> <domain>.<name>
    const p = subject.split('.');
    return p.length >= 5 ? p[2] + '.' + p[4] : subject;
  }

  function summarize(name, d) {
    switch (name) {
      case 'pool.request':
        return describeCommand(d.command) + ' ' + d.status + ' ' + shortID(d.request_id) + (sizeText(d) ? ' (' + sizeText(d) + ')' : '') + (d.reason ? ': ' + d.reason : '');
      case 'pool.table':
        return 'epoch ' + d.epoch + ': ' + (d.nodes || []).length + ' nodes' + (d.previous && d.previous.length ? ', migrating' : '');
      case 'pool.migration':
        return (d.done ? 'done: ' : '') + fmtInt(d.moved_keys) + '/' + fmtInt(d.total_keys) + ' keys, ' + fmtBytes(d.moved_bytes) + ' of ' + fmtBytes(d.total_bytes);
      case 'pool.node':
        return d.node + ' ' + d.kind + (d.detail ? ': ' + d.detail : '');
      case 'pool.config':
        return 'mode ' + (d.mode && d.mode.resize_pool_option) + ', ' + (d.config && d.config.capacity) + ' MB ' + (d.config && d.config.replacement_policy);
      case 'pool.cleared':
        return d.what === 'data'
          ? 'data cleared: ' + fmtInt(d.rows) + ' keys, ' + fmtInt(d.objects) + ' objects, ' + fmtInt(d.cached_items) + ' cached'
          : 'cache cleared: ' + fmtInt(d.cached_items) + ' items';
      case 'stats.minute':
        return 'bucket ' + clock(d.start) + ': ' + fmtInt(d.gets) + ' gets, miss ' + fmtPct(d.miss_rate) + ', ' + fmtInt(d.items) + ' items';
      case 'scaler.decision':
        return d.action + (d.target && d.action !== 'none' ? ' to ' + d.target : '') + ': ' + d.reason;
      case 'node.ready':
      case 'node.stopped':
        return d.node + (d.standby ? ' (standby)' : '');
      default: {
        const s = JSON.stringify(d);
        return s.length > 160 ? s.slice(0, 160) + '…' : s;
      }
    }
  }

  const KIND_COLORS = {pool: '--accent', stats: '--teal', scaler: '--purple', node: '--green', store: '--amber'};

  function addEvent(subject, data) {
    const name = eventName(subject);
    if (paused) {
      skipped++;
      $('#events-pause').parentElement.lastChild.textContent = ' pause (' + skipped + ' new)';
      return;
    }
    const list = $('#events');
    const empty = list.querySelector('.empty');
    if (empty) empty.remove();
    const kind = h('span', {class: 'ev-kind', title: subject}, name);
    kind.style.color = color(KIND_COLORS[name.split('.')[0]] || '--muted');
    const li = h('li', {class: 'fresh'}, h('time', null, clock(data && data.occurred_at ? data.occurred_at : new Date())), kind,
      h('span', {class: 'ev-text'}, data && typeof data === 'object' ? summarize(name, data) : String(data)));
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  function onEvent(subject, raw) {
    let data = raw;
    try {
      data = JSON.parse(raw);
    } catch (_) { /* not JSON: show it as text */ }
    addEvent(subject, data);
    const name = eventName(subject);
    switch (name) {
      case 'pool.request':
        if (data && tracked.has(data.request_id)) renderTracked(data);
        loops.queue.kick();
        loops.pool.kick();
        break;
      case 'pool.migration':
        if (data) showMigration(data);
        break;
      case 'pool.table':
      case 'pool.node':
      case 'node.ready':
      case 'node.stopped':
        loops.pool.kick();
        break;
      case 'pool.config':
        loops.config.kick();
        loops.pool.kick();
        break;
      case 'pool.cleared':
        loops.pool.kick();
        loops.stats.kick();
        break;
      case 'stats.minute':
        loops.stats.kick();
        break;
      case 'scaler.decision':
        loops.decisions.kick();
        break;
    }
  }

  function setConn(state, text) {
    $('#conn').dataset.state = state;
    $('#conn-text').textContent = text;
  }

  // streamEvents reads GET /api/events (text/event-stream) and reconnects
  // with backoff. Without the stream the page still refreshes by polling.
  async function streamEvents() {
    let backoff = 1000;
    for (;;) {
      setConn('connecting', 'connecting');
      try {
        const res = await fetch('/api/events', {headers: {Accept: 'text/event-stream'}, cache: 'no-store'});
        if (!res.ok || !res.body) throw new ApiError(res.status, 'HTTP ' + res.status);
        setConn('live', 'live');
        backoff = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, '\n');
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let ev = 'message';
            const data = [];
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) continue;
              const colon = line.indexOf(':');
              const field = colon < 0 ? line : line.slice(0, colon);
              const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
              if (field === 'event') ev = val;
              else if (field === 'data') data.push(val);
            }
            if (data.length) onEvent(ev, data.join('\n'));
          }
        }
        setConn('down', 'reconnecting');
      } catch (e) {
        if (e.status === 404) {
          setConn('down', 'no live events (polling)');
          backoff = 30000;
        } else {
          setConn('down', 'reconnecting');
        }
      }
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 30000);
    }
  }

  // ---------- wiring ----------

  const loops = {
    stats: loop('statistics', 5000, refreshStats),
    pool: loop('pool', 3000, refreshPool),
    config: loop('configuration', 10000, refreshConfig),
    queue: loop('resize queue', 5000, refreshQueue),
    decisions: loop('scaler', 5000, refreshDecisions),
  };

  function init() {
    setupCharts();
    updateTokenButton();
    $('#btn-grow').addEventListener('click', () => resize('increase'));
    $('#btn-shrink').addEventListener('click', () => resize('decrease'));
    $('#mode-manual').addEventListener('click', () => switchMode('manual'));
    $('#mode-automatic').addEventListener('click', () => switchMode('automatic'));
    $('#auto-form').addEventListener('submit', saveAuto);
    $('#auto-form').addEventListener('input', () => {
      autoDirty = true;
      $('#auto-ok').hidden = true;
    });
    $('#auto-reset').addEventListener('click', () => {
      autoDirty = false;
      showFormResult('auto', null, null);
      loops.config.kick();
    });
    $('#cache-form').addEventListener('submit', saveCache);
    $('#cache-form').addEventListener('input', () => {
      cacheDirty = true;
      $('#cache-ok').hidden = true;
    });
    $('#cache-reset').addEventListener('click', () => {
      cacheDirty = false;
      showFormResult('cache', null, null);
      loops.config.kick();
    });
    $('#btn-clear-cache').addEventListener('click', clearCache);
    $('#btn-clear-data').addEventListener('click', clearData);
    $('#btn-token').addEventListener('click', () => askToken(''));
    $('#events-pause').addEventListener('change', (ev) => {
      paused = ev.target.checked;
      if (!paused) {
        skipped = 0;
        ev.target.parentElement.lastChild.textContent = ' pause';
      }
    });
    for (const l of Object.values(loops)) l.start();
    streamEvents();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
