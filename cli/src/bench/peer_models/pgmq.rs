//! PGMQ: its queue table (a visibility timeout instead of a state, one index on it) and its
//! `read` and `delete` functions, written here after PGMQ 1.x's design — PL/pgSQL building
//! its statement with `format()` and running it with `EXECUTE`, as PGMQ does for every queue
//! — and called as its clients call them: `read` a batch, handle it, `delete` the ids, each
//! statement its own transaction (a durable commit each on a durable cluster).

use pgbroker::postgres::types::Type;

use super::copy_seed;
use crate::bench::harness::{parallel, Ctx, Peer, Runner, Seed};
use crate::bench::Result;

/// PGMQ's queue table and functions.
pub(super) const CREATE: &str = "
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

/// Fills the queue with `n` messages of the bench's job payload (PGMQ's `send` writes the
/// same row: the defaults make the message visible now).
fn seed_pgmq(ctx: &Ctx, n: u64) -> Result<()> {
    let message = crate::bench::queue::job();
    copy_seed(
        ctx,
        "pgbroker_bench.q_pgmq (message)",
        &[Type::JSONB],
        &[&message],
        n,
    )
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
