//! Durable topics against a real PostgreSQL: one test process and one private cluster for
//! every topic suite (each test gets a database of its own). The tests that hold transactions
//! open, which delays every reader of a cluster, run in tests/topic_horizon.rs.

#[path = "../support/mod.rs"]
mod support;

/// Consumers on the worker pool: fan-out, failover, redelivery, retries, dead events.
mod consumers;
/// Publishing, reading, subscriptions, validation, table changes, retention and lag.
mod events;
/// Partitions balanced over the pools (processes) consuming a subscription.
mod partitions;
/// Consumers across a restart of a server of the test's own.
mod restart;
