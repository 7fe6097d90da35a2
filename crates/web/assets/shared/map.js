// Maps for the web apps: Leaflet (vendored, loaded as window.L) over either the configured
// tile server or, with none, the streets of the configured OpenStreetMap extract drawn
// from GET /v1/map/roads — so maps work without internet.

let configPromise;
function mapConfig() {
  configPromise ??= fetch('/v1/map/config').then((r) => r.json());
  return configPromise;
}

let roadsPromise;
function roads() {
  roadsPromise ??= fetch('/v1/map/roads').then((r) => (r.ok ? r.json() : null)).catch(() => null);
  return roadsPromise;
}

/** A map in `el`; resolves once its base layer is chosen (streets may load after).
 *  `fit`: open on the whole street map once it has loaded. */
export async function createMap(el, { zoom = 14, fit = false } = {}) {
  const L = window.L;
  const cfg = await mapConfig();
  const map = L.map(el, { zoomControl: true, preferCanvas: true }).setView(cfg.center, zoom);
  map.attributionControl.setPrefix(false);
  if (cfg.tile_url) {
    L.tileLayer(cfg.tile_url, { maxZoom: 19, attribution: cfg.attribution }).addTo(map);
  } else if (cfg.roads) {
    map.attributionControl.addAttribution(cfg.attribution);
    // Streets in their own pane under the markers (overlays sit at z-index 400).
    map.createPane('streets').style.zIndex = 350;
    const renderer = L.canvas({ padding: 0.5, pane: 'streets' });
    roads().then((gj) => {
      if (!gj) return;
      if (fit && gj.bbox) map.fitBounds([[gj.bbox[1], gj.bbox[0]], [gj.bbox[3], gj.bbox[2]]]);
      L.geoJSON(gj, {
        pane: 'streets',
        renderer,
        interactive: false,
        style: (f) => (f.properties.class === 'major'
          ? { color: '#ffffff', weight: 5, opacity: 1 }
          : { color: '#ffffff', weight: 2.5, opacity: 0.95 }),
      }).addTo(map);
      el.dataset.roads = 'loaded';
    });
  }
  return map;
}

/** A round marker; `color` fills it. */
export function dot(latlng, color, radius = 8) {
  return window.L.circleMarker(latlng, { radius, color: '#1b1f27', weight: 1.5, fillColor: color, fillOpacity: 0.95 });
}
