//! Lastmile's web apps — the dispatchers' console, the customers' tracking page and the
//! drivers' app — as files embedded in the binary (nothing is fetched at run time), plus
//! the street layer their maps draw from the configured OpenStreetMap extract.
//!
//! Owns: the assets (plain ES modules, no build step; Leaflet vendored under
//! `assets/vendor/` with its licence) and their content types and validators. Must not:
//! speak HTTP or touch storage; the server mounts these files and the pages speak only the
//! public API.

pub mod roads;

use std::sync::OnceLock;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub path: &'static str,
    pub bytes: &'static [u8],
}

impl Asset {
    pub fn content_type(&self) -> &'static str {
        content_type(self.path)
    }

    /// A strong validator for `ETag` / `If-None-Match`: the content's hash.
    pub fn etag(&self) -> &'static str {
        static TAGS: OnceLock<Vec<String>> = OnceLock::new();
        let tags = TAGS.get_or_init(|| {
            use sha2::Digest;
            ASSETS.iter().map(|a| format!("\"{}\"", hex::encode(&sha2::Sha256::digest(a.bytes)[..8]))).collect()
        });
        let i = ASSETS.iter().position(|a| a.path == self.path).unwrap_or(0);
        tags[i].as_str()
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "webmanifest" => "application/manifest+json",
        "json" => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        [$(Asset { path: $path, bytes: include_bytes!(concat!("../assets/", $path))}),*]
    };
}

/// Every embedded file, by its path under `assets/`.
pub static ASSETS: [Asset; ASSET_COUNT] = assets![
    "console/index.html",
    "console/console.js",
    "console/console.css",
    "track/index.html",
    "track/track.js",
    "driver/index.html",
    "driver/driver.js",
    "driver/manifest.webmanifest",
    "driver/sw.js",
    "driver/icon.svg",
    "shared/base.css",
    "shared/api.js",
    "shared/map.js",
    "vendor/leaflet/leaflet.js",
    "vendor/leaflet/leaflet.css",
    "vendor/leaflet/LICENSE",
    "vendor/leaflet/images/layers.png",
    "vendor/leaflet/images/layers-2x.png",
    "vendor/leaflet/images/marker-icon.png",
    "vendor/leaflet/images/marker-icon-2x.png",
    "vendor/leaflet/images/marker-shadow.png",
];
const ASSET_COUNT: usize = 21;

/// The embedded file at `path` (relative to `assets/`), if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_embedded_with_their_types() {
        for a in &ASSETS {
            assert!(!a.bytes.is_empty(), "{} is empty", a.path);
        }
        assert_eq!(asset("track/index.html").unwrap().content_type(), "text/html; charset=utf-8");
        assert!(asset("../Cargo.toml").is_none());
    }

    #[test]
    fn etags_differ_by_content() {
        let a = asset("console/console.js").unwrap().etag();
        let b = asset("track/track.js").unwrap().etag();
        assert_ne!(a, b);
        assert!(a.starts_with('"') && a.ends_with('"'));
    }
}
