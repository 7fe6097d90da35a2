// The dispatchers' console: sign-in (session cookie + CSRF, no key kept by the browser),
// a live map, the order board and order pages, the queues that need a person, drivers,
// integrations, dead letters and the numbers. Live over the tenant event stream.
import { api, esc, relTime, clockTime, STATUS_LABEL } from '/assets/shared/api.js';
import { createMap, dot } from '/assets/shared/map.js';

const $ = (id) => document.getElementById(id);
const view = () => $('view');
const ACTIVE = ['needs_location', 'received', 'dispatching', 'assigned', 'picked_up'];
const FINISHED = ['delivered', 'failed', 'cancelled'];
const ORDER_COLOR = { needs_location: '#b3261e', received: '#f2a900', dispatching: '#f2a900', assigned: '#7b3fe4',
  picked_up: '#0b5fff', delivered: '#0a7d3b', failed: '#b3261e', cancelled: '#9aa0a6' };
const EVENT_KINDS = ['order_created', 'order_updated', 'order_status_changed', 'order_cancelled', 'order_dispatch_stalled',
  'offer_sent', 'offer_declined', 'offer_expired', 'order_assigned', 'driver_status_changed', 'sync_dead_lettered'];

let session = null;
let orders = new Map();
let drivers = [];
let current = null; // { name, render, cleanup }
let refreshTimer = null;

// ---- helpers ------------------------------------------------------------------------------
function flash(text, kind = 'notice') {
  const f = $('flash');
  f.className = kind;
  f.textContent = text;
  f.hidden = !text;
}
function badge(status) { return `<span class="badge ${esc(status)}">${esc(STATUS_LABEL[status] || status)}</span>`; }
function addr(o) {
  const a = (o.dropoff && o.dropoff.address) || {};
  return [a.line1, a.postal_code, a.city].filter(Boolean).join(', ');
}
function orderName(o) { return o.platform_order_number ? `#${o.platform_order_number}` : o.id.slice(-8); }
function driverColor(d) {
  if (d.status === 'offline') return '#9aa0a6';
  if (d.status === 'break') return '#f2a900';
  return d.active_orders > 0 ? '#0b5fff' : '#0a7d3b';
}
function driverState(d) {
  if (d.status !== 'online') return d.status;
  return d.active_orders > 0 ? 'busy' : 'available';
}
/** Messages for answers that mean "this server has no such endpoint yet". */
function explain(e, what) {
  if (e.status === 404 && e.code === 'not_found' && /no route/.test(e.message)) return `${what} is not available on this server yet.`;
  if (e.status === 403) return `Your role may not do this (${e.message}).`;
  return e.message;
}
async function act(fn, ok) {
  try {
    await fn();
    await loadAll();
    await rerender(true); // keeps the flash line, which says what just happened
    if (ok) flash(ok, 'ok');
  } catch (e) {
    flash(e.userMessage || e.message, 'error');
  }
}

// ---- data ---------------------------------------------------------------------------------
async function loadOrders() {
  const since = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
  const lists = await Promise.all([
    ...ACTIVE.map((s) => api('GET', `/v1/orders?status=${s}&limit=500`)),
    ...FINISHED.map((s) => api('GET', `/v1/orders?status=${s}&limit=500&updated_since=${encodeURIComponent(since)}`)),
  ]);
  orders = new Map(lists.flatMap((l) => l.orders).map((o) => [o.id, o]));
}
async function loadDrivers() { drivers = (await api('GET', '/v1/drivers')).drivers; }
async function loadAll() {
  await Promise.all([loadOrders(), loadDrivers()]);
  const waiting = [...orders.values()].filter((o) => o.status === 'needs_location' || o.dispatch_stalled).length;
  $('queue-count').textContent = waiting ? String(waiting) : '';
}
/** At most one refresh per half second however fast events come (a busy city sends many). */
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    try { await loadAll(); rerender(true); } catch { /* the next event retries */ }
    refreshTimer = null;
  }, 500);
}

function listen() {
  const es = new EventSource('/v1/events');
  es.onopen = () => { $('live').textContent = 'live'; };
  es.onerror = () => { $('live').textContent = 'reconnecting…'; };
  for (const k of EVENT_KINDS) es.addEventListener(k, scheduleRefresh);
}

// ---- routing ------------------------------------------------------------------------------
const VIEWS = {
  map: renderMap, orders: renderBoard, order: renderOrder, queues: renderQueues, drivers: renderDrivers,
  integrations: renderIntegrations, 'dead-letters': renderDeadLetters, numbers: renderNumbers,
};
function route() {
  const [, name = 'map', arg] = location.hash.split('/');
  return { name: VIEWS[name] ? name : 'map', arg: arg ? decodeURIComponent(arg) : undefined };
}
async function rerender(live = false) {
  const r = route();
  if (live && current && current.update && current.name === r.name && current.arg === r.arg) {
    current.update();
    return;
  }
  if (current && current.cleanup) current.cleanup();
  for (const a of document.querySelectorAll('.top nav a')) {
    a.toggleAttribute('aria-current', a.getAttribute('href') === `#/${r.name === 'order' ? 'orders' : r.name}`);
    if (a.hasAttribute('aria-current')) a.setAttribute('aria-current', 'page');
  }
  if (!live) flash('');
  current = { name: r.name, arg: r.arg };
  await VIEWS[r.name](r.arg, current);
  document.body.dataset.view = r.name;
}
window.addEventListener('hashchange', () => { rerender(); view().focus(); });

// ---- live map -----------------------------------------------------------------------------
async function renderMap(_arg, ctx) {
  view().innerHTML = `<h1 class="sr-only">Live map</h1>
    <p class="legend muted"><span><i style="background:#0a7d3b"></i>available</span><span><i style="background:#0b5fff"></i>busy</span>
    <span><i style="background:#9aa0a6"></i>offline</span> · orders: <span><i style="background:#f2a900"></i>waiting</span>
    <span><i style="background:#7b3fe4"></i>assigned</span><span><i style="background:#0b5fff"></i>on its way</span>
    <span><i style="background:#0a7d3b"></i>delivered</span></p>
    <div id="bigmap" class="bigmap" role="application" aria-label="Live map of drivers and orders"></div>`;
  const map = await createMap($('bigmap'), { zoom: 14, fit: true });
  const layer = window.L.layerGroup().addTo(map);
  const draw = () => {
    const started = performance.now();
    layer.clearLayers();
    const jobs = new Map();
    for (const o of orders.values()) {
      if (o.driver_id && (o.status === 'assigned' || o.status === 'picked_up')) jobs.set(o.driver_id, o);
    }
    for (const o of orders.values()) {
      if (o.dropoff.lat == null || o.status === 'cancelled') continue;
      dot([o.dropoff.lat, o.dropoff.lng], ORDER_COLOR[o.status], 6)
        .bindPopup(`<strong>Order ${esc(orderName(o))}</strong><br>${badge(o.status)}<br>${esc(addr(o))}<br><a href="#/order/${esc(o.id)}">Open order</a>`)
        .addTo(layer);
    }
    for (const d of drivers) {
      if (!d.location) continue;
      const job = jobs.get(d.id);
      dot([d.location.lat, d.location.lng], driverColor(d), 9)
        .bindPopup(`<strong>${esc(d.name)}</strong><br>${esc(driverState(d))} · ${d.active_orders}/${d.capacity}<br>
          last fix ${esc(relTime(d.last_seen_at))}<br>${job ? `job: <a href="#/order/${esc(job.id)}">${esc(orderName(job))}</a> ${badge(job.status)}` : 'no job'}`)
        .addTo(layer);
    }
    // How long a redraw takes, for the record (the map redraws every 3 s and on events).
    $('bigmap').dataset.drawMs = String(Math.round(performance.now() - started));
  };
  draw();
  const poll = setInterval(async () => { try { await loadDrivers(); draw(); } catch { /* next tick */ } }, 3000);
  ctx.update = draw;
  ctx.cleanup = () => { clearInterval(poll); map.remove(); };
}

// ---- order board --------------------------------------------------------------------------
async function renderBoard(_arg, ctx) {
  const stores = (await api('GET', '/v1/stores').catch(() => ({ stores: [] }))).stores;
  view().innerHTML = `<h1>Orders</h1>
    <form class="row" id="filters" role="search">
      <label class="sr-only" for="q">Search orders</label>
      <input id="q" class="grow" type="search" placeholder="Search by number, id, customer or address">
      <label class="sr-only" for="store">Store</label>
      <select id="store"><option value="">All stores</option>${stores.map((s) => `<option value="${esc(s.id)}">${esc(s.name)}</option>`).join('')}</select>
      <label><input type="checkbox" id="stalled"> Only flagged</label>
    </form>
    <div class="board" id="board"></div>`;
  const draw = () => {
    const q = $('q').value.trim().toLowerCase();
    const store = $('store').value;
    const onlyFlagged = $('stalled').checked;
    const match = (o) => (!store || o.store_id === store) && (!onlyFlagged || o.dispatch_stalled)
      && (!q || [o.id, o.platform_order_number, o.customer && o.customer.name, addr(o)].some((v) => String(v || '').toLowerCase().includes(q)));
    $('board').innerHTML = [...ACTIVE, ...FINISHED].map((s) => {
      const list = [...orders.values()].filter((o) => o.status === s && match(o)).sort((a, b) => b.updated_at.localeCompare(a.updated_at));
      return `<section class="col" data-status="${s}" aria-label="${esc(STATUS_LABEL[s])}">
        <h2><span>${esc(STATUS_LABEL[s])}</span><span class="muted">${list.length}</span></h2>
        <ul>${list.slice(0, 200).map((o) => `<li><a href="#/order/${esc(o.id)}" data-order="${esc(o.id)}">
          <strong>${esc(orderName(o))}</strong> ${o.dispatch_stalled ? '<span class="badge failed">stalled</span>' : ''}<br>
          <span class="muted">${esc(o.customer ? o.customer.name : '')} · ${esc(addr(o))}</span></a></li>`).join('')}</ul></section>`;
    }).join('');
  };
  for (const id of ['q', 'store', 'stalled']) $(id).addEventListener('input', draw);
  $('filters').addEventListener('submit', (e) => e.preventDefault());
  draw();
  ctx.update = draw;
}

// ---- one order ----------------------------------------------------------------------------
function proofOf(order, timeline) {
  if (order.proof) return order.proof;
  const ev = (timeline || []).find((e) => (e.to || (e.data && e.data.to)) === 'delivered');
  return ev ? (ev.detail || (ev.data && ev.data.detail) || null) : null;
}

async function renderOrder(id, ctx) {
  let o;
  try { o = await api('GET', `/v1/orders/${encodeURIComponent(id)}`); } catch (e) {
    view().innerHTML = `<p class="error">${esc(e.status === 404 ? 'No such order.' : e.message)}</p>`;
    return;
  }
  let timeline = null;
  let timelineNote = '';
  try {
    const t = await api('GET', `/v1/orders/${encodeURIComponent(id)}/events`);
    timeline = t.events || t.timeline || [];
  } catch (e) { timelineNote = explain(e, 'The order timeline'); }
  const driver = drivers.find((d) => d.id === o.driver_id);
  const proof = proofOf(o, timeline);
  const photos = (await api('GET', `/v1/orders/${encodeURIComponent(id)}/photos`).catch(() => ({ photos: [] }))).photos;
  const photoUrl = (proof && proof.photo_url) || (photos.length ? photos[photos.length - 1].url : null);
  const candidates = drivers.filter((d) => d.status === 'online');
  view().innerHTML = `<p><a href="#/orders">← Orders</a></p>
    <h1>Order ${esc(orderName(o))} ${badge(o.status)} ${o.dispatch_stalled ? '<span class="badge failed">dispatch stalled</span>' : ''}</h1>
    <div class="grid2">
      <section class="card"><h2>Details</h2>
        <p><strong>Customer:</strong> ${esc(o.customer && o.customer.name)} ${esc(o.customer && o.customer.phone)}</p>
        <p><strong>Deliver to:</strong> ${esc(addr(o))}</p>
        <p><strong>Store order:</strong> ${esc(o.platform)} ${esc(o.platform_order_id)}</p>
        <p><strong>Driver:</strong> ${esc(driver ? driver.name : o.driver_id || '—')}</p>
        <p><strong>Ready:</strong> ${esc(clockTime(o.ready_at))} · <strong>ETA:</strong> ${esc(clockTime(o.eta))}</p>
        ${o.status_reason ? `<p><strong>Reason:</strong> ${esc(o.status_reason)}</p>` : ''}
        <p><a href="/track/${esc(o.tracking_token)}" target="_blank" rel="noopener">Customer's tracking page</a></p>
      </section>
      <section class="card"><h2>Actions</h2>
        <div class="row">
          <label class="sr-only" for="assign-driver">Driver</label>
          <select id="assign-driver">${candidates.map((d) => `<option value="${esc(d.id)}">${esc(d.name)} (${d.active_orders}/${d.capacity})</option>`).join('') || '<option value="">No driver online</option>'}</select>
          <button id="assign" type="button">${o.driver_id ? 'Reassign' : 'Assign'}</button>
          <button id="unassign" type="button" ${o.driver_id ? '' : 'disabled'}>Unassign</button>
        </div>
        <div class="row" style="margin-top:.5rem">
          ${o.dispatch_stalled ? '<button id="unstall" type="button">Retry dispatch</button>' : ''}
          <button id="cancel" class="danger" type="button">Cancel order</button>
        </div>
      </section>
    </div>
    <section class="card"><h2>Timeline</h2>${timelineNote ? `<p class="muted">${esc(timelineNote)}</p>` : ''}
      <ol class="timeline">${(timeline || []).map((e) => `<li><strong>${esc(e.kind || e.type || e.to || '')}</strong>
        ${esc(e.from ? `${e.from} → ${e.to}` : (e.data && e.data.to) ? `${e.data.from} → ${e.data.to}` : '')}
        <span class="muted">${esc(clockTime(e.at || e.occurred_at || e.created_at))}</span></li>`).join('')}</ol></section>
    <section class="card proof"><h2>Proof of delivery</h2>
      ${proof ? `<p><strong>Recipient:</strong> ${esc(proof.recipient_name || '—')}</p>
      ${proof.distance_from_dropoff_m != null ? `<p class="muted">${Math.round(proof.distance_from_dropoff_m)} m from the dropoff${proof.far_from_dropoff ? ' — flagged' : ''}</p>` : ''}` : ''}
      ${photoUrl ? `<img src="${esc(photoUrl)}" alt="Delivery photo">` : ''}
      ${!proof && !photoUrl ? `<p class="muted">${o.status === 'delivered' ? 'No proof recorded.' : 'Not delivered yet.'}</p>` : ''}</section>`;
  const oid = encodeURIComponent(o.id);
  const call = (method, path, body, what) => api(method, path, body).catch((e) => { e.userMessage = explain(e, what); throw e; });
  $('assign').onclick = () => act(() => call('POST', `/v1/orders/${oid}/assign`, { driver_id: $('assign-driver').value }, 'Assigning'), 'Assigned.');
  $('unassign').onclick = () => act(() => call('POST', `/v1/orders/${oid}/unassign`, {}, 'Unassigning'), 'Unassigned.');
  $('cancel').onclick = () => act(() => call('POST', `/v1/orders/${oid}/cancel`, { reason: 'cancelled by dispatch' }, 'Cancelling'), 'Cancelled.');
  if ($('unstall')) $('unstall').onclick = () => act(() => call('POST', `/v1/orders/${oid}/unstall`, undefined, 'Retrying'), 'Back in dispatch.');
  ctx.update = () => renderOrder(id, ctx);
}

// ---- queues -------------------------------------------------------------------------------
async function renderQueues(_arg, ctx) {
  const all = [...orders.values()];
  const needs = all.filter((o) => o.status === 'needs_location');
  const stalled = all.filter((o) => o.dispatch_stalled && ACTIVE.includes(o.status));
  let choices = [];
  try { choices = (await api('GET', '/v1/customer-choices')).choices; } catch { /* shown empty */ }
  view().innerHTML = `<h1>Queues</h1>
    <section class="card" id="needs"><h2>Needs a location (${needs.length})</h2>
      ${needs.length ? '' : '<p class="muted">Nothing to locate.</p>'}
      ${needs.map((o) => `<div class="card locate" data-order="${esc(o.id)}">
        <p><a href="#/order/${esc(o.id)}"><strong>${esc(orderName(o))}</strong></a> — ${esc(addr(o))}
        <span class="muted">${esc(o.status_reason || '')}</span></p>
        <div class="row"><label class="sr-only" for="geo-${esc(o.id)}">Address</label>
          <input id="geo-${esc(o.id)}" class="grow geo-q" value="${esc(addr(o))}">
          <button type="button" class="geo-search">Search address</button></div>
        <p class="muted">Or click the map where the customer is.</p>
        <div class="map pickmap"></div>
        <div class="row" style="margin-top:.5rem"><span class="picked muted grow">No point chosen.</span>
          <button type="button" class="primary save-loc" disabled>Save location</button></div></div>`).join('')}
    </section>
    <section class="card"><h2>Dispatch stalled (${stalled.length})</h2>
      ${stalled.length ? `<ul>${stalled.map((o) => `<li><a href="#/order/${esc(o.id)}">${esc(orderName(o))}</a> ${badge(o.status)}
        <span class="muted">${esc(o.status_reason || '')}</span>
        <button type="button" class="unstall" data-order="${esc(o.id)}">Retry dispatch</button></li>`).join('')}</ul>` : '<p class="muted">None.</p>'}
    </section>
    <section class="card"><h2>Customers' choices on slow deliveries</h2>
      ${choices.length ? `<table><thead><tr><th>Order</th><th>Choice</th><th>When</th><th>Now</th></tr></thead><tbody>
        ${choices.map((c) => { const o = orders.get(c.order_id); return `<tr><td><a href="#/order/${esc(c.order_id)}">${esc(o ? orderName(o) : c.order_id)}</a></td>
          <td>${c.choice === 'cancel' ? 'cancelled' : 'keeps waiting'}</td><td>${esc(relTime(c.created_at))}</td><td>${o ? badge(o.status) : ''}</td></tr>`; }).join('')}
      </tbody></table>` : '<p class="muted">None in the last day.</p>'}
    </section>`;
  const maps = [];
  for (const box of view().querySelectorAll('.locate')) {
    const id = box.dataset.order;
    let point = null;
    let marker = null;
    const map = await createMap(box.querySelector('.pickmap'), { zoom: 13, fit: true });
    maps.push(map);
    const choose = (lat, lng, label) => {
      point = { lat, lng };
      if (marker) marker.setLatLng([lat, lng]); else marker = window.L.marker([lat, lng]).addTo(map);
      map.panTo([lat, lng]);
      box.querySelector('.picked').textContent = `${label}: ${lat.toFixed(5)}, ${lng.toFixed(5)}`;
      box.querySelector('.save-loc').disabled = false;
    };
    map.on('click', (e) => choose(e.latlng.lat, e.latlng.lng, 'Chosen on the map'));
    box.querySelector('.geo-search').onclick = async () => {
      try {
        const g = await api('GET', `/v1/geocode?q=${encodeURIComponent(box.querySelector('.geo-q').value)}`);
        choose(g.lat, g.lng, `Found “${g.matched || ''}”`);
      } catch (e) {
        flash(e.code === 'address_not_found' ? 'Address not found: click the map instead.' : explain(e, 'Address search'), 'error');
      }
    };
    box.querySelector('.save-loc').onclick = () => act(
      () => api('PATCH', `/v1/orders/${encodeURIComponent(id)}`, { dropoff: point }),
      'Location saved: the order goes to dispatch.',
    );
  }
  for (const b of view().querySelectorAll('.unstall')) {
    b.onclick = () => act(() => api('POST', `/v1/orders/${encodeURIComponent(b.dataset.order)}/unstall`), 'Back in dispatch.');
  }
  ctx.cleanup = () => maps.forEach((m) => m.remove());
}

// ---- drivers ------------------------------------------------------------------------------
async function renderDrivers(_arg, ctx) {
  const draw = () => {
    view().innerHTML = `<h1>Drivers</h1>
      <table><thead><tr><th>Name</th><th>State</th><th>Load</th><th>Last fix</th><th>Vehicle</th><th></th></tr></thead><tbody>
      ${drivers.map((d) => `<tr data-driver="${esc(d.id)}"><td>${esc(d.name)}</td><td>${esc(driverState(d))}</td>
        <td>${d.active_orders}/${d.capacity}</td><td>${esc(relTime(d.last_seen_at))}</td><td>${esc(d.vehicle)}</td>
        <td class="row"><button type="button" class="code">Login code</button><button type="button" class="danger revoke">Revoke</button></td></tr>`).join('')}
      </tbody></table>
      <div id="code-box" class="card" hidden aria-live="polite"></div>
      <section class="card"><h2>Add a driver</h2>
        <form id="new-driver" class="row">
          <label>Name <input name="name" required></label><label>Phone <input name="phone"></label>
          <label>Vehicle <input name="vehicle" value="bike"></label><label>Capacity <input name="capacity" type="number" min="1" max="50" value="1"></label>
          <button class="primary" type="submit">Add</button></form></section>`;
    for (const tr of view().querySelectorAll('tr[data-driver]')) {
      const id = encodeURIComponent(tr.dataset.driver);
      tr.querySelector('.code').onclick = async () => {
        try {
          const c = await api('POST', `/v1/drivers/${id}/login-code`);
          const link = `${location.origin}${c.app_url}`;
          $('code-box').hidden = false;
          $('code-box').innerHTML = `<p>One-time sign-in code for <strong>${esc(tr.cells[0].textContent)}</strong>, valid until ${esc(clockTime(c.expires_at))}:</p>
            <p class="big" style="font-size:2rem;font-weight:800" id="login-code">${esc(c.code)}</p>
            <p>Or open on the phone: <a href="${esc(link)}">${esc(link)}</a></p><p class="muted">Shown once. Using it signs out the driver's previous device.</p>`;
        } catch (e) { flash(explain(e, 'Login codes'), 'error'); }
      };
      tr.querySelector('.revoke').onclick = () => act(() => api('DELETE', `/v1/drivers/${id}`), 'Driver revoked.');
    }
    $('new-driver').onsubmit = (ev) => {
      ev.preventDefault();
      const f = new FormData(ev.target);
      act(() => api('POST', '/v1/drivers', { name: f.get('name'), phone: f.get('phone'), vehicle: f.get('vehicle'), capacity: Number(f.get('capacity')) }),
        'Driver added. Give them a login code.');
    };
  };
  draw();
  ctx.update = () => { if (!$('code-box') || $('code-box').hidden) draw(); };
}

// ---- integrations -------------------------------------------------------------------------
async function renderIntegrations() {
  const list = (await api('GET', '/v1/integrations')).integrations;
  view().innerHTML = `<h1>Integrations</h1>${list.length ? `<table><thead><tr><th>Store</th><th>Platform</th><th>Breaker</th>
    <th>Backlog</th><th>Dead letters</th><th>Last success</th><th>Last error</th></tr></thead><tbody>
    ${list.map((i) => `<tr><td>${esc(i.store_name)}</td><td>${esc(i.platform)}</td><td><span class="badge ${i.breaker === 'closed' ? 'delivered' : 'failed'}">${esc(i.breaker)}</span></td>
      <td>${i.backlog}</td><td>${i.dead_letters}</td><td>${esc(relTime(i.last_success_at))}</td>
      <td>${esc(i.last_error || '—')} ${i.degraded ? `<br><span class="notice">${esc(i.degraded)}</span>` : ''}</td></tr>`).join('')}</tbody></table>`
    : '<p class="muted">No platform stores.</p>'}`;
}

// ---- dead letters -------------------------------------------------------------------------
async function renderDeadLetters(_arg, ctx) {
  view().innerHTML = `<h1>Dead letters</h1>
    <form id="dl-filter" class="row">
      <label>Kind <select name="kind"><option value="">any</option><option>webhook</option><option>sync</option><option>import</option></select></label>
      <label>Platform <select name="platform"><option value="">any</option><option>shopify</option><option>woocommerce</option><option>bigcommerce</option></select></label>
      <label><input type="checkbox" name="include_replayed"> include replayed</label>
      <button type="submit">Filter</button>
      <button type="button" id="replay-all" class="danger">Replay all matching</button>
    </form>
    <div id="dl-list"></div>`;
  const query = () => {
    const f = new FormData($('dl-filter'));
    const p = new URLSearchParams();
    for (const k of ['kind', 'platform']) if (f.get(k)) p.set(k, f.get(k));
    if (f.get('include_replayed')) p.set('include_replayed', 'true');
    return p.toString();
  };
  const load = async () => {
    const list = (await api('GET', `/v1/dead-letters?${query()}`)).dead_letters;
    $('dl-list').innerHTML = list.length ? `<table><thead><tr><th>When</th><th>Kind</th><th>Platform</th><th>Error</th><th>Replay</th><th></th></tr></thead><tbody>
      ${list.map((d) => `<tr data-dl="${esc(d.id)}"><td>${esc(relTime(d.created_at))}</td><td>${esc(d.kind)}</td><td>${esc(d.platform)}</td>
        <td>${esc(d.error)}</td><td class="outcome">${esc(d.replay_outcome || '—')}${d.job ? ` (job ${esc(d.job.state)})` : ''}</td>
        <td class="row"><button type="button" class="inspect" aria-expanded="false">Inspect</button><button type="button" class="replay">Replay</button></td></tr>
        <tr hidden class="body-row"><td colspan="6"><pre>${esc(JSON.stringify({ headers: d.headers, context: d.context }, null, 2))}\n\n${esc(d.body)}</pre></td></tr>`).join('')}
      </tbody></table>` : '<p class="muted">No dead letters match.</p>';
    for (const tr of $('dl-list').querySelectorAll('tr[data-dl]')) {
      const bodyRow = tr.nextElementSibling;
      tr.querySelector('.inspect').onclick = (ev) => { bodyRow.hidden = !bodyRow.hidden; ev.target.setAttribute('aria-expanded', String(!bodyRow.hidden)); };
      tr.querySelector('.replay').onclick = async () => {
        try {
          const r = await api('POST', `/v1/dead-letters/${encodeURIComponent(tr.dataset.dl)}/replay`);
          flash(`Replayed: ${r.outcome}${r.note ? ` — ${r.note}` : ''}${r.detail && r.detail.error ? ` — ${r.detail.error}` : ''}`, r.outcome === 'failed' ? 'error' : 'ok');
          tr.querySelector('.outcome').textContent = r.outcome;
        } catch (e) { flash(explain(e, 'Replay'), 'error'); }
      };
    }
  };
  $('dl-filter').onsubmit = (ev) => { ev.preventDefault(); load(); };
  $('replay-all').onclick = async () => {
    try {
      const r = await api('POST', `/v1/dead-letters/replay?${query()}`);
      flash(`Replayed ${r.replayed}: ${r.succeeded} succeeded.`, 'ok');
      load();
    } catch (e) { flash(explain(e, 'Replay'), 'error'); }
  };
  await load();
  ctx.update = () => {};
}

// ---- numbers ------------------------------------------------------------------------------
async function renderNumbers(_arg, ctx) {
  const s = await api('GET', '/v1/stats?hours=24');
  const fmt = (v, unit = '') => (v == null ? '—' : `${v}${unit}`);
  view().innerHTML = `<h1>Numbers <span class="muted">(last ${s.hours} h)</span></h1><div class="figures">
    <div class="card">Orders per hour<strong>${fmt(s.orders_per_hour)}</strong><span class="muted">${s.orders} orders</span></div>
    <div class="card">Time to assign, p50<strong>${fmt(s.time_to_assign_s.p50, ' s')}</strong><span class="muted">${s.time_to_assign_s.count} assignments</span></div>
    <div class="card">Time to assign, p95<strong>${fmt(s.time_to_assign_s.p95, ' s')}</strong></div>
    <div class="card">On time<strong>${fmt(s.on_time_pct, ' %')}</strong><span class="muted">${s.delivered} delivered, within ${Math.round(s.on_time_within_s / 60)} min of ready</span></div>
  </div>`;
  ctx.update = () => renderNumbers(_arg, ctx);
}

// ---- sign in ------------------------------------------------------------------------------
async function signIn(body) {
  $('signin-error').hidden = true;
  try {
    await api('POST', '/v1/console/login', body);
    await start();
  } catch (e) {
    $('signin-error').textContent = e.status === 401 ? 'Wrong email, password or key.' : e.message;
    $('signin-error').hidden = false;
  }
}
$('signin-user').onsubmit = (ev) => { ev.preventDefault(); signIn({ email: $('email').value, password: $('password').value }); };
$('signin-key').onsubmit = (ev) => { ev.preventDefault(); signIn({ admin_key: $('admin-key').value }); $('admin-key').value = ''; };
$('signout').onclick = async () => { await api('POST', '/v1/console/logout').catch(() => {}); location.reload(); };

// `lastmile demo` prints /console/#key=…: signed in at once, then the key leaves the URL.
const readyKey = new URLSearchParams(location.hash.slice(1)).get('key');
if (readyKey) history.replaceState(null, '', '/console/');

async function start() {
  $('boot').hidden = true;
  try {
    session = await api('GET', '/v1/console/session');
  } catch {
    $('shell').hidden = true;
    $('signin').hidden = false;
    if (readyKey && !start.tried) { start.tried = true; signIn({ admin_key: readyKey }); }
    return;
  }
  $('signin').hidden = true;
  $('shell').hidden = false;
  $('who').textContent = `${session.tenant_name} · ${session.role}`;
  await loadAll();
  listen();
  await rerender();
}
start();
