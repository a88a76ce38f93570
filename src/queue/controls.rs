//! Paused queues (and, with `limits.rs`, limited ones): `pgbroker.queue_controls` gates the
//! claims of a queue while it has a row there (schema/functions/queue_controls.sql).

use std::time::SystemTime;

use super::validate_queue;
use crate::{Broker, Result};

const PAUSE_SQL: &str = "SELECT pgbroker.pause_queue($1)";
const RESUME_SQL: &str = "SELECT pgbroker.resume_queue($1)";
const PAUSED_SQL: &str = "SELECT queue, paused_at FROM pgbroker.paused_queues()";

impl Broker {
    /// Pauses `queue`: from now on no worker (of any process or language) claims or takes its
    /// jobs, until [`resume_queue`](Self::resume_queue). Enqueues still succeed and jobs
    /// already running finish as usual. Returns false when it was paused already. Paused
    /// queues survive restarts (the pause is a row in `pgbroker.queue_controls`).
    ///
    /// A claim that began before the pause committed may still return jobs. The same in SQL:
    /// `SELECT pgbroker.pause_queue('emails')`.
    ///
    /// Fails with [`ErrorKind::InvalidName`](crate::ErrorKind::InvalidName) for a bad queue
    /// name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker.pause_queue("emails")?; // e.g. while the mail provider is down
    /// broker.enqueue("emails", r#"{"to": "a@example.com"}"#)?; // kept for later
    /// broker.resume_queue("emails")?; // idle workers start at once
    /// # Ok(()) }
    /// ```
    pub fn pause_queue(&self, queue: &str) -> Result<bool> {
        validate_queue(queue)?;
        let mut conn = self.conn()?;
        Ok(conn.query_one(PAUSE_SQL, &[&queue])?.get(0))
    }

    /// Resumes a paused queue and wakes its idle workers at once (they claim without waiting
    /// for their poll interval). Returns false when it was not paused.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// if broker.resume_queue("emails")? {
    ///     println!("emails resumed");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn resume_queue(&self, queue: &str) -> Result<bool> {
        validate_queue(queue)?;
        let mut conn = self.conn()?;
        Ok(conn.query_one(RESUME_SQL, &[&queue])?.get(0))
    }

    /// The paused queues, by name, with when each was paused.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for (queue, since) in broker.paused_queues()? {
    ///     println!("{queue} paused since {since:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn paused_queues(&self) -> Result<Vec<(String, SystemTime)>> {
        let mut conn = self.conn()?;
        let rows = conn.query(PAUSED_SQL, &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
