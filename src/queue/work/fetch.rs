//! The fetch thread of a queue: takes free slots of the queue's concurrency (bounded
//! prefetch), claims that many jobs (or, in transactional mode, hands out a batch to take),
//! hands them to the pool's workers, and when the queue is empty registers as idle and waits
//! for a wake-up (LISTEN), a recheck or the poll timer.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{after, at, never, select, Receiver};

use super::job_guard::JobGuard;
use super::shared::Shared;
use super::take_batch::{self, Taken};
use super::Inflight;
use crate::notify::{Event, Listener};
use crate::queue::wake_checks::RECHECKS;
use crate::queue::ClaimedJob;
use crate::worker::{SourceContext, Task};
use crate::Result;

/// How often a worker that stays registered registers again.
const REFRESH: Duration = Duration::from_secs(60);

/// How long a worker that went idle stays registered as waiting while it finds jobs again.
/// Unregistering at once cost two round trips per wake-up (out, then in again at the next
/// idle moment): at 200 jobs a second, one at a time, more than the jobs themselves. Within
/// this time producers keep sending wake-ups (one NOTIFY per enqueue); a worker busy for
/// longer unregisters, so a busy queue's producers send none.
const STAY_REGISTERED: Duration = Duration::from_millis(50);

/// The fetch thread's state between rounds.
pub(super) struct Fetcher<'a> {
    shared: &'a Arc<Shared>,
    ctx: &'a SourceContext,
    listener: &'a Listener,
    permits: &'a Receiver<()>,
    /// Registered in `pgbroker.queue_waiters` (producers send a wake-up).
    waiting: bool,
    /// Since when it has found jobs in every round while registered (see [`STAY_REGISTERED`]).
    busy_since: Option<Instant>,
    /// When it registered as waiting, and how many of the rechecks after that are done (an
    /// enqueue that skipped its waiter check, wake_checks.rs, has committed by one of them).
    registered_at: Instant,
    rechecks_done: usize,
    /// Failed fetches in a row, for the back-off.
    failures: u32,
}

/// What one round got.
enum Fetched {
    /// Leased jobs, to hand to the workers.
    Claimed(Vec<ClaimedJob>),
    /// How many jobs a batch took in its transaction (it runs them itself).
    Taken(usize),
}

/// Whether the loop goes on.
enum Next {
    Continue,
    Stop,
}

impl<'a> Fetcher<'a> {
    pub(super) fn new(
        shared: &'a Arc<Shared>,
        ctx: &'a SourceContext,
        listener: &'a Listener,
        permits: &'a Receiver<()>,
    ) -> Self {
        Fetcher {
            shared,
            ctx,
            listener,
            permits,
            waiting: false,
            busy_since: None,
            registered_at: Instant::now(),
            rechecks_done: RECHECKS.len(),
            failures: 0,
        }
    }

    pub(super) fn run(mut self) {
        while !self.ctx.is_stopping() {
            if let Next::Stop = self.round() {
                break;
            }
        }
        // From now on the last unfinished job deletes what is left before its thread returns
        // (the pool's shutdown joins this thread, then the workers).
        self.shared.stop_completions();
        if self.waiting {
            let _ = self.set_waiting(false);
        }
    }

    /// One round: free slots, a fetch, then idling or handing out what was fetched.
    fn round(&mut self) -> Next {
        let Some(slots) = self.free_slots() else {
            return Next::Stop;
        };
        let fetched = match self.fetch(slots) {
            Ok(Some(fetched)) => fetched,
            Ok(None) => return Next::Stop,
            Err(e) => return self.failed(e),
        };
        self.failures = 0;
        match fetched {
            Fetched::Claimed(jobs) if jobs.is_empty() => self.idle(),
            Fetched::Taken(0) => self.idle(),
            Fetched::Claimed(jobs) => {
                self.busy();
                self.hand_out(jobs)
            }
            Fetched::Taken(_) => {
                self.busy(); // a batch is running them
                Next::Continue
            }
        }
    }

    /// Waits for a free slot and takes the other free ones, up to half the queue's
    /// concurrency (claimed jobs: bounded prefetch); one at a time in transactional mode (a
    /// slot is a batch). `None` when stopping.
    ///
    /// Half, so that two claims are in flight: while the workers run one claim's jobs, the
    /// next is claimed. With every slot in one claim, the workers waited for the claim and
    /// the claim for the workers: they took turns. (A completed job frees its slot before
    /// its DELETE commits, `completions.rs`, so the DELETEs do not hold claims back.)
    fn free_slots(&self) -> Option<usize> {
        let mut n: usize = select! {
            recv(self.permits) -> p => match p {
                Ok(()) => 1,
                Err(_) => return None,
            },
            recv(self.ctx.stop_signal()) -> _ => return None,
        };
        if !self.shared.opts.transactional {
            let most = self.shared.opts.claim_size();
            while n < most && self.permits.try_recv().is_ok() {
                n += 1;
            }
        }
        Some(n)
    }

    /// Claims up to `slots` jobs, giving back the slots not used; or hands out one batch to
    /// take. `None` when the pool stops meanwhile.
    fn fetch(&self, slots: usize) -> Result<Option<Fetched>> {
        let shared = self.shared;
        if shared.opts.transactional {
            return match take_batch::start(shared, self.ctx) {
                Taken::Jobs(k) => Ok(Some(Fetched::Taken(k))),
                Taken::Failed(e) => Err(e),
                Taken::Stopped => Ok(None),
            };
        }
        let claimed =
            shared
                .broker
                .claim_jobs(&shared.opts.queue, &shared.worker, slots, shared.opts.lease);
        let used = claimed.as_ref().map_or(0, Vec::len);
        for _ in used..slots {
            let _ = shared.permits.send(());
        }
        claimed.map(|jobs| Some(Fetched::Claimed(jobs)))
    }

    /// A fetch failed: back off, longer after each failure in a row.
    fn failed(&mut self, e: crate::Error) -> Next {
        self.failures += 1;
        let what = if self.shared.opts.transactional {
            "taking jobs"
        } else {
            "claiming"
        };
        log::warn!(
            "pgbroker queue {:?}: {what} failed: {e}",
            self.shared.opts.queue
        );
        let delay = self
            .shared
            .broker
            .config()
            .reconnect_delay(self.failures - 1);
        if self.ctx.sleep(delay) {
            Next::Continue
        } else {
            Next::Stop
        }
    }

    /// Nothing to fetch. The first time, register as idle and fetch once more before
    /// sleeping (a job enqueued in between is found by that fetch or announced by a wake-up);
    /// after that, wait for a wake-up, the recheck or the poll timer.
    fn idle(&mut self) -> Next {
        self.busy_since = None;
        if self.registered_at.elapsed() >= REFRESH {
            self.waiting = false; // register again: producers ignore registrations 10 min old
        }
        if !self.waiting {
            match self.set_waiting(true) {
                Ok(()) => {
                    self.waiting = true;
                    self.registered_at = Instant::now();
                    self.rechecks_done = 0;
                }
                Err(e) => {
                    log::warn!(
                        "pgbroker queue {:?}: registering as idle failed: {e}",
                        self.shared.opts.queue
                    );
                    if !self.ctx.sleep(self.shared.opts.poll_interval) {
                        return Next::Stop;
                    }
                }
            }
            return Next::Continue;
        }
        let next = self.wait_for_wake_up();
        // Wake-ups that piled up meanwhile are all answered by the next fetch.
        while self.listener.try_recv().is_some() {}
        next
    }

    fn wait_for_wake_up(&mut self) -> Next {
        let queue = self.shared.opts.queue.as_str();
        let poll = after(self.shared.opts.poll_interval);
        let recheck = RECHECKS
            .get(self.rechecks_done)
            .map_or_else(never, |d| at(self.registered_at + *d));
        loop {
            select! {
                recv(self.listener.receiver()) -> ev => match ev {
                    Ok(Event::Notification(n)) if n.payload() == queue => return Next::Continue,
                    Ok(Event::Reconnected { .. }) => return Next::Continue, // lost: re-scan
                    Ok(_) => continue,
                    Err(_) => {
                        return if self.ctx.sleep(self.shared.opts.poll_interval) {
                            Next::Continue
                        } else {
                            Next::Stop
                        };
                    }
                },
                recv(self.ctx.stop_signal()) -> _ => return Next::Stop,
                recv(recheck) -> _ => {
                    self.rechecks_done += 1;
                    return Next::Continue;
                }
                recv(poll) -> _ => {
                    self.waiting = false; // refresh the registration next round
                    return Next::Continue;
                }
            }
        }
    }

    /// Jobs were found: no longer idle, and unregistered once busy for [`STAY_REGISTERED`].
    fn busy(&mut self) {
        if !self.waiting {
            return;
        }
        let since = *self.busy_since.get_or_insert_with(Instant::now);
        self.rechecks_done = RECHECKS.len();
        if since.elapsed() >= STAY_REGISTERED {
            self.busy_since = None;
            if let Err(e) = self.set_waiting(false) {
                log::debug!(
                    "pgbroker queue {:?}: unregistering as idle failed: {e}",
                    self.shared.opts.queue
                );
            }
            self.waiting = false;
        }
    }

    /// Hands claimed jobs to the workers, each in a guard that releases it when it is not
    /// run (the pool stops).
    fn hand_out(&self, jobs: Vec<ClaimedJob>) -> Next {
        let shared = self.shared;
        let claim = shared.completions.claimed(jobs.len());
        // Guards first: a job not handed to a worker is released when its guard drops.
        let mut guards: Vec<JobGuard> = {
            let mut inflight = shared.inflight();
            jobs.into_iter()
                .map(|job| {
                    let cancelled = Arc::new(AtomicBool::new(false));
                    inflight.insert(
                        job.id,
                        Inflight {
                            attempt: job.attempt,
                            cancelled: cancelled.clone(),
                        },
                    );
                    JobGuard::new(shared.clone(), claim, job, cancelled)
                })
                .collect()
        };
        guards.reverse();
        while let Some(guard) = guards.pop() {
            if !self.ctx.submit(Task::new(move || guard.run())) {
                return Next::Stop; // the rest are released as `guards` drops
            }
        }
        Next::Continue
    }

    fn set_waiting(&self, waiting: bool) -> Result<()> {
        let shared = self.shared;
        shared
            .broker
            .set_waiting(&shared.opts.queue, &shared.worker, waiting)
    }
}
