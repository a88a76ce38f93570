//! Retries and dead events of reliable handlers.

use std::time::{Duration, SystemTime};

use super::{validate_subscription, EventId, LogEvent};
use crate::{Broker, Result};

/// When a failed event is delivered again: after each delay of the schedule in turn; once
/// they are used up, the event is dead (kept in `pgbroker.event_retries` for
/// [`Broker::dead_events`] and [`Broker::redrive_events`]).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pgbroker::topic::RetryPolicy;
///
/// // retry after 1 s, 10 s, then 1 min; dead after the 4th failure
/// let policy = RetryPolicy::new([1, 10, 60].map(Duration::from_secs));
/// assert_eq!(policy.delay(1), Some(Duration::from_secs(1)));
/// assert_eq!(policy.delay(4), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
}

impl Default for RetryPolicy {
    /// 5 s, 30 s, 2 min, 10 min, 1 h.
    fn default() -> Self {
        RetryPolicy::new([5, 30, 120, 600, 3600].map(Duration::from_secs))
    }
}

impl RetryPolicy {
    /// Retries after each delay of `schedule` in turn.
    pub fn new(schedule: impl IntoIterator<Item = Duration>) -> RetryPolicy {
        RetryPolicy {
            schedule: schedule.into_iter().collect(),
        }
    }

    /// No retries: a failed event is dead at once.
    pub fn none() -> RetryPolicy {
        RetryPolicy::new([])
    }

    /// The delay before the next delivery after the `failures`-th failure (1-based), or
    /// `None` when the event is dead.
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        let i = (failures as usize).checked_sub(1)?;
        self.schedule.get(i).copied()
    }
}

/// An event a reliable handler gave up on. Listed by [`Broker::dead_events`], delivered again
/// by [`Broker::redrive_events`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// for d in broker.dead_events("billing", 10)? {
///     println!("{} failed {} times: {:?}", d.event.id(), d.attempts, d.last_error);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DeadEvent {
    /// The event (a copy: retention does not remove it).
    pub event: LogEvent,
    /// The partition it belongs to.
    pub partition: u32,
    /// How many deliveries failed.
    pub attempts: u32,
    /// The last handler error.
    pub last_error: Option<String>,
    /// When it last failed.
    pub failed_at: SystemTime,
}

impl Broker {
    /// The dead events of a subscription, oldest first, at most `limit` (the queue's
    /// counterpart: [`dead_jobs`](Self::dead_jobs)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for dead in broker.dead_events("billing", 100)? {
    ///     println!("{}: {:?}", dead.event.id(), dead.last_error);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn dead_events(&self, subscription: &str, limit: usize) -> Result<Vec<DeadEvent>> {
        validate_subscription(subscription)?;
        let mut conn = self.conn()?;
        let rows = conn.query(
            "SELECT id, topic, payload, headers, key, tx::text, created_at,
                    partition, attempt, last_error, failed_at
               FROM pgbroker.event_retries
              WHERE subscription = $1 AND dead
              ORDER BY tx, id LIMIT $2",
            &[&subscription, &(limit as i64)],
        )?;
        rows.iter()
            .map(|r| {
                Ok(DeadEvent {
                    event: LogEvent::from_row(r)?,
                    partition: r.get::<_, i32>(7) as u32,
                    attempts: r.get::<_, i32>(8) as u32,
                    last_error: r.get(9),
                    failed_at: r.get(10),
                })
            })
            .collect()
    }

    /// Delivers dead events again (the queue's word too: [`redrive_job`](Self::redrive_job)),
    /// now, with a fresh retry schedule: all of a subscription's
    /// (`ids` = `None`) or the given ones. Returns how many. Needs a running consumer of the
    /// subscription to deliver them.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let n = broker.redrive_events("billing", None)?;
    /// println!("re-driving {n} events");
    /// # Ok(()) }
    /// ```
    pub fn redrive_events(&self, subscription: &str, ids: Option<&[EventId]>) -> Result<usize> {
        validate_subscription(subscription)?;
        let ids: Option<Vec<i64>> = ids.map(|ids| ids.iter().map(|i| i.0).collect());
        let mut conn = self.conn()?;
        let n: i32 = conn
            .query_one("SELECT pgbroker.redrive($1, $2)", &[&subscription, &ids])?
            .get(0);
        Ok(n as usize)
    }

    /// How many failed events of a subscription wait for a retry (not dead).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let waiting = broker.pending_retries("billing")?;
    /// # Ok(()) }
    /// ```
    pub fn pending_retries(&self, subscription: &str) -> Result<u64> {
        validate_subscription(subscription)?;
        let mut conn = self.conn()?;
        let n: i64 = conn
            .query_one(
                "SELECT count(*) FROM pgbroker.event_retries WHERE subscription = $1 AND NOT dead",
                &[&subscription],
            )?
            .get(0);
        Ok(n as u64)
    }
}
