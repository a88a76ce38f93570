//! `WakeChecks`: when a single enqueue asks the database whether a worker of its queue waits.
//!
//! Every enqueue of a job due now must wake the queue's idle workers (one NOTIFY, sent only
//! while one is registered in `pgbroker.queue_waiters`). Asking costs the enqueue's statement
//! a subquery: 17 000 of its 158 000 server instructions (callgrind, PostgreSQL 15). A busy
//! queue has no idle worker, so a broker asks about a queue at most once per [`QUIET`] (one
//! of concurrent enqueues asks, the others do not) unless the last ask found a waiting worker.
//! `QUIET` is short (2 ms): enqueues further apart than that (a queue at a few hundred jobs a
//! second) all ask, so an idle worker is woken by the job's own NOTIFY; only enqueues closer
//! together skip (at 5 000 per second and thread, 9 in 10 still skip).
//! A worker that registers as idle just after an ask is woken by the first enqueue that asks
//! again, or finds the job itself: it claims right after registering, again at each of
//! [`RECHECKS`], and then every `poll_interval`. So a job whose enqueue skipped the ask waits
//! for an idle worker only until the first recheck after its commit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long single enqueues of a queue skip the waiter check after one asked and found no
/// waiting worker.
pub(crate) const QUIET: Duration = Duration::from_millis(2);

/// When (after registering as waiting) a worker claims once more: an enqueue that skipped its
/// check because of an ask made before the registration was sent within [`QUIET`] of it, so
/// it has committed by one of these unless its statement took longer than the last.
pub(crate) const RECHECKS: [Duration; 3] = [
    Duration::from_millis(3),
    Duration::from_millis(10),
    Duration::from_millis(50),
];

/// Queues checked lately without finding a waiting worker, and until when to skip them.
#[derive(Debug, Default)]
pub(crate) struct WakeChecks {
    quiet_until: Mutex<HashMap<String, Instant>>,
}

/// More queues than this and the expired entries are dropped (names are unbounded).
const MAX_QUEUES: usize = 1024;

impl WakeChecks {
    /// Should an enqueue on `queue` at `now` check for waiting workers? A `true` takes the
    /// check: the queue is quiet until `now + QUIET` for everyone else (concurrent enqueues
    /// do not all ask at once) unless [`woke`](Self::woke) reports a waiting worker.
    pub(crate) fn due(&self, queue: &str, now: Instant) -> bool {
        let mut map = self.quiet_until.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(queue).is_some_and(|until| now < *until) {
            return false;
        }
        if map.len() >= MAX_QUEUES && !map.contains_key(queue) {
            map.retain(|_, until| *until > now);
        }
        map.insert(queue.to_owned(), now + QUIET);
        true
    }

    /// The check found a waiting worker (and woke it): the next enqueue checks again.
    pub(crate) fn woke(&self, queue: &str) {
        let mut map = self.quiet_until.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(queue);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_check_silences_the_queue_for_quiet() {
        let w = WakeChecks::default();
        let t = Instant::now();
        assert!(w.due("q", t));
        assert!(!w.due("q", t), "taken by the first");
        assert!(!w.due("q", t + QUIET - Duration::from_nanos(1)));
        assert!(w.due("q", t + QUIET));
        assert!(w.due("other", t), "queues are independent");
    }

    #[test]
    fn a_check_that_woke_someone_keeps_checking() {
        let w = WakeChecks::default();
        let t = Instant::now();
        assert!(w.due("q", t));
        w.woke("q");
        assert!(w.due("q", t));
        w.woke("q");
        assert!(w.due("q", t));
    }

    #[test]
    fn expired_queues_are_dropped_when_there_are_many() {
        let w = WakeChecks::default();
        let t = Instant::now();
        for i in 0..MAX_QUEUES {
            assert!(w.due(&format!("q{i}"), t));
        }
        assert!(w.due("new", t + QUIET));
        let map = w.quiet_until.lock().unwrap();
        assert_eq!(map.len(), 1);
        assert!(map.contains_key("new"));
    }
}
