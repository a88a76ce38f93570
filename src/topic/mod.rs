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
//! consumer per partition, partitions balanced over the pools (processes) consuming the
//! subscription, retries on a schedule, then dead events that can be re-driven.
//! The same protocol is usable from any client through the SQL functions of
//! `schema/functions/log.sql` (`pgbroker.publish`, `subscribe`, `read`, `ack`, `seek`, `redrive`,
//! `member_checkin`, `live_members`, `publish_table_changes`, `log_maintain`,
//! `subscription_lag`).
//!
//! # How it behaves
//!
//! - **Delivery** is at least once: a handler's batch is acknowledged after it returns, so a
//!   consumer dying in between sees it again. For exactly-once effects write results in the
//!   acknowledging transaction:
//!   [`WorkerPoolBuilder::subscription_tx`](crate::WorkerPoolBuilder::subscription_tx), or
//!   [`Broker::ack_in`](crate::Broker::ack_in) with the pull API.
//! - **Order** is `(tx, id)`: the order transactions became visible, then publishing order
//!   within one. A partitioned subscription keeps the order of each key. A failed event is
//!   retried on its own schedule while later events flow, so retries (and re-driven dead
//!   letters) arrive out of order.
//! - **Patterns**: `*` is exactly one dot-separated segment; `#` is any number of segments
//!   (none included) and only allowed last (`orders.#`, or `#` for everything).
//! - **A new subscription** starts after the last event visible when it is created
//!   ([`StartAt::End`]); events of a transaction still open then and older than that event are
//!   not delivered to it. Use [`StartAt::Beginning`] or a [`Position`] to include history.
//! - **Sparse subscriptions**: a read that returns fewer events than asked for may be
//!   acknowledged up to the horizon ([`Batch::ack_position`]), so other topics' events are
//!   not scanned again. Consumers on the worker pool do this themselves.
//! - **Wake-ups**: publishing sends one `NOTIFY pgbroker_events` per statement (folded to one
//!   per transaction) only while some consumer waits (rows in `pgbroker.log_waiters`), so busy
//!   consumers cost publishers nothing and NOTIFY's commit lock does not serialise publishing.
//!   A broker whose last look found nobody waiting publishes single events and batches without
//!   looking for the next 2 ms (`publish_in` and `publish_batch_in` look every time); so a
//!   consumer that registers as waiting reads again 5 ms later, and until the horizon passed
//!   every transaction begun by then: such an event comes then, not at the next poll.
//!   Consumers also poll (`poll_interval`, 1 s) and re-read after a listener reconnects.
//!   Every pgbroker way of publishing does this (the API, SQL `pgbroker.publish`, table change
//!   events); events written with plain SQL `INSERT` or `COPY` wake nobody and are seen at the
//!   next poll, unless the writer also runs `SELECT pgbroker.log_wake()` (no trigger does it
//!   for every insert: it cost nearly as much as a raw insert).
//! - **Retention** drops whole daily partitions, read or not: keep it longer than the longest
//!   time a subscription may fall behind. Dead events are copies and survive it.
//! - **Partitions are balanced** over the worker pools consuming a subscription, in one
//!   process or many, like a Kafka consumer group: each pool is a *member* and holds its
//!   share, `partitions / members`, one more for the `partitions % members` oldest members
//!   (6 partitions over 3 members: 2 each; over 4: 2, 2, 1, 1). A member that joins gets its
//!   share from members past theirs, which hand partitions back after acknowledging the batch
//!   in hand; the partitions of a member that stops or dies (its process killed, its
//!   connection terminated or cut) are taken over by the others within about a
//!   [`lock_retry`](ConsumerOptions::lock_retry) (1 s). Members otherwise keep what they hold,
//!   so only the partitions that must move do. Liveness is an advisory lock held by the
//!   member's connection, so it ends with the connection, without a heartbeat timeout (a
//!   vanished host is noticed through TCP keepalives). Each partition is read only by the
//!   session holding its exclusive advisory lock: balancing decides who *tries* which
//!   partition, the lock guarantees that no two consumers read one partition at once.
//!   [`Broker::subscription_members`](crate::Broker::subscription_members) lists the members
//!   and their partitions; [`ConsumerOptions::only_partitions`] assigns partitions by hand
//!   instead.
//! - **Connections**: per pool and subscription, one listener connection, one membership
//!   connection, and one per partition held (it carries the partition's lock, and the
//!   transaction of a transactional handler), plus one for a moment while taking a partition.
//!   So P processes sharing N partitions use about N + 2P connections in all. An assigned
//!   consumer (`only_partitions`) keeps one connection per listed partition, held or waiting.
//!   None of them works through PgBouncer in transaction mode.
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

mod consume;
mod event;
mod json_text;
mod lag;
mod log_waiter;
mod maintenance;
mod members;
mod name;
mod position;
mod publish;
mod publish_state;
mod publisher;
mod read;
mod retry;
mod stream;
mod subscription;
mod table_changes;

#[allow(deprecated)]
pub use crate::deprecated::DeadLetter;
pub use consume::{ConsumerOptions, FailedEvents};
pub use event::{EventId, LogEvent, NewEvent, MAX_KEY_BYTES};
pub use lag::PartitionLag;
pub use log_waiter::LogWaiter;
pub(crate) use log_waiter::{
    CLEAR_ENDED_SQL as LOG_WAITERS_CLEAR_SQL, REGISTER_SQL as LOG_WAIT_SQL,
    UNREGISTER_SQL as LOG_UNWAIT_SQL,
};
pub use maintenance::MaintenanceReport;
pub use members::SubscriptionMember;
pub use name::{
    pattern_matches, validate_pattern, validate_subscription, validate_topic,
    MAX_SUBSCRIPTION_BYTES, MAX_TOPIC_BYTES,
};
pub use position::Position;
pub use publish::MAX_BATCH_EVENTS;
pub(crate) use publish_state::PublishState;
pub use publisher::{Publisher, PublisherBuilder};
pub(crate) use read::{read_events, read_sql_for, stored_cursor, READ_SETTINGS};
pub use read::{Batch, MAX_READ};
pub use retry::{DeadEvent, RetryPolicy};
pub use stream::{EventStream, STREAM_EXPIRY};
pub use subscription::{StartAt, SubscriptionBuilder, SubscriptionInfo};
pub use table_changes::TableChangesBuilder;

/// The channel consumers LISTEN on for wake-ups (payload empty).
pub const WAKEUP_CHANNEL: &str = "pgbroker_events";
