// The driver app: sign in with a one-time code, go online, send the browser's position
// over the WebSocket, answer offers, and run the current job (pickup, deliver with the
// recipient's name and an optional photo, or fail with a reason). It resumes its inbox from
// the last sequence number it saw, across reconnects and reloads.
import { api } from '/assets/shared/api.js';

const $ = (id) => document.getElementById(id);
const store = {
  get token() { return localStorage.getItem('lm_driver_token'); },
  set token(v) { v ? localStorage.setItem('lm_driver_token', v) : localStorage.removeItem('lm_driver_token'); },
  get seq() { return Number(localStorage.getItem('lm_driver_seq') || 0); },
  set seq(v) { localStorage.setItem('lm_driver_seq', String(v)); },
};

let ws = null;
let backoff = 500;
let me = null;
let offer = null;
let countdownTimer = null;
let watchId = null;
let lastFix = null;
let lastSent = 0;
const SEND_EVERY_MS = 1100; // just over the server's default per-driver cap (1 s)

function message(text) { $('message').textContent = text || ''; }
function auth() { return { bearer: store.token }; }

// ---- sign in -------------------------------------------------------------------------
async function signIn(code) {
  $('signin-error').hidden = true;
  try {
    const r = await api('POST', '/v1/driver/login', { code });
    store.token = r.token;
    store.seq = 0;
    history.replaceState(null, '', '/driver/');
    await startApp();
  } catch (e) {
    $('signin-error').textContent = e.status === 401 ? 'That code is unknown, used or expired. Ask for a new one.' : e.message;
    $('signin-error').hidden = false;
  }
}

$('signin-form').addEventListener('submit', (ev) => { ev.preventDefault(); signIn($('code').value); });

function showSignIn() {
  $('app').hidden = true;
  $('signin').hidden = false;
  const code = new URLSearchParams(location.hash.slice(1)).get('code');
  if (code) $('code').value = code;
  $('code').focus();
}

$('signout').addEventListener('click', async () => {
  try { await api('PUT', '/v1/driver/status', { status: 'offline' }, auth()); } catch { /* signing out anyway */ }
  store.token = null;
  if (ws) ws.close();
  stopGps();
  showSignIn();
});

// ---- profile and jobs ----------------------------------------------------------------
async function refresh() {
  try {
    me = await api('GET', '/v1/driver/me', undefined, auth());
  } catch (e) {
    if (e.status === 401) { store.token = null; showSignIn(); }
    return;
  }
  $('name').textContent = me.name;
  renderToggle();
  renderJobs();
}

function renderToggle() {
  const online = me && me.status === 'online';
  $('toggle').textContent = online ? 'Go offline' : 'Go online';
  $('toggle').setAttribute('aria-pressed', String(online));
  $('toggle').classList.toggle('primary', !online);
  document.body.dataset.online = String(online);
}

$('toggle').addEventListener('click', async () => {
  const next = me && me.status === 'online' ? 'offline' : 'online';
  try {
    await api('PUT', '/v1/driver/status', { status: next }, auth());
    me.status = next;
    renderToggle();
    if (next === 'online') startGps(); else stopGps();
    message(next === 'online' ? 'You are online: offers will appear here.' : 'You are offline.');
  } catch (e) { message(e.message); }
});

function addressText(d) {
  const a = (d && d.address) || {};
  return [a.line1, a.line2, a.postal_code, a.city].filter(Boolean).join(', ');
}

function navLinks(el, lat, lng) {
  el.querySelector('.nav-geo').href = `geo:${lat},${lng}?q=${lat},${lng}`;
  el.querySelector('.nav-osm').href = `https://www.openstreetmap.org/directions?route=%3B${lat}%2C${lng}`;
}

function renderJobs() {
  const box = $('jobs');
  box.innerHTML = '';
  const orders = (me && me.orders) || [];
  $('idle').hidden = orders.length > 0;
  for (const o of orders) {
    const el = $('job-tpl').content.firstElementChild.cloneNode(true);
    el.dataset.order = o.id;
    const p = me.pickups[o.store_id] || {};
    el.querySelector('.badge').textContent = o.status === 'picked_up' ? 'picked up' : 'to pick up';
    el.querySelector('.badge').classList.add(o.status);
    el.querySelector('.pickup').textContent = [p.name, p.address].filter(Boolean).join(' — ');
    el.querySelector('.dropoff').textContent = addressText(o.dropoff);
    el.querySelector('.customer').textContent = o.customer ? o.customer.name : '';
    const goTo = o.status === 'picked_up' ? o.dropoff : p;
    if (goTo && goTo.lat != null) navLinks(el, goTo.lat, goTo.lng);
    el.querySelector('.pickup-btn').hidden = o.status !== 'assigned';
    el.querySelector('.deliver-form').hidden = o.status !== 'picked_up';
    el.querySelector('.pickup-btn').addEventListener('click', () => step(o.id, 'pickup'));
    el.querySelector('.deliver-form').addEventListener('submit', (ev) => { ev.preventDefault(); deliver(o.id, el); });
    el.querySelector('.fail-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      step(o.id, 'fail', { reason: el.querySelector('.reason').value });
    });
    box.appendChild(el);
  }
}

async function step(orderId, action, body) {
  try {
    await api('POST', `/v1/driver/orders/${orderId}/${action}`, body, auth());
    message(action === 'pickup' ? 'Picked up. Drive safely!' : action === 'fail' ? 'Marked as failed.' : 'Delivered. Thank you!');
  } catch (e) { message(e.message); }
  await refresh();
}

/** Shrink a camera photo to at most 1280 px on its long side, as JPEG. */
async function shrink(file) {
  const bmp = await createImageBitmap(file);
  const scale = Math.min(1, 1280 / Math.max(bmp.width, bmp.height));
  const canvas = document.createElement('canvas');
  canvas.width = Math.round(bmp.width * scale);
  canvas.height = Math.round(bmp.height * scale);
  canvas.getContext('2d').drawImage(bmp, 0, 0, canvas.width, canvas.height);
  return new Promise((ok) => canvas.toBlob(ok, 'image/jpeg', 0.8));
}

async function deliver(orderId, el) {
  const body = { recipient_name: el.querySelector('.recipient').value.trim() || null };
  if (lastFix) { body.lat = lastFix.lat; body.lng = lastFix.lng; }
  const file = el.querySelector('.photo').files[0];
  try {
    if (file) {
      message('Uploading the photo…');
      const up = await api('POST', `/v1/driver/orders/${orderId}/photo`, await shrink(file), auth());
      body.photo_url = up.url;
    }
    await api('POST', `/v1/driver/orders/${orderId}/deliver`, body, auth());
    message('Delivered. Thank you!');
  } catch (e) {
    message(e.code === 'payload_too_large' ? 'The photo is too large.' : e.message);
  }
  await refresh();
}

// ---- offers --------------------------------------------------------------------------
function showOffer(data) {
  offer = data;
  $('offer-pickup').textContent = [data.pickup.store_name, data.pickup.address].filter(Boolean).join(' — ');
  $('offer-dropoff').textContent = addressText(data.dropoff);
  $('offer').hidden = false;
  clearInterval(countdownTimer);
  const tick = () => {
    const left = Math.max(0, Math.round((new Date(data.expires_at).getTime() - Date.now()) / 1000));
    $('countdown').textContent = String(left);
    if (left <= 0) hideOffer('The offer expired.');
  };
  tick();
  countdownTimer = setInterval(tick, 250);
  $('accept').focus();
}

function hideOffer(note) {
  clearInterval(countdownTimer);
  offer = null;
  $('offer').hidden = true;
  if (note) message(note);
}

function answer(type) {
  if (!offer || !ws || ws.readyState !== WebSocket.OPEN) { message('Not connected; try again in a moment.'); return; }
  ws.send(JSON.stringify({ type, offer_id: offer.offer_id, reason: type === 'decline' ? 'declined by driver' : undefined }));
}
$('accept').addEventListener('click', () => answer('accept'));
$('decline').addEventListener('click', () => answer('decline'));

// ---- the socket ----------------------------------------------------------------------
function setConn(up) {
  $('conn').textContent = up ? 'connected' : 'reconnecting…';
  $('conn').className = `conn ${up ? 'up' : 'down'}`;
}

function connect() {
  if (!store.token) return;
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  ws = new WebSocket(`${proto}://${location.host}/v1/driver/ws?token=${encodeURIComponent(store.token)}&after=${store.seq}`);
  ws.onopen = () => { setConn(true); backoff = 500; sendFix(true); };
  ws.onclose = () => {
    setConn(false);
    if (store.token) setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
  ws.onmessage = (ev) => handle(JSON.parse(ev.data));
}

function handle(m) {
  if (typeof m.seq === 'number') {
    if (m.seq <= store.seq) return; // already seen (a replay after reconnect)
    store.seq = m.seq;
    ws.send(JSON.stringify({ type: 'ack', seq: m.seq }));
  }
  switch (m.type) {
    case 'offer':
      if (new Date(m.data.expires_at).getTime() > Date.now()) showOffer(m.data);
      break;
    case 'offer_expired':
      if (offer && offer.offer_id === m.data.offer_id) hideOffer('The offer expired.');
      break;
    case 'accepted':
      hideOffer('Accepted. Head to the store.');
      refresh();
      break;
    case 'declined':
      hideOffer('Declined.');
      break;
    case 'assignment_cancelled':
      message('A job was cancelled by dispatch.');
      refresh();
      break;
    case 'error':
      message(m.data.message);
      if (m.data.code === 'offer_closed') hideOffer();
      break;
    default:
      refresh();
  }
}

// ---- position --------------------------------------------------------------------------
function sendFix(force) {
  if (!lastFix || !ws || ws.readyState !== WebSocket.OPEN) return;
  const now = Date.now();
  if (!force && now - lastSent < SEND_EVERY_MS) return;
  lastSent = now;
  ws.send(JSON.stringify({ type: 'location', data: lastFix }));
}

function startGps() {
  if (!('geolocation' in navigator)) { $('gps').textContent = 'No location on this device.'; return; }
  if (watchId !== null) return;
  watchId = navigator.geolocation.watchPosition(
    (pos) => {
      const c = pos.coords;
      lastFix = {
        lat: c.latitude, lng: c.longitude, accuracy_m: c.accuracy ?? undefined,
        heading: Number.isFinite(c.heading) ? c.heading : undefined,
        speed_mps: Number.isFinite(c.speed) ? c.speed : undefined,
        recorded_at: new Date(pos.timestamp || Date.now()).toISOString(),
      };
      $('gps').textContent = 'Location on.';
      sendFix(false);
    },
    (err) => { $('gps').textContent = `Location unavailable: ${err.message}`; },
    { enableHighAccuracy: true, maximumAge: 5000, timeout: 20000 },
  );
}

// Keep the position fresh on the server while standing still.
setInterval(() => {
  if (lastFix && watchId !== null) { lastFix.recorded_at = new Date().toISOString(); sendFix(false); }
}, 5000);

function stopGps() {
  if (watchId !== null) navigator.geolocation.clearWatch(watchId);
  watchId = null;
}

async function startApp() {
  $('signin').hidden = true;
  $('app').hidden = false;
  await refresh();
  if (!store.token) return;
  connect();
  if (me && me.status === 'online') startGps();
}

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/driver/sw.js', { scope: '/driver/' }).catch(() => { /* works without it */ });
}

if (store.token) startApp(); else showSignIn();
