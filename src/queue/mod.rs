//! The job queue: durable jobs in `pgbroker.jobs`, claimed with `FOR UPDATE SKIP LOCKED`,
//! held by a lease the worker pool extends while a handler runs, retried with exponential
//! backoff and jitter, and dead (with their error history) once attempts are exhausted.
//!
//! - Producers: [`Broker::enqueue`](crate::Broker::enqueue), [`Job`] with
//!   [`Broker::enqueue_job`](crate::Broker::enqueue_job), inside a transaction with
//!   [`Broker::enqueue_in`](crate::Broker::enqueue_in), many at once with binary `COPY` in
//!   [`Broker::enqueue_batch`](crate::Broker::enqueue_batch).
//! - Workers: [`WorkerPoolBuilder::queue`](crate::WorkerPoolBuilder::queue) runs a handler with
//!   a per-queue concurrency on the shared pool of threads, with leases or, for short jobs,
//!   [in transactions](QueueOptions::transactional) that complete the jobs when they commit;
//!   or drive the protocol yourself with [`Broker::claim_jobs`](crate::Broker::claim_jobs) and
//!   [`Broker::complete_jobs`](crate::Broker::complete_jobs), or
//!   [`Broker::take_jobs`](crate::Broker::take_jobs) in your own transaction.
//! - Watchers: [`Broker::watch_jobs`](crate::Broker::watch_jobs) yields a [`JobEvent`] for every
//!   state change of a queue's jobs.
//! - Control and job features: [pause](crate::Broker::pause_queue) and resume, periodic jobs
//!   ([`Schedule`], [`Broker::schedule`](crate::Broker::schedule); the worker pool runs the
//!   scheduler), dependencies ([`Job::after`]), per-job timeouts ([`Job::timeout`]), progress
//!   ([`JobContext::set_progress`]), rate limits and group concurrency ([`QueueLimits`],
//!   [`Job::group`]) — each a set of SQL functions first (`schema/functions/queue_controls.sql`,
//!   `schedule.sql`, `job_options.sql`).
//! - Introspection: [`Broker::queue_stats`](crate::Broker::queue_stats),
//!   [`Broker::job`](crate::Broker::job), [`Broker::dead_jobs`](crate::Broker::dead_jobs).
//!
//! Everything is also plain SQL (`schema/functions/queue.sql`): `pgbroker.enqueue`, `pgbroker.claim`,
//! `pgbroker.complete`, `pgbroker.fail`, `pgbroker.cancel`, `pgbroker.retry`,
//! `pgbroker.rescue`, so any language can produce or work.
//!
//! Delivery is at least once: a job whose worker dies is run again after its lease expires,
//! so handlers should be idempotent (or complete in the same transaction as their effects,
//! see [`JobContext::complete_in`] and [`JobContext::with_transaction`]).
//!
//! # Examples
//!
//! ```no_run
//! use pgbroker::queue::{Job, JobContext};
//! use std::time::Duration;
//!
//! # fn main() -> pgbroker::Result<()> {
//! let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
//! broker.install()?;
//! broker.enqueue("emails", &serde_json::json!({"to": "a@example.com"}))?;
//! broker.enqueue_job(&Job::new("emails", &serde_json::json!({"to": "b@example.com"}))
//!     .priority(-10)
//!     .delay(Duration::from_secs(60)))?;
//!
//! let pool = broker
//!     .worker_pool()
//!     .threads(8)
//!     .queue("emails", 4, |job: &JobContext| {
//!         println!("sending to {}", job.payload()["to"]);
//!         Ok(())
//!     })
//!     .start()?;
//! pool.shutdown()?;
//! # Ok(()) }
//! ```

mod context;
mod controls;
mod enqueue;
mod job;
mod job_id;
mod job_options;
mod limits;
mod progress;
mod protocol;
mod schedule;
mod stats;
mod validate;
mod wake_checks;
mod watch;
mod work;

pub use context::JobContext;
#[allow(deprecated)]
pub use job::JobPayload;
pub use job::{Job, DEFAULT_MAX_ATTEMPTS};
pub use job_id::JobId;
pub use job_options::MAX_GROUP_KEY_CHARS;
pub(crate) use limits::Gates;
pub use limits::{QueueLimits, QueueLimitsInfo};
pub use progress::MAX_PROGRESS_BYTES;
pub use protocol::ClaimedJob;
pub(crate) use schedule::SchedulerSource;
pub use schedule::{Schedule, ScheduleInfo, DEFAULT_SCHEDULE_INTERVAL};
pub use stats::{JobInfo, QueueStats};
pub use validate::{MAX_BACKOFF, MAX_DELAY, RUN_AT_END};
pub(crate) use wake_checks::WakeChecks;
pub use watch::{JobEvent, JobWatcher};
pub use work::QueueOptions;

use crate::{Error, ErrorKind, Result};

/// The longest queue name, in bytes.
pub const MAX_QUEUE_NAME_BYTES: usize = 48;

/// The channel idle workers LISTEN on; the payload is the queue name.
pub(crate) const WAKE_CHANNEL: &str = "pgbroker.jobs";

/// Where a job is in its life.
///
/// # Examples
///
/// ```
/// use pgbroker::queue::JobState;
/// assert_eq!("dead".parse::<JobState>().unwrap(), JobState::Dead);
/// assert_eq!(JobState::Running.as_str(), "running");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting to run: now, or at `run_at` when delayed or retrying after a failure.
    Available,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Done, and kept for a while because a retention was configured (otherwise a completed
    /// job is deleted; watchers still see this state once).
    Completed,
    /// Failed on its last attempt, or discarded by its handler. Re-drive with
    /// [`Broker::redrive_job`](crate::Broker::redrive_job).
    Dead,
    /// Cancelled before it completed.
    Cancelled,
}

impl JobState {
    /// The state's name in SQL (`pgbroker.jobs.state`).
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<JobState> {
        Ok(match s {
            "available" => JobState::Available,
            "running" => JobState::Running,
            "completed" => JobState::Completed,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("unknown job state {other:?}"),
                ))
            }
        })
    }
}

/// Checks a queue name: 1 to 48 bytes of ASCII letters, digits, `_`, `.`, `:` and `-` (the
/// same rule as the SQL side; it keeps the status channel `pgbroker.jobs.<queue>` within
/// PostgreSQL's identifier limit). Fails with [`ErrorKind::InvalidName`].
///
/// # Examples
///
/// ```
/// use pgbroker::queue::validate_queue;
/// assert!(validate_queue("emails.high-priority").is_ok());
/// assert!(validate_queue("no spaces").is_err());
/// assert!(validate_queue("").is_err());
/// ```
pub fn validate_queue(queue: &str) -> Result<()> {
    let ok = !queue.is_empty()
        && queue.len() <= MAX_QUEUE_NAME_BYTES
        && queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "queue name {queue:?} must be 1 to {MAX_QUEUE_NAME_BYTES} characters of \
                 A-Z a-z 0-9 _ . : -"
            ),
        ))
    }
}

/// The status channel of a queue (validated).
pub(crate) fn status_channel(queue: &str) -> String {
    format!("{WAKE_CHANNEL}.{queue}")
}

/// A duration as float seconds, for `make_interval(secs => $n)`.
/// Parameters with their types, for `query_typed` (statements on connections we do not own).
pub(crate) fn typed<'a>(
    values: &[&'a (dyn postgres::types::ToSql + Sync)],
    types: &[postgres::types::Type],
) -> Vec<(
    &'a (dyn postgres::types::ToSql + Sync),
    postgres::types::Type,
)> {
    values.iter().copied().zip(types.iter().cloned()).collect()
}

/// A database error about bad input (SQLSTATE 22023, as the job-feature functions raise it)
/// as [`ErrorKind::InvalidInput`] with the server's message; others as they are.
pub(crate) fn input_error(e: postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) if db.code().code() == "22023" => {
            let msg = db.message().trim_start_matches("pgbroker: ").to_owned();
            Error::with_cause(ErrorKind::InvalidInput, Some(msg), e)
        }
        _ => Error::from(e),
    }
}

pub(crate) fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn queue_names() {
        assert!(validate_queue(&"a".repeat(48)).is_ok());
        assert_eq!(
            validate_queue(&"a".repeat(49)).unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        for bad in ["", "a b", "é", "a;b", "a\0", "q'"] {
            assert!(validate_queue(bad).is_err(), "{bad:?}");
        }
        assert!(status_channel(&"a".repeat(48)).len() <= crate::notify::MAX_CHANNEL_BYTES);
    }

    #[test]
    fn states_round_trip() {
        for s in [
            JobState::Available,
            JobState::Running,
            JobState::Completed,
            JobState::Dead,
            JobState::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!("failed".parse::<JobState>().is_err());
    }
}
