//! The benchmark's own tables, in schema `pgbroker_bench`: shaped like pgbroker's events
//! and jobs so the raw side does the same work pgbroker does, plus the table-watch workload's `job` table
//! and the modelled peers' (`peer_models.rs`); and emptying pgbroker's own tables of the
//! benchmark's rows between runs.

use pgbroker::postgres::binary_copy::BinaryCopyInWriter;
use pgbroker::postgres::types::Type;
use serde_json::Value;

use super::harness::Ctx;
use super::Result;

const CREATE: &str = "
DROP SCHEMA IF EXISTS pgbroker_bench CASCADE;
CREATE SCHEMA pgbroker_bench;
-- The durable log's shape (DESIGN.md section 2): read in (tx, id) order below the horizon.
CREATE TABLE pgbroker_bench.events (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    payload    jsonb NOT NULL,
    headers    jsonb,
    tx         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON pgbroker_bench.events (tx, id);
-- The job queue's shape: claimed in priority order with SKIP LOCKED.
CREATE TABLE pgbroker_bench.jobs (
    id         bigserial PRIMARY KEY,
    queue      text NOT NULL,
    payload    jsonb NOT NULL,
    state      text NOT NULL DEFAULT 'available',
    priority   smallint NOT NULL DEFAULT 0,
    run_at     timestamptz NOT NULL DEFAULT now(),
    attempt    integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON pgbroker_bench.jobs (queue, priority DESC, run_at, id) WHERE state = 'available';
-- The table-watch workload's load-test table.
CREATE TABLE pgbroker_bench.job (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    status     text NOT NULL DEFAULT 'new',
    created_at timestamptz NOT NULL DEFAULT now()
);
";

pub const EVENTS: &str = "pgbroker_bench.events";
pub const JOBS: &str = "pgbroker_bench.jobs";
pub const JOB: &str = "pgbroker_bench.job";

/// The benchmark's topics are `pgbroker_bench.*`, its subscriptions `pgbroker_bench-*`, its
/// queue this: what it may delete from pgbroker's tables.
pub const BENCH_QUEUE: &str = "pgbroker_bench";

/// Is there anything in pgbroker's tables that the benchmark did not write?
const FOREIGN_ROWS: &str = "SELECT EXISTS (SELECT 1 FROM pgbroker.events
                                 WHERE topic !~ '^pgbroker_bench\\.')
        OR EXISTS (SELECT 1 FROM pgbroker.subscriptions WHERE name !~ '^pgbroker_bench-')
        OR EXISTS (SELECT 1 FROM pgbroker.jobs WHERE queue <> 'pgbroker_bench')";

/// Empties pgbroker's tables when they hold only the benchmark's rows (always the case on
/// the private cluster); on a database in use, deletes just the benchmark's rows.
const CLEAR_ALL: &str = "TRUNCATE pgbroker.events, pgbroker.subscriptions,
    pgbroker.subscription_cursors, pgbroker.subscription_members, pgbroker.event_retries,
    pgbroker.jobs";
const CLEAR_OURS: &str = "
    DELETE FROM pgbroker.events WHERE topic ~ '^pgbroker_bench\\.';
    DELETE FROM pgbroker.subscriptions WHERE name ~ '^pgbroker_bench-';
    DELETE FROM pgbroker.jobs WHERE queue = 'pgbroker_bench'";

/// Drops and creates every bench table (no rows, no triggers, cold statistics) and clears
/// the benchmark's rows from pgbroker's tables.
pub fn recreate(ctx: &Ctx) -> Result<()> {
    let mut c = ctx.client()?;
    // Quiet the NOTICEs of DROP ... CASCADE.
    c.batch_execute("SET client_min_messages = warning")?;
    c.batch_execute(CREATE)?;
    for create in super::peer_models::CREATE {
        c.batch_execute(create)?;
    }
    clear_pgbroker(&mut c)
}

/// Empties every bench table, and pgbroker's of the benchmark's rows (between warm-up and
/// measurement).
pub fn truncate(ctx: &Ctx) -> Result<()> {
    let mut c = ctx.client()?;
    c.batch_execute(&format!(
        "TRUNCATE {EVENTS}, {JOBS}, {JOB}, {} RESTART IDENTITY",
        super::peer_models::TABLES
    ))?;
    clear_pgbroker(&mut c)
}

/// Drops the bench schema and the benchmark's rows in pgbroker's tables.
pub fn drop_all(ctx: &Ctx) -> Result<()> {
    let mut c = ctx.client()?;
    c.batch_execute("SET client_min_messages = warning")?;
    c.batch_execute("DROP SCHEMA IF EXISTS pgbroker_bench CASCADE")?;
    clear_pgbroker(&mut c)
}

fn clear_pgbroker(c: &mut pgbroker::postgres::Client) -> Result<()> {
    let foreign: bool = c.query_one(FOREIGN_ROWS, &[])?.get(0);
    if foreign {
        c.batch_execute(CLEAR_OURS)?;
        c.batch_execute("VACUUM pgbroker.events")?;
        c.batch_execute("VACUUM pgbroker.jobs")?;
    } else {
        c.batch_execute(CLEAR_ALL)?;
    }
    Ok(())
}

/// Which of the two shaped tables a raw write goes to; `(name, column)` of the key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Events,
    Jobs,
}

impl Target {
    pub fn table(self) -> &'static str {
        match self {
            Target::Events => EVENTS,
            Target::Jobs => JOBS,
        }
    }

    /// The column naming the topic or queue.
    pub fn key_column(self) -> &'static str {
        match self {
            Target::Events => "topic",
            Target::Jobs => "queue",
        }
    }
}

/// Writes `n` rows of `payload` with one binary COPY (one transaction).
pub fn copy_rows(
    c: &mut pgbroker::postgres::Client,
    target: Target,
    key: &str,
    payload: &Value,
    n: u64,
) -> Result<()> {
    let sql = format!(
        "COPY {} ({}, payload) FROM STDIN (FORMAT binary)",
        target.table(),
        target.key_column()
    );
    let sink = c.copy_in(sql.as_str())?;
    let mut w = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::JSONB]);
    for _ in 0..n {
        w.write(&[&key, payload])?;
    }
    w.finish()?;
    Ok(())
}

/// Seeds `n` rows in transactions of at most 10 000 (so events span many xids).
pub fn seed(ctx: &Ctx, target: Target, key: &str, payload: &Value, n: u64) -> Result<()> {
    let mut c = ctx.client()?;
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        copy_rows(&mut c, target, key, payload, k)?;
        left -= k;
    }
    c.batch_execute(&format!("ANALYZE {}", target.table()))?;
    Ok(())
}
