//! Console users (a role each, passwords hashed by the caller) and console sessions (the
//! session token and its CSRF token stored as hashes). Sessions of a disabled user or a
//! revoked admin key stop working at once: every look-up joins back to its source.

use crate::{get, now_ms, touched, Db, Result, StorageError};
use lastmile_core::TenantId;
use sqlx::any::AnyRow;

#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: String,
    pub tenant_id: TenantId,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
}

/// Who a console session belongs to and what they may do.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleSession {
    pub tenant_id: TenantId,
    pub user_id: Option<String>,
    pub admin_key_id: Option<String>,
    pub role: String,
    pub csrf_hash: String,
    pub expires_at: i64,
}

/// A new session: every field is decided by the caller (tokens are hashed there).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token_hash: String,
    pub session: ConsoleSession,
}

const USER_COLS: &str = "id, tenant_id, email, password_hash, role, created_at";

fn user_from_row(row: &AnyRow) -> Result<UserRecord> {
    Ok(UserRecord {
        id: get(row, "id")?,
        tenant_id: TenantId(get(row, "tenant_id")?),
        email: get(row, "email")?,
        password_hash: get(row, "password_hash")?,
        role: get(row, "role")?,
        created_at: get(row, "created_at")?,
    })
}

impl Db {
    /// A new console user; `Conflict` when the email is taken (in any tenant).
    pub async fn create_user(
        &self,
        tenant: &TenantId,
        email: &str,
        password_hash: &str,
        role: &str,
    ) -> Result<UserRecord> {
        let user = UserRecord {
            id: format!("usr_{}", uuid::Uuid::now_v7().simple()),
            tenant_id: tenant.clone(),
            email: email.to_owned(),
            password_hash: password_hash.to_owned(),
            role: role.to_owned(),
            created_at: now_ms(),
        };
        self.audit_target(&user.id);
        let u = user.clone();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(&format!("INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"))
                    .bind(&u.id)
                    .bind(u.tenant_id.as_str())
                    .bind(&u.email)
                    .bind(&u.password_hash)
                    .bind(&u.role)
                    .bind(u.created_at)
                    .execute(&mut *c)
                    .await
                    .map_err(StorageError::from_db)?;
                Ok(())
            })
        })
        .await?;
        Ok(user)
    }

    /// An enabled user by sign-in name.
    pub async fn user_by_email(&self, email: &str) -> Result<UserRecord> {
        let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE email = $1 AND disabled_at IS NULL"))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound)?;
        user_from_row(&row)
    }

    pub async fn list_users(&self, tenant: &TenantId) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND disabled_at IS NULL ORDER BY email"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Disable a user; their sessions end with it.
    pub async fn disable_user(&self, tenant: &TenantId, id: &str) -> Result<()> {
        let (t, id) = (tenant.clone(), id.to_owned());
        self.write(move |c| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE users SET disabled_at = $1 WHERE tenant_id = $2 AND id = $3 AND disabled_at IS NULL",
                )
                .bind(now_ms())
                .bind(t.as_str())
                .bind(&id)
                .execute(&mut *c)
                .await?;
                touched(done)?;
                sqlx::query("DELETE FROM console_sessions WHERE tenant_id = $1 AND user_id = $2")
                    .bind(t.as_str())
                    .bind(&id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn create_session(&self, new: NewSession) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                let s = &new.session;
                sqlx::query(
                    "INSERT INTO console_sessions (token_hash, tenant_id, user_id, admin_key_id, role, csrf_hash, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&new.token_hash)
                .bind(s.tenant_id.as_str())
                .bind(s.user_id.clone())
                .bind(s.admin_key_id.clone())
                .bind(&s.role)
                .bind(&s.csrf_hash)
                .bind(now_ms())
                .bind(s.expires_at)
                .execute(&mut *c)
                .await?;
                // Expired sessions of anyone go as new ones arrive: no sweeper needed.
                sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1").bind(now_ms()).execute(&mut *c).await?;
                Ok(())
            })
        })
        .await
    }

    /// A live session whose user is enabled (or whose admin key is unrevoked).
    pub async fn session(&self, token_hash: &str, now: i64) -> Result<ConsoleSession> {
        let row = sqlx::query(
            "SELECT s.tenant_id, s.user_id, s.admin_key_id, s.role, s.csrf_hash, s.expires_at FROM console_sessions s \
             LEFT JOIN users u ON u.id = s.user_id AND u.disabled_at IS NULL \
             LEFT JOIN admin_keys k ON k.id = s.admin_key_id AND k.revoked_at IS NULL \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND (u.id IS NOT NULL OR k.id IS NOT NULL)",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StorageError::NotFound)?;
        Ok(ConsoleSession {
            tenant_id: TenantId(get(&row, "tenant_id")?),
            user_id: get(&row, "user_id")?,
            admin_key_id: get(&row, "admin_key_id")?,
            role: get(&row, "role")?,
            csrf_hash: get(&row, "csrf_hash")?,
            expires_at: get(&row, "expires_at")?,
        })
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        let h = token_hash.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1").bind(&h).execute(&mut *c).await?;
                Ok(())
            })
        })
        .await
    }
}
