-- Statement read_after: a subscription partition's next events after a position, below the
-- horizon, in (tx, id) order, of its topic patterns, partition and payload filter (a
-- subscription with a condition adds a call of its compiled function: the dynamic branch of
-- read_after() below, and read_sql_for() in src/topic/read.rs); and the functions that run it, pgbroker.read_after() and
-- pgbroker.read() (after the stored cursor).
--
-- One source: the lines between `-- statement read_after` and `-- end statement read_after`
-- are also the statement the Rust consumers prepare (src/topic/read.rs takes them out of this
-- file when it is compiled), so the two cannot drift apart. Parameters: $1 subscription,
-- $2 max events, $3 partition, $4 and $5 the position (tx, id) to read after.
--
-- The planner cannot estimate the pattern and partition filters and would read and sort every
-- unread event; the settings make it walk the (tx, id) index in order and stop at max
-- (and keep JIT, triggered by the disabled sort's cost, out of a millisecond query). The
-- consumers set the same settings on their connections.
-- The subscription is looked up once (the CTE, read by one-time subqueries), so the events are
-- the only relation and their index order is the ORDER BY: no sort. (Joined to them with
-- LATERAL, the rows came out in order too, but SQL promised it only with a sort of the page: a
-- sixth of the read's server time.)
-- PL/pgSQL, not SQL: it keeps the plan for the session, where a SQL function plans its body on
-- every call (1 ms with a week of daily partitions, three times the read itself).
--   SELECT * FROM pgbroker.read_after('billing', 100, 0, '1234', 56);
CREATE OR REPLACE FUNCTION pgbroker.read_after(subscription text, max integer, part integer,
                                               after_tx xid8, after_id bigint)
RETURNS TABLE (id bigint, topic text, payload jsonb, headers jsonb, key text, tx xid8,
               created_at timestamptz)
LANGUAGE plpgsql STABLE
SET enable_sort = off SET enable_bitmapscan = off SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    cond record;
BEGIN
    SELECT s.condition_fn, s.params INTO cond FROM pgbroker.subscriptions s
     WHERE s.name = $1 AND s.condition_fn IS NOT NULL;
    IF cond.condition_fn IS NULL THEN
    RETURN QUERY
-- statement read_after
WITH s AS (SELECT s.topic_like, s.topic_regex, s.partitions, s.filter
              FROM pgbroker.subscriptions s WHERE s.name = $1)
SELECT e.id, e.topic, e.payload, e.headers, e.key, e.tx, e.created_at
  FROM pgbroker.events e
 WHERE (e.tx, e.id) > ($4::xid8, $5::bigint)
   AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
   AND CASE WHEN (SELECT s.topic_like FROM s) IS NULL
            THEN e.topic ~ (SELECT s.topic_regex FROM s)
            ELSE e.topic LIKE ANY ((SELECT s.topic_like FROM s)::text[]) END
   AND ((SELECT s.partitions FROM s) = 1
        OR pgbroker.event_partition(e.key, e.id, (SELECT s.partitions FROM s)) = $3)
   AND ((SELECT s.filter FROM s) IS NULL OR e.payload @> (SELECT s.filter FROM s))
 ORDER BY e.tx, e.id
 LIMIT $2
-- end statement read_after
    ;
    RETURN;
    END IF;
    -- A condition: the same query calling its compiled function (pgbroker.compile_condition),
    -- planned for this call with the params as a value, so the function is inlined (and an
    -- expression index may serve it).
    RETURN QUERY EXECUTE format(
        'WITH s AS (SELECT s.topic_like, s.topic_regex, s.partitions, s.filter '
        '             FROM pgbroker.subscriptions s WHERE s.name = $1) '
        'SELECT e.id, e.topic, e.payload, e.headers, e.key, e.tx, e.created_at '
        '  FROM pgbroker.events e '
        ' WHERE (e.tx, e.id) > ($4::xid8, $5::bigint) '
        '   AND e.tx < pg_snapshot_xmin(pg_current_snapshot()) '
        '   AND CASE WHEN (SELECT s.topic_like FROM s) IS NULL '
        '            THEN e.topic ~ (SELECT s.topic_regex FROM s) '
        '            ELSE e.topic LIKE ANY ((SELECT s.topic_like FROM s)::text[]) END '
        '   AND ((SELECT s.partitions FROM s) = 1 '
        '        OR pgbroker.event_partition(e.key, e.id, (SELECT s.partitions FROM s)) = $3) '
        '   AND ((SELECT s.filter FROM s) IS NULL OR e.payload @> (SELECT s.filter FROM s)) '
        '   AND pgbroker.%I(e.topic, e.key, e.payload, e.headers, $6) '
        ' ORDER BY e.tx, e.id '
        ' LIMIT $2', cond.condition_fn)
    USING $1, $2, $3, $4, $5, cond.params;
END
$$;

-- The next events of a subscription partition after its stored cursor. Does not move the
-- cursor: ack() does. Raises SQLSTATE P0002 (no_data_found) when the subscription partition
-- does not exist.
--   SELECT * FROM pgbroker.read('billing', 100);                       -- (name, max, partition)
CREATE OR REPLACE FUNCTION pgbroker.read(subscription text, max integer, part integer DEFAULT 0)
RETURNS TABLE (id bigint, topic text, payload jsonb, headers jsonb, key text, tx xid8,
               created_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cursor_tx xid8;
    cursor_id bigint;
BEGIN
    SELECT c.tx, c.id INTO cursor_tx, cursor_id
      FROM pgbroker.subscription_cursors c
     WHERE c.subscription = $1 AND c.partition = $3;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgbroker: no subscription % with partition %', quote_literal($1), $3
            USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY SELECT * FROM pgbroker.read_after($1, $2, $3, cursor_tx, cursor_id);
END
$$;
