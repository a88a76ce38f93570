-- Paused and limited queues (src/queue/controls.rs). A queue is gated while it has a row in
-- pgbroker.queue_controls: pgbroker.claim and pgbroker.take (and the statements the Rust
-- workers prepare) skip it with one index probe per claim. Claims of a limited queue go
-- through pgbroker.claim_limited.
--   SELECT pgbroker.pause_queue('emails');   -- nothing is claimed or taken; enqueues go on
--   SELECT pgbroker.resume_queue('emails');  -- idle workers are woken at once

-- Pauses `queue`: claims and takes return nothing from it until pgbroker.resume_queue.
-- Enqueues still succeed, and jobs already running finish (and complete) as usual. A claim
-- that began before the pause committed may still return jobs. Returns false when it was
-- paused already.
CREATE OR REPLACE FUNCTION pgbroker.pause_queue(queue text) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    was_paused boolean;
BEGIN
    PERFORM pgbroker.check_queue_name(pause_queue.queue);
    INSERT INTO pgbroker.queue_controls AS c (queue, paused_at)
    VALUES (pause_queue.queue, now())
    ON CONFLICT (queue) DO UPDATE SET paused_at = coalesce(c.paused_at, now()), updated_at = now()
    RETURNING c.paused_at < now() INTO was_paused; -- now() is this transaction's start
    RETURN NOT was_paused;
END
$$;

-- Resumes a paused queue and wakes its idle workers (one NOTIFY while some wait). Returns
-- false when it was not paused.
CREATE OR REPLACE FUNCTION pgbroker.resume_queue(queue text) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    UPDATE pgbroker.queue_controls c SET paused_at = NULL, updated_at = now()
     WHERE c.queue = resume_queue.queue AND c.paused_at IS NOT NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- A row gates claims: keep it only while limits remain.
    DELETE FROM pgbroker.queue_controls c
     WHERE c.queue = resume_queue.queue AND c.paused_at IS NULL
       AND c.rate_limit IS NULL AND c.group_limit IS NULL;
    PERFORM pgbroker.wake(resume_queue.queue);
    RETURN true;
END
$$;

-- Paused queues, with when they were paused.
CREATE OR REPLACE FUNCTION pgbroker.paused_queues()
RETURNS TABLE (queue text, paused_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT c.queue, c.paused_at FROM pgbroker.queue_controls c
     WHERE c.paused_at IS NOT NULL ORDER BY c.queue
$$;

-- Limits how fast and how widely `queue` runs, enforced for every claimer of every process:
--   rate_limit, rate_period  at most rate_limit jobs started per rate_period (a fixed window
--                            that opens at the first claim after the previous one closed)
--   group_limit              at most group_limit running jobs per group key (the job option
--                            group, pgbroker.set_job_options(group_key => ..)); jobs without a
--                            group are not limited by it
-- NULLs clear a limit; with neither limit nor pause left the queue is ungated again. Limits
-- apply to leased claims (pgbroker.claim_limited); pgbroker.claim and pgbroker.take return
-- nothing from a limited queue, so transactional workers do not run its jobs.
CREATE OR REPLACE FUNCTION pgbroker.limit_queue(
    queue       text,
    rate_limit  integer  DEFAULT NULL,
    rate_period interval DEFAULT NULL,
    group_limit integer  DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    PERFORM pgbroker.check_queue_name(queue);
    IF (rate_limit IS NULL) <> (rate_period IS NULL) THEN
        RAISE EXCEPTION 'pgbroker: a rate limit needs both rate_limit and rate_period'
            USING ERRCODE = '22023';
    END IF;
    IF rate_limit < 1 OR rate_period <= interval '0' OR group_limit < 1 THEN
        RAISE EXCEPTION 'pgbroker: limits must be positive, got rate % per %, group %',
            rate_limit, rate_period, group_limit USING ERRCODE = '22023';
    END IF;
    INSERT INTO pgbroker.queue_controls AS c (queue, rate_limit, rate_period, group_limit)
    VALUES (queue, rate_limit, rate_period, group_limit)
    ON CONFLICT ON CONSTRAINT queue_controls_pkey DO UPDATE
       SET rate_limit = EXCLUDED.rate_limit, rate_period = EXCLUDED.rate_period,
           group_limit = EXCLUDED.group_limit, updated_at = now();
    DELETE FROM pgbroker.queue_controls c
     WHERE c.queue = limit_queue.queue AND c.paused_at IS NULL
       AND c.rate_limit IS NULL AND c.group_limit IS NULL;
    PERFORM pgbroker.wake(queue);
END
$$;

-- The gated queues: paused, limited, or both.
CREATE OR REPLACE VIEW pgbroker.queue_limits AS
SELECT queue, paused_at, rate_limit, rate_period, group_limit, window_start, window_count
  FROM pgbroker.queue_controls;

-- The ids of up to `max` available jobs of `queue` a claim may start within the queue's
-- limits, locked (FOR UPDATE SKIP LOCKED): none while it is paused, at most what its rate
-- window has left (the window's count is taken here), and only jobs whose group has fewer
-- running jobs than its group limit (looking at most 1000 jobs into the queue). It locks the
-- queue's row in pgbroker.queue_controls, so limited claims of one queue run one at a time:
-- that is what makes the limits exact across processes. A queue without controls: the first
-- `max` available jobs.
CREATE OR REPLACE FUNCTION pgbroker.pick_limited(q text, max integer) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    c        pgbroker.queue_controls;
    allowed  integer := max;
    picked   bigint[] := '{}';
    running  jsonb;
    cand     record;
    n        integer;
BEGIN
    IF allowed IS NULL OR allowed < 1 THEN
        RETURN picked;
    END IF;
    SELECT * INTO c FROM pgbroker.queue_controls qc WHERE qc.queue = q FOR UPDATE;
    IF c.paused_at IS NOT NULL THEN
        RETURN picked;
    END IF;
    IF c.rate_limit IS NOT NULL THEN
        IF c.window_start IS NULL OR c.window_start + c.rate_period <= now() THEN
            c.window_start := now();
            c.window_count := 0;
        END IF;
        allowed := least(allowed, c.rate_limit - c.window_count);
    END IF;
    IF allowed < 1 THEN
        RETURN picked;
    ELSIF c.group_limit IS NULL THEN
        -- Two limits, the inner one literal, as in src/queue/claim.rs (next_jobs_sql): with
        -- `LIMIT allowed` alone the generic plan looks dear, so every call was planned again
        -- (and planning probes the claim index's end, past the dead entries of claimed jobs:
        -- milliseconds). The outer limit stops the locking first.
        picked := ARRAY(SELECT head.id FROM (
                            SELECT p.id FROM pgbroker.jobs p
                             WHERE p.queue = q AND p.state = 'available' AND p.run_at <= now()
                             ORDER BY p.priority, p.run_at, p.id
                             LIMIT 1000
                               FOR UPDATE SKIP LOCKED) head
                        LIMIT allowed);
    ELSE
        SELECT coalesce(jsonb_object_agg(g.grp, g.cnt), '{}'::jsonb) INTO running
          FROM (SELECT r.details ->> 'group' AS grp, count(*) AS cnt
                  FROM pgbroker.jobs r
                 WHERE r.state = 'running' AND r.queue = q AND r.details ? 'group'
                 GROUP BY 1) g;
        FOR cand IN SELECT p.id, p.details ->> 'group' AS grp FROM pgbroker.jobs p
                     WHERE p.queue = q AND p.state = 'available' AND p.run_at <= now()
                     ORDER BY p.priority, p.run_at, p.id
                     LIMIT 1000
                       FOR UPDATE SKIP LOCKED LOOP
            IF cand.grp IS NOT NULL THEN
                n := coalesce((running ->> cand.grp)::integer, 0);
                CONTINUE WHEN n >= c.group_limit;
                running := jsonb_set(running, ARRAY[cand.grp], to_jsonb(n + 1));
            END IF;
            picked := picked || cand.id;
            EXIT WHEN cardinality(picked) >= allowed;
        END LOOP;
    END IF;
    IF c.rate_limit IS NOT NULL THEN
        UPDATE pgbroker.queue_controls qc
           SET window_start = c.window_start, window_count = c.window_count + cardinality(picked)
         WHERE qc.queue = q;
    END IF;
    RETURN picked;
END
$$;

-- Claims as pgbroker.claim does (the same lease check), within the queue's limits
-- (pgbroker.pick_limited). Works
-- for every queue, so workers in other languages can always claim with it; Rust workers use
-- it for the queues they find gated.
CREATE OR REPLACE FUNCTION pgbroker.claim_limited(
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
    WITH claimed AS (
        UPDATE pgbroker.jobs j
           SET state = 'running', attempt = j.attempt + 1, worker = $2,
               lease_until = now() + coalesce(make_interval(secs => (j.details ->> 'timeout')::float8),
                                              $4)
         WHERE j.id = ANY (ARRAY(SELECT unnest(pgbroker.pick_limited($1, $3))))
        RETURNING j.id, j.queue, j.payload, j.attempt, j.max_attempts, j.priority, j.run_at,
                  j.lease_until, j.created_at, j.unique_key
    )
    SELECT * FROM claimed c ORDER BY c.priority, c.run_at, c.id
$$;
