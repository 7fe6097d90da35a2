// The driver app's service worker: keeps the app shell so it opens with a poor signal.
// Pages and files are fetched fresh when the network answers and taken from the cache when
// it does not; the API (/v1/) is never cached.
const CACHE = 'lastmile-driver-v1';
const SHELL = ['/driver/', '/assets/driver/driver.js', '/assets/shared/api.js', '/assets/shared/base.css',
  '/assets/driver/icon.svg', '/driver/manifest.webmanifest'];

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (e) => {
  e.waitUntil(caches.keys().then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== 'GET' || url.origin !== location.origin || url.pathname.startsWith('/v1/')) return;
  e.respondWith(
    fetch(e.request)
      .then((res) => {
        if (res.ok) {
          const copy = res.clone();
          caches.open(CACHE).then((c) => c.put(e.request, copy));
        }
        return res;
      })
      .catch(() => caches.match(e.request)),
  );
});
