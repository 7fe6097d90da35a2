// The customer's tracking page: status steps, ETA, the driver's first name and, while the
// order is on its way, the driver's position. Live over SSE; on a slow dispatch, offers to
// keep waiting or cancel (through the API).
import { api, esc, clockTime, relTime } from '/assets/shared/api.js';
import { createMap, dot } from '/assets/shared/map.js';

const token = location.pathname.split('/').filter(Boolean)[1] || '';
const base = `/v1/track/${encodeURIComponent(token)}`;
const $ = (id) => document.getElementById(id);

const STEPS = [
  ['received', 'Order received'],
  ['dispatching', 'Finding a driver'],
  ['assigned', 'Driver on the way to the store'],
  ['picked_up', 'On its way to you'],
  ['delivered', 'Delivered'],
];
const HEADLINE = {
  needs_location: 'We are confirming your address',
  received: 'Order received',
  dispatching: 'Finding a driver',
  assigned: 'A driver is picking up your order',
  picked_up: 'Your order is on its way',
  delivered: 'Delivered — enjoy!',
  failed: 'We could not deliver your order',
  cancelled: 'This order was cancelled',
};

let view = null;
let map = null;
let mapReady = null;
let marker = null;
let slowTimer = null;

function render(v) {
  view = v;
  document.body.dataset.status = v.status;
  // Received or dispatching: to the customer, both are "finding a driver".
  const shown = v.status === 'received' ? 'dispatching' : v.status;
  $('headline').textContent = HEADLINE[shown] || v.status;
  $('eta').textContent = v.eta ? `Estimated arrival ${clockTime(v.eta)} (${relTime(v.eta)})` : '';
  const name = v.driver && v.driver.first_name;
  $('driver').textContent = name ? `Your driver: ${name}` : '';
  const order = STEPS.map(([s]) => s);
  const at = order.indexOf(v.status === 'needs_location' ? 'received' : shown);
  $('steps').innerHTML = STEPS.map(([s, label], i) => {
    const cls = at < 0 ? '' : i < at || v.status === 'delivered' ? 'done' : i === at ? 'current' : '';
    return `<li class="${cls}"${i === at ? ' aria-current="step"' : ''}>${esc(label)}</li>`;
  }).join('');
  $('updated').textContent = `Updated ${clockTime(v.updated_at)}`;
  renderSlow();
  renderMap();
}

function renderSlow() {
  clearTimeout(slowTimer);
  const at = view && view.slow_notice_at ? new Date(view.slow_notice_at).getTime() : null;
  if (at === null) { $('slow').hidden = true; return; }
  const wait = at - Date.now();
  if (wait > 0) {
    $('slow').hidden = true;
    slowTimer = setTimeout(renderSlow, Math.min(wait + 50, 2 ** 31 - 1));
    return;
  }
  $('slow').hidden = false;
  $('cancel').hidden = !view.can_cancel;
}

async function renderMap() {
  const loc = view && view.status === 'picked_up' && view.driver && view.driver.location;
  if (!loc) { $('map').hidden = true; return; }
  $('map').hidden = false;
  // Renders can overlap (the stream and the position refresh): create the map once.
  mapReady ??= createMap($('map'), { zoom: 15 });
  map = await mapReady;
  const ll = [loc.lat, loc.lng];
  if (!marker) {
    marker = dot(ll, '#0b5fff', 10).addTo(map).bindTooltip(view.driver.first_name || 'Driver');
  } else {
    marker.setLatLng(ll);
  }
  map.panTo(ll);
  $('map').dataset.driver = 'shown';
}

async function choose(kind) {
  $('message').textContent = '';
  for (const b of ['keep', 'cancel']) $(b).disabled = true;
  try {
    if (kind === 'keep') {
      const r = await api('POST', `${base}/keep-waiting`);
      view.slow_notice_at = r.slow_notice_at;
      $('message').textContent = 'Thanks for waiting — we keep looking for a driver.';
      renderSlow();
    } else {
      await api('POST', `${base}/cancel`);
      $('message').textContent = 'Your order is cancelled. The store has been told.';
      $('slow').hidden = true;
      render(await api('GET', base));
    }
  } catch (e) {
    $('message').textContent = e.code === 'too_late_to_cancel' ? 'Your order is already on its way and can no longer be cancelled.' : e.message;
  } finally {
    for (const b of ['keep', 'cancel']) $(b).disabled = false;
  }
}

$('keep').addEventListener('click', () => choose('keep'));
$('cancel').addEventListener('click', () => choose('cancel'));

async function start() {
  try {
    render(await api('GET', base));
  } catch (e) {
    $('headline').textContent = e.status === 404 ? 'This tracking link is not valid.' : 'Tracking is unavailable right now.';
    return;
  }
  const es = new EventSource(`${base}/events`);
  es.addEventListener('tracking', (ev) => render(JSON.parse(ev.data)));
  // The stream speaks on status changes; the driver's position moves in between.
  setInterval(async () => {
    if (view && view.status === 'picked_up') render(await api('GET', base).catch(() => view));
  }, 10000);
}
start();
