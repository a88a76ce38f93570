//! The lease thread of a lease-mode queue: extends the leases of claimed jobs (noticing
//! cancellations), deletes the completions of finished claims while workers run the next
//! claim's jobs and those that waited behind slower jobs, and rescues expired leases on a
//! timer. It outlives the fetch thread: handlers still running during the
//! shutdown grace period keep their leases. It ends once nothing is in flight.

use std::time::{Duration, Instant};

use super::shared::Shared;
use crate::queue::JobId;
use crate::worker::SourceContext;

/// How often the thread wakes at least (besides when completions become ready): the
/// completions' longest wait behind a slow job.
const TICK: Duration = Duration::from_millis(50);

pub(super) fn run(shared: &Shared, ctx: &SourceContext) {
    let every = shared.opts.heartbeat_every();
    let mut last_beat = Instant::now();
    let mut last_rescue: Option<Instant> = None;
    let mut stopped_at: Option<Instant> = None;
    let give_up = shared.broker.config().shutdown_grace() + shared.opts.lease;
    loop {
        if ctx.is_stopping() {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if shared.inflight().is_empty() || since.elapsed() > give_up {
                return;
            }
        } else if last_rescue.is_none_or(|t| t.elapsed() >= shared.opts.rescue_interval) {
            match shared.broker.rescue_jobs() {
                Ok(0) => {}
                Ok(n) => log::info!("pgbroker: rescued {n} job(s) whose lease expired"),
                Err(e) => log::warn!("pgbroker: rescuing jobs failed: {e}"),
            }
            last_rescue = Some(Instant::now());
        }
        if last_beat.elapsed() >= every {
            last_beat = Instant::now();
            beat(shared);
        }
        shared.serve_completions(every.min(TICK));
    }
}

/// Extends the leases of in-flight jobs; flags those no longer held as cancelled.
fn beat(shared: &Shared) {
    let (ids, attempts): (Vec<JobId>, Vec<i32>) = shared
        .inflight()
        .iter()
        .map(|(id, f)| (*id, f.attempt))
        .unzip();
    if ids.is_empty() {
        return;
    }
    match shared
        .broker
        .extend_leases(&ids, &attempts, shared.opts.lease)
    {
        Ok(held) => shared.cancel_lost(&ids, &held.into_iter().collect()),
        Err(e) => log::warn!(
            "pgbroker queue {:?}: extending leases failed: {e}",
            shared.opts.queue
        ),
    }
}
