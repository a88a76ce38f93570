-- Per-job options beyond pgbroker.enqueue's (src/queue/job_options.rs): dependencies, a
-- timeout per attempt, a group key (for group limits), and progress. They live in the job's
-- `details` (pgbroker.jobs), so jobs without them cost nothing:
--   timeout          seconds an attempt may run (its lease; heartbeats do not extend it)
--   group            the group key of pgbroker.limit_queue(group_limit => ..)
--   progress         what the running handler last reported (pgbroker.set_progress)
--   waiting          while the job waits for parents: {"run_at": its own run_at,
--                    "run_if_parent_fails": bool}; the job is 'available' with run_at
--                    'infinity' meanwhile, so no claim takes it
--   has_dependents   on a parent: its completion, death or cancellation releases dependents
-- From SQL, in the transaction that enqueued the job:
--   BEGIN;
--   SELECT pgbroker.enqueue('reports', '{}') AS id \gset
--   SELECT pgbroker.set_job_options(:id, after => ARRAY[41, 42], timeout => '10 minutes');
--   COMMIT;

-- Creates the triggers that release dependents (once: the first dependency ever). Until then
-- deleting or finishing a job pays nothing for this feature; after, one flag test per job.
CREATE OR REPLACE FUNCTION pgbroker.create_dependency_triggers() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'pgbroker.jobs'::regclass
                      AND tgname = 'pgbroker_job_parent_finished') THEN
        CREATE TRIGGER pgbroker_job_parent_finished AFTER UPDATE OF state ON pgbroker.jobs
            FOR EACH ROW
            WHEN (OLD.details IS NOT NULL AND OLD.details ? 'has_dependents'
                  AND NEW.state IN ('completed', 'dead', 'cancelled')
                  AND OLD.state IS DISTINCT FROM NEW.state)
            EXECUTE FUNCTION pgbroker.job_parent_finished();
    END IF;
    -- Deferred: a job taken by a transaction (pgbroker.take) is deleted and, when it failed,
    -- written back by that transaction; only at its commit is it known to be completed.
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'pgbroker.jobs'::regclass
                      AND tgname = 'pgbroker_job_parent_deleted') THEN
        CREATE CONSTRAINT TRIGGER pgbroker_job_parent_deleted AFTER DELETE ON pgbroker.jobs
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (OLD.details IS NOT NULL AND OLD.details ? 'has_dependents')
            EXECUTE FUNCTION pgbroker.job_parent_deleted();
    END IF;
END
$$;

-- Releases the dependents of `parent`, which ended with `outcome` ('completed', 'dead' or
-- 'cancelled'). A dependent whose last parent this was becomes available (at its own run_at
-- if later); when a parent dies or is cancelled, a dependent dies with the error
-- 'parent job <id> died' (or 'was cancelled'), unless it was enqueued with
-- run_if_parent_fails, which counts the parent as finished.
CREATE OR REPLACE FUNCTION pgbroker.release_dependents(parent bigint, outcome text)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d      record;
    j      record;
    err    text;
    n      integer := 0;
BEGIN
    FOR d IN DELETE FROM pgbroker.job_dependencies dep WHERE dep.parent_id = parent
             RETURNING dep.job_id LOOP
        -- Lock the dependent before looking at its other parents: two parents finishing at
        -- once then look one after the other, and the second (a fresh snapshot after the
        -- lock) sees the first's deletion.
        SELECT jb.id, jb.queue, jb.state, jb.details, jb.attempt, jb.unique_key INTO j
          FROM pgbroker.jobs jb WHERE jb.id = d.job_id FOR UPDATE;
        IF NOT FOUND OR j.state <> 'available' OR NOT coalesce(j.details ? 'waiting', false) THEN
            CONTINUE; -- cancelled (or re-driven) meanwhile
        END IF;
        IF outcome <> 'completed'
           AND NOT coalesce((j.details #>> '{waiting,run_if_parent_fails}')::boolean, false) THEN
            err := format('parent job %s %s', parent,
                          CASE outcome WHEN 'dead' THEN 'died' ELSE 'was cancelled' END);
            UPDATE pgbroker.jobs jb
               SET state = 'dead', finished_at = now(), last_error = err, unique_key = NULL,
                   details = pgbroker.job_error_added(
                       pgbroker.job_key_kept(jb.details - 'waiting', jb.unique_key),
                       jb.attempt, err, NULL)
             WHERE jb.id = d.job_id;
            DELETE FROM pgbroker.job_dependencies dep WHERE dep.job_id = d.job_id;
            n := n + 1;
        ELSIF NOT EXISTS (SELECT 1 FROM pgbroker.job_dependencies dep
                           WHERE dep.job_id = d.job_id) THEN
            UPDATE pgbroker.jobs jb
               SET run_at = greatest(coalesce((jb.details #>> '{waiting,run_at}')::timestamptz,
                                              now()), now()),
                   details = nullif(jb.details - 'waiting', '{}'::jsonb)
             WHERE jb.id = d.job_id;
            PERFORM pgbroker.wake(j.queue);
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

-- A parent's state changed to completed (kept), dead or cancelled.
CREATE OR REPLACE FUNCTION pgbroker.job_parent_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgbroker.release_dependents(NEW.id, NEW.state::text);
    RETURN NULL;
END
$$;

-- A parent was deleted (completed, or taken by a transaction that committed). Its row is
-- back when the transaction that took it wrote it back: still pending when available, its
-- dependents follow it when dead.
CREATE OR REPLACE FUNCTION pgbroker.job_parent_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    now_state text;
BEGIN
    SELECT j.state::text INTO now_state FROM pgbroker.jobs j WHERE j.id = OLD.id;
    IF now_state IS NULL OR now_state = 'completed' THEN
        PERFORM pgbroker.release_dependents(OLD.id, 'completed');
    ELSIF now_state IN ('dead', 'cancelled') THEN
        PERFORM pgbroker.release_dependents(OLD.id, now_state);
    END IF;
    RETURN NULL;
END
$$;

-- Sets the options of job `job_id`, enqueued in this transaction (call it before COMMIT, so
-- that no worker sees the job without them). Returns the job's state afterwards: 'waiting'
-- while it waits for parents, 'dead' when a parent is dead or cancelled already (and not
-- run_if_parent_fails), else its state.
--   after               parents: the job runs once all of them completed. A parent that no
--                       longer exists counts as completed (completed jobs are deleted).
--   run_if_parent_fails false: a parent that dies or is cancelled kills the job ('parent job
--                       <id> died'); true: it counts as finished
--   timeout             how long an attempt may run (> 0)
--   group_key           the job's group (1 to 200 characters) for pgbroker.limit_queue
-- Fails with SQLSTATE 22023 for bad options, P0002 for an unknown job.
CREATE OR REPLACE FUNCTION pgbroker.set_job_options(
    job_id              bigint,
    after               bigint[] DEFAULT NULL,
    run_if_parent_fails boolean  DEFAULT false,
    timeout             interval DEFAULT NULL,
    group_key           text     DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    j       pgbroker.jobs;
    opts    jsonb := '{}';
    failed  record;
BEGIN
    SELECT * INTO j FROM pgbroker.jobs jb WHERE jb.id = job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgbroker: no job %', job_id USING ERRCODE = 'P0002';
    END IF;
    IF timeout IS NOT NULL THEN
        IF timeout <= interval '0' THEN
            RAISE EXCEPTION 'pgbroker: timeout must be positive, got %', timeout
                USING ERRCODE = '22023';
        END IF;
        opts := opts || jsonb_build_object('timeout', extract(epoch FROM timeout)::float8);
    END IF;
    IF group_key IS NOT NULL THEN
        IF group_key !~ '^[[:print:]]{1,200}$' THEN
            RAISE EXCEPTION 'pgbroker: group key must be 1 to 200 printable characters, got %',
                quote_literal(group_key) USING ERRCODE = '22023';
        END IF;
        opts := opts || jsonb_build_object('group', group_key);
    END IF;
    IF opts <> '{}' THEN
        UPDATE pgbroker.jobs jb SET details = coalesce(jb.details, '{}'::jsonb) || opts
         WHERE jb.id = job_id;
    END IF;
    IF coalesce(cardinality(after), 0) = 0 THEN
        RETURN j.state::text;
    END IF;
    IF job_id = ANY (after) THEN
        RAISE EXCEPTION 'pgbroker: job % cannot wait for itself', job_id USING ERRCODE = '22023';
    END IF;
    IF j.state <> 'available' THEN
        RAISE EXCEPTION 'pgbroker: job % is %: only an available job can wait for others',
            job_id, j.state USING ERRCODE = '22023';
    END IF;
    PERFORM pgbroker.create_dependency_triggers();
    -- Parents still to finish are marked (their row lock also makes a parent finishing right
    -- now wait for this transaction, so that it sees the dependency rows).
    WITH pending AS (
        UPDATE pgbroker.jobs p
           SET details = coalesce(p.details, '{}'::jsonb) || '{"has_dependents": true}'
         WHERE p.id = ANY (after) AND p.state IN ('available', 'running')
        RETURNING p.id
    )
    INSERT INTO pgbroker.job_dependencies (parent_id, job_id)
    SELECT pending.id, job_id FROM pending
    ON CONFLICT DO NOTHING;
    SELECT p.id, p.state INTO failed FROM pgbroker.jobs p
     WHERE p.id = ANY (after) AND p.state IN ('dead', 'cancelled')
     ORDER BY p.id LIMIT 1;
    IF failed.id IS NOT NULL AND NOT coalesce(run_if_parent_fails, false) THEN
        DELETE FROM pgbroker.job_dependencies dep WHERE dep.job_id = set_job_options.job_id;
        UPDATE pgbroker.jobs jb
           SET state = 'dead', finished_at = now(), unique_key = NULL,
               last_error = format('parent job %s %s', failed.id,
                                   CASE failed.state WHEN 'dead' THEN 'died'
                                                     ELSE 'was cancelled' END),
               details = pgbroker.job_error_added(
                   pgbroker.job_key_kept(jb.details, jb.unique_key), jb.attempt,
                   format('parent job %s %s', failed.id,
                          CASE failed.state WHEN 'dead' THEN 'died' ELSE 'was cancelled' END),
                   NULL)
         WHERE jb.id = set_job_options.job_id;
        RETURN 'dead';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgbroker.job_dependencies dep
                    WHERE dep.job_id = set_job_options.job_id) THEN
        RETURN 'available'; -- every parent finished already
    END IF;
    UPDATE pgbroker.jobs jb
       SET run_at = 'infinity',
           details = coalesce(jb.details, '{}'::jsonb) || jsonb_build_object('waiting',
               jsonb_build_object('run_at', jb.run_at,
                                  'run_if_parent_fails', coalesce(run_if_parent_fails, false)))
     WHERE jb.id = set_job_options.job_id;
    RETURN 'waiting';
END
$$;

-- The parents job `job_id` still waits for.
CREATE OR REPLACE FUNCTION pgbroker.job_parents(job_id bigint) RETURNS SETOF bigint
LANGUAGE sql STABLE AS $$
    SELECT dep.parent_id FROM pgbroker.job_dependencies dep WHERE dep.job_id = $1
     ORDER BY dep.parent_id
$$;

-- Records the progress of a running job (any JSON, at most 4000 bytes as text) in its
-- details, and sends it to watchers of its queue as a status event in state 'running' with
-- a 'progress' field. `attempt` fences against an older claim. Returns false when the job is
-- not running (under that attempt).
CREATE OR REPLACE FUNCTION pgbroker.set_progress(job_id bigint, progress jsonb,
                                                 attempt integer DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    r record;
BEGIN
    IF progress IS NULL OR octet_length(progress::text) > 4000 THEN
        RAISE EXCEPTION 'pgbroker: progress must be JSON of at most 4000 bytes, got %',
            coalesce(octet_length(progress::text) || ' bytes', 'NULL') USING ERRCODE = '22023';
    END IF;
    UPDATE pgbroker.jobs j
       SET details = coalesce(j.details, '{}'::jsonb) || jsonb_build_object('progress', progress)
     WHERE j.id = job_id AND j.state = 'running' AND (attempt IS NULL OR j.attempt = attempt)
    RETURNING j.queue, j.attempt, j.max_attempts, j.run_at INTO r;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM pgbroker.watched_queues w WHERE w.queue = r.queue) THEN
        PERFORM pg_notify('pgbroker.jobs.' || r.queue, json_build_object(
            'id', job_id, 'queue', r.queue, 'state', 'running', 'attempt', r.attempt,
            'max_attempts', r.max_attempts, 'run_at', r.run_at, 'error', NULL,
            'progress', progress)::text);
    END IF;
    RETURN true;
END
$$;
