//! Test support: a fresh, migrated database per test on either backend.
//!
//! SQLite: a file in a temporary directory. PostgreSQL: a new database created through
//! `LASTMILE_TEST_DATABASE_URL` and dropped afterwards. When that variable is unset the
//! PostgreSQL half of a test reports loudly that it was skipped — unless `CI=true`, where
//! an unset or unreachable PostgreSQL fails the run.

use crate::{Db, DbOptions};

pub struct TestDb {
    pub db: Db,
    pub url: String,
    admin_url: Option<String>,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

pub fn postgres_url() -> Option<String> {
    match std::env::var("LASTMILE_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false) {
                panic!("CI=true but LASTMILE_TEST_DATABASE_URL is not set: the PostgreSQL tests must run in CI");
            }
            eprintln!("!!! SKIPPED PostgreSQL half of this test: set LASTMILE_TEST_DATABASE_URL to run it !!!");
            None
        }
    }
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let db = Db::connect(&url, DbOptions::default()).await.expect("open sqlite");
        db.migrate().await.expect("migrate sqlite");
        TestDb { db, url, admin_url: None, name: None, _dir: Some(dir) }
    }

    /// A fresh PostgreSQL database, or None when PostgreSQL tests are skipped.
    pub async fn postgres() -> Option<TestDb> {
        let admin_url = postgres_url()?;
        let name = format!("lm_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Db::connect(&admin_url, DbOptions { max_connections: 1, ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at LASTMILE_TEST_DATABASE_URL is unreachable: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(admin.pool()).await.expect("create test database");
        admin.close().await;
        let url = replace_db_name(&admin_url, &name);
        let db = Db::connect(&url, DbOptions::default()).await.expect("connect test database");
        db.migrate().await.expect("migrate postgres");
        Some(TestDb { db, url, admin_url: Some(admin_url), name: Some(name), _dir: None })
    }

    /// Both backends: SQLite always, PostgreSQL when configured.
    pub async fn all() -> Vec<TestDb> {
        let mut v = vec![TestDb::sqlite().await];
        if let Some(pg) = TestDb::postgres().await {
            v.push(pg);
        }
        v
    }

    pub fn backend(&self) -> &'static str {
        if self.db.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Close the pool and drop the PostgreSQL database.
    pub async fn cleanup(self) {
        self.db.close().await;
        if let (Some(admin_url), Some(name)) = (self.admin_url, self.name) {
            if let Ok(admin) = Db::connect(&admin_url, DbOptions { max_connections: 1, ..Default::default() }).await {
                let _ =
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(admin.pool()).await;
                admin.close().await;
            }
        }
    }
}

/// Swap the database name in a PostgreSQL URL (keeps credentials and query string).
pub fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[after_scheme..].find('/').map(|i| i + after_scheme);
    let mut out = match path_start {
        Some(p) => format!("{}/{}", &base[..p], name),
        None => format!("{base}/{name}"),
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_database_names() {
        assert_eq!(super::replace_db_name("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(super::replace_db_name("postgres://h/test?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
        assert_eq!(super::replace_db_name("postgres://h", "x"), "postgres://h/x");
    }
}
