//! Test support: a private PostgreSQL cluster per test process (or `DATABASE_URL`), and a
//! fresh database with the pgbroker schema for each test.
#![allow(dead_code, unused_imports)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pgbroker::postgres::{Client, NoTls};
use pgbroker::Broker;
pub use pgbroker_testing::wait_until;
use pgbroker_testing::TestServer;

/// The shared server of this test process: a private cluster, or `DATABASE_URL` when set.
pub fn server() -> &'static TestServer {
    TestServer::shared()
}

/// A fresh, empty database for one test; dropped (best effort) with the value.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// A new database on `server`.
    pub fn create_on(admin_url: &str, url_for: impl Fn(&str) -> String) -> TestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pgbroker_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = Client::connect(admin_url, NoTls).expect("connect to the test server");
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create test database");
        TestDb {
            url: url_for(&name),
            name,
            admin_url: admin_url.to_owned(),
        }
    }

    /// A plain client on this database.
    pub fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).expect("connect to the test database")
    }

    /// A broker on this database with fast reconnects and a short shutdown grace.
    pub fn broker(&self) -> Broker {
        Broker::builder()
            .url(&self.url)
            .pool_size(8)
            .listener_poll(Duration::from_millis(50))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .shutdown_grace(Duration::from_secs(10))
            .build()
            .expect("broker for the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&self.admin_url, NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A fresh database on the shared server, with the pgbroker schema installed.
pub fn db() -> TestDb {
    let s = server();
    let db = TestDb::create_on(s.admin_url(), |n| s.url_for(n));
    db.broker().install().expect("install schema");
    db
}

/// A fresh database without the schema.
pub fn empty_db() -> TestDb {
    let s = server();
    TestDb::create_on(s.admin_url(), |n| s.url_for(n))
}

/// Terminates every backend on `db` listening (or otherwise connected) with the given
/// application name pattern, from an admin connection; returns how many.
pub fn terminate_backends(db: &TestDb, query_like: &str) -> i64 {
    let mut c = db.client();
    let row = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = $1 AND pid <> pg_backend_pid() AND query LIKE $2",
            &[&db.name, &query_like],
        )
        .unwrap();
    row.get(0)
}

/// How many backends of `db` are listener connections (their last statement was a LISTEN).
pub fn listener_backends(db: &TestDb) -> i64 {
    let mut c = db.client();
    c.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
        &[&db.name],
    )
    .unwrap()
    .get(0)
}
