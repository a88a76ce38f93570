//! The worker side of the queue's protocol, one Rust call per SQL function
//! (schema/functions/queue.sql): claim with a lease, extend, complete, fail, snooze, release,
//! cancel, retry, rescue (`claim.rs`); or take inside a transaction and write back
//! (`take.rs`). Both choose jobs the same way (`next_jobs.rs`).

mod claim;
mod claimed_job;
mod next_jobs;
mod take;

pub use claimed_job::ClaimedJob;

pub(crate) use take::{take_prepared, take_sql};
