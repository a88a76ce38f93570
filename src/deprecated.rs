//! Names kept for one release after the queue and the topics came to use the same words:
//! *dead* for what a handler gave up on (`dead_jobs`, `dead_events`), *redrive* for running it
//! again (`redrive_job`, `redrive_events`), *retry* only for the automatic retries on a
//! schedule. Each forwards to its new name.

#![allow(deprecated)]

use crate::queue::JobId;
use crate::topic::{DeadEvent, EventId};
use crate::{Broker, Result};

/// The old name of [`DeadEvent`](crate::topic::DeadEvent).
#[deprecated(
    since = "0.1.0",
    note = "renamed DeadEvent (pgbroker::topic::DeadEvent)"
)]
pub type DeadLetter = DeadEvent;

impl Broker {
    /// The old name of [`redrive_job`](Self::redrive_job).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// # let id = broker.enqueue("q", "{}")?;
    /// assert_eq!(broker.redrive_job(id)?, false); // was: broker.retry_job(id)
    /// # Ok(()) }
    /// ```
    #[deprecated(since = "0.1.0", note = "renamed redrive_job")]
    pub fn retry_job(&self, id: JobId) -> Result<bool> {
        self.redrive_job(id)
    }

    /// The old name of [`dead_events`](Self::dead_events).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let dead = broker.dead_events("billing", 10)?; // was: broker.dead_letters("billing", 10)
    /// # Ok(()) }
    /// ```
    #[deprecated(since = "0.1.0", note = "renamed dead_events")]
    pub fn dead_letters(&self, subscription: &str, limit: usize) -> Result<Vec<DeadEvent>> {
        self.dead_events(subscription, limit)
    }

    /// The old name of [`redrive_events`](Self::redrive_events).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let n = broker.redrive_events("billing", None)?; // was: broker.redrive("billing", None)
    /// # Ok(()) }
    /// ```
    #[deprecated(since = "0.1.0", note = "renamed redrive_events")]
    pub fn redrive(&self, subscription: &str, ids: Option<&[EventId]>) -> Result<usize> {
        self.redrive_events(subscription, ids)
    }
}
