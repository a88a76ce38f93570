//! A private server per test process and a fresh database per test.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use postgres::{Client, NoTls};

use crate::{Result, TempPostgres};

/// The server a test process creates its databases on: `DATABASE_URL` when it is set (the
/// role must be allowed to create databases), else one private [`TempPostgres`] started on
/// first use and shared by every test of the process.
///
/// # Examples
///
/// ```no_run
/// let server = pgbroker_testing::TestServer::shared();
/// println!("tests run on {}", server.admin_url());
/// ```
#[derive(Debug)]
pub struct TestServer {
    admin_url: String,
    temp: Option<TempPostgres>,
}

impl TestServer {
    /// The process-wide server, started on first use. Panics when no server can be had: in a
    /// test there is nothing better to do than to fail loudly, with the reason.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let url = pgbroker_testing::TestServer::shared().url_for("postgres");
    /// ```
    pub fn shared() -> &'static TestServer {
        static SERVER: OnceLock<TestServer> = OnceLock::new();
        SERVER.get_or_init(|| match TestServer::from_env_or_temp() {
            Ok(s) => s,
            Err(e) => panic!("pgbroker-testing: no PostgreSQL server for the tests: {e}"),
        })
    }

    /// `DATABASE_URL` when set and non-empty, else a new private cluster (with
    /// `max_connections = 300`, for test suites that run many brokers at once).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = pgbroker_testing::TestServer::from_env_or_temp()?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn from_env_or_temp() -> Result<TestServer> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Ok(TestServer {
                admin_url: url,
                temp: None,
            }),
            _ => {
                let temp = TempPostgres::builder()
                    .setting("max_connections", "300")
                    .start()?;
                Ok(TestServer {
                    admin_url: temp.url(),
                    temp: Some(temp),
                })
            }
        }
    }

    /// The URL of the server's maintenance database (the one databases are created from).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// println!("{}", pgbroker_testing::TestServer::shared().admin_url());
    /// ```
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// A URL for database `db` on this server.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let url = pgbroker_testing::TestServer::shared().url_for("app_test");
    /// assert!(url.ends_with("/app_test"));
    /// ```
    pub fn url_for(&self, db: &str) -> String {
        match &self.temp {
            Some(t) => t.url_for(db),
            None => url_with_dbname(&self.admin_url, db),
        }
    }

    /// The private cluster, when this server is one (`None` with `DATABASE_URL`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// if let Some(pg) = pgbroker_testing::TestServer::shared().temp() {
    ///     pg.restart()?;
    /// }
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn temp(&self) -> Option<&TempPostgres> {
        self.temp.as_ref()
    }

    /// A new, empty database on this server, dropped with the returned value.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let db = pgbroker_testing::TestServer::shared().create_database()?;
    /// let broker = pgbroker::Broker::connect(db.url())?;
    /// broker.install()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_database(&self) -> Result<TestDatabase> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pgbroker_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = Client::connect(&self.admin_url, NoTls)?;
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
        Ok(TestDatabase {
            url: self.url_for(&name),
            name,
            admin_url: self.admin_url.clone(),
        })
    }
}

/// Replaces the database name of a `postgres://` URL (keeping its query string).
fn url_with_dbname(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A database made for one test; dropped (with `WITH (FORCE)`, best effort) when this value is.
///
/// # Examples
///
/// ```no_run
/// let db = pgbroker_testing::TestDatabase::with_schema()?;
/// let broker = pgbroker::Broker::connect(db.url())?;
/// broker.publish("orders.created", &serde_json::json!({"id": 1}))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// A fresh database on the [shared server](TestServer::shared) with the pgbroker schema
    /// installed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let db = pgbroker_testing::TestDatabase::with_schema()?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn with_schema() -> Result<TestDatabase> {
        let db = TestServer::shared().create_database()?;
        pgbroker::Broker::connect(db.url())?.install()?;
        Ok(db)
    }

    /// A fresh, empty database on the [shared server](TestServer::shared).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let db = pgbroker_testing::TestDatabase::empty()?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn empty() -> Result<TestDatabase> {
        TestServer::shared().create_database()
    }

    /// The database's name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let db = pgbroker_testing::TestDatabase::empty()?;
    /// assert!(db.name().starts_with("pgbroker_test_"));
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL to connect to it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let db = pgbroker_testing::TestDatabase::empty()?;
    /// let client = postgres::Client::connect(db.url(), postgres::NoTls)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A plain client on it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let db = pgbroker_testing::TestDatabase::empty()?;
    /// db.client()?.batch_execute("CREATE TABLE t (id int)")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.url, NoTls)?)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&self.admin_url, NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

#[cfg(test)]
mod test {
    use super::url_with_dbname;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            url_with_dbname("postgres://u@h:5/a?sslmode=require", "b"),
            "postgres://u@h:5/b?sslmode=require"
        );
        assert_eq!(
            url_with_dbname("postgres://u@h:5", "b"),
            "postgres://u@h:5/b"
        );
    }
}
