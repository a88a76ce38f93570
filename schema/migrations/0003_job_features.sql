-- Migration 3: the job features of issue 19 — paused and limited queues, periodic jobs
-- (schedules), dependencies between jobs. Per-job options (timeout, group key, progress, the
-- rule for a failed parent) live in pgbroker.jobs.details, so jobs gain no column.

-- Queues whose claims are gated: paused, rate limited or group limited. A queue has a row only
-- while one of these applies, so the claim's one look at this table (pgbroker.claim, an
-- uncorrelated NOT EXISTS planned as a one-time filter) finds nothing for every other queue.
-- Claims of a limited queue go through pgbroker.claim_limited, which locks its row: limited
-- claims of one queue run one after another, which is what makes the limits exact across
-- processes.
--   paused_at     set while paused (nothing is claimed or taken)
--   rate_limit    at most this many jobs started per rate_period (a fixed window that starts
--   rate_period   at the first claim after the previous one ended: window_start, window_count)
--   group_limit   at most this many running jobs per group key (Job::group, details ->> 'group')
CREATE TABLE IF NOT EXISTS pgbroker.queue_controls (
    queue        text        PRIMARY KEY,
    paused_at    timestamptz,
    rate_limit   integer,
    rate_period  interval,
    group_limit  integer,
    window_start timestamptz,
    window_count integer     NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Periodic jobs (schema/functions/schedule.sql): one row per schedule. Whoever runs
-- pgbroker.run_schedules() (every worker pool, once a second) locks the due rows with SKIP
-- LOCKED, enqueues one job per row and moves next_run_at past now() in the same transaction:
-- one job per tick however many processes run it.
CREATE TABLE IF NOT EXISTS pgbroker.schedules (
    name         text        PRIMARY KEY,
    cron         text        NOT NULL,
    time_zone    text        NOT NULL DEFAULT 'UTC',
    queue        text        NOT NULL,
    payload      jsonb       NOT NULL DEFAULT '{}',
    priority     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL DEFAULT 25,
    skip_missed  boolean     NOT NULL DEFAULT false,
    next_run_at  timestamptz NOT NULL,
    last_run_at  timestamptz,
    last_job_id  bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS schedules_due ON pgbroker.schedules (next_run_at);

-- Dependencies (schema/functions/job_options.sql): job `job_id` waits for `parent_id`. A row
-- is deleted when its parent completes, dies or is cancelled; the job is released when its
-- last row goes. No foreign keys: completed jobs are deleted, and a key would make every
-- deletion of a job look here.
CREATE TABLE IF NOT EXISTS pgbroker.job_dependencies (
    parent_id bigint NOT NULL,
    job_id    bigint NOT NULL,
    PRIMARY KEY (parent_id, job_id)
);
CREATE INDEX IF NOT EXISTS job_dependencies_job ON pgbroker.job_dependencies (job_id);
