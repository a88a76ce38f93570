//! `WakeChecks`: when a single enqueue asks the database whether a worker of its queue waits.
//!
//! Every enqueue of a job due now must wake the queue's idle workers (one NOTIFY, sent only
//! while one is registered in `pgbroker.queue_waiters`). Asking costs the enqueue's statement
//! a subquery: 17 000 of its 183 000 server instructions (callgrind, PostgreSQL 15). A busy
//! queue has no idle worker, so after a check found none, the broker's single enqueues of that
//! queue skip the check for [`QUIET`]. A worker that registers as idle within that window
//! is woken by the first enqueue after it, or finds the job itself when it polls (its
//! registration is followed by a claim, and it polls every `poll_interval`): a wake-up is
//! delayed by at most `QUIET` while jobs keep coming, and never lost for longer than a poll.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long single enqueues skip the waiter check after one found no waiting worker.
pub(crate) const QUIET: Duration = Duration::from_millis(10);

/// Queues whose last check found nobody waiting, and until when to skip checking them.
#[derive(Debug, Default)]
pub(crate) struct WakeChecks {
    quiet_until: Mutex<HashMap<String, Instant>>,
}

/// More queues than this and the expired entries are dropped (names are unbounded).
const MAX_QUEUES: usize = 1024;

impl WakeChecks {
    /// Should an enqueue on `queue` at `now` check for waiting workers?
    pub(crate) fn due(&self, queue: &str, now: Instant) -> bool {
        let map = self.quiet_until.lock().unwrap_or_else(|e| e.into_inner());
        map.get(queue).map_or(true, |until| now >= *until)
    }

    /// Records a check's outcome: `woke` when it found a waiting worker (then the next
    /// enqueue checks again), otherwise the queue is quiet until `now + QUIET`.
    pub(crate) fn checked(&self, queue: &str, woke: bool, now: Instant) {
        let mut map = self.quiet_until.lock().unwrap_or_else(|e| e.into_inner());
        if woke {
            map.remove(queue);
            return;
        }
        if map.len() >= MAX_QUEUES && !map.contains_key(queue) {
            map.retain(|_, until| *until > now);
        }
        map.insert(queue.to_owned(), now + QUIET);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_check_that_found_nobody_silences_the_queue_for_quiet() {
        let w = WakeChecks::default();
        let t = Instant::now();
        assert!(w.due("q", t));
        w.checked("q", false, t);
        assert!(!w.due("q", t));
        assert!(!w.due("q", t + QUIET - Duration::from_nanos(1)));
        assert!(w.due("q", t + QUIET));
        assert!(w.due("other", t), "queues are independent");
    }

    #[test]
    fn a_check_that_woke_someone_keeps_checking() {
        let w = WakeChecks::default();
        let t = Instant::now();
        w.checked("q", false, t);
        w.checked("q", true, t);
        assert!(w.due("q", t));
        w.checked("q", true, t);
        assert!(w.due("q", t));
    }

    #[test]
    fn expired_queues_are_dropped_when_there_are_many() {
        let w = WakeChecks::default();
        let t = Instant::now();
        for i in 0..MAX_QUEUES {
            w.checked(&format!("q{i}"), false, t);
        }
        let later = t + QUIET;
        w.checked("new", false, later);
        let map = w.quiet_until.lock().unwrap();
        assert_eq!(map.len(), 1);
        assert!(map.contains_key("new"));
    }
}
