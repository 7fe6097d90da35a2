//! Secrets: encryption at rest for secrets we must use again (webhook secrets, platform
//! tokens), hashing for secrets we only check (admin keys, driver tokens, client secrets),
//! random credentials, and the API's JWTs.
//!
//! Admin keys and driver tokens are 256-bit random values: a fast SHA-256 lookup hash is
//! as strong as a slow hash against guessing, and lets every request authenticate with
//! one indexed read. Client secrets are verified with Argon2 (only at token issue).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

pub fn decode_key(b64: &str) -> Result<[u8; 32], String> {
    let bytes = STANDARD
        .decode(b64.trim())
        .or_else(|_| URL_SAFE_NO_PAD.decode(b64.trim()))
        .map_err(|_| "secret_key must be base64".to_string())?;
    bytes.try_into().map_err(|_| "secret_key must decode to exactly 32 bytes".to_string())
}

/// Load the configured key, or the key file, or create the key file (0600) and warn.
pub fn load_or_create_key(configured: Option<&str>, file: &Path) -> anyhow::Result<[u8; 32]> {
    if let Some(k) = configured {
        return decode_key(k).map_err(anyhow::Error::msg);
    }
    if file.exists() {
        let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
        return decode_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()));
    }
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    write_private(file, STANDARD.encode(key).as_bytes())?;
    tracing::warn!(
        path = %file.display(),
        "no secret_key configured: generated one into this file (mode 0600). Back it up: stored secrets cannot be decrypted without it"
    );
    Ok(key)
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, data)?;
    Ok(())
}

/// The at-rest secret key and the API-token signing keys.
///
/// Sealing uses the current secret key; opening tries it and then each decrypt-only
/// previous key (`previous_secret_key`), so stored secrets stay readable while
/// `lastmile admin rotate-secret-key` re-seals them. Signing keys live in the database,
/// sealed (see [`crate::keyring`]); before they are loaded, the key derived from the secret
/// key signs, as every version before the table existed did.
pub struct Keys {
    cipher: XChaCha20Poly1305,
    previous: Vec<XChaCha20Poly1305>,
    /// Kept to seed the signing-key table of a database that has none.
    masters: Vec<[u8; 32]>,
    pub(crate) jwt: crate::keyring::JwtKeyring,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tid: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

const ISSUER: &str = "lastmile";
const AUDIENCE: &str = "lastmile-api";

fn cipher_for(master: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new((&derive(master, b"lastmile secrets v1")).into())
}

fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// The signing key every version before stored signing keys derived from a secret key,
/// with its kid: a database's first stored key, so tokens already issued stay valid.
pub fn derived_jwt_key(master: &[u8; 32]) -> (String, [u8; 32]) {
    let key = derive(master, b"lastmile jwt v1");
    (hex::encode(&Sha256::digest(key)[..8]), key)
}

impl Keys {
    pub fn new(master: [u8; 32]) -> Self {
        Self::with_previous(master, Vec::new())
    }

    /// The current secret key and decrypt-only previous ones.
    pub fn with_previous(master: [u8; 32], previous: Vec<[u8; 32]>) -> Self {
        let (kid, jwt_key) = derived_jwt_key(&master);
        let mut masters = vec![master];
        masters.extend(previous.iter().copied());
        Self {
            cipher: cipher_for(&master),
            previous: previous.iter().map(cipher_for).collect(),
            masters,
            jwt: crate::keyring::JwtKeyring::new(kid, jwt_key),
        }
    }

    /// The current secret key, then the previous ones.
    pub(crate) fn masters(&self) -> &[[u8; 32]] {
        &self.masters
    }

    /// The kid that signs now.
    pub fn kid(&self) -> String {
        self.jwt.current_kid()
    }

    /// nonce ‖ ciphertext, sealed with the current key.
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(self.cipher.encrypt(XNonce::from_slice(&nonce), plain).expect("encryption cannot fail"));
        out
    }

    pub fn decrypt(&self, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.open(data).map(|(plain, _)| plain)
    }

    /// The plaintext, and whether it was sealed with the current key (not a previous one).
    pub fn open(&self, data: &[u8]) -> anyhow::Result<(Vec<u8>, bool)> {
        if data.len() < 24 {
            anyhow::bail!("ciphertext too short");
        }
        let (nonce, body) = (XNonce::from_slice(&data[..24]), &data[24..]);
        if let Ok(p) = self.cipher.decrypt(nonce, body) {
            return Ok((p, true));
        }
        self.previous
            .iter()
            .find_map(|c| c.decrypt(nonce, body).ok())
            .map(|p| (p, false))
            .ok_or_else(|| anyhow::anyhow!("stored secret could not be decrypted (wrong secret_key?)"))
    }

    pub fn decrypt_string(&self, data: &[u8]) -> anyhow::Result<String> {
        Ok(String::from_utf8(self.decrypt(data)?)?)
    }

    /// A token signed with the signing key held in memory (see [`Keys::issue_jwt_current`]).
    pub fn issue_jwt(&self, client_id: &str, tenant: &str, ttl_s: u64) -> anyhow::Result<String> {
        let (kid, key) = self.jwt.current();
        sign(&kid, &key, client_id, tenant, ttl_s)
    }

    /// Claims of a token signed by a key held in memory, valid and unexpired.
    pub fn verify_jwt(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = self.jwt.verifying_key(header.kid.as_deref()?)?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &jsonwebtoken::DecodingKey::from_secret(&key), &v).ok().map(|d| d.claims)
    }
}

pub(crate) fn sign(kid: &str, key: &[u8; 32], client_id: &str, tenant: &str, ttl_s: u64) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: client_id.into(),
        tid: tenant.into(),
        iat: now,
        exp: now + ttl_s as i64,
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    Ok(jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(key))?)
}

/// A new random credential: `<prefix>_<43 chars of base64url>` (256 bits).
pub fn new_token(prefix: &str) -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(b))
}

pub fn lookup_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn argon2_hash(secret: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

pub fn argon2_verify(secret: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .map(|h| argon2::Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypts_round_trip_and_detects_tampering() {
        let k = Keys::new([7; 32]);
        let mut c = k.encrypt(b"shpss_secret");
        assert_eq!(k.decrypt(&c).unwrap(), b"shpss_secret");
        c[30] ^= 1;
        assert!(k.decrypt(&c).is_err());
        assert!(Keys::new([8; 32]).decrypt(&k.encrypt(b"x")).is_err());
    }

    #[test]
    fn jwts_carry_kid_and_are_checked() {
        let k = Keys::new([1; 32]);
        let t = k.issue_jwt("cli_1", "ten_1", 60).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&t).unwrap().kid.unwrap(), k.kid());
        assert_eq!(k.verify_jwt(&t).unwrap().tid, "ten_1");
        assert!(Keys::new([2; 32]).verify_jwt(&t).is_none());
        let expired = k.issue_jwt("cli_1", "ten_1", 0).unwrap();
        let mut v = expired.clone();
        v.push('x');
        assert!(k.verify_jwt(&v).is_none());
    }

    #[test]
    fn previous_keys_only_open() {
        let old = Keys::new([7; 32]);
        let sealed_old = old.encrypt(b"whsec");
        let rotated = Keys::with_previous([9; 32], vec![[7; 32]]);
        assert_eq!(rotated.open(&sealed_old).unwrap(), (b"whsec".to_vec(), false));
        let sealed_new = rotated.encrypt(b"whsec");
        assert_eq!(rotated.open(&sealed_new).unwrap(), (b"whsec".to_vec(), true));
        assert!(old.decrypt(&sealed_new).is_err(), "new secrets are sealed with the new key only");
        // Tokens signed before any rotation keep their kid: the key derived from the secret.
        assert_eq!(rotated.kid(), derived_jwt_key(&[9; 32]).0);
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lastmile.key");
        let a = load_or_create_key(None, &path).unwrap();
        let b = load_or_create_key(None, &path).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn argon2_verifies_only_the_right_secret() {
        let h = argon2_hash("s3cret").unwrap();
        assert!(argon2_verify("s3cret", &h));
        assert!(!argon2_verify("s3cret!", &h));
    }
}
