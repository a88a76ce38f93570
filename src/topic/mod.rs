//! Durable topics: an event log in PostgreSQL with named subscriptions.
//!
//! Publishing writes one row of `pgbroker.events` per event, whatever the number of
//! subscribers ([`Broker::publish`](crate::Broker::publish),
//! [`publish_in`](crate::Broker::publish_in) in the caller's transaction,
//! [`publish_batch`](crate::Broker::publish_batch) by binary COPY, or a background
//! [`Publisher`]). A subscription is a name, some topic patterns (`orders.created`,
//! `orders.*`, `orders.#`) and a cursor per partition; every subscription sees every matching
//! event. Events are read in `(tx, id)` order, only once every transaction below them ended
//! (the xid8 horizon), so none is ever skipped even when transactions commit out of order.
//! The price: a long-running writing transaction anywhere in the cluster delays delivery
//! (see [`Broker::lag`](crate::Broker::lag)).
//!
//! Consume with the pull API ([`Broker::read`](crate::Broker::read) then
//! [`ack`](crate::Broker::ack)) or on the worker pool
//! ([`WorkerPoolBuilder::subscription`](crate::WorkerPoolBuilder::subscription)): one active
//! consumer per partition, retries on a schedule, then dead letters that can be re-driven.
//!
//! ```no_run
//! use pgbroker::topic::{NewEvent, StartAt};
//! use serde_json::json;
//!
//! # fn main() -> pgbroker::Result<()> {
//! let broker = pgbroker::Broker::connect("postgres://app@localhost/app")?;
//! broker.install()?;
//! broker.subscription("billing").pattern("orders.*").start_at(StartAt::Beginning).save()?;
//! broker.publish_event(&NewEvent::new("orders.created", json!({"id": 1})).key("c-7"))?;
//!
//! let pool = broker
//!     .worker_pool()
//!     .subscription("billing", |batch| {
//!         for e in batch.events() {
//!             println!("{} {}", e.topic(), e.payload());
//!         }
//!         Ok(())
//!     })
//!     .start()?;
//! pool.shutdown()?;
//! # Ok(()) }
//! ```

mod consumer;
mod event;
mod lag;
mod maintenance;
mod name;
mod position;
mod publish;
mod publisher;
mod read;
mod retry;
mod subscription;
mod table_changes;

pub use consumer::{ConsumerOptions, FailedEvents};
pub use event::{EventId, LogEvent, NewEvent, MAX_KEY_BYTES};
pub use lag::PartitionLag;
pub use maintenance::MaintenanceReport;
pub use name::{
    pattern_matches, validate_pattern, validate_subscription, validate_topic,
    MAX_SUBSCRIPTION_BYTES, MAX_TOPIC_BYTES,
};
pub use position::Position;
pub use publish::MAX_BATCH_EVENTS;
pub use publisher::{Publisher, PublisherBuilder};
pub use read::{Batch, MAX_READ};
pub use retry::{DeadLetter, RetryPolicy};
pub use subscription::{StartAt, SubscriptionBuilder};

/// The channel consumers LISTEN on for wake-ups (payload empty).
pub const WAKEUP_CHANNEL: &str = "pgbroker_events";
