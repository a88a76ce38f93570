//! Batched completion for the worker pool: jobs whose handlers succeed are deleted many per
//! statement. A worker finishing a job while another is deleting a batch leaves its job for
//! that worker's next round and moves on, so under load one DELETE (one round trip) completes
//! every job finished meanwhile, and alone a job is deleted at once (no timer, no extra
//! thread: the deleting worker is a pool thread, so shutdown waits for its last batch).

use std::sync::{Mutex, MutexGuard};

use super::claim::DELETE_SQL;
use super::JobId;
use crate::{Broker, Result};

/// The most jobs one DELETE completes.
const MAX_BATCH: usize = 1_000;

/// Completed jobs waiting for their DELETE, and whether a worker is deleting a batch.
#[derive(Default)]
pub(super) struct Completions {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    ids: Vec<JobId>,
    attempts: Vec<i32>,
    deleting: bool,
}

impl Completions {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records job `id` (claimed as `attempt`) as completed. Returns at once when another
    /// worker is deleting a batch (this job goes into its next one); otherwise deletes every
    /// waiting job, batch after batch, until none waits. `delete` does one batch; its error
    /// is handed to `failed` with the batch's ids (those jobs run again once their leases
    /// expire: at least once).
    pub(super) fn complete(
        &self,
        id: JobId,
        attempt: i32,
        delete: impl Fn(&[JobId], &[i32]) -> Result<()>,
        failed: impl Fn(&[JobId], crate::Error),
    ) {
        {
            let mut s = self.state();
            s.ids.push(id);
            s.attempts.push(attempt);
            if s.deleting {
                return;
            }
            s.deleting = true;
        }
        loop {
            let (ids, attempts) = {
                let mut s = self.state();
                if s.ids.is_empty() {
                    s.deleting = false;
                    return;
                }
                let n = s.ids.len().min(MAX_BATCH);
                let ids: Vec<JobId> = s.ids.drain(..n).collect();
                let attempts: Vec<i32> = s.attempts.drain(..n).collect();
                (ids, attempts)
            };
            if let Err(e) = delete(&ids, &attempts) {
                failed(&ids, e);
            }
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

    #[test]
    fn a_lone_job_is_deleted_at_once() {
        let c = Completions::default();
        let batches = Mutex::new(Vec::new());
        c.complete(
            JobId(7),
            1,
            |ids, attempts| {
                batches
                    .lock()
                    .unwrap()
                    .push((ids.to_vec(), attempts.to_vec()));
                Ok(())
            },
            |_, e| panic!("{e}"),
        );
        assert_eq!(*batches.lock().unwrap(), vec![(vec![JobId(7)], vec![1])]);
        assert!(!c.state().deleting);
    }

    #[test]
    fn jobs_finished_during_a_delete_go_into_the_next_batch() {
        let c = Arc::new(Completions::default());
        let in_delete = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let first = {
            let (c, in_delete, release, batches, calls) = (
                c.clone(),
                in_delete.clone(),
                release.clone(),
                batches.clone(),
                calls.clone(),
            );
            std::thread::spawn(move || {
                c.complete(
                    JobId(1),
                    1,
                    |ids, _| {
                        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                            in_delete.wait();
                            release.wait();
                        }
                        batches.lock().unwrap().push(ids.to_vec());
                        Ok(())
                    },
                    |_, e| panic!("{e}"),
                )
            })
        };
        in_delete.wait();
        // While the first worker deletes job 1, three more finish and return at once.
        for id in 2..5 {
            c.complete(
                JobId(id),
                1,
                |_, _| panic!("not the deleting worker"),
                |_, _| {},
            );
        }
        release.wait();
        first.join().unwrap();
        assert_eq!(
            *batches.lock().unwrap(),
            vec![vec![JobId(1)], vec![JobId(2), JobId(3), JobId(4)]]
        );
        assert!(!c.state().deleting);
    }

    #[test]
    fn a_failed_delete_is_reported_with_its_ids_and_the_role_is_given_up() {
        let c = Completions::default();
        let failed = Mutex::new(Vec::new());
        c.complete(
            JobId(3),
            2,
            |_, _| Err(crate::Error::new(crate::ErrorKind::Closed, "gone")),
            |ids, _| failed.lock().unwrap().extend_from_slice(ids),
        );
        assert_eq!(*failed.lock().unwrap(), vec![JobId(3)]);
        assert!(!c.state().deleting);
    }
}
