//! What the threads running one queue share: the options, the handler, the jobs in flight
//! with their leases and cancellation flags, the concurrency permits and the completions
//! waiting for their DELETE.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::completions::{ClaimNo, Completions};
use super::options::QueueOptions;
use crate::queue::{JobContext, JobId};
use crate::worker::{HandlerResult, Stats};
use crate::{Broker, Error, Result};

pub(super) type JobHandler = Arc<dyn Fn(&JobContext<'_>) -> HandlerResult + Send + Sync>;

/// A claimed job not yet settled: its fencing attempt and its cancellation flag.
pub(super) struct Inflight {
    pub(super) attempt: i32,
    pub(super) cancelled: Arc<AtomicBool>,
}

pub(super) struct Shared {
    pub(super) broker: Broker,
    pub(super) opts: QueueOptions,
    pub(super) handler: JobHandler,
    pub(super) worker: String,
    pub(super) stats: Arc<Stats>,
    /// Jobs claimed and not yet settled (their outcome recorded), whose leases the lease
    /// thread extends.
    inflight: Mutex<HashMap<JobId, Inflight>>,
    /// One per job claimed and not settled; one per batch in transactional mode.
    pub(super) permits: Sender<()>,
    /// Successful jobs waiting to be deleted, many per statement.
    pub(super) completions: Completions,
}

impl Shared {
    pub(super) fn new(
        broker: Broker,
        opts: QueueOptions,
        handler: JobHandler,
        stats: Arc<Stats>,
        permits: Sender<()>,
    ) -> Shared {
        Shared {
            completions: Completions::new(opts.concurrency),
            worker: opts
                .worker_name
                .clone()
                .unwrap_or_else(|| default_worker_name(&opts.queue)),
            broker,
            opts,
            handler,
            stats,
            inflight: Mutex::new(HashMap::new()),
            permits,
        }
    }

    pub(super) fn inflight(&self) -> MutexGuard<'_, HashMap<JobId, Inflight>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jobs whose outcome is recorded (or given up on): no longer in flight, their slots free.
    pub(super) fn settle(&self, ids: &[JobId]) {
        self.forget(ids);
        self.free_slots(ids.len());
    }

    /// Deletes a batch of completed jobs, no longer in flight then, and frees the `held`
    /// slots among them (see `completions.rs`). Transient failures are retried; a failure is
    /// counted and logged (those jobs run again when their leases expire).
    fn delete_completed(&self, ids: &[JobId], attempts: &[i32], held: usize) {
        if let Err(e) = with_retries(|| self.broker.delete_completed(ids, attempts).map(drop)) {
            self.stats.count_unrecorded(ids.len() as u64);
            log::error!(
                "pgbroker: completing jobs {ids:?} failed (they run again when their leases \
                 expire): {e}"
            );
        }
        self.forget(ids);
        self.free_slots(held);
    }

    /// [`delete_completed`](Self::delete_completed) as the completions' flush.
    fn flush(&self) -> impl Fn(&[JobId], &[i32], usize) + '_ {
        move |ids, attempts, held| self.delete_completed(ids, attempts, held)
    }

    /// A job of `claim` succeeded: its DELETE is grouped with others' (`completions.rs`); its
    /// slot is freed now or by that DELETE.
    pub(super) fn complete(&self, claim: ClaimNo, id: JobId, attempt: i32) {
        let early = self.completions.complete(claim, id, attempt, &self.flush());
        if early {
            self.free_slots(1);
        }
    }

    /// A job of `claim` finished without a pending completion: settled now.
    pub(super) fn finished(&self, claim: ClaimNo, id: JobId) {
        self.settle(&[id]);
        self.completions.finished(claim, &self.flush());
    }

    fn free_slots(&self, n: usize) {
        for _ in 0..n {
            let _ = self.permits.send(());
        }
    }

    /// Jobs no longer in flight.
    fn forget(&self, ids: &[JobId]) {
        let mut inflight = self.inflight();
        for id in ids {
            inflight.remove(id);
        }
    }

    /// The fetch thread stopped: what is left is deleted before the last worker returns
    /// (now, when no claimed job is unfinished).
    pub(super) fn stop_completions(&self) {
        self.completions.stop(&self.flush());
    }

    /// The lease thread's wait of up to `timeout`: it deletes the completions that became
    /// ready meanwhile, and those that waited long behind unfinished jobs.
    pub(super) fn serve_completions(&self, timeout: Duration) {
        self.completions
            .serve(timeout, super::completions::MAX_WAIT, &self.flush());
    }

    /// Flags jobs no longer held (cancelled, rescued) so their handlers can stop.
    pub(super) fn cancel_lost(&self, ids: &[JobId], held: &std::collections::HashSet<JobId>) {
        let inflight = self.inflight();
        for id in ids.iter().filter(|id| !held.contains(id)) {
            if let Some(f) = inflight.get(id) {
                f.cancelled.store(true, Ordering::SeqCst);
            }
        }
    }
}

fn default_worker_name(queue: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{host}/{}/{queue}/{n}", std::process::id())
}

/// The text recorded in a job's error history for a failed handler: the handler's own error
/// when there is one (not pgbroker's wrapping of it).
pub(super) fn error_text(e: &Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => cause.to_string(),
        None => e.to_string(),
    }
}

/// What middleware sees of a job's handler run.
pub(super) fn job_run(queue: &str, id: JobId, attempt: u32) -> crate::middleware::HandlerRun<'_> {
    crate::middleware::HandlerRun::Job { queue, id, attempt }
}

/// Runs `f`, retrying transient failures (connection lost, pool timeout) with a doubling
/// delay for about 6 s in all: long enough to ride out a server restart or a failover.
pub(super) fn with_retries(mut f: impl FnMut() -> Result<()>) -> Result<()> {
    let mut delay = Duration::from_millis(50);
    for _ in 0..7 {
        match f() {
            Err(e) if e.is_transient() => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            other => return other,
        }
    }
    f()
}
