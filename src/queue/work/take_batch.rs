//! Transactional queues on the worker pool: each batch is one task on a pool thread that
//! begins a transaction, takes jobs in it (`pgbroker.take`: the claim is the delete), runs
//! their handlers one after another, each job's writes under a savepoint of its own, writes
//! failures, snoozes and discards back in the same transaction, and commits. COMMIT completes
//! the jobs; a rollback or a lost connection gives every job of the batch back untouched.
//! While batches come full, the task goes on with the next on the same connection for a while
//! (`COMMIT; BEGIN` in one round trip, then the take, which also sets the lease).
//!
//! The fetch thread (`consumer.rs`) hands out one batch per free permit and waits until the
//! batch says how many jobs it took, which drives its idle registration and LISTEN wake-ups
//! exactly as claimed jobs do in lease mode.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Sender};
use postgres::error::SqlState;
use postgres::Transaction;

use super::shared::{error_text, Shared};
use crate::queue::context::{JobContext, JobTransaction, Outcome};
use crate::queue::protocol::{take_prepared, take_sql};
use crate::queue::ClaimedJob;
use crate::worker::{SourceContext, Task};
use crate::{Error, ErrorKind, Result};

/// What a batch reports to the fetch thread once it took its jobs.
pub(super) enum Taken {
    /// It took this many (0: the queue has nothing available).
    Jobs(usize),
    /// Taking failed (connection, pool); nothing was taken.
    Failed(Error),
    /// The pool is shutting down.
    Stopped,
}

/// Hands one batch to the workers and waits until it took its jobs. The caller holds one
/// permit for it; the batch gives it back when it ends (or is dropped unrun).
pub(super) fn start(shared: &Arc<Shared>, ctx: &SourceContext) -> Taken {
    let (report, reports) = crossbeam_channel::bounded(1);
    let batch = Batch {
        shared: shared.clone(),
        ctx: ctx.clone(),
        report: Some(report),
    };
    if !ctx.submit(Task::new(move || batch.run())) {
        return Taken::Stopped;
    }
    select! {
        recv(reports) -> r => match r {
            Ok(taken) => taken,
            // Dropped without reporting: abandoned at shutdown, or a bug (then keep going).
            Err(_) if ctx.is_stopping() => Taken::Stopped,
            Err(_) => Taken::Failed(Error::new(
                ErrorKind::Handler,
                "a batch ended before taking its jobs",
            )),
        },
        recv(ctx.stop_signal()) -> _ => Taken::Stopped,
    }
}

/// One batch, from its task's start to its commit. Dropped, it gives back its permit.
struct Batch {
    shared: Arc<Shared>,
    ctx: SourceContext,
    report: Option<Sender<Taken>>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        let _ = self.shared.permits.send(());
    }
}

impl Batch {
    fn tell(&mut self, taken: Taken) {
        if let Some(report) = self.report.take() {
            let _ = report.send(taken);
        }
    }

    fn run(mut self) {
        if self.ctx.is_stopping() {
            return self.tell(Taken::Stopped);
        }
        let shared = self.shared.clone();
        let queue = shared.opts.queue();
        let max = i32::try_from(shared.opts.jobs_per_batch()).unwrap_or(i32::MAX);
        let lease = Some(shared.opts.lease_duration());
        let mut conn = match shared.broker.conn() {
            Ok(conn) => conn,
            Err(e) => return self.tell(Taken::Failed(e)),
        };
        // The take also sets the transaction's idle_in_transaction_session_timeout: the lease
        // of this mode (a worker that hangs between two statements loses its session to the
        // server, and the batch's jobs come back).
        let stmt = match conn.statement(take_sql(max, true)) {
            Ok(stmt) => stmt,
            Err(e) => return self.tell(Taken::Failed(e)),
        };
        let taken = conn
            .transaction()
            .map_err(Error::from)
            .and_then(|mut tx| Ok((take_prepared(&mut tx, &stmt, queue, max, lease)?, tx)));
        let (jobs, tx) = match taken {
            Ok(taken) => taken,
            Err(e) => return self.tell(Taken::Failed(e)),
        };
        if jobs.is_empty() {
            return self.tell(Taken::Jobs(0)); // rolled back as `tx` drops
        }
        self.tell(Taken::Jobs(jobs.len()));
        let batch = BatchTx {
            state: Mutex::new(TxState {
                tx,
                savepoint: false,
                conflict: false,
            }),
        };
        let since = Instant::now();
        let mut jobs = jobs;
        loop {
            let total = jobs.len();
            let full = total >= max as usize;
            match run_jobs(&shared, &self.ctx, &batch, jobs) {
                BatchEnd::Commit => {}
                BatchEnd::Rollback => return, // rolled back as `batch` drops
                BatchEnd::Lost(e) => {
                    return log::warn!(
                        "pgbroker queue {queue:?}: a batch of {total} job(s) failed and was \
                         rolled back (its jobs run again): {e}"
                    )
                }
            }
            // A full batch suggests more jobs wait: commit it and begin the next in one round
            // trip, on this connection and thread, for a while; then the thread goes back to
            // the pool, which may have other work waiting.
            if !full || self.ctx.is_stopping() || since.elapsed() >= KEEP_TAKING {
                break;
            }
            let mut s = batch.state();
            if let Err(e) = s.tx.batch_execute("COMMIT; BEGIN") {
                return log::warn!(
                    "pgbroker queue {queue:?}: committing a batch of {total} job(s) failed \
                     (its jobs come back and run again): {e}"
                );
            }
            jobs = match take_prepared(&mut s.tx, &stmt, queue, max, lease) {
                Ok(jobs) if !jobs.is_empty() => jobs,
                Ok(_) => return, // none left: the empty transaction rolls back
                Err(e) => return log::warn!("pgbroker queue {queue:?}: taking jobs failed: {e}"),
            };
        }
        let TxState { tx, .. } = batch.state.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = tx.commit() {
            log::warn!(
                "pgbroker queue {queue:?}: committing a batch failed (its jobs come back and \
                 run again): {e}"
            );
        }
    }
}

/// How long a batch's task goes on taking further batches on its connection while they come
/// full, before it gives its thread back to the pool.
const KEEP_TAKING: Duration = Duration::from_millis(100);

/// The savepoint each job's writes live under.
const SAVEPOINT: &str = "SAVEPOINT pgbroker_job";
const RELEASE: &str = "RELEASE SAVEPOINT pgbroker_job";
const ROLLBACK: &str = "ROLLBACK TO SAVEPOINT pgbroker_job; RELEASE SAVEPOINT pgbroker_job";

/// The batch's transaction, shared by its jobs' contexts, and whether the running job opened
/// its savepoint.
struct BatchTx<'c> {
    state: Mutex<TxState<'c>>,
}

struct TxState<'c> {
    tx: Transaction<'c>,
    savepoint: bool,
    /// The running job's closure got a deadlock or serialization failure.
    conflict: bool,
}

/// SQLSTATEs of a conflict with another transaction: the job is not at fault, the locks its
/// batch holds are (see `end_job`).
fn is_conflict(e: &Error) -> bool {
    matches!(e.db_code(), Some("40P01" | "40001"))
}

impl<'c> BatchTx<'c> {
    fn state(&self) -> MutexGuard<'_, TxState<'c>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl JobTransaction for BatchTx<'_> {
    fn run(&self, f: &mut dyn FnMut(&mut Transaction<'_>)) -> Result<()> {
        let mut s = match self.state.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "the job's transaction is already in use (with_transaction inside \
                     with_transaction, or from two threads at once)",
                ))
            }
        };
        if !s.savepoint {
            s.tx.batch_execute(SAVEPOINT)?;
            s.savepoint = true;
        }
        f(&mut s.tx);
        Ok(())
    }

    fn closure_failed(&self, e: &Error) {
        if is_conflict(e) {
            self.state().conflict = true;
        }
    }
}

/// What the batch does after a job.
enum Next {
    Continue,
    /// Commit what is done now and give the rest back: the batch's locks are in the way.
    CommitNow,
}

/// How a batch's jobs ended.
enum BatchEnd {
    /// Commit: done, failed and given-back jobs are all written in the transaction.
    Commit,
    /// Roll back: the pool stopped before any job started.
    Rollback,
    /// The transaction is lost (writing a job back failed); it rolls back.
    Lost(Error),
}

/// Runs the handlers of a batch's jobs in turn. At shutdown the jobs not started are given
/// back untouched (or the whole batch rolled back when none started).
fn run_jobs(
    shared: &Shared,
    ctx: &SourceContext,
    batch: &BatchTx<'_>,
    jobs: Vec<ClaimedJob>,
) -> BatchEnd {
    let queue = shared.opts.queue();
    let mut jobs: VecDeque<ClaimedJob> = jobs.into();
    let mut started = 0;
    while let Some(job) = jobs.pop_front() {
        if ctx.is_stopping() {
            jobs.push_front(job);
            shared.stats.count_abandoned(jobs.len() as u64);
            if started == 0 {
                return BatchEnd::Rollback; // every job is available again, untouched
            }
            return ended(give_back(shared, batch, &jobs));
        }
        started += 1;
        let id = job.id;
        let job_ctx = JobContext::new(
            job,
            shared.broker.clone(),
            Arc::new(AtomicBool::new(false)),
            None,
            Some(batch),
        );
        let handler = &shared.handler;
        let res = shared.stats.run_handler(
            &super::shared::job_run(queue, id, job_ctx.attempt()),
            || handler(&job_ctx),
        );
        match end_job(shared, batch, &job_ctx, res) {
            Ok(Next::Continue) => {}
            Ok(Next::CommitNow) => return ended(give_back(shared, batch, &jobs)),
            Err(e) => return BatchEnd::Lost(e),
        }
    }
    BatchEnd::Commit
}

fn ended(res: Result<()>) -> BatchEnd {
    match res {
        Ok(()) => BatchEnd::Commit,
        Err(e) => BatchEnd::Lost(e),
    }
}

/// Gives jobs of the batch back untouched (attempt not counted, same place in the queue).
fn give_back(shared: &Shared, batch: &BatchTx<'_>, jobs: &VecDeque<ClaimedJob>) -> Result<()> {
    let mut s = batch.state();
    for job in jobs {
        shared.broker.return_taken_in(&mut s.tx, job, None)?;
    }
    Ok(())
}

/// Closes the job's savepoint (its writes kept on success, undone on failure) and writes the
/// job back when it did not complete. An error here means the batch's transaction is lost.
///
/// A job that failed on a deadlock or serialization failure is given back without counting
/// the attempt, and the batch commits at once: the other transaction usually waits for rows
/// this batch's earlier jobs locked, and every further job would run into it again.
fn end_job(
    shared: &Shared,
    batch: &BatchTx<'_>,
    ctx: &JobContext<'_>,
    res: std::result::Result<(), Error>,
) -> Result<Next> {
    let broker = &shared.broker;
    let job = ctx.claimed();
    let outcome = ctx.take_outcome();
    let mut s = batch.state();
    let res = match res {
        Ok(()) if s.savepoint => match s.tx.batch_execute(RELEASE) {
            Ok(()) => Ok(()),
            // The handler went on after with_transaction gave it a database error.
            Err(e) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => Err(Error::new(
                ErrorKind::Handler,
                "the handler returned Ok, but an error it got from with_transaction had \
                     aborted the job's transaction",
            )),
            Err(e) => return Err(e.into()), // the connection: the batch is lost
        },
        res => res,
    };
    if res.is_err() && s.savepoint {
        s.tx.batch_execute(ROLLBACK)?;
    }
    s.savepoint = false;
    if std::mem::take(&mut s.conflict) && res.is_err() {
        log::info!(
            "pgbroker queue {:?} job {}: conflict with another transaction; given back, and \
             its batch commits early to release its locks",
            job.queue,
            job.id
        );
        broker.return_taken_in(&mut s.tx, job, None)?;
        return Ok(Next::CommitNow);
    }
    match (res, outcome) {
        (Ok(()), None | Some(Outcome::Done)) => {} // the take's delete completes it
        (Ok(()), Some(Outcome::Snooze(delay))) => {
            broker.return_taken_in(&mut s.tx, job, Some(delay))?;
        }
        (Ok(()), Some(Outcome::Discard(reason))) => {
            broker.fail_taken_with(
                &mut s.tx,
                job,
                &format!("discarded: {reason}"),
                None,
                true,
                Some(&shared.worker),
            )?;
        }
        (Err(e), _) => {
            broker.fail_taken_with(
                &mut s.tx,
                job,
                &error_text(&e),
                None,
                false,
                Some(&shared.worker),
            )?;
        }
    }
    Ok(Next::Continue)
}
