//! Test support: a fresh PostgreSQL database per test, dropped afterwards.
//!
//! The server comes from `ROOST_TEST_POSTGRES_URL` (a `postgres://` URL, default the local
//! server). Without a reachable server [`TestDatabase::create`] prints why and returns `None`,
//! so a test can return early; with `ROOST_REQUIRE_POSTGRES=1` it panics instead (CI).

mod proxy;

use std::time::Duration;

use tokio_postgres::NoTls;

pub use self::proxy::Proxy;

/// The default test server.
pub const DEFAULT_TEST_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test; dropped (with its connections) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// URL of the new database.
    pub url: String,
}

/// `url` with its database name replaced by `name` (query options kept).
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = url.split_once('?').map_or((url, None), |(h, q)| (h, Some(q)));
    let authority = head.find("://").map_or(0, |i| i + 3);
    let path = head[authority..].find('/').map_or(head.len(), |i| authority + i);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{name}{query}", &head[..path])
}

/// Runs admin statements on the server's default database.
fn admin(url: &str, sql: &str) -> Result<(), String> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
        config.connect_timeout(Duration::from_secs(3));
        let (client, connection) = config.connect(NoTls).await.map_err(|e| format!("{e}"))?;
        let driver = tokio::spawn(connection);
        let result = client.batch_execute(sql).await.map_err(|e| format!("{e}"));
        drop(client);
        let _ = driver.await;
        result
    })
}

impl TestDatabase {
    /// Creates `roost_test_<tag>_<pid>_<random>` (see the module docs for `None`).
    pub fn create(tag: &str) -> Option<Self> {
        let admin_url = std::env::var("ROOST_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_TEST_URL.into());
        let name = format!("roost_test_{tag}_{}_{:08x}", std::process::id(), rand::random::<u32>());
        match admin(&admin_url, &format!("CREATE DATABASE {name}")) {
            Ok(()) => Some(Self { url: with_database(&admin_url, &name), admin_url, name }),
            Err(e) if std::env::var("ROOST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") => {
                panic!("PostgreSQL is required (ROOST_REQUIRE_POSTGRES=1) but {admin_url} failed: {e}")
            }
            Err(e) => {
                eprintln!("skipping: no PostgreSQL at {admin_url} ({e}); set ROOST_TEST_POSTGRES_URL");
                None
            }
        }
    }

    /// Creates `roost_<tag>_<pid>_<random>` on the server of `admin_url` (benchmarks).
    pub fn create_on(admin_url: &str, tag: &str) -> Result<Self, String> {
        let name = format!("roost_{tag}_{}_{:08x}", std::process::id(), rand::random::<u32>());
        admin(admin_url, &format!("CREATE DATABASE {name}"))?;
        Ok(Self { url: with_database(admin_url, &name), admin_url: admin_url.to_string(), name })
    }

    /// Runs `sql` on the server's administrative database (to play outages on this one).
    pub fn admin(&self, sql: &str) -> Result<(), String> {
        admin(&self.admin_url, sql)
    }

    /// The URL of the server's administrative database (where databases are created).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(e) = admin(&self.admin_url, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
        {
            eprintln!("cannot drop test database {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_names_replace_the_path_only() {
        let url = super::with_database("postgres://u@h:5/postgres?sslmode=disable", "x");
        assert_eq!(url, "postgres://u@h:5/x?sslmode=disable");
        assert_eq!(super::with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
