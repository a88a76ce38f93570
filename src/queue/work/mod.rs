//! Queues on the shared worker pool. Per queue, three roles, one file each:
//!
//! - the fetch thread (`fetch.rs`) claims jobs into the free slots of the queue's concurrency,
//!   half of it per claim so that the next claim overlaps the running one, and hands them to
//!   the pool's workers, or idles until a wake-up;
//! - a worker runs a job's handler and records its outcome (`job_guard.rs`); a success frees
//!   its slot at once and waits to be deleted with the rest of its claim (`completions.rs`);
//! - the lease thread (`lease.rs`) extends leases, deletes the completions of finished claims
//!   while the workers go on (and those that waited behind a slow job), rescues.
//!
//! In transactional mode the fetch thread hands out batches that take and run their jobs in
//! one transaction (`take_batch.rs`) instead. What the threads share is in `shared.rs`, the
//! options in `options.rs`.

mod completions;
mod fetch;
mod job_guard;
mod lease;
mod options;
mod shared;
mod take_batch;

use std::sync::Arc;
use std::thread::JoinHandle;

pub use options::QueueOptions;

use self::shared::{Inflight, JobHandler, Shared};
use super::{JobContext, WAKE_CHANNEL};
use crate::worker::{HandlerResult, Source, SourceContext};
use crate::{Result, WorkerPoolBuilder};

impl WorkerPoolBuilder {
    /// Runs `handler` for jobs of `queue`, at most `concurrency` at a time, on the pool's
    /// threads. `Ok(())` completes a job; an error or panic fails the attempt (retried with
    /// backoff, dead after the last attempt). See [`JobContext`] for other outcomes and
    /// [`queue_with`](Self::queue_with) for more options.
    ///
    /// [`start`](Self::start) fails with [`ErrorKind::InvalidName`] for a bad queue name and
    /// [`ErrorKind::Config`] for a concurrency of 0.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker
    ///     .worker_pool()
    ///     .threads(8)
    ///     .queue("emails", 6, |job| {
    ///         println!("email {}", job.payload());
    ///         Ok(())
    ///     })
    ///     .queue("reports", 2, |job| Ok(()))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn queue<F>(self, queue: &str, concurrency: usize, handler: F) -> Self
    where
        F: Fn(&JobContext<'_>) -> HandlerResult + Send + Sync + 'static,
    {
        self.queue_with(QueueOptions::new(queue).concurrency(concurrency), handler)
    }

    /// Runs `handler` for jobs of a queue with the given [`QueueOptions`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker::queue::QueueOptions;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker
    ///     .worker_pool()
    ///     .queue_with(QueueOptions::new("emails").concurrency(4), |job| Ok(()))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn queue_with<F>(self, options: QueueOptions, handler: F) -> Self
    where
        F: Fn(&JobContext<'_>) -> HandlerResult + Send + Sync + 'static,
    {
        self.source(Box::new(QueueSource {
            options,
            handler: Arc::new(handler),
        }))
    }
}
struct QueueSource {
    options: QueueOptions,
    handler: JobHandler,
}

impl Source for QueueSource {
    fn runs_jobs(&self) -> bool {
        true
    }

    fn handover(&self) -> usize {
        if self.options.transactional {
            0 // one task per batch
        } else {
            self.options.claim_size()
        }
    }

    fn start(self: Box<Self>, ctx: SourceContext) -> Result<Vec<JoinHandle<()>>> {
        let opts = self.options;
        opts.check()?;
        let listener = ctx.broker.listen(WAKE_CHANNEL)?;
        let (permit_tx, permit_rx) = crossbeam_channel::bounded(opts.concurrency);
        for _ in 0..opts.concurrency {
            let _ = permit_tx.send(());
        }
        let queue = opts.queue.clone();
        let shared = Arc::new(Shared::new(
            ctx.broker.clone(),
            opts,
            self.handler,
            ctx.stats.clone(),
            permit_tx,
        ));
        {
            let shared = shared.clone();
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name(format!("pgbroker-lease-{queue}"))
                .spawn(move || lease::run(&shared, &ctx))?;
        }
        let fetch = std::thread::Builder::new()
            .name(format!("pgbroker-queue-{queue}"))
            .spawn(move || fetch::Fetcher::new(&shared, &ctx, &listener, &permit_rx).run())?;
        Ok(vec![fetch])
    }
}
