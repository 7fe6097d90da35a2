//! Key rotation without downtime.
//!
//! API tokens: signing keys live in the database (sealed with the secret key). The newest
//! unretired key signs; a rotation retires the others, which keep verifying the tokens
//! they signed until those expire (`token_ttl_s` after retirement), then drop out. Every
//! node reads the current kid from the database when it issues a token, and reloads its
//! keys when it meets a kid it does not know (at most once a second), so a rotation made
//! on one node or from the command line takes effect everywhere without a restart.
//!
//! Secrets at rest: the secret key changes by configuration (`secret_key` new,
//! `previous_secret_key` old, decrypt-only); [`rotate_secret_key`] then re-seals every
//! sealed column with the new key, row by row, while the server keeps serving.

use crate::crypto::{derived_jwt_key, sign, Claims, Keys};
use lastmile_storage::{now_ms, AuditEntry, Db, JwtKeyRow, SealedColumn};
use rand::RngCore;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// The signing keys a node holds in memory.
pub struct JwtKeyring {
    ring: RwLock<Ring>,
    /// When the keys were last read for an unknown kid; bounds the reads a stream of forged
    /// kids can cause. A std Mutex: held for a comparison, never across an await.
    last_reload: Mutex<Option<Instant>>,
}

struct Ring {
    current: (String, [u8; 32]),
    keys: HashMap<String, SigningKey>,
    /// Tokens live this long: a retired key still verifies for this long (plus a minute
    /// of clock skew) after its retirement.
    token_ttl_s: u64,
}

struct SigningKey {
    key: [u8; 32],
    retired_at: Option<i64>,
}

const UNKNOWN_KID_RELOAD_EVERY: Duration = Duration::from_secs(1);

impl JwtKeyring {
    pub(crate) fn new(kid: String, key: [u8; 32]) -> Self {
        let keys = HashMap::from([(kid.clone(), SigningKey { key, retired_at: None })]);
        Self { ring: RwLock::new(Ring { current: (kid, key), keys, token_ttl_s: 3600 }), last_reload: Mutex::new(None) }
    }

    pub(crate) fn current(&self) -> (String, [u8; 32]) {
        self.ring.read().expect("jwt ring").current.clone()
    }

    pub(crate) fn current_kid(&self) -> String {
        self.ring.read().expect("jwt ring").current.0.clone()
    }

    /// The key for `kid` if it may still verify.
    pub(crate) fn verifying_key(&self, kid: &str) -> Option<[u8; 32]> {
        let ring = self.ring.read().expect("jwt ring");
        let k = ring.keys.get(kid)?;
        match k.retired_at {
            Some(r) if now_ms() > r + grace_ms(ring.token_ttl_s) => None,
            _ => Some(k.key),
        }
    }

    fn knows(&self, kid: &str) -> bool {
        self.ring.read().expect("jwt ring").keys.contains_key(kid)
    }

    fn may_reload(&self) -> bool {
        let mut last = self.last_reload.lock().expect("reload clock");
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_RELOAD_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

fn grace_ms(token_ttl_s: u64) -> i64 {
    (token_ttl_s as i64 + 60) * 1000
}

fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut k);
    k
}

impl Keys {
    /// Read the signing keys from the database, first storing the key derived from the
    /// secret key when the database has none (so tokens issued before stay valid; keys
    /// derived from previous secret keys are stored retired, for the same reason).
    pub async fn load_signing_keys(&self, db: &Db, token_ttl_s: u64) -> anyhow::Result<()> {
        let mut rows = db.jwt_keys().await?;
        if rows.is_empty() {
            let now = now_ms();
            let seed = self
                .masters()
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let (kid, key) = derived_jwt_key(m);
                    JwtKeyRow { kid, key_enc: self.encrypt(&key), created_at: now, retired_at: (i > 0).then_some(now) }
                })
                .collect();
            db.seed_jwt_keys(seed).await?;
            rows = db.jwt_keys().await?;
        }
        let mut keys = HashMap::new();
        for r in &rows {
            match self.decrypt(&r.key_enc).ok().and_then(|k| <[u8; 32]>::try_from(k).ok()) {
                Some(key) => {
                    keys.insert(r.kid.clone(), SigningKey { key, retired_at: r.retired_at });
                }
                None => {
                    tracing::error!(kid = %r.kid, "a signing key could not be opened with the configured secret keys")
                }
            }
        }
        // Newest first: the first unretired key that opened signs.
        let current = rows
            .iter()
            .filter(|r| r.retired_at.is_none())
            .find_map(|r| keys.get(&r.kid).map(|k| (r.kid.clone(), k.key)))
            .ok_or_else(|| anyhow::anyhow!("no usable API-token signing key (is secret_key right?)"))?;
        *self.jwt.ring.write().expect("jwt ring") = Ring { current, keys, token_ttl_s };
        Ok(())
    }

    fn token_ttl_s(&self) -> u64 {
        self.jwt.ring.read().expect("jwt ring").token_ttl_s
    }

    /// Sign with the database's current key, picking up a rotation made elsewhere.
    pub async fn issue_jwt_current(
        &self,
        db: &Db,
        client_id: &str,
        tenant: &str,
        ttl_s: u64,
    ) -> anyhow::Result<String> {
        if let Some(kid) = db.current_jwt_kid().await? {
            if kid != self.jwt.current_kid() {
                self.load_signing_keys(db, self.token_ttl_s()).await?;
            }
        }
        let (kid, key) = self.jwt.current();
        sign(&kid, &key, client_id, tenant, ttl_s)
    }

    /// [`Keys::verify_jwt`], reloading the keys once when the token names a kid this node
    /// has not seen (another node may have rotated).
    pub async fn verify_jwt_fresh(&self, db: &Db, token: &str) -> Option<Claims> {
        if let Some(c) = self.verify_jwt(token) {
            return Some(c);
        }
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        if self.jwt.knows(&kid) || kid.len() > 64 || !self.jwt.may_reload() {
            return None;
        }
        if let Err(e) = self.load_signing_keys(db, self.token_ttl_s()).await {
            tracing::warn!(error = %e, "reloading API-token signing keys failed");
            return None;
        }
        self.verify_jwt(token)
    }
}

/// The operator (the command line) as an audit actor.
fn operator(action: &str, target: Option<String>, details: serde_json::Value) -> AuditEntry {
    AuditEntry {
        tenant_id: None,
        actor_kind: "operator".into(),
        actor_id: std::env::var("USER").ok().filter(|u| !u.is_empty()),
        action: action.into(),
        target_id: target,
        source_ip: None,
        details: Some(details),
    }
}

/// `lastmile admin rotate-jwt-key`: a new signing key signs from now on; the others are
/// retired and verify until the tokens they signed expire. Returns the new kid.
pub async fn rotate_jwt_key(db: &Db, keys: &Keys, token_ttl_s: u64) -> anyhow::Result<String> {
    keys.load_signing_keys(db, token_ttl_s).await?;
    let previous = keys.kid();
    let key = random_key();
    let mut kid_bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut kid_bytes);
    let kid = hex::encode(kid_bytes);
    let now = now_ms();
    let row = JwtKeyRow { kid: kid.clone(), key_enc: keys.encrypt(&key), created_at: now, retired_at: None };
    // Keys retired longer ago than any token lives verify nothing any more.
    let purge_before = now - grace_ms(token_ttl_s) - 3_600_000;
    let audit = operator("jwt_key.rotate", Some(kid.clone()), serde_json::json!({"previous_kid": previous}));
    db.with_audit(audit).rotate_jwt_key(row, purge_before).await?;
    keys.load_signing_keys(db, token_ttl_s).await?;
    Ok(kid)
}

/// What a secret-key rotation did.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct ResealReport {
    /// Values that were sealed with a previous key and now are with the current one.
    pub resealed: usize,
    /// Values already sealed with the current key.
    pub already_current: usize,
    /// `table.column:id` of values no configured key opens (left as they were).
    pub failed: Vec<String>,
}

/// `lastmile admin rotate-secret-key`: re-seal every stored secret with the current secret
/// key. Each value is replaced only if it is still what was read (a change made meanwhile
/// by a server, sealed with the current key, wins); such rows are read again.
pub async fn rotate_secret_key(db: &Db, keys: &Keys, token_ttl_s: u64) -> anyhow::Result<ResealReport> {
    // A database that never stored signing keys gets them now, sealed, so they re-seal too.
    keys.load_signing_keys(db, token_ttl_s).await?;
    let mut report = ResealReport::default();
    for &col in SealedColumn::ALL {
        let mut pending = db.sealed_values(col).await?;
        for pass in 0..5 {
            let mut raced = Vec::new();
            for (id, sealed) in pending {
                match keys.open(&sealed) {
                    Ok((_, true)) => report.already_current += 1,
                    Ok((plain, false)) => {
                        if db.replace_sealed(col, &id, sealed, keys.encrypt(&plain)).await? {
                            report.resealed += 1;
                        } else {
                            raced.push(id);
                        }
                    }
                    Err(_) => report.failed.push(format!("{}:{id}", col.name())),
                }
            }
            if raced.is_empty() {
                break;
            }
            if pass == 4 {
                report.failed.extend(raced.iter().map(|id| format!("{}:{id} (kept changing)", col.name())));
                break;
            }
            pending = db.sealed_values(col).await?.into_iter().filter(|(id, _)| raced.contains(id)).collect();
        }
    }
    let details = serde_json::json!({"resealed": report.resealed, "already_current": report.already_current,
                                     "failed": report.failed.len()});
    db.record_audit(operator("secret_key.rotate", None, details)).await?;
    Ok(report)
}
