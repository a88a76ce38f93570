//! # pgbroker-testing
//!
//! Test support for applications built on [pgbroker](https://docs.rs/pgbroker) (and for
//! pgbroker's own tests): a private, throwaway PostgreSQL cluster started from the machine's
//! own binaries, a fresh database per test, and helpers to wait for background work — the way
//! River ships `rivertest`. Add it as a dev-dependency:
//!
//! ```toml
//! [dev-dependencies]
//! pgbroker-testing = { path = "../pgbroker/testing" }
//! ```
//!
//! ```no_run
//! use std::time::Duration;
//! use pgbroker_testing::{wait_until, TestDatabase};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // DATABASE_URL when set, else a private cluster shared by this test process.
//! let db = TestDatabase::with_schema()?;
//! let broker = pgbroker::Broker::connect(db.url())?;
//! broker.enqueue("emails", &serde_json::json!({"to": "a@example.com"}))?;
//! assert!(wait_until(Duration::from_secs(5), || true));
//! # Ok(()) }
//! ```
//!
//! Nothing here belongs in a production binary: it runs `initdb` and `pg_ctl`, and as root
//! looks up an unprivileged user to run them as.
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, clippy::all)]

mod dev_database;
mod error;
mod standby;
mod temp_postgres;
mod test_database;
mod wait;

pub use dev_database::DevDatabase;
pub use error::{Error, ErrorKind, Result};
pub use temp_postgres::{TempPostgres, TempPostgresBuilder};
pub use test_database::{TestDatabase, TestServer};
pub use wait::wait_until;
