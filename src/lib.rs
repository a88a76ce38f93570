//! # pgbroker
//!
//! The PostgreSQL you already run, as your message broker: pub/sub on LISTEN/NOTIFY, a durable
//! event log with subscriptions, and a job queue — with Postgres's transactions and durability
//! behind every message. Synchronous: everything blocks, threads are pgbroker's own, and
//! shutdown is explicit and graceful.
//!
//! ```no_run
//! use std::time::Duration;
//! use pgbroker::{Broker, Event};
//!
//! # fn main() -> pgbroker::Result<()> {
//! let broker = Broker::connect("postgres://app@localhost/app")?;
//! broker.install()?;
//!
//! // Pub/sub: a listener thread per channel, consumed as an iterator...
//! let listener = broker.listen("orders")?;
//! broker.notify("orders", &serde_json::json!({"id": 1}))?;
//! if let Some(Event::Notification(n)) = listener.recv_timeout(Duration::from_secs(5))? {
//!     assert_eq!(n.json()?["id"], 1);
//! }
//!
//! // ...or handled by a fixed pool of worker threads.
//! let pool = broker
//!     .worker_pool()
//!     .threads(4)
//!     .handler("orders", |n| {
//!         println!("order: {}", n.payload());
//!         Ok(())
//!     })
//!     .start()?;
//! pool.shutdown()?;
//! # Ok(()) }
//! ```
//!
//! The [job queue](queue): durable jobs with priorities, delays, retries with backoff, leases
//! rescued when a worker dies, unique jobs, cancellation and status events — all plain SQL
//! underneath (`pgbroker.enqueue`, `pgbroker.claim`, ...), so any language can take part.
//!
//! ```no_run
//! use pgbroker::queue::Job;
//!
//! # fn main() -> pgbroker::Result<()> {
//! # let broker = pgbroker::Broker::connect("postgres://app@localhost/app")?;
//! broker.enqueue_job(&Job::new("emails", r#"{"to": "a@example.com"}"#).max_attempts(5))?;
//! let pool = broker
//!     .worker_pool()
//!     .queue("emails", 4, |job| {
//!         println!("sending {} (attempt {})", job.payload(), job.attempt());
//!         Ok(())
//!     })
//!     .start()?;
//! pool.shutdown()?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, clippy::all)]

mod broker;
mod config;
mod connect;
mod deprecated;
mod error;
mod id_blocks;
mod json_nul;
pub mod middleware;
pub mod notify;
mod payload;
mod pool;
pub mod queue;
mod replicas;
mod routing;
mod schema;
mod statement;
mod statements;
mod table_name;
pub mod topic;
mod trace;
mod worker;

pub use broker::Broker;
pub use config::{BrokerBuilder, Config};
pub use error::{Error, ErrorKind, Result};
pub use notify::{Event, Listener, Notification, TableOp};
pub use payload::{Json, Payload, ToPayload};
pub use pool::{CachedClient, PooledConn};
pub use queue::{Job, JobContext, JobEvent, JobId, JobState, JobWatcher, QueueOptions};
pub use replicas::{ReplicaLag, CHECK_INTERVAL as REPLICA_CHECK_INTERVAL};
pub use routing::QueueBinding;
pub use schema::{schema_sql, SCHEMA_VERSION};
pub use topic::{Batch, EventId, LogEvent, NewEvent, Position};
pub use worker::{BoxError, HandlerResult, StatsSnapshot, WorkerPool, WorkerPoolBuilder};

/// Re-exported so users name the same `postgres` types pgbroker uses.
pub use postgres;

// The README's Rust blocks compile as doctests, so what it shows stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
