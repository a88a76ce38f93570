//! Grouped completion for lease-mode queues: jobs whose handlers succeeded are deleted many
//! per statement, so a claimed batch costs one durable commit to complete, not one per job.
//!
//! A finished job waits while other jobs of its claim are still unfinished (running, or
//! claimed and waiting for a thread): the last of them to finish deletes every waiting job in
//! one statement (a lone job is deleted at once). The lease thread also deletes what has
//! waited [`MAX_WAIT`] (50 ms), on its ticks, so a slow job does not hold its batch's
//! completions back for long. A worker finishing a job while another deletes a batch leaves
//! its job for that worker's next round and moves on, unless it is the last unfinished job:
//! then it waits for that round, so the last job's thread returns only once every completion
//! is committed (the pool's shutdown joins those threads).
//!
//! At least once, unchanged: a job is deleted only after its handler returned; until then and
//! until its DELETE committed it stays in flight (its lease extended, its slot of the queue's
//! concurrency held), so a crash before the commit runs it again, and nothing is reported done
//! (no slot freed, no next claim) before the commit.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::super::protocol::DELETE_SQL;
use super::super::JobId;
use crate::{Broker, Result};

/// The most jobs one DELETE completes.
const MAX_BATCH: usize = 1_000;

/// How long a completion may wait behind unfinished jobs before the lease thread's tick
/// deletes it. Ticks deleting younger ones split claimed batches: on a durable cluster whose
/// fsync took 20 ms, a 50 ms tick cut batches of 100 into DELETEs of 22 on average.
pub(super) const MAX_WAIT: Duration = Duration::from_millis(50);

/// Completed jobs waiting for their DELETE, how many claimed jobs are unfinished, and whether
/// someone is deleting a batch.
#[derive(Default)]
pub(super) struct Completions {
    state: Mutex<State>,
    /// Signalled when a deleting round ends.
    idle: Condvar,
}

#[derive(Default)]
struct State {
    ids: Vec<JobId>,
    attempts: Vec<i32>,
    /// When the oldest waiting completion arrived.
    oldest: Option<Instant>,
    /// Jobs claimed and not finished: running, or waiting for a thread.
    unfinished: usize,
    deleting: bool,
}

/// Deletes one batch of completed jobs (`ids[i]` claimed as `attempts[i]`) and settles them;
/// it reports its own failures (those jobs then run again once their leases expire).
pub(super) type Flush<'a> = &'a dyn Fn(&[JobId], &[i32]);

impl Completions {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `n` more jobs were claimed.
    pub(super) fn claimed(&self, n: usize) {
        self.state().unfinished += n;
    }

    /// Job `id` (claimed as `attempt`) succeeded: deleted now if it was the last unfinished
    /// job or the batch is full, else by the last one (or the lease thread's next tick).
    pub(super) fn complete(&self, id: JobId, attempt: i32, flush: Flush<'_>) {
        let mut s = self.state();
        s.ids.push(id);
        s.attempts.push(attempt);
        s.oldest.get_or_insert_with(Instant::now);
        s.unfinished = s.unfinished.saturating_sub(1);
        if s.unfinished == 0 || s.ids.len() >= MAX_BATCH {
            self.drain(s, flush);
        }
    }

    /// A claimed job finished some other way (failed, snoozed, released): when it was the
    /// last unfinished one, the waiting completions are deleted now.
    pub(super) fn finished(&self, flush: Flush<'_>) {
        let mut s = self.state();
        s.unfinished = s.unfinished.saturating_sub(1);
        if s.unfinished == 0 && !s.ids.is_empty() {
            self.drain(s, flush);
        }
    }

    /// Deletes what waits when the oldest has waited `max_wait` (the lease thread's tick);
    /// returns at once when someone else is deleting.
    pub(super) fn flush(&self, max_wait: Duration, flush: Flush<'_>) {
        let s = self.state();
        if s.oldest.is_some_and(|t| t.elapsed() >= max_wait) {
            self.drain(s, flush);
        }
    }

    /// Deletes every waiting job, batch after batch, until none waits. When another thread is
    /// deleting, it leaves the work to it, except when no claimed job is unfinished: then
    /// nobody else would come, so it waits for that round and goes on.
    fn drain<'s>(&'s self, mut s: MutexGuard<'s, State>, flush: Flush<'_>) {
        while s.deleting {
            if s.unfinished > 0 {
                return;
            }
            s = self.idle.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.deleting = true;
        loop {
            if s.ids.is_empty() {
                s.oldest = None;
                s.deleting = false;
                drop(s);
                self.idle.notify_all();
                return;
            }
            let n = s.ids.len().min(MAX_BATCH);
            let ids: Vec<JobId> = s.ids.drain(..n).collect();
            let attempts: Vec<i32> = s.attempts.drain(..n).collect();
            drop(s);
            flush(&ids, &attempts);
            s = self.state();
        }
    }
}

impl Broker {
    /// Deletes completed jobs still running under the given attempts (fenced like
    /// `complete_jobs`). Returns how many were deleted.
    pub(super) fn delete_completed(&self, ids: &[JobId], attempts: &[i32]) -> Result<u64> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(DELETE_SQL)?;
        Ok(conn.execute(&stmt, &[&ids, &attempts])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    /// Recorded batches: the ids (as numbers) and attempts of each DELETE.
    type Batches = Mutex<Vec<(Vec<i64>, Vec<i32>)>>;

    fn recorder(batches: &Batches) -> impl Fn(&[JobId], &[i32]) + '_ {
        move |ids, attempts| {
            batches
                .lock()
                .unwrap()
                .push((ids.iter().map(|id| id.0).collect(), attempts.to_vec()))
        }
    }

    #[test]
    fn a_lone_job_is_deleted_at_once() {
        let c = Completions::default();
        let batches = Batches::default();
        c.claimed(1);
        c.complete(JobId(7), 1, &recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![7], vec![1])]);
        assert!(!c.state().deleting);
    }

    #[test]
    fn a_claimed_batch_is_deleted_in_one_statement_when_its_last_job_finishes() {
        let c = Completions::default();
        let batches = Batches::default();
        c.claimed(4);
        c.complete(JobId(1), 1, &recorder(&batches));
        c.complete(JobId(2), 3, &recorder(&batches));
        assert!(
            batches.lock().unwrap().is_empty(),
            "two jobs still unfinished"
        );
        c.finished(&recorder(&batches)); // job 3 failed: its outcome is recorded elsewhere
        assert!(batches.lock().unwrap().is_empty());
        c.complete(JobId(4), 1, &recorder(&batches));
        assert_eq!(
            *batches.lock().unwrap(),
            vec![(vec![1, 2, 4], vec![1, 3, 1])]
        );
    }

    #[test]
    fn the_last_job_failing_deletes_the_waiting_ones() {
        let c = Completions::default();
        let batches = Batches::default();
        c.claimed(2);
        c.complete(JobId(1), 1, &recorder(&batches));
        c.finished(&recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![1], vec![1])]);
    }

    #[test]
    fn a_tick_deletes_what_waits_behind_a_slow_job() {
        let c = Completions::default();
        let batches = Batches::default();
        c.claimed(3);
        c.complete(JobId(1), 1, &recorder(&batches));
        c.complete(JobId(2), 1, &recorder(&batches));
        c.flush(Duration::from_secs(60), &recorder(&batches));
        assert!(batches.lock().unwrap().is_empty(), "not waited long enough");
        c.flush(Duration::ZERO, &recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![1, 2], vec![1, 1])]);
        c.flush(Duration::ZERO, &recorder(&batches));
        assert_eq!(batches.lock().unwrap().len(), 1, "nothing waits");
        c.complete(JobId(3), 1, &recorder(&batches));
        assert_eq!(batches.lock().unwrap()[1], (vec![3], vec![1]));
    }

    #[test]
    fn jobs_finished_during_a_delete_go_into_the_next_batch() {
        let c = Arc::new(Completions::default());
        let in_delete = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        c.claimed(1);
        let first = {
            let (c, in_delete, release, batches, calls) = (
                c.clone(),
                in_delete.clone(),
                release.clone(),
                batches.clone(),
                calls.clone(),
            );
            std::thread::spawn(move || {
                c.complete(JobId(1), 1, &|ids, _| {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        in_delete.wait();
                        release.wait();
                    }
                    batches
                        .lock()
                        .unwrap()
                        .push(ids.iter().map(|id| id.0).collect::<Vec<i64>>());
                })
            })
        };
        in_delete.wait();
        // While the first worker deletes job 1, three more are claimed and finish; the
        // first two return at once, the last waits for the deleting round to take them.
        c.claimed(3);
        c.complete(JobId(2), 1, &|_, _| panic!("not the deleting worker"));
        c.complete(JobId(3), 1, &|_, _| panic!("not the deleting worker"));
        let last = {
            let c = c.clone();
            std::thread::spawn(move || {
                c.complete(JobId(4), 1, &|_, _| panic!("not the deleting one"))
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!last.is_finished(), "the last job waits for the round");
        release.wait();
        first.join().unwrap();
        last.join().unwrap();
        assert_eq!(*batches.lock().unwrap(), vec![vec![1], vec![2, 3, 4]]);
        assert!(!c.state().deleting);
    }
}
