//! Peers modelled by their own SQL, run as a third side of the workloads they compete in, on
//! the same database in the same run: so a ratio to the best peer is measured the way the
//! ratio to raw PostgreSQL is, not carried over from another day's run.
//!
//! PGMQ (the best peer of the batched lease-mode comparison in issue #14): its queue table
//! (a visibility timeout instead of a state, one index on it) and its `read` and `delete`
//! functions, written here after PGMQ 1.x's design — PL/pgSQL building its statement with
//! `format()` and running it with `EXECUTE`, as PGMQ does for every queue — and called as
//! its clients call them: `read` a batch, handle it, `delete` the ids, each statement its own
//! transaction (a durable commit each on a durable cluster).
//!
//! graphile-worker (the best peer of the one-at-a-time comparisons): its jobs table since
//! its schema 11 (`is_available` stored and generated, two partial indexes on it, a job queue
//! table its claim looks at) and the statements its worker sends: the claim of `getJob` with
//! a batch of one (named queues handled the way its default strategy does), then the DELETE
//! of `completeJob` for a job without a queue; each its own transaction.

use pgbroker::postgres::binary_copy::BinaryCopyInWriter;
use pgbroker::postgres::types::{ToSql, Type};

use super::harness::{parallel, Ctx, Peer, Runner, Seed};
use super::Result;

/// PGMQ's queue table and functions, created with the bench's other tables.
pub const CREATE: &str = "
CREATE TABLE pgbroker_bench.q_pgmq (
    msg_id      bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    read_ct     integer NOT NULL DEFAULT 0,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    vt          timestamptz NOT NULL DEFAULT now(),
    message     jsonb,
    headers     jsonb
);
CREATE INDEX q_pgmq_vt_idx ON pgbroker_bench.q_pgmq (vt);
CREATE FUNCTION pgbroker_bench.pgmq_read(queue_name text, vt integer, qty integer,
                                         conditional jsonb DEFAULT '{}')
RETURNS SETOF pgbroker_bench.q_pgmq LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        $q$
        WITH cte AS (
            SELECT msg_id FROM pgbroker_bench.%I
             WHERE vt <= clock_timestamp() AND message @> $2
             ORDER BY msg_id ASC
             LIMIT $1
             FOR UPDATE SKIP LOCKED
        )
        UPDATE pgbroker_bench.%I m
           SET vt = clock_timestamp() + make_interval(secs => $3), read_ct = read_ct + 1
          FROM cte
         WHERE m.msg_id = cte.msg_id
        RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.vt, m.message, m.headers
        $q$, 'q_' || queue_name, 'q_' || queue_name)
    USING qty, conditional, vt;
END
$fn$;
CREATE FUNCTION pgbroker_bench.pgmq_delete(queue_name text, msg_ids bigint[])
RETURNS SETOF bigint LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN QUERY EXECUTE format(
        $q$ DELETE FROM pgbroker_bench.%I WHERE msg_id = ANY($1) RETURNING msg_id $q$,
        'q_' || queue_name)
    USING msg_ids;
END
$fn$;
";

/// graphile-worker's tables (see the module's docs).
pub const CREATE_GRAPHILE: &str = "
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

/// The peers' tables, emptied between the warm-up and the measured run.
pub const TABLES: &str =
    "pgbroker_bench.q_pgmq, pgbroker_bench.gw_jobs, pgbroker_bench.gw_job_queues";

/// The queue's name, as PGMQ's functions take it.
const PGMQ_QUEUE: &str = "pgmq";

/// PGMQ's visibility timeout for the bench's reads, as long as the pgbroker side's lease.
const PGMQ_VT_SECONDS: i32 = 600;

/// PGMQ consuming the seeded queue on `clients` connections, `batch` messages per read.
pub fn pgmq(batch: u64, clients: usize) -> Peer {
    Peer {
        name: "pgmq",
        seed: Some(seed_pgmq as Seed),
        run: read_delete(batch, clients),
    }
}

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
    let payload = super::queue::job();
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

/// Fills the queue with `n` messages of the bench's job payload (PGMQ's `send` writes the
/// same row: the defaults make the message visible now).
fn seed_pgmq(ctx: &Ctx, n: u64) -> Result<()> {
    let message = super::queue::job();
    copy_seed(
        ctx,
        "pgbroker_bench.q_pgmq (message)",
        &[Type::JSONB],
        &[&message],
        n,
    )
}

/// Writes `n` copies of `row` into `table_columns` (`schema.table (columns)`) in COPYs of at
/// most 10 000, as the other sides are seeded, then analyzes the table.
fn copy_seed(
    ctx: &Ctx,
    table_columns: &str,
    types: &[Type],
    row: &[&(dyn ToSql + Sync)],
    n: u64,
) -> Result<()> {
    let mut c = ctx.client()?;
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        let sink = c.copy_in(&format!("COPY {table_columns} FROM STDIN (FORMAT binary)"))?;
        let mut w = BinaryCopyInWriter::new(sink, types);
        for _ in 0..k {
            w.write(row)?;
        }
        w.finish()?;
        left -= k;
    }
    let table = table_columns.split(' ').next().unwrap_or(table_columns);
    c.batch_execute(&format!("ANALYZE {table}"))?;
    Ok(())
}

/// Each client reads up to `batch` messages, counts them handled, and deletes their ids;
/// until the queue is empty or the budget spent.
fn read_delete(batch: u64, clients: usize) -> Runner {
    Box::new(move |ctx, budget| {
        parallel(ctx, clients, budget, |c, budget| {
            let read = c.prepare("SELECT msg_id FROM pgbroker_bench.pgmq_read($1, $2, $3)")?;
            let delete = c.prepare("SELECT * FROM pgbroker_bench.pgmq_delete($1, $2)")?;
            let mut done = 0;
            loop {
                let k = budget.take(batch);
                if k == 0 {
                    return Ok(done);
                }
                let rows = c.query(&read, &[&PGMQ_QUEUE, &PGMQ_VT_SECONDS, &(k as i32)])?;
                if rows.is_empty() {
                    return Ok(done);
                }
                let ids = rows
                    .iter()
                    .map(|r| r.try_get::<_, i64>(0))
                    .collect::<Result<Vec<i64>, _>>()?;
                let deleted = c.query(&delete, &[&PGMQ_QUEUE, &ids])?;
                if deleted.len() != ids.len() {
                    return Err(format!(
                        "pgmq: deleted {} of the {} messages read",
                        deleted.len(),
                        ids.len()
                    )
                    .into());
                }
                budget.done(ids.len() as u64);
                done += ids.len() as u64;
            }
        })
    })
}
