//! graphile-worker: its jobs table since its schema 11 (`is_available` stored and generated,
//! two partial indexes on it, a job queue table its claim looks at) and the statements its
//! worker sends: the claim of `getJob` with a batch of one (named queues handled the way its
//! default strategy does), then the DELETE of `completeJob` for a job without a queue; each
//! its own transaction.

use pgbroker::postgres::types::Type;

use super::copy_seed;
use crate::bench::harness::{parallel, Ctx, Peer, Runner, Seed};
use crate::bench::Result;

/// graphile-worker's tables.
pub(super) const CREATE: &str = "
CREATE TABLE pgbroker_bench.gw_job_queues (
    id           integer PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    queue_name   text NOT NULL UNIQUE CHECK (length(queue_name) <= 128),
    locked_at    timestamptz,
    locked_by    text,
    is_available boolean GENERATED ALWAYS AS (locked_at IS NULL) STORED NOT NULL
);
CREATE TABLE pgbroker_bench.gw_jobs (
    id           bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    job_queue_id integer,
    task_id      integer NOT NULL,
    payload      json NOT NULL DEFAULT '{}',
    priority     smallint NOT NULL DEFAULT 0,
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempts     smallint NOT NULL DEFAULT 0,
    max_attempts smallint NOT NULL DEFAULT 25 CHECK (max_attempts >= 1),
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    key          text UNIQUE CHECK (length(key) > 0 AND length(key) <= 512),
    locked_at    timestamptz,
    locked_by    text,
    revision     integer NOT NULL DEFAULT 0,
    flags        jsonb,
    is_available boolean GENERATED ALWAYS AS ((locked_at IS NULL) AND (attempts < max_attempts))
                 STORED NOT NULL
);
CREATE INDEX gw_jobs_main_index ON pgbroker_bench.gw_jobs (priority, run_at)
    INCLUDE (id, task_id, job_queue_id) WHERE is_available = true;
CREATE INDEX gw_jobs_no_queue_index ON pgbroker_bench.gw_jobs (priority, run_at)
    INCLUDE (id, task_id) WHERE is_available = true AND job_queue_id IS NULL;
";

/// graphile-worker's claim of one job (`getJob`, batch size 1, its default queue strategy):
/// `$1` the worker's id, `$2` the task ids it runs.
const GRAPHILE_GET_JOB: &str = "
WITH j AS (
    SELECT jobs.job_queue_id, jobs.priority, jobs.run_at, jobs.id
      FROM pgbroker_bench.gw_jobs AS jobs
     WHERE jobs.is_available = true
       AND run_at <= now()
       AND task_id = ANY($2::int[])
       AND (jobs.job_queue_id IS NULL
            OR jobs.job_queue_id IN (SELECT id FROM pgbroker_bench.gw_job_queues AS job_queues
                                      WHERE job_queues.is_available = true
                                        FOR UPDATE SKIP LOCKED))
     ORDER BY priority ASC, run_at ASC
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), q AS (
    UPDATE pgbroker_bench.gw_job_queues AS job_queues
       SET locked_by = $1::text, locked_at = now()
      FROM j
     WHERE job_queues.id = j.job_queue_id
)
UPDATE pgbroker_bench.gw_jobs AS jobs
   SET attempts = jobs.attempts + 1, locked_by = $1::text, locked_at = now()
  FROM j
 WHERE jobs.id = j.id
RETURNING *";

/// graphile-worker's completion of jobs without a queue (`completeJob`).
const GRAPHILE_COMPLETE_JOB: &str = "DELETE FROM pgbroker_bench.gw_jobs AS jobs
     WHERE id = ANY($1::bigint[])";

/// The task id of the bench's jobs in the graphile-worker tables.
const GRAPHILE_TASK: i32 = 1;

/// graphile-worker running the seeded jobs one at a time on `workers` connections (its
/// concurrency).
pub fn graphile(workers: usize) -> Peer {
    Peer {
        name: "graphile",
        seed: Some(seed_graphile as Seed),
        run: get_complete(workers),
    }
}

/// Fills graphile-worker's table with `n` jobs of the bench's payload, as `add_jobs` writes
/// them (no queue, one task).
fn seed_graphile(ctx: &Ctx, n: u64) -> Result<()> {
    let payload = crate::bench::queue::job();
    copy_seed(
        ctx,
        "pgbroker_bench.gw_jobs (task_id, payload)",
        &[Type::INT4, Type::JSON],
        &[&GRAPHILE_TASK, &payload],
        n,
    )
}

/// Each worker claims one job, counts it handled, and deletes it; until none is left or the
/// budget is spent.
fn get_complete(workers: usize) -> Runner {
    Box::new(move |ctx, budget| {
        parallel(ctx, workers, budget, |c, budget| {
            let get = c.prepare(GRAPHILE_GET_JOB)?;
            let complete = c.prepare(GRAPHILE_COMPLETE_JOB)?;
            let worker_id = format!("worker-{:016x}", std::process::id());
            let tasks = vec![GRAPHILE_TASK];
            let mut done = 0;
            while budget.take(1) == 1 {
                let Some(job) = c.query_opt(&get, &[&worker_id, &tasks])? else {
                    return Ok(done);
                };
                let id: i64 = job.try_get("id")?;
                let deleted = c.execute(&complete, &[&vec![id]])?;
                if deleted != 1 {
                    return Err(format!("graphile: job {id} claimed but not deleted").into());
                }
                budget.done(1);
                done += 1;
            }
            Ok(done)
        })
    })
}
