//! Routing: binding job queues to topic patterns of the durable log (an AMQP exchange → queue).

use crate::queue::validate_queue;
use crate::topic::validate_pattern;
use crate::{Broker, Result};

/// One binding of a queue to a topic pattern, as listed by [`Broker::queue_bindings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueBinding {
    /// The queue that receives the jobs.
    pub queue: String,
    /// The topic pattern (`orders.*`, `orders.#`, or an exact topic).
    pub pattern: String,
}

impl Broker {
    /// Binds `queue` to the topic `pattern`: from now on every published event whose topic
    /// matches becomes one job on `queue`, inserted in the publishing transaction. The job's
    /// payload is `{"event_id", "topic", "key", "headers", "payload"}`. An event matching
    /// several bindings of one queue becomes one job per binding. Returns true when the
    /// binding is new.
    ///
    /// Fails with [`ErrorKind::InvalidName`](crate::ErrorKind::InvalidName) for a bad queue
    /// name or pattern, before anything is written.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker.bind_queue("invoices", "orders.paid")?;
    /// broker.publish("orders.paid", &serde_json::json!({"id": 7}))?; // also enqueues a job
    /// # Ok(()) }
    /// ```
    pub fn bind_queue(&self, queue: &str, pattern: &str) -> Result<bool> {
        validate_queue(queue)?;
        validate_pattern(pattern)?;
        let mut conn = self.conn()?;
        let row = conn.query_one("SELECT pgbroker.bind_queue($1, $2)", &[&queue, &pattern])?;
        Ok(row.get(0))
    }

    /// Removes a binding made by [`bind_queue`](Self::bind_queue); returns whether it existed.
    /// Jobs already routed stay.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker.unbind_queue("invoices", "orders.paid")?;
    /// # Ok(()) }
    /// ```
    pub fn unbind_queue(&self, queue: &str, pattern: &str) -> Result<bool> {
        validate_queue(queue)?;
        validate_pattern(pattern)?;
        let mut conn = self.conn()?;
        let row = conn.query_one("SELECT pgbroker.unbind_queue($1, $2)", &[&queue, &pattern])?;
        Ok(row.get(0))
    }

    /// Every binding, ordered by queue then pattern.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for b in broker.queue_bindings()? {
    ///     println!("{} <- {}", b.queue, b.pattern);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn queue_bindings(&self) -> Result<Vec<QueueBinding>> {
        let mut conn = self.conn()?;
        let rows = conn.query(
            "SELECT queue, pattern FROM pgbroker.queue_bindings ORDER BY queue, pattern",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| QueueBinding {
                queue: r.get(0),
                pattern: r.get(1),
            })
            .collect())
    }
}
