//! The benchmark's own tables, in schema `pgbroker_bench`: shaped like pgbroker's events
//! and jobs so the raw side does the same work pgbroker does, plus seed 000's `job` table.

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
-- Seed 000's load-test table.
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

/// Drops and creates every bench table: no rows, no triggers, cold statistics.
pub fn recreate(ctx: &Ctx) -> Result<()> {
    let mut c = ctx.client()?;
    // Quiet the NOTICEs of DROP ... CASCADE.
    c.batch_execute("SET client_min_messages = warning")?;
    c.batch_execute(CREATE)?;
    Ok(())
}

/// Empties every bench table (between warm-up and measurement).
pub fn truncate(ctx: &Ctx) -> Result<()> {
    let mut c = ctx.client()?;
    c.batch_execute(&format!(
        "TRUNCATE {EVENTS}, {JOBS}, {JOB} RESTART IDENTITY"
    ))?;
    Ok(())
}

/// Drops the bench schema.
pub fn drop_all(ctx: &Ctx) -> Result<()> {
    let mut c = ctx.client()?;
    c.batch_execute("SET client_min_messages = warning")?;
    c.batch_execute("DROP SCHEMA IF EXISTS pgbroker_bench CASCADE")?;
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
