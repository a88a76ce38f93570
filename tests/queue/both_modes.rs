//! What queues on the worker pool do alike in both modes — with leases, and with transactions
//! that complete their jobs at COMMIT (`QueueOptions::transactional`): one suite, each test run
//! once per mode. What only one mode does stays in pool.rs (leases) and take_pool.rs
//! (transactions).

use crate::support;
use crate::take_pool::{effects, effects_table, jobs_left, record};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbroker::queue::{Job, JobContext, JobState, QueueOptions};
use pgbroker::JobId;

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Lease,
    Transactional,
}

impl Mode {
    /// A queue of this mode with test-speed polling (and heartbeats and rescues for leases).
    fn opts(self, queue: &str) -> QueueOptions {
        let opts = QueueOptions::new(queue)
            .poll_interval(Duration::from_millis(100))
            .lease(Duration::from_secs(5));
        match self {
            Mode::Lease => opts
                .heartbeat(Duration::from_millis(100))
                .rescue_interval(Duration::from_millis(200)),
            Mode::Transactional => opts.transactional(true).jobs_per_transaction(10),
        }
    }

    /// Writes the handler's effect (this job and attempt) in the job's transaction; lease mode
    /// has no job transaction, so there the effect is not recorded.
    fn record(self, job: &JobContext<'_>) -> pgbroker::Result<()> {
        match self {
            Mode::Lease => Ok(()),
            Mode::Transactional => record(job),
        }
    }
}

/// `fn name(mode) { body }` becomes a module `name` with the tests `lease` and `transactional`.
macro_rules! in_both_modes {
    ($(fn $name:ident($mode:ident: Mode) $body:block)*) => {$(
        mod $name {
            use super::*;

            fn run($mode: Mode) $body

            #[test]
            fn lease() {
                run(Mode::Lease)
            }

            #[test]
            fn transactional() {
                run(Mode::Transactional)
            }
        }
    )*};
}

in_both_modes! {
    fn a_panicking_handler_fails_its_own_attempt_and_the_job_is_retried(mode: Mode) {
        let db = support::db();
        let broker = db.broker();
        effects_table(&db);
        let ids: Vec<JobId> = (0..5)
            .map(|i| {
                broker
                    .enqueue_job(
                        &Job::new("p", &serde_json::json!({ "i": i }))
                            .backoff(Duration::from_millis(10), Duration::from_millis(10)),
                    )
                    .unwrap()
            })
            .collect();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let r = runs.clone();
        let pool = broker
            .worker_pool()
            .threads(1)
            .queue_with(mode.opts("p").concurrency(1), move |job| {
                r.lock().unwrap().push((job.id(), job.attempt()));
                mode.record(job)?;
                if job.payload()["i"] == 2 && job.attempt() == 1 {
                    panic!("job 2 explodes after writing");
                }
                Ok(())
            })
            .start()
            .unwrap();
        assert!(support::wait_until(WAIT, || jobs_left(&broker) == 0));
        let stats = pool.shutdown().unwrap();
        // Every job ran once, and job 2 once more as attempt 2 (the panic stopped nothing else).
        let mut expected: Vec<(JobId, u32)> = ids.iter().map(|id| (*id, 1)).collect();
        expected.push((ids[2], 2));
        expected.sort_unstable();
        let mut runs = runs.lock().unwrap().clone();
        runs.sort_unstable();
        assert_eq!(runs, expected);
        assert_eq!((stats.handled, stats.panicked), (5, 1));
        if mode == Mode::Transactional {
            // Attempt 1 of job 2 wrote nothing that survived; the others' writes committed once.
            let mut written: Vec<(JobId, i32)> = ids.iter().map(|id| (*id, 1)).collect();
            written[2].1 = 2;
            assert_eq!(effects(&broker), written);
        }
    }

    fn exhausted_jobs_die_with_their_errors_and_can_be_redriven(mode: Mode) {
        let db = support::db();
        let broker = db.broker();
        effects_table(&db);
        let id = broker
            .enqueue_job(
                &Job::new("flaky", "{}")
                    .max_attempts(3)
                    .backoff(Duration::from_millis(10), Duration::from_millis(20)),
            )
            .unwrap();
        let healthy = Arc::new(AtomicBool::new(false));
        let h = healthy.clone();
        let pool = broker
            .worker_pool()
            .threads(2)
            .queue_with(mode.opts("flaky").concurrency(1), move |job| {
                if h.load(Ordering::SeqCst) {
                    return Ok(());
                }
                mode.record(job)?;
                if job.attempt() == 2 {
                    panic!("attempt 2 panicked");
                }
                Err(format!("attempt {} failed", job.attempt()).into())
            })
            .start()
            .unwrap();
        assert!(support::wait_until(WAIT, || broker
            .job(id)
            .unwrap()
            .is_some_and(|j| j.state == JobState::Dead)));
        let dead = broker.dead_jobs(Some("flaky"), 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].id, id);
        assert_eq!(dead[0].attempt, 3);
        assert_eq!(dead[0].last_error.as_deref(), Some("attempt 3 failed"));
        let errors: Vec<(i64, String)> = dead[0]
            .errors
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["attempt"].as_i64().unwrap(),
                    e["error"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0], (1, "attempt 1 failed".to_owned()));
        assert_eq!(errors[1].0, 2);
        assert!(errors[1].1.contains("attempt 2 panicked"), "{errors:?}");
        assert_eq!(errors[2], (3, "attempt 3 failed".to_owned()));
        assert!(effects(&broker).is_empty(), "every attempt's write rolled back");

        healthy.store(true, Ordering::SeqCst);
        assert!(broker.redrive_job(id).unwrap());
        assert!(support::wait_until(WAIT, || broker.job(id).unwrap().is_none()));
        pool.shutdown().unwrap();
    }

    fn a_snooze_counts_no_attempt_and_a_discard_makes_the_job_dead(mode: Mode) {
        let db = support::db();
        let broker = db.broker();
        let snoozy = broker.enqueue("sd", &serde_json::json!({"do": "snooze"})).unwrap();
        let bad = broker.enqueue("sd", &serde_json::json!({"do": "discard"})).unwrap();
        let fine = broker.enqueue("sd", &serde_json::json!({"do": "ok"})).unwrap();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let r = runs.clone();
        let pool = broker
            .worker_pool()
            .threads(2)
            .queue_with(mode.opts("sd").concurrency(2), move |job: &JobContext| {
                let first = {
                    let mut runs = r.lock().unwrap();
                    runs.push((job.id(), job.attempt()));
                    runs.iter().filter(|(id, _)| *id == job.id()).count() == 1
                };
                match job.payload()["do"].as_str() {
                    Some("snooze") if first => job.snooze(Duration::from_millis(300)),
                    Some("discard") => job.discard("cannot handle this"),
                    _ => Ok(()),
                }
            })
            .start()
            .unwrap();
        assert!(support::wait_until(WAIT, || broker.job(snoozy).unwrap().is_none()));
        pool.shutdown().unwrap();
        let runs = runs.lock().unwrap();
        // The snoozed job ran again, still as attempt 1.
        assert_eq!(
            runs.iter().filter(|(id, _)| *id == snoozy).collect::<Vec<_>>(),
            vec![&(snoozy, 1), &(snoozy, 1)]
        );
        assert_eq!(runs.iter().filter(|(id, _)| *id == fine).count(), 1);
        assert!(broker.job(fine).unwrap().is_none());
        let dead = broker.job(bad).unwrap().unwrap();
        assert_eq!((dead.state, dead.attempt), (JobState::Dead, 1));
        assert_eq!(dead.last_error.as_deref(), Some("discarded: cannot handle this"));
    }
}
