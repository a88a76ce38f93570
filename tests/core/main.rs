//! Pub/sub on LISTEN/NOTIFY, the worker pool and the schema, against a real PostgreSQL: one test
//! process and one private cluster (each test gets a database of its own).

#[path = "../support/mod.rs"]
mod support;

/// Notifications: publishing, listening, limits.
mod notify;
/// Installing and upgrading the schema; connecting.
mod schema;
/// A listener and a pool across a restart of a server of the test's own.
mod server_restart;
/// Table-change notifications.
mod watch_table;
/// The worker pool running notification handlers.
mod worker_pool;
