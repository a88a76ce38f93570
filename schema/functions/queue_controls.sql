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
