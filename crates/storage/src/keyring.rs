//! Key material at rest: the API-token signing keys (sealed by the server) and the list of
//! every sealed column, which the secret-key rotation re-seals in place.

use crate::{get, now_ms, Db, Dialect, Result};

/// One API-token signing key; `key_enc` is sealed with the at-rest secret key.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtKeyRow {
    pub kid: String,
    pub key_enc: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// A column holding values sealed with the at-rest secret key. Every such column is listed
/// in [`SealedColumn::ALL`], so a rotation cannot miss one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedColumn {
    pub table: &'static str,
    pub id: &'static str,
    pub column: &'static str,
}

impl SealedColumn {
    pub const ALL: &'static [SealedColumn] = &[
        SealedColumn { table: "stores", id: "id", column: "webhook_secret_enc" },
        SealedColumn { table: "stores", id: "id", column: "api_credentials_enc" },
        SealedColumn { table: "jwt_keys", id: "kid", column: "key_enc" },
        SealedColumn { table: "webhook_endpoints", id: "id", column: "secret_enc" },
        SealedColumn { table: "webhook_endpoints", id: "id", column: "previous_secret_enc" },
    ];

    pub fn name(&self) -> String {
        format!("{}.{}", self.table, self.column)
    }
}

impl Db {
    /// Every signing key, newest first.
    pub async fn jwt_keys(&self) -> Result<Vec<JwtKeyRow>> {
        let rows =
            sqlx::query("SELECT kid, key_enc, created_at, retired_at FROM jwt_keys ORDER BY created_at DESC, kid")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(JwtKeyRow {
                    kid: get(r, "kid")?,
                    key_enc: get(r, "key_enc")?,
                    created_at: get(r, "created_at")?,
                    retired_at: get(r, "retired_at")?,
                })
            })
            .collect()
    }

    /// The kid of the key that signs now: the newest unretired one.
    pub async fn current_jwt_kid(&self) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT kid FROM jwt_keys WHERE retired_at IS NULL ORDER BY created_at DESC, kid DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| get(&r, "kid")).transpose()
    }

    /// Store the first keys of a database that has none (an existing deployment's first
    /// start with this table); a no-op when keys exist, so nodes starting together agree.
    pub async fn seed_jwt_keys(&self, keys: Vec<JwtKeyRow>) -> Result<()> {
        let dialect = self.dialect;
        self.write(move |c| {
            Box::pin(async move {
                if dialect == Dialect::Postgres {
                    // Nodes starting at once take turns, so only one of them seeds.
                    sqlx::query("LOCK TABLE jwt_keys IN EXCLUSIVE MODE").execute(&mut *c).await?;
                }
                let n: i64 = get(&sqlx::query("SELECT COUNT(*) AS n FROM jwt_keys").fetch_one(&mut *c).await?, "n")?;
                if n > 0 {
                    return Ok(());
                }
                for k in &keys {
                    insert_jwt_key(c, k).await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Make `new` the signing key: every other key is retired now (it keeps verifying the
    /// tokens it signed until they expire); keys retired before `purge_before` are deleted.
    pub async fn rotate_jwt_key(&self, new: JwtKeyRow, purge_before: i64) -> Result<()> {
        self.write(move |c| {
            Box::pin(async move {
                let now = now_ms();
                sqlx::query("DELETE FROM jwt_keys WHERE retired_at IS NOT NULL AND retired_at < $1")
                    .bind(purge_before)
                    .execute(&mut *c)
                    .await?;
                sqlx::query("UPDATE jwt_keys SET retired_at = $1 WHERE retired_at IS NULL")
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                insert_jwt_key(c, &new).await
            })
        })
        .await
    }

    /// Every non-NULL value of a sealed column, with its row's id.
    pub async fn sealed_values(&self, col: SealedColumn) -> Result<Vec<(String, Vec<u8>)>> {
        let sql = format!(
            "SELECT {id} AS id, {c} AS v FROM {t} WHERE {c} IS NOT NULL ORDER BY {id}",
            id = col.id,
            c = col.column,
            t = col.table
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((get(r, "id")?, get(r, "v")?))).collect()
    }

    /// Replace one sealed value if it is still `old` (a concurrent change wins); true if
    /// replaced.
    pub async fn replace_sealed(&self, col: SealedColumn, id: &str, old: Vec<u8>, new: Vec<u8>) -> Result<bool> {
        let sql =
            format!("UPDATE {t} SET {c} = $1 WHERE {id} = $2 AND {c} = $3", t = col.table, c = col.column, id = col.id);
        let id = id.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                let done = sqlx::query(&sql).bind(&new).bind(&id).bind(&old).execute(&mut *c).await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }
}

async fn insert_jwt_key(c: &mut crate::WriteConn, k: &JwtKeyRow) -> Result<()> {
    // A NULL integer bind is left out rather than trusted to type the same on both drivers.
    let retired = if k.retired_at.is_some() { "$4" } else { "NULL" };
    let sql = format!("INSERT INTO jwt_keys (kid, key_enc, created_at, retired_at) VALUES ($1, $2, $3, {retired})");
    let mut q = sqlx::query(&sql).bind(&k.kid).bind(&k.key_enc).bind(k.created_at);
    if let Some(r) = k.retired_at {
        q = q.bind(r);
    }
    q.execute(&mut *c).await?;
    Ok(())
}
