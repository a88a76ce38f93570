-- Migration 1: the tables, types and indexes of pgbroker 0.1.0 (schema version 1).
-- Functions, triggers and views live in schema/functions/ and are (re)created after the
-- migrations on every install.

-- The event log -------------------------------------------------------------------------------

CREATE SEQUENCE IF NOT EXISTS pgbroker.events_id_seq AS bigint CACHE 1;

-- Partitioned by day (UTC) on created_at so retention drops whole partitions.
CREATE TABLE IF NOT EXISTS pgbroker.events (
    id         bigint      NOT NULL DEFAULT nextval('pgbroker.events_id_seq'),
    topic      text        NOT NULL,
    payload    jsonb       NOT NULL,
    headers    jsonb,
    key        text,
    tx         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);

CREATE INDEX IF NOT EXISTS events_tx_id ON pgbroker.events (tx, id);

-- Catches rows no daily partition covers (maintenance not run for days): nothing is refused.
CREATE TABLE IF NOT EXISTS pgbroker.events_default PARTITION OF pgbroker.events DEFAULT;

CREATE TABLE IF NOT EXISTS pgbroker.subscriptions (
    name         text        PRIMARY KEY,
    patterns     text[]      NOT NULL,
    topic_regex  text        NOT NULL,
    partitions   integer     NOT NULL DEFAULT 1 CHECK (partitions BETWEEN 1 AND 1024),
    expire_after interval,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One cursor per partition: the (tx, id) of the last event acknowledged.
-- The patterns as LIKE patterns when none has a '*' (NULL otherwise): readers filter with LIKE,
-- about 0.1 us per event, instead of the regular expression, about 1 us (PostgreSQL's regex
-- engine sets up per call). Both agree on every valid topic name; a test checks it.
ALTER TABLE pgbroker.subscriptions ADD COLUMN IF NOT EXISTS topic_like text[];

CREATE TABLE IF NOT EXISTS pgbroker.subscription_cursors (
    subscription text        NOT NULL REFERENCES pgbroker.subscriptions (name) ON DELETE CASCADE,
    partition    integer     NOT NULL,
    tx           xid8        NOT NULL,
    id           bigint      NOT NULL,
    active_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, partition)
);

-- Events a reliable handler failed: retried on a schedule, then dead (kept for re-drive).
-- The event is copied so retention cannot take it away.
CREATE TABLE IF NOT EXISTS pgbroker.event_retries (
    subscription text        NOT NULL REFERENCES pgbroker.subscriptions (name) ON DELETE CASCADE,
    partition    integer     NOT NULL,
    id           bigint      NOT NULL,
    tx           xid8        NOT NULL,
    topic        text        NOT NULL,
    payload      jsonb       NOT NULL,
    headers      jsonb,
    key          text,
    created_at   timestamptz NOT NULL,
    attempt      integer     NOT NULL DEFAULT 1,
    run_at       timestamptz NOT NULL,
    dead         boolean     NOT NULL DEFAULT false,
    last_error   text,
    failed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, tx, id)
);
CREATE INDEX IF NOT EXISTS event_retries_due
    ON pgbroker.event_retries (subscription, partition, run_at) WHERE NOT dead;

-- Consumers that found nothing to read and wait for a wake-up. Publishing notifies only when
-- this is non-empty, so busy consumers cost publishers no NOTIFY (whose commit lock serialises
-- commits). Consumers fall back to polling, so a missed wake-up only adds latency.
-- Rust publishers (single events and batches in their own transaction) look at this table at
-- most every 50 ms while they find it empty. So a consumer, after inserting its row, reads at
-- once, again 100 ms later, and then until its read's horizon
-- (pg_snapshot_xmin(pg_current_snapshot())) reached the pg_snapshot_xmax() taken at that
-- 100 ms mark: an event published without a look has committed by then.
CREATE UNLOGGED TABLE IF NOT EXISTS pgbroker.log_waiters (
    pid   integer     PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);

-- Balanced consumers of a subscription (one row per member session), which share its partitions.
-- A member is alive while its session (pid) holds the shared advisory lock
-- pgbroker.member_lock_key(subscription): the lock ends with the session, so a member whose
-- process dies or whose connection is cut drops out at once, without a heartbeat timeout.
-- Rows of dead members are only deleted later; pgbroker.live_members() filters them out.
CREATE UNLOGGED TABLE IF NOT EXISTS pgbroker.subscription_members (
    subscription text        NOT NULL REFERENCES pgbroker.subscriptions (name) ON DELETE CASCADE,
    pid          integer     NOT NULL,
    name         text        NOT NULL,
    partitions   integer[]   NOT NULL DEFAULT '{}',
    joined_at    timestamptz NOT NULL DEFAULT now(),
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, pid)
);

-- The job queue -------------------------------------------------------------------------------

-- The job states: the type of pgbroker.jobs.state (shown as its text; compare it with text
-- literals). A new state needs ALTER TYPE pgbroker.job_state ADD VALUE.
DO $$
BEGIN
    CREATE TYPE pgbroker.job_state AS ENUM ('available', 'running', 'completed', 'dead', 'cancelled');
EXCEPTION WHEN duplicate_object THEN NULL;
END
$$;

-- No CHECK: PostgreSQL re-reads and re-plans a table's CHECK expressions for every INSERT or
-- UPDATE statement (callgrind, PostgreSQL 15: the first layout's `state IN (five literals)`,
-- `octet_length(queue) BETWEEN 1 AND 48` and `max_attempts > 0` cost ~100 000 instructions
-- per single-row insert; the later `state::pgbroker.job_state IS NOT NULL` still 12 600 of an
-- enqueue's 183 000). As the enum type, the column refuses a bad state for free (SQLSTATE
-- 22P02). Queue names and max_attempts are checked where jobs enter (the Rust API,
-- pgbroker.enqueue, pgbroker.bind_queue); a job written with plain SQL and a bad name is merely
-- unreachable, and fail() treats max_attempts < 1 as 1.
-- Ids: single enqueues from Rust insert ids their broker reserved from the identity's sequence
-- pgbroker.jobs_id_seq in blocks (src/id_blocks.rs), so ids order jobs only roughly.
-- Few columns: every column costs each INSERT about 1 700 instructions (callgrind, PostgreSQL
-- 15) even when NULL, so what most jobs never have is one jsonb, `details` (NULL for most):
--   backoff     {"base": seconds, "max": seconds}, set at enqueue (pgbroker.job_backoff reads it)
--   errors      the error history, one {"attempt", "at", "error", "worker"} per failed attempt
--   result      a kept completed job's result (pgbroker.complete(keep => ...))
--   unique_key  the key of a job no longer available or running: the column is cleared when a
--               job leaves those states (so the unique index needs no state in its predicate)
--               and restored by pgbroker.retry.
-- lease_until is when the lease ends while running, and when a kept completed job is deleted;
-- finished_at is when a job died, was cancelled or completed (kept).
CREATE TABLE IF NOT EXISTS pgbroker.jobs (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    queue        text        NOT NULL,
    state        pgbroker.job_state NOT NULL DEFAULT 'available',
    payload      jsonb       NOT NULL DEFAULT '{}',
    priority     integer     NOT NULL DEFAULT 0,
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempt      integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL DEFAULT 25,
    unique_key   text,
    lease_until  timestamptz,
    worker       text,
    last_error   text,
    details      jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

-- A busy queue deletes jobs at the head of the claim index; their dead entries slow every claim
-- (each scan walks past them) until vacuum removes them. Vacuum after 1% of the table (at
-- least 1,000 rows) is dead rather than PostgreSQL's default 20%.
-- A busy queue deletes jobs at the head of the claim index; their dead entries slow every claim
-- (each scan walks past them) until vacuum removes them. Vacuum after 1% of the table (at
-- least 1,000 rows) is dead rather than PostgreSQL's default 20%.
ALTER TABLE pgbroker.jobs SET (autovacuum_vacuum_scale_factor = 0.01,
                               autovacuum_vacuum_threshold = 1000);

COMMENT ON TABLE pgbroker.jobs IS 'pgbroker job queue: one row per pending, running, kept, dead or cancelled job';

-- The one index on the hot path: available jobs in claim order.
CREATE INDEX IF NOT EXISTS jobs_claim_idx ON pgbroker.jobs (queue, priority, run_at, id)
    WHERE state = 'available';
-- Race-free unique jobs: ON CONFLICT names this index's columns and predicate. Only available
-- and running jobs have a unique_key (see `details`): a predicate naming the states cost each
-- insert 3 700 instructions more.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique_idx ON pgbroker.jobs (queue, unique_key)
    WHERE unique_key IS NOT NULL;
-- Every job not available, by state and the time that matters in it: the lease's end while
-- running (rescue, stuck_jobs), the end of its retention when kept completed (rescue deletes
-- it), when it died (dead_jobs, newest first) or was cancelled. lease_until is set only while
-- running or kept completed, so the coalesce is that time; the queries repeat the expression
-- to use the index. One index for all: every partial
-- index costs each insert about 8 000 instructions (callgrind, PostgreSQL 15) even when its
-- predicate is false, which is why the lease, dead and expiry indexes were merged into this.
CREATE INDEX IF NOT EXISTS jobs_state_time_idx
    ON pgbroker.jobs (state, (coalesce(lease_until, finished_at)))
    WHERE state <> 'available';

-- Idle workers, so producers notify only when someone waits.
CREATE UNLOGGED TABLE IF NOT EXISTS pgbroker.queue_waiters (
    queue  text        NOT NULL,
    waiter text        NOT NULL,
    since  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, waiter)
);

-- Queues whose status changes are sent as notifications.
CREATE TABLE IF NOT EXISTS pgbroker.watched_queues (
    queue text PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);

-- Routing -------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS pgbroker.queue_bindings (
    queue      text        NOT NULL,
    pattern    text        NOT NULL,
    regex      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, pattern)
);

