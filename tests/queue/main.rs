//! The job queue against a real PostgreSQL: one test process and one private cluster for every
//! queue suite (each test gets a database of its own).

#[path = "../support/mod.rs"]
mod support;

/// What queues on the worker pool do alike with leases and in transactions, in both modes.
mod both_modes;
/// The job features of issue 19: pause, schedules, dependencies, progress, timeouts,
/// middleware, tracing, rate and group limits.
mod features;
/// A worker process killed mid-job; its job is rescued.
mod kill;
/// Queues on the worker pool, in lease mode.
mod pool;
/// The protocol: enqueue, claim, outcomes, rescue, unique jobs, bad input, batches, watching.
mod protocol;
/// Topics routed into queues.
mod routing;
/// Jobs taken in the caller's transaction.
mod take;
/// Transactional queues on the worker pool.
mod take_pool;
