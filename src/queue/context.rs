//! `JobContext`: what a queue handler gets — the job, cancellation, its transaction in
//! transactional mode, and ways to finish it other than returning `Ok` (snooze, discard,
//! complete in a transaction, next stage).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::Transaction;
use serde_json::Value;

use super::{ClaimedJob, Job, JobId};
use crate::worker::HandlerResult;
use crate::{Broker, Error, ErrorKind, Result};

const COMPLETE_SQL: &str = "SELECT pgbroker.complete_many($1, $2, $3, make_interval(secs => $4))";

/// How a handler asked its job to end, besides its return value.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Run again after this delay; the attempt does not count.
    Snooze(Duration),
    /// Dead now, with this reason.
    Discard(String),
    /// Already completed by the handler (in its own transaction).
    Done,
}

/// The job's share of a transactional batch: runs `f` on the batch's transaction inside the
/// job's savepoint (opened on first use). Implemented by the batch runner; a trait object so
/// that [`JobContext`] needs one lifetime, not the transaction's two.
pub(crate) trait JobTransaction: Sync {
    fn run(&self, f: &mut dyn FnMut(&mut Transaction<'_>)) -> Result<()>;
    /// Told about an error the handler's closure returned (a deadlock ends the batch early).
    fn closure_failed(&self, e: &Error);
}

/// The job a queue handler runs, with its options and controls. Given to the handler
/// registered with [`WorkerPoolBuilder::queue`](crate::WorkerPoolBuilder::queue).
///
/// The handler's return value decides the outcome: `Ok(())` completes the job; an error or a
/// panic fails this attempt (retried with backoff, dead after the last attempt). Return
/// [`snooze`](Self::snooze) or [`discard`](Self::discard) for other outcomes.
///
/// On a [transactional](super::QueueOptions::transactional) queue the job also has a
/// transaction, [`with_transaction`](Self::with_transaction): the batch's, which completes the
/// job when it commits. The lifetime `'a` is that of the borrowed transaction; handlers take
/// `&JobContext` and never name it.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use pgbroker::queue::JobContext;
///
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let pool = broker
///     .worker_pool()
///     .queue("webhooks", 4, |job: &JobContext| {
///         let Some(url) = job.payload()["url"].as_str() else {
///             return job.discard("payload has no url"); // dead, no retries
///         };
///         if url.contains("rate-limited") {
///             return job.snooze(Duration::from_secs(30)); // later; attempt not counted
///         }
///         if job.is_cancelled() {
///             return Ok(()); // cancelled meanwhile: stop early, the outcome is ignored
///         }
///         println!("POST {url} (attempt {} of {})", job.attempt(), job.max_attempts());
///         Ok(())
///     })
///     .start()?;
/// # Ok(()) }
/// ```
pub struct JobContext<'a> {
    job: ClaimedJob,
    broker: Broker,
    cancelled: Arc<AtomicBool>,
    outcome: Mutex<Option<Outcome>>,
    result: Mutex<Option<Value>>,
    keep: Option<Duration>,
    /// The batch's transaction (transactional mode); `None` with a lease.
    tx: Option<&'a (dyn JobTransaction + 'a)>,
}

impl std::fmt::Debug for JobContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.job.id)
            .field("queue", &self.job.queue)
            .field("attempt", &self.job.attempt)
            .field("cancelled", &self.is_cancelled())
            .field("transactional", &self.tx.is_some())
            .finish()
    }
}

impl<'a> JobContext<'a> {
    pub(crate) fn new(
        job: ClaimedJob,
        broker: Broker,
        cancelled: Arc<AtomicBool>,
        keep: Option<Duration>,
        tx: Option<&'a (dyn JobTransaction + 'a)>,
    ) -> JobContext<'a> {
        JobContext {
            job,
            broker,
            cancelled,
            outcome: Mutex::new(None),
            result: Mutex::new(None),
            keep,
            tx,
        }
    }

    /// The job's id.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) { println!("job {}", job.id()); }
    /// ```
    pub fn id(&self) -> JobId {
        self.job.id
    }

    /// The job's queue.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) { println!("{}", job.queue()); }
    /// ```
    pub fn queue(&self) -> &str {
        &self.job.queue
    }

    /// The job's payload.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) { let to = job.payload()["to"].as_str(); }
    /// ```
    pub fn payload(&self) -> &Value {
        &self.job.payload
    }

    /// This attempt's number: 1 on the first run.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) { if job.attempt() > 1 { println!("retry"); } }
    /// ```
    pub fn attempt(&self) -> u32 {
        self.job.attempt.max(0) as u32
    }

    /// How many attempts the job may have.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) {
    /// let last_try = job.attempt() == job.max_attempts();
    /// # }
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.job.max_attempts.max(0) as u32
    }

    /// The job's priority.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) { println!("{}", job.priority()); }
    /// ```
    pub fn priority(&self) -> i32 {
        self.job.priority
    }

    /// The claimed job's row as it was claimed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) { println!("{:?}", job.claimed().created_at); }
    /// ```
    pub fn claimed(&self) -> &ClaimedJob {
        &self.job
    }

    /// True once the job was cancelled (or its lease was lost) while the handler runs; seen at
    /// the next lease heartbeat. A long handler should check it and return early; its outcome
    /// is then ignored. Always false on a transactional queue: a taken job cannot be
    /// cancelled while its transaction runs.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) -> pgbroker::HandlerResult {
    /// for chunk in 0..1000 {
    ///     if job.is_cancelled() {
    ///         return Ok(());
    ///     }
    ///     // process chunk
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// The broker, to enqueue follow-up jobs or query.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) -> pgbroker::Result<()> {
    /// job.broker().enqueue("audit", &serde_json::json!({"job": job.id()}))?;
    /// # Ok(()) }
    /// ```
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Asks to run the job again after `delay` without counting this attempt. Return its
    /// value from the handler.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) -> pgbroker::HandlerResult {
    /// return job.snooze(std::time::Duration::from_secs(60));
    /// # }
    /// ```
    pub fn snooze(&self, delay: Duration) -> HandlerResult {
        self.set_outcome(Outcome::Snooze(delay));
        Ok(())
    }

    /// Asks to make the job dead now, without further attempts, recording `reason`. Return
    /// its value from the handler.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) -> pgbroker::HandlerResult {
    /// return job.discard("malformed payload");
    /// # }
    /// ```
    pub fn discard(&self, reason: impl Into<String>) -> HandlerResult {
        self.set_outcome(Outcome::Discard(reason.into()));
        Ok(())
    }

    /// Sets the result stored with the completed job when the queue keeps completed jobs
    /// ([`QueueOptions::keep_completed`](super::QueueOptions::keep_completed), lease mode
    /// only; otherwise the result is dropped).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) -> pgbroker::HandlerResult {
    /// job.set_result(serde_json::json!({"pages": 12}));
    /// Ok(())
    /// # }
    /// ```
    pub fn set_result(&self, result: Value) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    }

    /// Runs `f` in the job's transaction: the batch's transaction on a
    /// [transactional](super::QueueOptions::transactional) queue, whose COMMIT also completes
    /// the job. Returns what `f` returns.
    ///
    /// Everything the handler writes here commits with the batch if the handler returns `Ok`
    /// (whatever outcome it asked for: completion, [`snooze`](Self::snooze) or
    /// [`discard`](Self::discard)) and is rolled back if it returns an error or panics (the
    /// job's savepoint, opened on the first call): one failing job never undoes another's
    /// work. An error from `f` is returned as is; after a database error the job's transaction
    /// stays aborted until the job ends, so return the error (a handler that returns `Ok`
    /// anyway fails its attempt with that error). Call it as often as needed, but not inside
    /// itself, and keep the gaps between statements under the queue's lease (the server ends a
    /// session idle in its transaction longer, and the batch runs again).
    ///
    /// With a lease (the default mode) there is no job transaction: it fails with
    /// [`ErrorKind::Config`] without calling `f`, rather than silently giving effects that do
    /// not commit with the job. Use [`complete_in`](Self::complete_in) there (it works in
    /// both modes).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker::queue::QueueOptions;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker
    ///     .worker_pool()
    ///     .queue_with(QueueOptions::new("credits").transactional(true), |job| {
    ///         let (account, amount) = (job.payload()["account"].as_i64(), job.payload()["amount"].as_i64());
    ///         job.with_transaction(|tx| {
    ///             tx.execute("UPDATE accounts SET balance = balance + $2 WHERE id = $1",
    ///                        &[&account, &amount])?;
    ///             Ok(())
    ///         })?;
    ///         Ok(()) // credited exactly once: the credit commits with the job's completion
    ///     })
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn with_transaction<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Transaction<'_>) -> Result<T>,
    {
        let Some(access) = self.tx else {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "job {} of queue {:?} has no transaction: with_transaction needs \
                     QueueOptions::transactional(true) (with a lease, use complete_in)",
                    self.job.id, self.job.queue
                ),
            ));
        };
        let mut f = Some(f);
        let mut out = None;
        access.run(&mut |tx| {
            if let Some(f) = f.take() {
                out = Some(f(tx));
            }
        })?;
        if let Some(Err(e)) = &out {
            access.closure_failed(e);
        }
        out.unwrap_or_else(|| {
            Err(Error::new(
                ErrorKind::InvalidInput,
                "the job's transaction did not run the closure",
            ))
        })
    }

    /// Runs `f` in a transaction that also completes this job, so the job's effects and its
    /// completion commit together (exactly-once effects in this database).
    ///
    /// With a lease (the default mode) that is a transaction of its own, committed before
    /// this returns. It fails with [`ErrorKind::NotFound`] and rolls back when the job is no
    /// longer running under this claim (cancelled or rescued); an error from `f` rolls back
    /// too. On a [transactional](super::QueueOptions::transactional) queue it is
    /// [`with_transaction`](Self::with_transaction): the batch's transaction, which completes
    /// the job when it commits after the handler returns; an error from `f` is returned and
    /// the job's work rolls back if the handler returns it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) -> pgbroker::HandlerResult {
    /// job.complete_in(|tx| {
    ///     tx.execute("UPDATE invoices SET sent = true WHERE id = $1",
    ///                &[&job.payload()["invoice"].as_i64()])?;
    ///     Ok(())
    /// })?;
    /// Ok(())
    /// # }
    /// ```
    pub fn complete_in<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Transaction<'_>) -> Result<T>,
    {
        if self.tx.is_some() {
            let value = self.with_transaction(f)?;
            self.set_outcome(Outcome::Done);
            return Ok(value);
        }
        let mut conn = self.broker.conn()?;
        let stmt = conn.statement(COMPLETE_SQL)?;
        let mut tx = conn.transaction()?;
        let value = f(&mut tx)?;
        let result = self
            .result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let keep = self.keep.map(super::secs);
        let row = stmt.query_one(
            &mut tx,
            &[&vec![self.job.id], &vec![self.job.attempt], &result, &keep],
        )?;
        if row.get::<_, i32>(0) != 1 {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "job {} is no longer running under attempt {} (cancelled or rescued)",
                    self.job.id, self.job.attempt
                ),
            ));
        }
        tx.commit()?;
        self.set_outcome(Outcome::Done);
        Ok(value)
    }

    /// Completes this job and enqueues `next` in one transaction: the next stage of a
    /// pipeline exists if and only if this stage completed. Returns the next job's id. On a
    /// transactional queue the next job is enqueued in the batch's transaction (see
    /// [`complete_in`](Self::complete_in)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker::queue::Job;
    /// # fn f(job: &pgbroker::queue::JobContext) -> pgbroker::HandlerResult {
    /// // stage "clone" done: hand the run to the "build" stage
    /// job.complete_and_enqueue(&Job::new("build", job.payload()))?;
    /// Ok(())
    /// # }
    /// ```
    pub fn complete_and_enqueue(&self, next: &Job) -> Result<JobId> {
        let broker = self.broker.clone();
        self.complete_in(|tx| broker.enqueue_in(tx, next))
    }

    fn set_outcome(&self, outcome: Outcome) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    }

    pub(crate) fn take_outcome(&self) -> Option<Outcome> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub(crate) fn take_result(&self) -> Option<Value> {
        self.result.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(test)]
mod test {
    use super::JobContext;

    #[test]
    fn contexts_can_be_shared_with_threads_the_handler_spawns() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<JobContext<'_>>();
    }
}
