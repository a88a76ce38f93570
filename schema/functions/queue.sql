-- Job queue (src/queue/): a hot table of jobs claimed with FOR UPDATE SKIP LOCKED, leases,
-- retries with backoff, dead jobs, and opt-in status notifications.
--
-- The protocol, usable from any language:
--   SELECT pgbroker.enqueue('emails', '{"to":"a@b.c"}');                -- producer
--   SELECT * FROM pgbroker.claim('emails', 'worker-1', 10, '5 minutes'); -- worker: claim a batch
--   SELECT pgbroker.complete(42);  -- or pgbroker.fail(42, 'smtp timeout') to retry with backoff
--   SELECT pgbroker.rescue();      -- on a timer: jobs whose lease expired run again (or die)
-- Or, for short jobs, take them inside the worker's own transaction (no lease is written):
--   BEGIN;
--   SELECT * FROM pgbroker.take('emails', 10);   -- deleted by this transaction, locked for others
--   ... work, also writing in this transaction; a failed job: SELECT pgbroker.fail_taken(...);
--   COMMIT;                                      -- completes them (ROLLBACK returns them)
-- States: available (also delayed or waiting to retry: run_at in the future), running,
-- completed (only when kept, see complete(keep => ...)), dead, cancelled.
--
-- Wake-ups: idle workers register in pgbroker.queue_waiters; enqueue sends one NOTIFY on channel
-- 'pgbroker.jobs' with the queue name as payload only while a waiter exists (identical
-- notifications fold within a transaction, and busy workers cost producers nothing). A
-- Broker's single enqueues ask at most every 2 ms while nobody waits (src/queue/wake_checks.rs).
-- Status events: after pgbroker.watch_queue(q), every state change of a job of queue q is sent
-- as JSON on channel 'pgbroker.jobs.' || q.

CREATE OR REPLACE FUNCTION pgbroker.check_queue_name(queue text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF queue IS NULL OR queue !~ '^[A-Za-z0-9_.:-]{1,48}$' THEN
        RAISE EXCEPTION 'pgbroker: queue name must be 1 to 48 characters of A-Z a-z 0-9 _ . : -, got %',
            quote_nullable(queue) USING ERRCODE = '22023';
    END IF;
END
$$;

-- Wakes idle workers of `queue` (one NOTIFY; identical ones fold within a transaction).
-- src/queue/enqueue.rs inlines the same condition in its enqueue statement; keep them in step.
CREATE OR REPLACE FUNCTION pgbroker.wake(queue text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgbroker.queue_waiters w
                WHERE w.queue = wake.queue AND w.since > now() - interval '10 minutes') THEN
        PERFORM pg_notify('pgbroker.jobs', wake.queue);
        RETURN true;
    END IF;
    RETURN false;
END
$$;

-- Registers (or refreshes) an idle worker: enqueue notifies while it is registered.
CREATE OR REPLACE FUNCTION pgbroker.wait_for_jobs(queue text, waiter text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO pgbroker.queue_waiters (queue, waiter) VALUES ($1, $2)
    ON CONFLICT (queue, waiter) DO UPDATE SET since = now()
$$;

CREATE OR REPLACE FUNCTION pgbroker.stop_waiting(queue text, waiter text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM pgbroker.queue_waiters WHERE queue = $1 AND waiter = $2
$$;

-- `details` (see pgbroker.jobs) of a job with this backoff; NULL without one.
-- STABLE like jsonb_build_object, so that PostgreSQL inlines it (a SQL function declared
-- IMMUTABLE around a STABLE one is called for every row instead: a third slower enqueue_batch).
CREATE OR REPLACE FUNCTION pgbroker.job_details(backoff_base interval, backoff_max interval)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN $1 IS NOT NULL OR $2 IS NOT NULL THEN
        jsonb_build_object('backoff', jsonb_strip_nulls(jsonb_build_object(
            'base', extract(epoch FROM $1)::float8, 'max', extract(epoch FROM $2)::float8)))
    END
$$;

-- `details` with one more failed attempt in its error history.
CREATE OR REPLACE FUNCTION pgbroker.job_error_added(details jsonb, attempt integer, error text,
                                                    worker text)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_set(coalesce($1, '{}'::jsonb), '{errors}',
                     coalesce($1 -> 'errors', '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                         'attempt', $2, 'at', now(), 'error', $3, 'worker', $4)))
$$;

-- `details` of a job leaving the available and running states with `unique_key` (the column
-- is cleared, the key kept here for pgbroker.retry).
CREATE OR REPLACE FUNCTION pgbroker.job_key_kept(details jsonb, unique_key text)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN $2 IS NULL THEN $1
                ELSE coalesce($1, '{}'::jsonb) || jsonb_build_object('unique_key', $2) END
$$;

CREATE OR REPLACE FUNCTION pgbroker.enqueue(
    queue        text,
    payload      jsonb,
    priority     integer     DEFAULT 0,
    run_at       timestamptz DEFAULT now(),
    max_attempts integer     DEFAULT 25,
    unique_key   text        DEFAULT NULL,
    delay        interval    DEFAULT NULL,
    backoff_base interval    DEFAULT NULL,
    backoff_max  interval    DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    job_id bigint;
    at     timestamptz := coalesce(enqueue.run_at, now());
BEGIN
    -- Checks inline rather than calling helpers: each nested call costs an executor round.
    IF enqueue.queue IS NULL OR enqueue.queue !~ '^[A-Za-z0-9_.:-]{1,48}$' THEN
        PERFORM pgbroker.check_queue_name(enqueue.queue); -- raises the error
    END IF;
    IF enqueue.payload IS NULL THEN
        RAISE EXCEPTION 'pgbroker: payload must not be NULL' USING ERRCODE = '22023';
    END IF;
    IF enqueue.max_attempts IS NULL OR enqueue.max_attempts < 1 THEN
        RAISE EXCEPTION 'pgbroker: max_attempts must be at least 1, got %', enqueue.max_attempts
            USING ERRCODE = '22023';
    END IF;
    -- The ranges of src/queue/validate.rs: every job written can be scheduled and retried.
    IF NOT (at >= '1970-01-01 00:00:00+00' AND at < '10000-01-01 00:00:00+00') THEN
        RAISE EXCEPTION 'pgbroker: run_at must be from 1970-01-01 00:00:00+00 to '
                        '9999-12-31 23:59:59+00, got %', at USING ERRCODE = '22023';
    END IF;
    IF enqueue.delay IS NOT NULL THEN
        IF enqueue.delay < interval '0' OR enqueue.delay > interval '36500 days' THEN
            RAISE EXCEPTION 'pgbroker: delay must be from 0 to 36500 days (100 years), got %',
                            enqueue.delay USING ERRCODE = '22023';
        END IF;
        at := at + enqueue.delay;
    END IF;
    IF enqueue.backoff_base < interval '0' OR enqueue.backoff_max < interval '0' THEN
        RAISE EXCEPTION 'pgbroker: backoff must not be negative' USING ERRCODE = '22023';
    END IF;
    IF enqueue.backoff_base > interval '365 days' OR enqueue.backoff_max > interval '365 days' THEN
        RAISE EXCEPTION 'pgbroker: backoff_base and backoff_max must be at most 365 days, '
                        'got % and %', enqueue.backoff_base, enqueue.backoff_max
            USING ERRCODE = '22023';
    END IF;
    IF enqueue.unique_key IS NULL THEN
        INSERT INTO pgbroker.jobs AS j (queue, payload, priority, run_at, max_attempts, details)
        VALUES (enqueue.queue, enqueue.payload, coalesce(enqueue.priority, 0), at,
                enqueue.max_attempts,
                pgbroker.job_details(enqueue.backoff_base, enqueue.backoff_max))
        RETURNING j.id INTO job_id;
    ELSE
        -- Race-free: the partial unique index decides; a duplicate returns the existing id.
        INSERT INTO pgbroker.jobs AS j (queue, payload, priority, run_at, max_attempts,
                                        unique_key, details)
        VALUES (enqueue.queue, enqueue.payload, coalesce(enqueue.priority, 0), at,
                enqueue.max_attempts, enqueue.unique_key,
                pgbroker.job_details(enqueue.backoff_base, enqueue.backoff_max))
        ON CONFLICT (queue, unique_key) WHERE unique_key IS NOT NULL
        DO UPDATE SET unique_key = EXCLUDED.unique_key
        RETURNING j.id INTO job_id;
    END IF;
    IF at <= now() AND EXISTS (SELECT 1 FROM pgbroker.queue_waiters w
                                WHERE w.queue = enqueue.queue
                                  AND w.since > now() - interval '10 minutes') THEN
        PERFORM pg_notify('pgbroker.jobs', enqueue.queue);
    END IF;
    RETURN job_id;
END
$$;

-- A lease must be from 10 ms (as claim_jobs in Rust) to 36500 days: a lease of zero or less
-- would hand out jobs already expired (rescue then counts an attempt). Raises 22023.
CREATE OR REPLACE FUNCTION pgbroker.check_lease(lease interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF lease IS NULL OR lease < interval '10 milliseconds' OR lease > interval '36500 days' THEN
        RAISE EXCEPTION 'pgbroker: lease must be from 10 milliseconds to 36500 days, got %',
                        coalesce(lease::text, 'NULL') USING ERRCODE = '22023';
    END IF;
END
$$;

-- Claims up to `max` available jobs of `queue` in (priority, run_at, id) order for `lease`
-- (10 ms to 36500 days, see check_lease; a job with a timeout, see job_options.sql: for its
-- timeout). Nothing while the queue is paused or limited (queue_controls.sql;
-- pgbroker.claim_limited claims from a limited one).
CREATE OR REPLACE FUNCTION pgbroker.claim(
    queue  text,
    worker text,
    max    integer  DEFAULT 1,
    lease  interval DEFAULT interval '5 minutes'
) RETURNS TABLE (
    id           bigint,
    queue        text,
    payload      jsonb,
    attempt      integer,
    max_attempts integer,
    priority     integer,
    run_at       timestamptz,
    lease_until  timestamptz,
    created_at   timestamptz,
    unique_key   text
)
LANGUAGE sql AS $$
    SELECT pgbroker.check_lease($4);
    -- `id = ANY (ARRAY(...))`, not a join with the picked ids: a SQL function's statements are
    -- planned without their parameters' values, so LIMIT $3 is guessed at 10% of the table and
    -- the join hashes a sequential scan of all jobs (4 ms instead of 0.2 ms for 100 jobs of
    -- 20 000). The array form always probes the primary key. src/queue/claim.rs prepares the
    -- same statement (a SQL function parses and plans its body on every call); keep the two
    -- in step, a test compares them.
    WITH claimed AS (
        UPDATE pgbroker.jobs j
           SET state = 'running', attempt = j.attempt + 1, worker = $2,
               lease_until = now() + coalesce(make_interval(secs => (j.details ->> 'timeout')::float8),
                                              $4)
         WHERE j.id = ANY (ARRAY(
                   SELECT p.id FROM pgbroker.jobs p
                    WHERE p.queue = $1 AND p.state = 'available' AND p.run_at <= now()
                      AND NOT EXISTS (SELECT FROM pgbroker.queue_controls c WHERE c.queue = $1)
                    ORDER BY p.priority, p.run_at, p.id
                    LIMIT $3
                    FOR UPDATE SKIP LOCKED))
        RETURNING j.id, j.queue, j.payload, j.attempt, j.max_attempts, j.priority, j.run_at,
                  j.lease_until, j.created_at, j.unique_key
    )
    SELECT * FROM claimed c ORDER BY c.priority, c.run_at, c.id
$$;

-- Refuses a commit that ends the transaction of the statement that called pgbroker.take
-- (autocommit). Nothing inside a function can tell autocommit from the first statement of a
-- transaction block: transaction_timestamp() <> statement_timestamp() holds in both with the
-- extended protocol (the transaction starts at Parse or Bind, the statement's time at
-- Execute), and pg_current_xact_id_if_assigned() is NULL in both until the first write. What
-- differs is how the transaction ends: a block's COMMIT is a statement of its own, with a later
-- statement_timestamp(), while an autocommit statement commits within its own statement time
-- (at its Sync, or at the end of its simple query). So take writes its statement's time to
-- pgbroker.take_guards, and this deferred trigger compares it at commit. (A COMMIT sent in the
-- same simple query string as the take, or SET CONSTRAINTS ALL IMMEDIATE before it, is refused
-- too.)
CREATE OR REPLACE FUNCTION pgbroker.take_guard_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pgbroker.take_guards g WHERE g.ctid = NEW.ctid;
    IF NEW.taken_at = statement_timestamp() THEN
        RAISE EXCEPTION 'pgbroker: pgbroker.take must be called inside a transaction block '
                        '(BEGIN; SELECT * FROM pgbroker.take(...); ...; COMMIT): in autocommit '
                        'it would complete the jobs without running them; nothing was taken'
            USING ERRCODE = '25P01';
    END IF;
    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'take_guard'
                      AND tgrelid = 'pgbroker.take_guards'::regclass) THEN
        CREATE CONSTRAINT TRIGGER take_guard AFTER INSERT ON pgbroker.take_guards
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            EXECUTE FUNCTION pgbroker.take_guard_check();
    END IF;
END
$$;

-- Takes up to `max` available jobs of `queue` in (priority, run_at, id) order inside the
-- caller's transaction: they are deleted by it, so COMMIT completes them and ROLLBACK (or the
-- session dying) gives them back untouched, and concurrent takers and claimers skip them. No
-- lease is written: the transaction holds the jobs. Bound how long with
-- `SET LOCAL idle_in_transaction_session_timeout` (the lease of this mode). `attempt` is the
-- attempt being run (stored attempts + 1); `lease_until` is NULL. `details` is what
-- pgbroker.fail_taken / pgbroker.return_taken need besides the other columns to write the job
-- back.
-- While taken, a job still shows as 'available' to other sessions (locked, skipped).
-- Call it only inside a transaction block (BEGIN ... COMMIT, with COMMIT a statement of its own):
-- in autocommit its deletion would commit at once, completing the jobs without running them,
-- so such a commit fails (SQLSTATE 25P01) and gives the jobs back. See take_guard_check.
CREATE OR REPLACE FUNCTION pgbroker.take(
    queue text,
    max   integer DEFAULT 1
) RETURNS TABLE (
    id           bigint,
    queue        text,
    payload      jsonb,
    attempt      integer,
    max_attempts integer,
    priority     integer,
    run_at       timestamptz,
    lease_until  timestamptz,
    created_at   timestamptz,
    unique_key   text,
    details      jsonb
)
LANGUAGE sql AS $$
    INSERT INTO pgbroker.take_guards (taken_at) VALUES (statement_timestamp());
    -- The claim's statement with DELETE for UPDATE (see pgbroker.claim for why
    -- `id = ANY (ARRAY(...))`). src/queue/take.rs prepares a statement picking the same jobs
    -- (with a second, literal LIMIT so that its plan is reused, and fewer columns); keep the
    -- two in step, a test compares them.
    WITH taken AS (
        DELETE FROM pgbroker.jobs j
         WHERE j.id = ANY (ARRAY(
                   SELECT p.id FROM pgbroker.jobs p
                    WHERE p.queue = $1 AND p.state = 'available' AND p.run_at <= now()
                      AND NOT EXISTS (SELECT FROM pgbroker.queue_controls c WHERE c.queue = $1)
                    ORDER BY p.priority, p.run_at, p.id
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED))
        RETURNING j.id, j.queue, j.payload, j.attempt + 1 AS attempt, j.max_attempts,
                  j.priority, j.run_at, NULL::timestamptz AS lease_until, j.created_at,
                  j.unique_key, j.details
    )
    SELECT * FROM taken t ORDER BY t.priority, t.run_at, t.id
$$;

-- Records a failed attempt of a job taken by pgbroker.take in this transaction: it is written
-- back (same id) to run again after `retry_in` (default: its backoff, as pgbroker.fail), or
-- dead once its attempts are exhausted or when `discard`. Pass the taken row's columns (all
-- but lease_until) as pgbroker.take returned them. Returns the new state.
CREATE OR REPLACE FUNCTION pgbroker.fail_taken(
    job_id       bigint,
    queue        text,
    payload      jsonb,
    attempt      integer,
    max_attempts integer,
    priority     integer,
    run_at       timestamptz,
    created_at   timestamptz,
    unique_key   text,
    details      jsonb,
    error        text,
    retry_in     interval DEFAULT NULL,
    discard      boolean  DEFAULT false,
    worker       text     DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    dead boolean := coalesce(discard, false) OR attempt >= max_attempts;
    err  text    := left(coalesce(error, ''), 4000);
BEGIN
    details := pgbroker.job_error_added(details, attempt, err, worker);
    INSERT INTO pgbroker.jobs
           (id, queue, state, payload, priority, run_at, attempt, max_attempts, unique_key,
            worker, last_error, details, created_at, finished_at)
    VALUES (job_id, queue, CASE WHEN dead THEN 'dead'::pgbroker.job_state ELSE 'available' END,
            payload,
            priority,
            CASE WHEN dead THEN run_at
                 ELSE now() + coalesce(retry_in, pgbroker.job_backoff(attempt, details)) END,
            attempt, max_attempts, CASE WHEN NOT dead THEN unique_key END, worker, err,
            CASE WHEN dead THEN pgbroker.job_key_kept(details, unique_key) ELSE details END,
            created_at, CASE WHEN dead THEN now() END);
    RETURN CASE WHEN dead THEN 'dead' ELSE 'available' END;
END
$$;

-- Gives a job taken in this transaction back without counting the attempt, to run after
-- `delay` (NULL: at its old run_at, keeping its place). Used for snoozes and for the unstarted
-- jobs of a batch at shutdown. Same leading arguments as pgbroker.fail_taken.
CREATE OR REPLACE FUNCTION pgbroker.return_taken(
    job_id       bigint,
    queue        text,
    payload      jsonb,
    attempt      integer,
    max_attempts integer,
    priority     integer,
    run_at       timestamptz,
    created_at   timestamptz,
    unique_key   text,
    details      jsonb,
    delay        interval DEFAULT NULL
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO pgbroker.jobs (id, queue, payload, priority, run_at, attempt, max_attempts,
                               unique_key, details, created_at)
    VALUES ($1, $2, $3, $6, CASE WHEN $11 IS NULL THEN $7 ELSE now() + greatest($11, interval '0') END,
            $4 - 1, $5, $9, $10, $8)
$$;

-- Extends the leases of running jobs; returns the ids still held (a missing id was cancelled
-- or rescued: its handler should stop). `attempts` (optional) fences against re-claims.
CREATE OR REPLACE FUNCTION pgbroker.extend_leases(
    job_ids  bigint[],
    attempts integer[] DEFAULT NULL,
    lease    interval  DEFAULT interval '5 minutes'
) RETURNS SETOF bigint
LANGUAGE sql AS $$
    -- `id = ANY` with the attempt looked up by position, not a join with unnest($1, $2): see
    -- src/queue/claim.rs (DELETE_SQL) for why, and why the state test is inside coalesce.
    -- A job with a timeout (job_options.sql) keeps the lease its claim gave it, the timeout,
    -- and counts as no longer held once that passed.
    UPDATE pgbroker.jobs j
       SET lease_until = CASE WHEN j.details ? 'timeout' THEN j.lease_until ELSE now() + $3 END
     WHERE j.id = ANY ($1)
       AND coalesce(j.state = 'running'
                    AND ($2 IS NULL OR j.attempt = $2[array_position($1, j.id)])
                    AND NOT (coalesce(j.details ? 'timeout', false) AND j.lease_until <= now()),
                    false)
    RETURNING j.id
$$;

-- Completes running jobs in one statement: deleted, or kept as 'completed' for `keep` with
-- `result`. Returns how many were completed (a job no longer running is skipped).
CREATE OR REPLACE FUNCTION pgbroker.complete_many(
    job_ids  bigint[],
    attempts integer[] DEFAULT NULL,
    result   jsonb     DEFAULT NULL,
    keep     interval  DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer;
BEGIN
    IF complete_many.keep IS NULL OR complete_many.keep <= interval '0' THEN
        -- As pgbroker.extend_leases: the key probed, the attempt looked up by position.
        DELETE FROM pgbroker.jobs j
         WHERE j.id = ANY (complete_many.job_ids)
           AND coalesce(j.state = 'running'
                        AND (complete_many.attempts IS NULL
                             OR j.attempt = complete_many.attempts[
                                    array_position(complete_many.job_ids, j.id)]), false);
    ELSE
        UPDATE pgbroker.jobs j
           SET state = 'completed', lease_until = now() + complete_many.keep,
               finished_at = now(), unique_key = NULL,
               details = pgbroker.job_key_kept(CASE WHEN complete_many.result IS NULL
                                                    THEN j.details
                                                    ELSE coalesce(j.details, '{}'::jsonb)
                                                         || jsonb_build_object('result',
                                                                complete_many.result) END,
                                               j.unique_key)
         WHERE j.id = ANY (complete_many.job_ids)
           AND coalesce(j.state = 'running'
                        AND (complete_many.attempts IS NULL
                             OR j.attempt = complete_many.attempts[
                                    array_position(complete_many.job_ids, j.id)]), false);
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION pgbroker.complete(
    job_id  bigint,
    result  jsonb    DEFAULT NULL,
    keep    interval DEFAULT NULL,
    attempt integer  DEFAULT NULL
) RETURNS boolean
LANGUAGE sql AS $$
    SELECT pgbroker.complete_many(ARRAY[$1], CASE WHEN $4 IS NULL THEN NULL ELSE ARRAY[$4] END,
                                  $2, $3) = 1
$$;

-- Exponential backoff with ±25% jitter: base * 2^(attempt-1), at most `max` and 365 days (the
-- longest backoff enqueue accepts). Computed in float seconds: a large base times 2^29 does not
-- fit an interval, and must not make a failure unrecordable.
CREATE OR REPLACE FUNCTION pgbroker.backoff(
    attempt integer,
    base    interval DEFAULT NULL,
    max     interval DEFAULT NULL
) RETURNS interval
LANGUAGE sql VOLATILE AS $$
    SELECT make_interval(secs => greatest(0, least(
               extract(epoch FROM coalesce($2, interval '1 second'))::float8
                   * power(2, least(greatest($1, 1) - 1, 30)) * (0.75 + random() * 0.5),
               extract(epoch FROM coalesce($3, interval '1 hour'))::float8,
               365 * 86400)))
$$;

-- The backoff before retrying a job after its `attempt`, with the base and maximum in its
-- `details` (pgbroker.backoff's defaults without).
CREATE OR REPLACE FUNCTION pgbroker.job_backoff(attempt integer, details jsonb)
RETURNS interval
LANGUAGE sql VOLATILE AS $$
    SELECT pgbroker.backoff($1, make_interval(secs => ($2 #>> '{backoff,base}')::float8),
                            make_interval(secs => ($2 #>> '{backoff,max}')::float8))
$$;

-- Records a failed attempt of a running job: retried after `retry_in` (default: backoff) or
-- dead once attempts are exhausted or when `discard`. Returns the new state, NULL when the job
-- was not running (cancelled, rescued, or `attempt` does not match).
CREATE OR REPLACE FUNCTION pgbroker.fail(
    job_id   bigint,
    error    text,
    retry_in interval DEFAULT NULL,
    attempt  integer  DEFAULT NULL,
    discard  boolean  DEFAULT false
) RETURNS text
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_state text;
BEGIN
    UPDATE pgbroker.jobs j
       SET state       = CASE WHEN fail.discard OR j.attempt >= j.max_attempts
                              THEN 'dead'::pgbroker.job_state ELSE 'available' END,
           run_at      = CASE WHEN fail.discard OR j.attempt >= j.max_attempts THEN j.run_at
                              ELSE now() + coalesce(fail.retry_in,
                                                    pgbroker.job_backoff(j.attempt, j.details))
                         END,
           finished_at = CASE WHEN fail.discard OR j.attempt >= j.max_attempts
                              THEN now() END,
           lease_until = NULL,
           last_error  = left(fail.error, 4000),
           unique_key  = CASE WHEN fail.discard OR j.attempt >= j.max_attempts THEN NULL
                              ELSE j.unique_key END,
           details     = pgbroker.job_error_added(
                             CASE WHEN fail.discard OR j.attempt >= j.max_attempts
                                  THEN pgbroker.job_key_kept(j.details, j.unique_key)
                                  ELSE j.details END,
                             j.attempt, left(fail.error, 4000), j.worker)
     WHERE j.id = fail.job_id AND j.state = 'running'
       AND (fail.attempt IS NULL OR j.attempt = fail.attempt)
    RETURNING j.state INTO new_state;
    RETURN new_state;
END
$$;

-- Puts a running job back to wait `delay` without counting the attempt.
CREATE OR REPLACE FUNCTION pgbroker.snooze(
    job_id  bigint,
    delay   interval,
    attempt integer DEFAULT NULL
) RETURNS boolean
LANGUAGE sql AS $$
    WITH s AS (
        UPDATE pgbroker.jobs j
           SET state = 'available', attempt = j.attempt - 1, lease_until = NULL,
               run_at = now() + greatest($2, interval '0')
         WHERE j.id = $1 AND j.state = 'running' AND ($3 IS NULL OR j.attempt = $3)
        RETURNING 1
    )
    SELECT count(*) = 1 FROM s
$$;

-- Gives a claimed job back unstarted (the attempt does not count): used at shutdown.
CREATE OR REPLACE FUNCTION pgbroker.release(job_id bigint, attempt integer DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q text;
BEGIN
    UPDATE pgbroker.jobs j
       SET state = 'available', attempt = j.attempt - 1, lease_until = NULL
     WHERE j.id = release.job_id AND j.state = 'running'
       AND (release.attempt IS NULL OR j.attempt = release.attempt)
    RETURNING j.queue INTO q;
    IF q IS NOT NULL THEN
        PERFORM pgbroker.wake(q);
    END IF;
    RETURN q IS NOT NULL;
END
$$;

-- Cancels an available or running job (a running handler sees it at its next heartbeat).
-- A job taken by a transaction (pgbroker.take) is locked until that transaction ends: rather
-- than wait for it, cancel gives up after a short lock_timeout with SQLSTATE 55P03 (the job
-- is being run; its transaction completes or returns it).
CREATE OR REPLACE FUNCTION pgbroker.cancel(job_id bigint) RETURNS boolean
LANGUAGE plpgsql SET lock_timeout = '200ms' AS $$
#variable_conflict use_column
BEGIN
    UPDATE pgbroker.jobs j
       SET state = 'cancelled', lease_until = NULL, finished_at = now(), unique_key = NULL,
           details = pgbroker.job_key_kept(j.details, j.unique_key)
     WHERE j.id = cancel.job_id AND j.state IN ('available', 'running');
    RETURN FOUND;
EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION 'pgbroker: job % is held by a transaction running it (pgbroker.take); not cancelled',
        cancel.job_id USING ERRCODE = '55P03',
        HINT = 'Its transaction completes it or returns it; cancel again after that.';
END
$$;

-- Re-drives a dead or cancelled job: available now, with a fresh set of attempts (its error
-- history is kept) and its unique key back (SQLSTATE 23505 when another job of the queue
-- holds the key meanwhile).
CREATE OR REPLACE FUNCTION pgbroker.retry(job_id bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q text;
BEGIN
    UPDATE pgbroker.jobs j
       SET state = 'available', attempt = 0, run_at = now(), finished_at = NULL,
           lease_until = NULL, unique_key = j.details ->> 'unique_key',
           details = nullif(j.details - 'unique_key', '{}'::jsonb)
     WHERE j.id = retry.job_id AND j.state IN ('dead', 'cancelled')
    RETURNING j.queue INTO q;
    IF q IS NOT NULL THEN
        PERFORM pgbroker.wake(q);
    END IF;
    RETURN q IS NOT NULL;
END
$$;

-- Running jobs whose lease expired more than `older_than` ago: their worker died or hangs
-- (the classic dead-job query of a CI service).
CREATE OR REPLACE FUNCTION pgbroker.stuck_jobs(older_than interval DEFAULT interval '0')
RETURNS SETOF pgbroker.jobs
LANGUAGE sql STABLE AS $$
    SELECT * FROM pgbroker.jobs
     WHERE state = 'running' AND lease_until < now() - $1
       AND coalesce(lease_until, finished_at) < now() - $1 -- the index
     ORDER BY lease_until
$$;

-- Dead jobs, newest first.
CREATE OR REPLACE FUNCTION pgbroker.dead_jobs(queue text DEFAULT NULL, max integer DEFAULT 100)
RETURNS SETOF pgbroker.jobs
LANGUAGE sql STABLE AS $$
    -- Ordered by the index's expression, which is finished_at for dead jobs.
    SELECT * FROM pgbroker.jobs
     WHERE state = 'dead' AND ($1 IS NULL OR queue = $1)
     ORDER BY coalesce(lease_until, finished_at) DESC, id DESC
     LIMIT $2
$$;

-- Why a running job's lease expired: its timeout passed (job_options.sql), or its worker
-- stopped heartbeating.
CREATE OR REPLACE FUNCTION pgbroker.lease_expired_error(details jsonb, worker text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN $1 ? 'timeout'
                THEN 'attempt timed out after ' || ($1 ->> 'timeout') || ' s'
                ELSE 'lease expired: worker ' || coalesce($2, '?') || ' stopped heartbeating'
           END
$$;

-- Makes jobs whose lease expired available again (the attempt counts) or dead when their
-- attempts are exhausted; deletes kept completed jobs past their retention and stale waiters.
-- Returns how many jobs were rescued. Worker pools run it on a timer.
CREATE OR REPLACE FUNCTION pgbroker.rescue() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n      integer;
    q      text;
    queues text[];
BEGIN
    WITH expired AS (
        SELECT j.id FROM pgbroker.jobs j
         WHERE j.state = 'running' AND j.lease_until < now()
           AND coalesce(j.lease_until, j.finished_at) < now() -- the index
         FOR UPDATE SKIP LOCKED
    ), r AS (
        UPDATE pgbroker.jobs j
           SET state       = CASE WHEN j.attempt >= j.max_attempts
                                  THEN 'dead'::pgbroker.job_state ELSE 'available' END,
               run_at      = now(),
               finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
               lease_until = NULL,
               last_error  = pgbroker.lease_expired_error(j.details, j.worker),
               unique_key  = CASE WHEN j.attempt >= j.max_attempts THEN NULL
                                  ELSE j.unique_key END,
               details     = pgbroker.job_error_added(
                                 CASE WHEN j.attempt >= j.max_attempts
                                      THEN pgbroker.job_key_kept(j.details, j.unique_key)
                                      ELSE j.details END,
                                 j.attempt,
                                 pgbroker.lease_expired_error(j.details, j.worker),
                                 j.worker)
          FROM expired
         WHERE j.id = expired.id
        RETURNING j.queue, j.state
    )
    SELECT count(*), array_agg(DISTINCT r.queue) FILTER (WHERE r.state = 'available')
      INTO n, queues FROM r;
    FOREACH q IN ARRAY coalesce(queues, '{}'::text[]) LOOP
        PERFORM pgbroker.wake(q);
    END LOOP;
    DELETE FROM pgbroker.jobs
     WHERE state = 'completed' AND coalesce(lease_until, finished_at) < now(); -- the index
    DELETE FROM pgbroker.queue_waiters WHERE since < now() - interval '10 minutes';
    RETURN n;
END
$$;

-- Status notifications (opt-in per queue).
CREATE OR REPLACE FUNCTION pgbroker.job_status_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r     pgbroker.jobs;
    state text;
    err   text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.state <> 'running' THEN
            RETURN NULL; -- pruning kept jobs is no state change
        END IF;
        r := OLD;
        state := 'completed';
    ELSE
        IF TG_OP = 'UPDATE' AND NEW.state = OLD.state THEN
            RETURN NULL;
        END IF;
        r := NEW;
        state := NEW.state;
        IF TG_OP = 'UPDATE' AND NEW.details -> 'errors' IS DISTINCT FROM OLD.details -> 'errors' THEN
            err := left(NEW.last_error, 2000);
        ELSIF TG_OP = 'INSERT' AND NEW.details -> 'errors' IS NOT NULL THEN
            err := left(NEW.last_error, 2000); -- a taken job written back after a failure
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgbroker.watched_queues w WHERE w.queue = r.queue) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('pgbroker.jobs.' || r.queue, json_build_object(
        'id', r.id, 'queue', r.queue, 'state', state, 'attempt', r.attempt,
        'max_attempts', r.max_attempts, 'run_at', r.run_at, 'error', err)::text);
    RETURN NULL;
END
$$;

-- A job taken by a transaction (pgbroker.take) is deleted by it while still 'available'. At
-- commit (a deferred trigger) it is reported 'completed', unless the transaction wrote it back
-- (pgbroker.fail_taken / return_taken: the INSERT was reported instead). A rolled-back take
-- reports nothing: the job never left 'available'.
CREATE OR REPLACE FUNCTION pgbroker.job_taken_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgbroker.jobs j WHERE j.id = OLD.id)
       OR NOT EXISTS (SELECT 1 FROM pgbroker.watched_queues w WHERE w.queue = OLD.queue) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('pgbroker.jobs.' || OLD.queue, json_build_object(
        'id', OLD.id, 'queue', OLD.queue, 'state', 'completed', 'attempt', OLD.attempt + 1,
        'max_attempts', OLD.max_attempts, 'run_at', OLD.run_at, 'error', NULL)::text);
    RETURN NULL;
END
$$;

-- Creates the status triggers (both exist exactly while some queue is watched).
CREATE OR REPLACE FUNCTION pgbroker.create_job_status_triggers() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = 'pgbroker.jobs'::regclass AND tgname = 'pgbroker_job_status') THEN
        CREATE TRIGGER pgbroker_job_status AFTER INSERT OR UPDATE OF state OR DELETE
            ON pgbroker.jobs FOR EACH ROW EXECUTE FUNCTION pgbroker.job_status_notify();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = 'pgbroker.jobs'::regclass AND tgname = 'pgbroker_job_taken') THEN
        CREATE CONSTRAINT TRIGGER pgbroker_job_taken AFTER DELETE ON pgbroker.jobs
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (OLD.state = 'available') EXECUTE FUNCTION pgbroker.job_taken_notify();
    END IF;
END
$$;

-- Starts sending status changes of `queue` on channel 'pgbroker.jobs.<queue>'. The triggers
-- exist only while some queue is watched, so unwatched setups pay nothing.
CREATE OR REPLACE FUNCTION pgbroker.watch_queue(queue text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgbroker.check_queue_name(watch_queue.queue);
    INSERT INTO pgbroker.watched_queues (queue) VALUES (watch_queue.queue)
    ON CONFLICT DO NOTHING;
    PERFORM pgbroker.create_job_status_triggers();
END
$$;

CREATE OR REPLACE FUNCTION pgbroker.unwatch_queue(queue text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    existed boolean;
BEGIN
    DELETE FROM pgbroker.watched_queues w WHERE w.queue = unwatch_queue.queue;
    existed := FOUND;
    IF NOT EXISTS (SELECT 1 FROM pgbroker.watched_queues) THEN
        DROP TRIGGER IF EXISTS pgbroker_job_status ON pgbroker.jobs;
        DROP TRIGGER IF EXISTS pgbroker_job_taken ON pgbroker.jobs;
    END IF;
    RETURN existed;
END
$$;

-- Counts per queue and state; `oldest_available_secs` is how long the oldest runnable job has
-- waited (queue latency).
CREATE OR REPLACE VIEW pgbroker.queue_stats AS
SELECT queue,
       count(*) FILTER (WHERE state = 'available' AND run_at <= now()) AS available,
       count(*) FILTER (WHERE state = 'available' AND run_at > now())  AS scheduled,
       count(*) FILTER (WHERE state = 'running')                       AS running,
       count(*) FILTER (WHERE state = 'completed')                     AS completed,
       count(*) FILTER (WHERE state = 'dead')                          AS dead,
       count(*) FILTER (WHERE state = 'cancelled')                     AS cancelled,
       extract(epoch FROM now() - min(run_at) FILTER (
           WHERE state = 'available' AND run_at <= now()))::float8     AS oldest_available_secs
  FROM pgbroker.jobs
 GROUP BY queue;
