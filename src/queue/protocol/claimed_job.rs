//! [`ClaimedJob`]: a job claimed with a lease, or taken by a transaction.

use std::time::SystemTime;

use postgres::Row;
use serde_json::Value;

use crate::queue::JobId;

/// A job claimed by [`Broker::claim_jobs`]: it is `running` and leased to the claimer until
/// `lease_until`.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// for job in broker.claim_jobs("emails", "worker-1", 10, std::time::Duration::from_secs(60))? {
///     println!("job {} attempt {}/{}: {}", job.id, job.attempt, job.max_attempts, job.payload);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClaimedJob {
    /// The job's id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its payload.
    pub payload: Value,
    /// This attempt's number, from 1. Also the fencing token of later calls.
    pub attempt: i32,
    /// How many attempts it may have.
    pub max_attempts: i32,
    /// Its priority (smaller runs first).
    pub priority: i32,
    /// When it became runnable.
    pub run_at: SystemTime,
    /// When the lease ends unless extended; `None` for a job
    /// [taken](crate::Broker::take_jobs) by a transaction, which holds it without a lease.
    pub lease_until: Option<SystemTime>,
    /// When it was enqueued.
    pub created_at: SystemTime,
    /// Its unique key, if any.
    pub unique_key: Option<String>,
    /// For a taken job, what writing it back needs.
    pub(crate) taken: Option<Box<TakenRow>>,
}

impl ClaimedJob {
    pub(crate) fn from_row(row: &Row) -> ClaimedJob {
        ClaimedJob {
            id: row.get(0),
            queue: row.get(1),
            payload: row.get(2),
            attempt: row.get(3),
            max_attempts: row.get(4),
            priority: row.get(5),
            run_at: row.get(6),
            lease_until: row.get(7),
            created_at: row.get(8),
            unique_key: row.get(9),
            taken: None,
        }
    }
}

/// What writing a taken job back needs besides the [`ClaimedJob`] fields: the deleted row's
/// `details` (backoff, error history), as PostgreSQL sent them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TakenRow {
    pub(super) details: Option<Value>,
}
