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

/// Everything derived from the master key.
#[derive(Clone)]
pub struct Keys {
    cipher: XChaCha20Poly1305,
    jwt_key: [u8; 32],
    pub kid: String,
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

impl Keys {
    pub fn new(master: [u8; 32]) -> Self {
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&master).expect("any key length");
            mac.update(label);
            mac.finalize().into_bytes().into()
        };
        let enc = derive(b"lastmile secrets v1");
        let jwt_key = derive(b"lastmile jwt v1");
        let kid = hex::encode(&Sha256::digest(jwt_key)[..8]);
        Self { cipher: XChaCha20Poly1305::new((&enc).into()), jwt_key, kid }
    }

    /// nonce ‖ ciphertext.
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(self.cipher.encrypt(XNonce::from_slice(&nonce), plain).expect("encryption cannot fail"));
        out
    }

    pub fn decrypt(&self, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        if data.len() < 24 {
            anyhow::bail!("ciphertext too short");
        }
        self.cipher
            .decrypt(XNonce::from_slice(&data[..24]), &data[24..])
            .map_err(|_| anyhow::anyhow!("stored secret could not be decrypted (wrong secret_key?)"))
    }

    pub fn decrypt_string(&self, data: &[u8]) -> anyhow::Result<String> {
        Ok(String::from_utf8(self.decrypt(data)?)?)
    }

    pub fn issue_jwt(&self, client_id: &str, tenant: &str, ttl_s: u64) -> anyhow::Result<String> {
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
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(&self.jwt_key))?)
    }

    pub fn verify_jwt(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return None;
        }
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &jsonwebtoken::DecodingKey::from_secret(&self.jwt_key), &v)
            .ok()
            .map(|d| d.claims)
    }
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
        assert_eq!(jsonwebtoken::decode_header(&t).unwrap().kid.unwrap(), k.kid);
        assert_eq!(k.verify_jwt(&t).unwrap().tid, "ten_1");
        assert!(Keys::new([2; 32]).verify_jwt(&t).is_none());
        let expired = k.issue_jwt("cli_1", "ten_1", 0).unwrap();
        let mut v = expired.clone();
        v.push('x');
        assert!(k.verify_jwt(&v).is_none());
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
