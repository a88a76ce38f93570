//! Grouped completion for lease-mode queues: jobs whose handlers succeeded are deleted many
//! per statement, so a claimed batch costs one durable commit to complete, not one per job.
//!
//! Completions are grouped by the claim that fetched them. A finished job waits while other
//! jobs of its claim are unfinished (running, or claimed and waiting for a thread); when the
//! last of them finishes, the claim's completions are ready to delete:
//!
//! - while other claims still have unfinished jobs (the fetch thread claims the next batch
//!   while one runs), the ready completions go to the queue's lease thread, which deletes
//!   what is ready in one statement while the workers go on with the next claim's jobs: the
//!   claim, the handlers and the DELETE overlap instead of taking turns;
//! - when nothing else is unfinished and the fetch thread waits for free slots, they are
//!   handed to it with their slots: its next claim deletes them in the same statement
//!   (`claim_completing`), one statement and one durable commit for both;
//! - otherwise, when nothing else is unfinished (the pool stops, or the fetch thread is busy),
//!   the finishing worker deletes them itself, after waiting for a DELETE in progress, so the
//!   last job's thread returns only once every completion is committed (the pool's shutdown
//!   joins the fetch thread, which deletes what was handed to it, then those threads).
//!
//! The lease thread also deletes completions that waited [`MAX_WAIT`] (50 ms) behind a slow
//! job of their claim, so a slow job does not hold its batch's completions back for long.
//!
//! At least once, unchanged: a job is deleted only after its handler returned; until then and
//! until its DELETE committed it stays in flight (its lease extended, its slot of the queue's
//! concurrency held), so a crash before the commit runs it again, and nothing is reported done
//! before the commit: no slot is freed before it, except for the claim that commits with it.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::super::JobId;

/// The most jobs one DELETE completes.
const MAX_BATCH: usize = 1_000;

/// How long a completion may wait behind unfinished jobs of its claim before the lease
/// thread deletes it. Deleting younger ones split claimed batches: on a durable cluster whose
/// fsync took 20 ms, a 50 ms tick cut batches of 100 into DELETEs of 22 on average.
pub(super) const MAX_WAIT: Duration = Duration::from_millis(50);

/// A claim's number, given by [`Completions::claimed`].
pub(super) type ClaimNo = u64;

/// Completed jobs waiting for their DELETE, by claim, and who is deleting.
#[derive(Default)]
pub(super) struct Completions {
    state: Mutex<State>,
    /// Signalled when a deleting round ends.
    idle: Condvar,
    /// Signalled when completions are ready for the lease thread.
    work: Condvar,
}

#[derive(Default)]
struct State {
    claims: HashMap<ClaimNo, Claim>,
    next_claim: ClaimNo,
    /// Completions ready to delete: their claims are finished (or they waited too long).
    ready: Batch,
    /// Jobs claimed and not finished, over all claims.
    unfinished: usize,
    /// DELETEs in progress.
    deleting: usize,
    /// The fetch thread waits for free slots (see [`Completions::accept`]).
    accepting: bool,
    /// Completions handed to the fetch thread's next claim.
    handed: Batch,
}

/// One claim's jobs: how many are unfinished, and its completions waiting for them.
#[derive(Default)]
struct Claim {
    unfinished: usize,
    waiting: Batch,
    /// When the oldest waiting completion arrived.
    oldest: Option<Instant>,
}

#[derive(Default)]
struct Batch {
    ids: Vec<JobId>,
    attempts: Vec<i32>,
}

impl Batch {
    fn push(&mut self, id: JobId, attempt: i32) {
        self.ids.push(id);
        self.attempts.push(attempt);
    }

    fn append(&mut self, other: &mut Batch) {
        self.ids.append(&mut other.ids);
        self.attempts.append(&mut other.attempts);
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Deletes one batch of completed jobs (`ids[i]` claimed as `attempts[i]`) and settles them;
/// it reports its own failures (those jobs then run again once their leases expire).
pub(super) type Flush<'a> = &'a dyn Fn(&[JobId], &[i32]);

impl Completions {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `n` more jobs were claimed, as one claim: its number, which each job's outcome names.
    pub(super) fn claimed(&self, n: usize) -> ClaimNo {
        let mut s = self.state();
        let no = s.next_claim;
        s.next_claim += 1;
        s.unfinished += n;
        s.claims.insert(
            no,
            Claim {
                unfinished: n,
                ..Claim::default()
            },
        );
        no
    }

    /// The fetch thread waits for free slots: completions whose claims are done and behind
    /// which nothing is unfinished may be handed to its next claim.
    pub(super) fn accept(&self) {
        self.state().accepting = true;
    }

    /// The fetch thread has its slots (or stops): nothing more is handed to it; what was
    /// handed (`ids`, `attempts`), for its claim to delete.
    pub(super) fn take_handed(&self) -> (Vec<JobId>, Vec<i32>) {
        let mut s = self.state();
        s.accepting = false;
        let handed = std::mem::take(&mut s.handed);
        (handed.ids, handed.attempts)
    }

    /// Job `id` of `claim` (claimed as `attempt`) succeeded: it waits for the rest of its
    /// claim, then is deleted with it (see the module's documentation for by whom). Returns
    /// how many completions were handed to the fetch thread: the caller frees their slots.
    #[must_use]
    pub(super) fn complete(
        &self,
        claim: ClaimNo,
        id: JobId,
        attempt: i32,
        flush: Flush<'_>,
    ) -> usize {
        let mut s = self.state();
        if let Some(c) = s.claims.get_mut(&claim) {
            c.waiting.push(id, attempt);
            c.oldest.get_or_insert_with(Instant::now);
        } else {
            s.ready.push(id, attempt); // not counted as claimed: nothing to wait for
        }
        self.finish_one(s, claim, flush)
    }

    /// A job of `claim` finished some other way (failed, snoozed, released). Returns how
    /// many completions were handed to the fetch thread, as [`complete`](Self::complete).
    #[must_use]
    pub(super) fn finished(&self, claim: ClaimNo, flush: Flush<'_>) -> usize {
        let s = self.state();
        self.finish_one(s, claim, flush)
    }

    fn finish_one<'s>(
        &'s self,
        mut s: MutexGuard<'s, State>,
        claim: ClaimNo,
        flush: Flush<'_>,
    ) -> usize {
        s.unfinished = s.unfinished.saturating_sub(1);
        let claim_done = match s.claims.get_mut(&claim) {
            Some(c) => {
                c.unfinished = c.unfinished.saturating_sub(1);
                c.unfinished == 0
            }
            None => false,
        };
        if claim_done {
            if let Some(mut c) = s.claims.remove(&claim) {
                s.ready.append(&mut c.waiting);
            }
        }
        if s.ready.is_empty() {
            return 0;
        }
        if s.unfinished == 0 && s.accepting && s.handed.ids.len() + s.ready.ids.len() <= MAX_BATCH {
            let State { ready, handed, .. } = &mut *s;
            let n = ready.ids.len();
            handed.append(ready);
            return n;
        }
        if s.unfinished == 0 || s.ready.ids.len() >= MAX_BATCH {
            self.drain(s, flush);
        } else {
            drop(s);
            self.work.notify_one();
        }
        0
    }

    /// The lease thread's turn: waits up to `timeout` for ready completions, moves those that
    /// waited `max_wait` behind their claim's unfinished jobs to the ready ones, and deletes
    /// them all.
    pub(super) fn serve(&self, timeout: Duration, max_wait: Duration, flush: Flush<'_>) {
        let mut s = self.state();
        if s.ready.is_empty() {
            s = self
                .work
                .wait_timeout(s, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let State { claims, ready, .. } = &mut *s;
        for c in claims.values_mut() {
            if c.oldest.is_some_and(|t| t.elapsed() >= max_wait) {
                ready.append(&mut c.waiting);
                c.oldest = None;
            }
        }
        if !s.ready.is_empty() {
            self.drain(s, flush);
        }
    }

    /// Deletes every ready completion, batch after batch, until none is ready. When no
    /// claimed job is unfinished, it first waits for the DELETEs in progress (their jobs must
    /// be committed before the last thread returns, and whatever they leave is deleted here).
    fn drain<'s>(&'s self, mut s: MutexGuard<'s, State>, flush: Flush<'_>) {
        while s.unfinished == 0 && s.deleting > 0 {
            s = self.idle.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        while !s.ready.is_empty() {
            let n = s.ready.ids.len().min(MAX_BATCH);
            let ids: Vec<JobId> = s.ready.ids.drain(..n).collect();
            let attempts: Vec<i32> = s.ready.attempts.drain(..n).collect();
            s.deleting += 1;
            drop(s);
            flush(&ids, &attempts);
            s = self.state();
            s.deleting -= 1;
        }
        drop(s);
        self.idle.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn none(_: &[JobId], _: &[i32]) {
        panic!("no DELETE expected here")
    }

    #[test]
    fn a_lone_job_is_deleted_at_once() {
        let c = Completions::default();
        let batches = Batches::default();
        let claim = c.claimed(1);
        let _ = c.complete(claim, JobId(7), 1, &recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![7], vec![1])]);
        assert_eq!(c.state().deleting, 0);
        assert!(c.state().claims.is_empty());
    }

    #[test]
    fn a_claimed_batch_is_deleted_in_one_statement_when_its_last_job_finishes() {
        let c = Completions::default();
        let batches = Batches::default();
        let claim = c.claimed(4);
        let _ = c.complete(claim, JobId(1), 1, &recorder(&batches));
        let _ = c.complete(claim, JobId(2), 3, &recorder(&batches));
        assert!(
            batches.lock().unwrap().is_empty(),
            "two jobs still unfinished"
        );
        let _ = c.finished(claim, &recorder(&batches)); // job 3 failed: recorded elsewhere
        assert!(batches.lock().unwrap().is_empty());
        let _ = c.complete(claim, JobId(4), 1, &recorder(&batches));
        assert_eq!(
            *batches.lock().unwrap(),
            vec![(vec![1, 2, 4], vec![1, 3, 1])]
        );
    }

    #[test]
    fn the_last_job_failing_deletes_the_waiting_ones() {
        let c = Completions::default();
        let batches = Batches::default();
        let claim = c.claimed(2);
        let _ = c.complete(claim, JobId(1), 1, &recorder(&batches));
        let _ = c.finished(claim, &recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![1], vec![1])]);
    }

    #[test]
    fn a_finished_claim_goes_to_the_lease_thread_while_the_next_one_runs() {
        let c = Completions::default();
        let batches = Batches::default();
        let first = c.claimed(2);
        let second = c.claimed(2);
        let _ = c.complete(first, JobId(1), 1, &none);
        let _ = c.complete(second, JobId(3), 1, &none);
        // The first claim is done while the second still runs: the worker goes on, the lease
        // thread deletes it.
        let _ = c.complete(first, JobId(2), 1, &none);
        c.serve(Duration::ZERO, Duration::from_secs(60), &recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![1, 2], vec![1, 1])]);
        // The last unfinished job deletes its own claim.
        let _ = c.complete(second, JobId(4), 2, &recorder(&batches));
        assert_eq!(batches.lock().unwrap()[1], (vec![3, 4], vec![1, 2]));
        c.serve(Duration::ZERO, Duration::ZERO, &none);
        assert!(c.state().claims.is_empty());
    }

    #[test]
    fn the_lease_thread_deletes_what_waited_behind_a_slow_job() {
        let c = Completions::default();
        let batches = Batches::default();
        let claim = c.claimed(3);
        let _ = c.complete(claim, JobId(1), 1, &none);
        let _ = c.complete(claim, JobId(2), 1, &none);
        c.serve(Duration::ZERO, Duration::from_secs(60), &none); // not waited long enough
        c.serve(Duration::ZERO, Duration::ZERO, &recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![1, 2], vec![1, 1])]);
        c.serve(Duration::ZERO, Duration::ZERO, &recorder(&batches));
        assert_eq!(batches.lock().unwrap().len(), 1, "nothing waits");
        let _ = c.complete(claim, JobId(3), 1, &recorder(&batches));
        assert_eq!(batches.lock().unwrap()[1], (vec![3], vec![1]));
    }

    #[test]
    fn the_last_job_waits_for_a_delete_in_progress() {
        let c = Arc::new(Completions::default());
        let in_delete = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let batches = Arc::new(Batches::default());
        let first = c.claimed(1);
        let second = c.claimed(1);
        let _ = c.complete(first, JobId(1), 1, &none); // ready for the lease thread
        let lease_thread = {
            let (c, in_delete, release, batches) = (
                c.clone(),
                in_delete.clone(),
                release.clone(),
                batches.clone(),
            );
            std::thread::spawn(move || {
                let first_delete = std::sync::atomic::AtomicBool::new(true);
                c.serve(Duration::ZERO, Duration::from_secs(60), &|ids, attempts| {
                    if first_delete.swap(false, std::sync::atomic::Ordering::SeqCst) {
                        in_delete.wait();
                        release.wait();
                    }
                    recorder(&batches)(ids, attempts);
                })
            })
        };
        in_delete.wait();
        // While the lease thread deletes job 1, the last job finishes: it waits for that
        // DELETE to commit, and for job 2's (by whichever thread takes it), before it returns.
        let last = {
            let (c, batches) = (c.clone(), batches.clone());
            std::thread::spawn(move || c.complete(second, JobId(2), 1, &recorder(&batches)))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!last.is_finished(), "the last job waits for the DELETE");
        release.wait();
        lease_thread.join().unwrap();
        last.join().unwrap();
        let mut all: Vec<i64> = batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(ids, _)| ids.clone())
            .collect();
        all.sort();
        assert_eq!(all, vec![1, 2]);
        assert_eq!(c.state().deleting, 0);
        assert!(c.state().ready.is_empty());
    }

    #[test]
    fn a_done_claim_rides_on_the_next_claim_when_the_fetch_thread_waits() {
        let c = Completions::default();
        let batches = Batches::default();
        c.accept();
        let claim = c.claimed(2);
        assert_eq!(c.complete(claim, JobId(1), 1, &none), 0);
        assert_eq!(c.complete(claim, JobId(2), 4, &none), 2, "both handed");
        assert_eq!(c.take_handed(), (vec![JobId(1), JobId(2)], vec![1, 4]));
        // Once the fetch thread has its slots, the last job deletes its claim itself.
        let claim = c.claimed(1);
        assert_eq!(c.complete(claim, JobId(3), 1, &recorder(&batches)), 0);
        assert_eq!(*batches.lock().unwrap(), vec![(vec![3], vec![1])]);
        assert_eq!(c.take_handed(), (vec![], vec![]));
    }

    #[test]
    fn nothing_is_handed_while_other_jobs_are_unfinished() {
        let c = Completions::default();
        let batches = Batches::default();
        c.accept();
        let first = c.claimed(1);
        let second = c.claimed(1);
        assert_eq!(c.complete(first, JobId(1), 1, &none), 0);
        c.serve(Duration::ZERO, Duration::from_secs(60), &recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![1], vec![1])]);
        assert_eq!(c.finished(second, &none), 0, "a failed job hands nothing");
        assert_eq!(c.take_handed(), (vec![], vec![]));
    }
}
