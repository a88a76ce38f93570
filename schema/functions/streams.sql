-- Reading the log without a subscription: for readers that keep their own position, such as
-- Server-Sent Events streams and webhook endpoints (pgbroker-http).

-- The events after the position (after_tx, after_id) whose topics match any of the patterns,
-- in log order, at most max, and only below the horizon (every transaction below it has
-- ended), so a reader that moves its position to the last event returned (or to
-- (horizon, 0) when fewer than max came) never skips one.
CREATE OR REPLACE FUNCTION pgbroker.events_after(after_tx xid8, after_id bigint,
                                                 patterns text[], max integer)
RETURNS TABLE (id bigint, topic text, payload jsonb, headers jsonb, key text, tx xid8,
               created_at timestamptz)
LANGUAGE plpgsql STABLE
SET enable_sort = off SET enable_bitmapscan = off SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    re text := pgbroker.topic_regex(patterns);
BEGIN
    RETURN QUERY
    SELECT e.id, e.topic, e.payload, e.headers, e.key, e.tx, e.created_at
      FROM pgbroker.events e
     WHERE (e.tx, e.id) > (after_tx, after_id)
       AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
       AND e.topic ~ re
     ORDER BY e.tx, e.id
     LIMIT max;
END
$$;
