//! What a broker remembers between single publishes: the event ids it reserved, and whether a
//! consumer waited for a wake-up when it last looked.
//!
//! Both take work off the server's side of `Broker::publish` (callgrind, PostgreSQL 15, per
//! single-event INSERT in its own transaction): an id known beforehand needs no `RETURNING`
//! (src/id_blocks.rs), and looking for waiters in every statement cost 13 000–16 000.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::id_blocks::IdBlocks;

/// How long a broker that found no waiting consumer publishes without looking again (single
/// events and batches in their own transactions; `publish_in` looks every time).
///
/// Short: publishes further apart than this (a topic at a few hundred events a second) all
/// look, so an idle consumer is woken by the event's own NOTIFY and sees it about a commit
/// later; only publishes closer together skip the look (a thread publishing 4 000 events a
/// second looks for one in eight), which is where the look's cost would show. With 50 ms an
/// event published while its consumer was between finishing a batch and registering as
/// waiting waited for the consumer's recheck: 21 ms p99 at 200 events a second.
pub(crate) const WAITER_CHECK_INTERVAL: Duration = Duration::from_millis(2);

/// How long after registering as waiting a consumer reads once more. A publish that skipped
/// looking for waiters was sent less than [`WAITER_CHECK_INTERVAL`] after a look made before
/// the registration, so its transaction began by then (the rest is margin for the statement
/// itself); the consumer reads from then on until the horizon passed every transaction begun
/// by then, and so finds the event as soon as it is committed and readable.
pub(crate) const WAITER_RECHECK: Duration = Duration::from_millis(5);

/// A broker's publishing state, shared by its threads.
pub(crate) struct PublishState {
    ids: IdBlocks,
    waiters: Waiters,
}

impl PublishState {
    pub(crate) fn new() -> PublishState {
        PublishState {
            ids: IdBlocks::events(),
            waiters: Waiters::new(),
        }
    }

    pub(crate) fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// The event ids reserved for single publishes. That is enough for single events, each
    /// alone in its transaction: the log is read in `(tx, id)` order, so ids order only the
    /// events of one transaction (and `publish_in` draws from the sequence for that reason).
    pub(crate) fn ids(&self) -> &IdBlocks {
        &self.ids
    }
}

/// Whether a publish must look for waiting consumers (`pgbroker.log_waiters`), or may skip
/// it because a look that found none was sent less than [`WAITER_CHECK_INTERVAL`] ago.
///
/// A look that finds none proves that every consumer waiting now registered after it was
/// sent; skipping until then plus the interval, and consumers reading again
/// [`WAITER_RECHECK`] after registering, means an event whose publish skipped the look is
/// still read within about that long, not a whole poll interval later.
pub(crate) struct Waiters {
    base: Instant,
    /// Nanoseconds since `base` until which publishes skip the look; 0: look.
    skip_until: AtomicU64,
}

impl Waiters {
    fn new() -> Waiters {
        Waiters {
            base: Instant::now(),
            skip_until: AtomicU64::new(0),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    /// Whether a statement sent at `now` must look for waiters.
    pub(crate) fn must_look(&self, now: Instant) -> bool {
        self.nanos(now) >= self.skip_until.load(Ordering::Relaxed)
    }

    /// Records a look sent at `sent` (before the statement went out, so its snapshot is
    /// later) in a transaction of its own, and whether it `found` a waiting consumer.
    pub(crate) fn looked(&self, sent: Instant, found: bool) {
        let until = self.nanos(sent + WAITER_CHECK_INTERVAL);
        if found {
            // Look every time again, unless a later look found none.
            let _ = self
                .skip_until
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                    (cur != 0 && cur <= until).then_some(0)
                });
        } else {
            self.skip_until.fetch_max(until, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_look_that_found_nobody_skips_looks_for_the_interval() {
        let w = Waiters::new();
        let t0 = w.base + 10 * MS;
        assert!(w.must_look(t0), "never looked");
        w.looked(t0, false);
        assert!(!w.must_look(t0 + WAITER_CHECK_INTERVAL - MS / 2));
        assert!(w.must_look(t0 + WAITER_CHECK_INTERVAL));
        assert!(w.must_look(t0 + WAITER_CHECK_INTERVAL + MS));
    }

    #[test]
    fn a_look_that_found_a_waiter_makes_every_publish_look() {
        let w = Waiters::new();
        let t0 = w.base + 10 * MS;
        w.looked(t0, false);
        w.looked(t0 + 5 * MS, true);
        assert!(w.must_look(t0 + 6 * MS));
        // Still looking: nothing found nobody since.
        w.looked(t0 + 7 * MS, true);
        assert!(w.must_look(t0 + 8 * MS));
    }

    #[test]
    fn an_older_look_never_overrides_a_newer_one() {
        let w = Waiters::new();
        let t0 = w.base + 10 * MS;
        let i = WAITER_CHECK_INTERVAL;
        // Sent later, answered first: found nobody.
        w.looked(t0 + i, false);
        // Sent earlier, answered later: found a waiter, who must have left before the later
        // look; that look's skip stands.
        w.looked(t0, true);
        assert!(!w.must_look(t0 + i + i / 2));
        assert!(w.must_look(t0 + i + i));
        // An older look that found nobody does not shorten the skip either.
        w.looked(t0 + i / 4, false);
        assert!(!w.must_look(t0 + i + i - MS / 4));
    }
}
