//! [`JobGuard`]: one claimed job from its claim to its recorded outcome.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::completions::ClaimNo;
use super::shared::{error_text, job_run, with_retries, Shared};
use crate::queue::context::Outcome;
use crate::queue::{ClaimedJob, JobContext, JobId};
use crate::Error;

/// Owns one claimed job from claim to outcome. Dropped without running (pool shutdown, or
/// never handed to a worker), it releases the job: available again, the attempt not counted.
pub(super) struct JobGuard {
    shared: Arc<Shared>,
    id: JobId,
    /// The claim that fetched it (its completion is grouped with that claim's).
    claim: ClaimNo,
    /// The attempt it was claimed as (its fencing token).
    attempt: i32,
    job: Option<ClaimedJob>,
    cancelled: Arc<AtomicBool>,
    /// The job succeeded and its DELETE is grouped with others' (`completions.rs`), which
    /// settle it: dropping the guard then leaves it in flight.
    completing: bool,
}

impl JobGuard {
    pub(super) fn new(
        shared: Arc<Shared>,
        claim: ClaimNo,
        job: ClaimedJob,
        cancelled: Arc<AtomicBool>,
    ) -> Self {
        JobGuard {
            shared,
            id: job.id,
            claim,
            attempt: job.attempt,
            job: Some(job),
            cancelled,
            completing: false,
        }
    }

    pub(super) fn run(mut self) {
        let Some(job) = self.job.take() else { return };
        let shared = self.shared.clone();
        let ctx = JobContext::new(
            job,
            shared.broker.clone(),
            self.cancelled.clone(),
            shared.opts.keep_completed,
            None,
        );
        let handler = &shared.handler;
        let (queue, id) = (&shared.opts.queue, ctx.id());
        let res = shared
            .stats
            .run_handler(&job_run(queue, id, ctx.attempt()), || handler(&ctx));
        self.completing = finish(&shared, &ctx, res);
    }
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            if let Err(e) = with_retries(|| self.shared.broker.release_job(&job).map(drop)) {
                log::warn!(
                    "pgbroker: releasing job {} failed (it is rescued when its lease expires): {e}",
                    job.id
                );
            }
        }
        if self.completing {
            self.shared.complete(self.claim, self.id, self.attempt);
        } else {
            self.shared.finished(self.claim, self.id);
        }
    }
}

/// Records the handler's outcome; true when it is a completion left to the grouped DELETE
/// (the caller hands it over once the job's context is gone). A job no longer running under
/// this claim (cancelled, rescued) is left alone by the fenced SQL functions.
fn finish(shared: &Shared, ctx: &JobContext<'_>, res: std::result::Result<(), Error>) -> bool {
    let broker = &shared.broker;
    let job = ctx.claimed();
    let outcome = ctx.take_outcome();
    let succeeded = res.is_ok();
    let recorded = match (res, outcome) {
        (_, Some(Outcome::Done)) => Ok(()),
        (Ok(()), None) if shared.opts.keep_completed.is_none() => return true,
        (Ok(()), None) => {
            let result = ctx.take_result();
            with_retries(|| {
                broker
                    .complete_with(
                        std::slice::from_ref(job),
                        result.as_ref(),
                        shared.opts.keep_completed,
                    )
                    .map(drop)
            })
        }
        (Ok(()), Some(Outcome::Snooze(d))) => {
            with_retries(|| broker.snooze_job(job.id, job.attempt, d).map(drop))
        }
        (Ok(()), Some(Outcome::Discard(reason))) => with_retries(|| {
            broker
                .fail_with(
                    job.id,
                    job.attempt,
                    &format!("discarded: {reason}"),
                    None,
                    true,
                )
                .map(drop)
        }),
        (Err(e), _) => {
            let text = error_text(&e);
            with_retries(|| {
                broker
                    .fail_with(job.id, job.attempt, &text, None, false)
                    .map(drop)
            })
        }
    };
    if let Err(e) = recorded {
        if succeeded {
            shared.stats.count_unrecorded(1);
        }
        log::error!(
            "pgbroker: recording the outcome of job {} failed (it runs again when its lease \
             expires): {e}",
            job.id
        );
    }
    false
}
