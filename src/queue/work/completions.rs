//! Grouped completion for lease-mode queues: jobs whose handlers succeeded are deleted many
//! per statement, so a claimed batch costs one durable commit to complete, not one per job.
//!
//! Completions are grouped by the claim that fetched them. A finished job waits while other
//! jobs of its claim are unfinished (running, or claimed and waiting for a thread); when the
//! last of them finishes, the claim's completions are ready, and the queue's lease thread
//! deletes what is ready in one statement while the workers go on: the claims, the handlers
//! and the DELETEs overlap instead of taking turns. The lease thread also deletes completions
//! that waited [`MAX_WAIT`] (50 ms) behind a slow job of their claim.
//!
//! A completed job frees its slot of the queue's concurrency at once, before its DELETE
//! commits, so the next claim does not wait for the DELETE's WAL flush; at most
//! [`Completions::new`]'s limit (the concurrency, at least [`EARLY_MIN`]) do so at a time,
//! later ones keep their slots until their DELETE commits. A job waiting for its DELETE is
//! still in flight: its lease is extended, and a crash before the commit runs it again.
//!
//! Once the fetch thread stopped ([`Completions::stop`]), the last unfinished job's worker
//! deletes what is left itself, after waiting for a DELETE in progress, so that the pool's
//! shutdown (which joins the fetch thread, then the workers) returns only once every
//! completion is committed.
//!
//! At least once, unchanged: a job is deleted only after its handler returned, and nothing is
//! counted done before its DELETE commits (a failed DELETE is counted unrecorded).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::super::JobId;

/// The most jobs one DELETE completes.
const MAX_BATCH: usize = 1_000;

/// The fewest completions that may free their slots before their DELETE commits. With one
/// (a queue of concurrency 1), a job one at a time waited for the previous one's DELETE.
pub(super) const EARLY_MIN: usize = 64;

/// How long a completion may wait behind unfinished jobs of its claim before the lease
/// thread deletes it. Deleting younger ones split claimed batches: on a durable cluster whose
/// fsync took 20 ms, a 50 ms tick cut batches of 100 into DELETEs of 22 on average.
pub(super) const MAX_WAIT: Duration = Duration::from_millis(50);

/// A claim's number, given by [`Completions::claimed`].
pub(super) type ClaimNo = u64;

/// Completed jobs waiting for their DELETE, by claim, and who is deleting.
#[derive(Default)]
pub(super) struct Completions {
    /// How many completions may have freed their slots before their DELETE committed.
    limit: usize,
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
    /// Completions whose slots were freed before their DELETE committed.
    early: usize,
    /// The fetch thread stopped: the last unfinished job deletes what is left.
    stopping: bool,
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
    /// How many of them still hold their slots (the others freed theirs early; slots are
    /// interchangeable, so a count is enough).
    held: usize,
}

impl Batch {
    fn push(&mut self, id: JobId, attempt: i32, held: bool) {
        self.ids.push(id);
        self.attempts.push(attempt);
        self.held += usize::from(held);
    }

    fn append(&mut self, other: &mut Batch) {
        self.ids.append(&mut other.ids);
        self.attempts.append(&mut other.attempts);
        self.held += std::mem::take(&mut other.held);
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Deletes one batch of completed jobs (`ids[i]` claimed as `attempts[i]`), no longer in
/// flight then, and frees the slots the batch still holds (the third argument); it reports
/// its own failures (those jobs then run again once their leases expire).
pub(super) type Flush<'a> = &'a dyn Fn(&[JobId], &[i32], usize);

impl Completions {
    /// Completions of a queue of `concurrency`: that many (at least [`EARLY_MIN`]) may free
    /// their slots before their DELETE commits.
    pub(super) fn new(concurrency: usize) -> Completions {
        Completions {
            limit: concurrency.max(EARLY_MIN),
            ..Completions::default()
        }
    }

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

    /// Job `id` of `claim` (claimed as `attempt`) succeeded: it waits for the rest of its
    /// claim, then is deleted with it (see the module's documentation for by whom). Returns
    /// whether its slot is free now (the caller frees it); if not, the DELETE frees it.
    #[must_use]
    pub(super) fn complete(
        &self,
        claim: ClaimNo,
        id: JobId,
        attempt: i32,
        flush: Flush<'_>,
    ) -> bool {
        let mut s = self.state();
        let early = !s.stopping && s.early < self.limit;
        s.early += usize::from(early);
        if let Some(c) = s.claims.get_mut(&claim) {
            c.waiting.push(id, attempt, !early);
            c.oldest.get_or_insert_with(Instant::now);
        } else {
            s.ready.push(id, attempt, !early); // not counted as claimed: nothing to wait for
        }
        self.finish_one(s, claim, flush);
        early
    }

    /// A job of `claim` finished some other way (failed, snoozed, released).
    pub(super) fn finished(&self, claim: ClaimNo, flush: Flush<'_>) {
        let s = self.state();
        self.finish_one(s, claim, flush);
    }

    /// The fetch thread stopped: from now on the last unfinished job deletes what is left
    /// before its thread returns; when none is unfinished, the caller does it now.
    pub(super) fn stop(&self, flush: Flush<'_>) {
        let mut s = self.state();
        s.stopping = true;
        if s.unfinished == 0 {
            self.drain(s, flush);
        }
    }

    fn finish_one<'s>(&'s self, mut s: MutexGuard<'s, State>, claim: ClaimNo, flush: Flush<'_>) {
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
        // The last job after the stop waits for a DELETE in progress even with nothing left
        // to delete itself: the pool's shutdown returns once this thread returns.
        if (s.stopping && s.unfinished == 0) || s.ready.ids.len() >= MAX_BATCH {
            self.drain(s, flush);
        } else if !s.ready.is_empty() {
            drop(s);
            self.work.notify_one();
        }
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
            let held = s.ready.held.min(n);
            s.ready.held -= held;
            s.deleting += 1;
            drop(s);
            flush(&ids, &attempts, held);
            s = self.state();
            s.deleting -= 1;
            s.early = s.early.saturating_sub(n - held);
        }
        drop(s);
        self.idle.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// Recorded DELETEs: the ids (as numbers), attempts and slots held of each.
    type Batches = Mutex<Vec<(Vec<i64>, Vec<i32>, usize)>>;

    fn recorder(batches: &Batches) -> impl Fn(&[JobId], &[i32], usize) + '_ {
        move |ids, attempts, held| {
            batches.lock().unwrap().push((
                ids.iter().map(|id| id.0).collect(),
                attempts.to_vec(),
                held,
            ))
        }
    }

    fn none(_: &[JobId], _: &[i32], _: usize) {
        panic!("no DELETE expected here")
    }

    /// The lease thread's turn, with completions waiting behind their claim left alone.
    fn serve(c: &Completions, flush: Flush<'_>) {
        c.serve(Duration::ZERO, Duration::from_secs(60), flush);
    }

    #[test]
    fn a_lone_job_frees_its_slot_and_is_deleted_by_the_lease_thread() {
        let c = Completions::new(1);
        let batches = Batches::default();
        let claim = c.claimed(1);
        assert!(c.complete(claim, JobId(7), 1, &none), "its slot is free");
        serve(&c, &recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![7], vec![1], 0)]);
        assert_eq!(c.state().early, 0);
        assert_eq!(c.state().deleting, 0);
        assert!(c.state().claims.is_empty());
    }

    #[test]
    fn completions_past_the_limit_keep_their_slots_until_their_delete() {
        let c = Completions {
            limit: 2,
            ..Completions::default()
        };
        let batches = Batches::default();
        let claim = c.claimed(4);
        assert!(c.complete(claim, JobId(1), 1, &none));
        assert!(c.complete(claim, JobId(2), 1, &none));
        assert!(
            !c.complete(claim, JobId(3), 1, &none),
            "the limit is reached"
        );
        assert!(!c.complete(claim, JobId(4), 1, &none));
        serve(&c, &recorder(&batches));
        assert_eq!(
            *batches.lock().unwrap(),
            vec![(vec![1, 2, 3, 4], vec![1, 1, 1, 1], 2)],
            "the DELETE frees the two slots still held"
        );
        let claim = c.claimed(1);
        assert!(
            c.complete(claim, JobId(5), 1, &none),
            "below the limit again"
        );
    }

    #[test]
    fn a_claimed_batch_is_deleted_in_one_statement_when_its_last_job_finishes() {
        let c = Completions::new(4);
        let batches = Batches::default();
        let claim = c.claimed(4);
        let _ = c.complete(claim, JobId(1), 1, &none);
        let _ = c.complete(claim, JobId(2), 3, &none);
        serve(&c, &none); // two jobs still unfinished
        c.finished(claim, &none); // job 3 failed: recorded elsewhere
        let _ = c.complete(claim, JobId(4), 1, &none);
        serve(&c, &recorder(&batches));
        assert_eq!(
            *batches.lock().unwrap(),
            vec![(vec![1, 2, 4], vec![1, 3, 1], 0)]
        );
    }

    #[test]
    fn the_last_job_failing_makes_the_waiting_ones_ready() {
        let c = Completions::new(2);
        let batches = Batches::default();
        let claim = c.claimed(2);
        let _ = c.complete(claim, JobId(1), 1, &none);
        c.finished(claim, &none);
        serve(&c, &recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![1], vec![1], 0)]);
    }

    #[test]
    fn a_finished_claim_is_deleted_while_the_next_one_runs() {
        let c = Completions::new(4);
        let batches = Batches::default();
        let first = c.claimed(2);
        let second = c.claimed(2);
        let _ = c.complete(first, JobId(1), 1, &none);
        let _ = c.complete(second, JobId(3), 1, &none);
        let _ = c.complete(first, JobId(2), 1, &none);
        serve(&c, &recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![1, 2], vec![1, 1], 0)]);
        let _ = c.complete(second, JobId(4), 2, &none);
        serve(&c, &recorder(&batches));
        assert_eq!(batches.lock().unwrap()[1], (vec![3, 4], vec![1, 2], 0));
        assert!(c.state().claims.is_empty());
    }

    #[test]
    fn the_lease_thread_deletes_what_waited_behind_a_slow_job() {
        let c = Completions::new(3);
        let batches = Batches::default();
        let claim = c.claimed(3);
        let _ = c.complete(claim, JobId(1), 1, &none);
        let _ = c.complete(claim, JobId(2), 1, &none);
        serve(&c, &none); // not waited long enough
        c.serve(Duration::ZERO, Duration::ZERO, &recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![1, 2], vec![1, 1], 0)]);
        c.serve(Duration::ZERO, Duration::ZERO, &recorder(&batches));
        assert_eq!(batches.lock().unwrap().len(), 1, "nothing waits");
        let _ = c.complete(claim, JobId(3), 1, &none);
        serve(&c, &recorder(&batches));
        assert_eq!(batches.lock().unwrap()[1], (vec![3], vec![1], 0));
    }

    #[test]
    fn once_stopped_the_last_job_deletes_what_is_left_itself_holding_its_slot() {
        let c = Completions::new(2);
        let batches = Batches::default();
        let claim = c.claimed(2);
        assert!(c.complete(claim, JobId(1), 1, &none));
        c.stop(&none); // a job is unfinished: nothing to do yet
        assert!(!c.complete(claim, JobId(2), 1, &recorder(&batches)));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![1, 2], vec![1, 1], 1)]);
        assert_eq!(c.state().early, 0);
    }

    #[test]
    fn stopping_with_nothing_unfinished_deletes_what_is_ready() {
        let c = Completions::new(1);
        let batches = Batches::default();
        let claim = c.claimed(1);
        let _ = c.complete(claim, JobId(1), 1, &none);
        c.stop(&recorder(&batches));
        assert_eq!(*batches.lock().unwrap(), vec![(vec![1], vec![1], 0)]);
    }

    #[test]
    fn the_last_job_waits_for_a_delete_in_progress() {
        last_job_waits_for_a_delete_in_progress(true);
    }

    #[test]
    fn a_failed_last_job_waits_for_a_delete_in_progress_too() {
        last_job_waits_for_a_delete_in_progress(false);
    }

    /// While the lease thread deletes job 1 after the stop, the last job (2) finishes,
    /// successfully or not: its thread returns only once that DELETE committed.
    fn last_job_waits_for_a_delete_in_progress(succeeds: bool) {
        let c = Arc::new(Completions::new(2));
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
                serve(&c, &|ids, attempts, held| {
                    if first_delete.swap(false, std::sync::atomic::Ordering::SeqCst) {
                        in_delete.wait();
                        release.wait();
                    }
                    recorder(&batches)(ids, attempts, held);
                })
            })
        };
        in_delete.wait();
        c.stop(&none); // job 2 is unfinished
                       // While the lease thread deletes job 1, the last job finishes: it waits for that
                       // DELETE to commit, and for job 2's (by whichever thread takes it), before it returns.
        let last = {
            let (c, batches) = (c.clone(), batches.clone());
            std::thread::spawn(move || {
                if succeeds {
                    Some(c.complete(second, JobId(2), 1, &recorder(&batches)))
                } else {
                    c.finished(second, &recorder(&batches));
                    None
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!last.is_finished(), "the last job waits for the DELETE");
        release.wait();
        lease_thread.join().unwrap();
        let slot_free_early = last.join().unwrap();
        if succeeds {
            assert_eq!(
                slot_free_early,
                Some(false),
                "stopping: its slot is freed by its DELETE"
            );
        }
        let mut all: Vec<i64> = batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(ids, _, _)| ids.clone())
            .collect();
        all.sort();
        assert_eq!(all, if succeeds { vec![1, 2] } else { vec![1] });
        assert_eq!(c.state().deleting, 0);
        assert_eq!(c.state().early, 0);
        assert!(c.state().ready.is_empty());
    }
}
