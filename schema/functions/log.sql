-- Durable topics (event log): see src/topic/.
--
-- Events are rows of pgbroker.events, one per published event whatever the number of
-- subscribers. A subscription is a named set of topic patterns plus one cursor per partition.
-- Reads are gap-free: only events of transactions below the xid8 horizon
-- pg_snapshot_xmin(pg_current_snapshot()) are returned (every transaction below it has ended),
-- ordered by (tx, id). A long-running writing transaction anywhere in the cluster therefore
-- delays (never loses) delivery; pgbroker.subscription_lag() shows it.
--
-- From psql:
--   SELECT pgbroker.subscribe('billing', ARRAY['orders.*']);          -- or (name, patterns,
--                                  -- partitions, 'end' | 'beginning' | '<tx>-<id>', expire_after)
--   SELECT pgbroker.publish('orders.created', '{"id": 1}');           -- (topic, payload,
--                                                                       --  headers, key)
--   SELECT pgbroker.log_wake();   -- after writing events with plain INSERT or COPY: wake
--                                 -- waiting consumers now, not at their next poll
--   SELECT * FROM pgbroker.read('billing', 100);                       -- (name, max, partition)
--   SELECT pgbroker.ack('billing', '<tx>', <id>);   -- the tx and id of the last event handled
--   SELECT pgbroker.seek('billing', '0', 0);        -- replay from the beginning
--   SELECT pgbroker.redrive('billing');             -- dead letters back to retry
--   SELECT pgbroker.publish_table_changes('public.users');   -- and unpublish_table_changes
--   SELECT * FROM pgbroker.log_maintain('7 days');  -- partitions ahead, retention, expiry
--   SELECT * FROM pgbroker.subscription_lag('billing');
--   SELECT * FROM pgbroker.member_checkin('billing', 'worker-1', '{}');  -- balanced consumers,
--                      -- about every second: members, rank, share and the partitions taken
--   SELECT * FROM pgbroker.live_members('billing');
--
-- Needs PostgreSQL 14 or later (xid8 snapshot functions, CREATE OR REPLACE TRIGGER).

-- Topic names: 1 to 255 bytes, dot-separated segments of letters, digits, '_' and '-'.
CREATE OR REPLACE FUNCTION pgbroker.valid_topic(topic text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT topic IS NOT NULL AND octet_length(topic) BETWEEN 1 AND 255
       AND topic ~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$'
$$;

CREATE OR REPLACE FUNCTION pgbroker.check_topic(topic text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT pgbroker.valid_topic(topic) THEN
        RAISE EXCEPTION 'pgbroker: invalid topic name %: use 1 to 255 bytes of dot-separated '
                        'segments of letters, digits, ''_'' and ''-''', quote_nullable(topic)
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- Subscription names: 1 to 200 bytes of letters, digits, '_', '-', '.' and ':'.
CREATE OR REPLACE FUNCTION pgbroker.check_subscription_name(name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF name IS NULL OR octet_length(name) NOT BETWEEN 1 AND 200
       OR name !~ '^[A-Za-z0-9_.:-]+$' THEN
        RAISE EXCEPTION 'pgbroker: invalid subscription name %', quote_nullable(name)
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- Patterns: a topic name whose segments may be '*' (exactly one segment); the last segment may
-- be '#' (any number of segments, including none: 'orders.#' matches 'orders' and 'orders.a.b').
-- Returns one anchored regular expression matching any of the patterns.
CREATE OR REPLACE FUNCTION pgbroker.topic_regex(patterns text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    p     text;
    segs  text[];
    parts text[] := '{}';
    re    text;
    i     integer;
BEGIN
    IF patterns IS NULL OR cardinality(patterns) = 0 THEN
        RAISE EXCEPTION 'pgbroker: a subscription needs at least one topic pattern'
            USING ERRCODE = '22023';
    END IF;
    FOREACH p IN ARRAY patterns LOOP
        IF p IS NULL OR octet_length(p) NOT BETWEEN 1 AND 255 THEN
            RAISE EXCEPTION 'pgbroker: invalid topic pattern %', quote_nullable(p)
                USING ERRCODE = '22023';
        END IF;
        segs := string_to_array(p, '.');
        re := '';
        FOR i IN 1 .. cardinality(segs) LOOP
            IF segs[i] = '#' AND i = cardinality(segs) THEN
                re := CASE WHEN i = 1 THEN '.*' ELSE re || '(\.[^.]+)*' END;
            ELSIF segs[i] = '*' THEN
                re := re || CASE WHEN i > 1 THEN '\.' ELSE '' END || '[^.]+';
            ELSIF segs[i] ~ '^[A-Za-z0-9_-]+$' THEN
                re := re || CASE WHEN i > 1 THEN '\.' ELSE '' END || segs[i];
            ELSE
                RAISE EXCEPTION 'pgbroker: invalid topic pattern %: segments are names, ''*'', '
                                'or a final ''#''', quote_literal(p)
                    USING ERRCODE = '22023';
            END IF;
        END LOOP;
        parts := parts || re;
    END LOOP;
    RETURN '^(' || array_to_string(parts, '|') || ')$';
END
$$;

-- The patterns (already checked by topic_regex) as LIKE patterns: 'a.b' -> 'a.b',
-- 'a.#' -> 'a' and 'a.%', '#' -> '%'; NULL when a pattern has a '*' (one segment: no LIKE).
CREATE OR REPLACE FUNCTION pgbroker.topic_like(patterns text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN bool_or(p LIKE '%*%') THEN NULL
                ELSE array_agg(l ORDER BY l) END
      FROM unnest(patterns) p
     CROSS JOIN LATERAL (
           SELECT replace(p, '_', '\_') AS e) esc
     CROSS JOIN LATERAL unnest(CASE
           WHEN p = '#' THEN ARRAY['%']
           WHEN p LIKE '%.#' THEN ARRAY[left(esc.e, -2), left(esc.e, -1) || '%']
           ELSE ARRAY[esc.e] END) l
$$;

-- Fills topic_like for subscriptions made before it existed (an upgrade), and keeps it in step.
UPDATE pgbroker.subscriptions
   SET topic_like = pgbroker.topic_like(patterns)
 WHERE topic_like IS DISTINCT FROM pgbroker.topic_like(patterns);

-- The partition of an event in a subscription with n partitions: by key, or by id without one.
CREATE OR REPLACE FUNCTION pgbroker.event_partition(key text, id bigint, n integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ((hashtextextended(coalesce(key, id::text), 0) & 9223372036854775807) % n)::integer
$$;

-- Publishing ----------------------------------------------------------------------------------

-- Wake-ups: every pgbroker way of writing events (the Rust API, pgbroker.publish, table change
-- events) checks pgbroker.log_waiters in its own statement and sends one NOTIFY pgbroker_events
-- (constant payload: the duplicates of one transaction fold into one) while a consumer waits.
-- Events written with plain SQL (INSERT, COPY) wake nobody: consumers see them within their poll
-- interval (1 s by default), or at once when the writer also calls pgbroker.log_wake().
-- The Rust API skips the look for 2 ms after one that found nobody (src/topic/publish_state.rs).
-- No trigger does it for every INSERT: a statement trigger cost each single-event publish
-- nearly as much server time as a raw insert (callgrind, PostgreSQL 15: 27 000 instructions, the
-- check inline in the INSERT 16 000, a raw INSERT 31 000).
CREATE OR REPLACE FUNCTION pgbroker.log_wake() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgbroker.log_waiters) THEN
        PERFORM pg_notify('pgbroker_events', '');
        RETURN true;
    END IF;
    RETURN false;
END
$$;

CREATE OR REPLACE FUNCTION pgbroker.publish(
    topic text,
    payload jsonb,
    headers jsonb DEFAULT NULL,
    key text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM pgbroker.check_topic(topic);
    IF payload IS NULL THEN
        RAISE EXCEPTION 'pgbroker: event payload must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
        RAISE EXCEPTION 'pgbroker: event headers must be a JSON object, got %',
                        jsonb_typeof(headers) USING ERRCODE = '22023';
    END IF;
    INSERT INTO pgbroker.events (topic, payload, headers, key)
    VALUES (publish.topic, publish.payload, publish.headers, publish.key)
    RETURNING id INTO new_id;
    PERFORM pgbroker.log_wake();
    RETURN new_id;
END
$$;

-- Conditions -----------------------------------------------------------------------------------

-- Compiles a subscription condition (a SQL boolean expression over topic, key, payload, headers
-- and params) into pgbroker.cond_<md5 of the text>(topic text, key text, payload jsonb,
-- headers jsonb, params jsonb), once per distinct text, and returns the function's name.
-- Conditions are written by developers (never by end users: use filters for their values), but
-- are confined all the same, so a mistake fails here, at subscribe, and never at read:
--   * one expression and nothing else: the text is first opened as a cursor over
--     SELECT (<condition>)::boolean FROM (no rows) e(topic, key, payload, headers, params),
--     which PostgreSQL refuses (before running anything) when it is more than one statement
--     or not a query; it is planned, never run. Each wrapper puts the text between newlines,
--     so a trailing '--' comment cannot swallow the rest, and an unterminated literal or
--     comment is a syntax error;
--   * the function has a SQL-standard body (RETURN <expression>): names are resolved now,
--     under search_path pg_catalog (qualify your own functions), not at read time;
--   * its parse tree must reference no relation (table, view, sequence...), no volatile
--     function or operator (side effects: nextval, pg_notify, set_config, dblink...), no
--     stable function outside pg_catalog (such a function may read tables), none of
--     pg_current_xact_id / txid_current (they assign a transaction id, which would hold back
--     every reader's horizon), nothing in a temporary schema.
-- Limits: functions PostgreSQL calls implicitly (type input/output in casts, domain checks)
-- are not inspected, and an IMMUTABLE function of another schema is trusted to be what it says.
-- The generated function is SECURITY INVOKER and STABLE, so reads inline it into their query
-- (an expression index can then serve it). SECURITY DEFINER here only so roles without CREATE
-- on the schema may subscribe with a condition; the checks above bound what they can create.
CREATE OR REPLACE FUNCTION pgbroker.compile_condition(condition text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fname text := 'cond_' || md5(condition);
    cur   refcursor;
    body  text;
    bad   text;
BEGIN
    IF condition IS NULL OR btrim(condition) = '' THEN
        RAISE EXCEPTION 'pgbroker: a condition must be a SQL boolean expression, got %',
                        quote_nullable(condition) USING ERRCODE = '22023';
    END IF;
    -- Concurrent subscribers with one new condition, and maintenance dropping unused ones.
    PERFORM pg_advisory_xact_lock(hashtext('pgbroker.conditions'));
    IF EXISTS (SELECT 1 FROM pgbroker.event_conditions c WHERE c.fn = fname) THEN
        RETURN fname;
    END IF;
    BEGIN
        OPEN cur FOR EXECUTE 'SELECT (' || chr(10) || condition || chr(10)
            || ')::boolean FROM (SELECT NULL::text AS topic, NULL::text AS key, '
               'NULL::jsonb AS payload, NULL::jsonb AS headers, NULL::jsonb AS params '
               'WHERE false) AS e';
        CLOSE cur;
        EXECUTE format('CREATE FUNCTION pgbroker.%I(topic text, key text, payload jsonb, '
                       'headers jsonb, params jsonb) RETURNS boolean LANGUAGE sql STABLE '
                       'RETURN (', fname) || chr(10) || condition || chr(10) || ')';
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'pgbroker: invalid condition %: %', quote_literal(condition), SQLERRM
            USING ERRCODE = '22023';
    END;
    SELECT p.prosqlbody::text INTO body FROM pg_proc p
     WHERE p.oid = format('pgbroker.%I(text, text, jsonb, jsonb, jsonb)', fname)::regprocedure;
    WITH refs AS (
        SELECT m[1] AS kind, m[2]::oid AS id
          FROM regexp_matches(body, ':(funcid|opfuncid|aggfnoid|winfnoid|opno|relid) ([0-9]+)',
                              'g') m),
    funcs AS (
        SELECT r.id FROM refs r WHERE r.kind NOT IN ('opno', 'relid')
        UNION
        SELECT o.oprcode::oid FROM refs r JOIN pg_operator o ON o.oid = r.id WHERE r.kind = 'opno')
    SELECT string_agg(what, ', ' ORDER BY what) INTO bad FROM (
        SELECT format('relation %s', r.id::regclass) AS what
          FROM refs r WHERE r.kind = 'relid' AND r.id <> 0
        UNION
        SELECT format('function %s (%s)', p.oid::regprocedure,
                      CASE WHEN p.provolatile = 'v' THEN 'volatile'
                           WHEN n.nspname LIKE 'pg\_temp%' THEN 'temporary'
                           WHEN p.proname IN ('pg_current_xact_id', 'txid_current')
                           THEN 'assigns a transaction id'
                           ELSE 'stable, outside pg_catalog' END)
          FROM funcs f JOIN pg_proc p ON p.oid = f.id
          JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE p.provolatile = 'v' OR n.nspname LIKE 'pg\_temp%'
            OR (p.provolatile = 's' AND n.nspname <> 'pg_catalog')
            OR p.proname IN ('pg_current_xact_id', 'txid_current')) x;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'pgbroker: invalid condition %: it may only use the event (topic, key, '
                        'payload, headers), params and side-effect-free functions, not %',
                        quote_literal(condition), bad USING ERRCODE = '22023';
    END IF;
    INSERT INTO pgbroker.event_conditions (fn, condition) VALUES (fname, condition);
    RETURN fname;
END
$$;

-- Drops the compiled conditions no subscription uses; returns how many.
CREATE OR REPLACE FUNCTION pgbroker.drop_unused_conditions() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c       record;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgbroker.conditions'));
    FOR c IN SELECT ec.fn FROM pgbroker.event_conditions ec
              WHERE NOT EXISTS (SELECT 1 FROM pgbroker.subscriptions s
                                 WHERE s.condition_fn = ec.fn) LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS pgbroker.%I(text, text, jsonb, jsonb, jsonb)',
                       c.fn);
        DELETE FROM pgbroker.event_conditions ec WHERE ec.fn = c.fn;
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

-- Subscriptions -------------------------------------------------------------------------------

-- Creates a subscription, or updates the patterns, filter (and expiry) of an existing one.
-- start_at is 'end' (default: only events published from now on), 'beginning', or a position
-- '<tx>-<id>' (events after it); it applies only when the subscription is created. filter is a
-- JSON object the events' payloads must contain (payload @> filter; safe for end users'
-- values). condition is a SQL boolean expression over topic, key, payload, headers and params
-- (see pgbroker.compile_condition), params the JSON object it reads; both are fixed once the
-- subscription exists. Returns true when created.
CREATE OR REPLACE FUNCTION pgbroker.subscribe(
    name text,
    patterns text[],
    partitions integer DEFAULT 1,
    start_at text DEFAULT 'end',
    expire_after interval DEFAULT NULL,
    filter jsonb DEFAULT NULL,
    condition text DEFAULT NULL,
    params jsonb DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    regex    text := pgbroker.topic_regex(patterns);
    existing integer;
    cond_fn  text;
    old      record;
    c_tx     xid8;
    c_id     bigint;
BEGIN
    PERFORM pgbroker.check_subscription_name(name);
    IF partitions IS NULL OR partitions NOT BETWEEN 1 AND 1024 THEN
        RAISE EXCEPTION 'pgbroker: partitions must be between 1 and 1024, got %', partitions
            USING ERRCODE = '22023';
    END IF;
    IF filter IS NOT NULL AND jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION 'pgbroker: a subscription filter must be a JSON object, got %',
                        jsonb_typeof(filter) USING ERRCODE = '22023';
    END IF;
    IF params IS NOT NULL AND jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'pgbroker: condition params must be a JSON object, got %',
                        jsonb_typeof(params) USING ERRCODE = '22023';
    END IF;
    IF params IS NOT NULL AND condition IS NULL THEN
        RAISE EXCEPTION 'pgbroker: params without a condition' USING ERRCODE = '22023';
    END IF;
    IF condition IS NOT NULL THEN
        cond_fn := pgbroker.compile_condition(condition);
        params := coalesce(params, '{}');
    END IF;
    IF start_at IS NULL OR start_at = 'end' THEN
        -- Everything committed now is history: start after the last visible event, or at the
        -- horizon when that is later. (Events of a transaction still open now and older than
        -- the last visible event are skipped; use 'beginning' or a position to have them.)
        SELECT e.tx, e.id INTO c_tx, c_id FROM pgbroker.events e
         ORDER BY e.tx DESC, e.id DESC LIMIT 1;
        IF c_tx IS NULL OR c_tx < pg_snapshot_xmin(pg_current_snapshot()) THEN
            c_tx := pg_snapshot_xmin(pg_current_snapshot());
            c_id := 0;
        END IF;
    ELSIF start_at = 'beginning' THEN
        c_tx := '0'::xid8;
        c_id := 0;
    ELSIF start_at ~ '^[0-9]{1,19}-[0-9]{1,19}$' THEN
        c_tx := split_part(start_at, '-', 1)::xid8;
        c_id := split_part(start_at, '-', 2)::bigint;
    ELSE
        RAISE EXCEPTION 'pgbroker: start_at must be ''end'', ''beginning'' or ''<tx>-<id>'', '
                        'got %', quote_literal(start_at) USING ERRCODE = '22023';
    END IF;
    -- Insert-or-update that is safe when several processes subscribe at once (at boot).
    INSERT INTO pgbroker.subscriptions (name, patterns, topic_regex, topic_like, partitions,
                                        expire_after, filter, condition, condition_fn, params)
    VALUES (name, patterns, regex, pgbroker.topic_like(patterns), partitions, expire_after,
            filter, condition, cond_fn, params)
    ON CONFLICT ON CONSTRAINT subscriptions_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT s.partitions, s.condition, s.params INTO old FROM pgbroker.subscriptions s
         WHERE s.name = subscribe.name FOR UPDATE;
        existing := old.partitions;
        IF existing <> partitions THEN
            RAISE EXCEPTION 'pgbroker: subscription % has % partitions, not %: unsubscribe '
                            'and subscribe again to change them', name, existing, partitions
                USING ERRCODE = '22023';
        END IF;
        -- Running consumers compiled the condition and its params into their statements.
        IF old.condition IS DISTINCT FROM subscribe.condition
           OR old.params IS DISTINCT FROM subscribe.params THEN
            RAISE EXCEPTION 'pgbroker: subscription % has another condition or params: '
                            'unsubscribe and subscribe again to change them', name
                USING ERRCODE = '22023';
        END IF;
        UPDATE pgbroker.subscriptions s
           SET patterns = subscribe.patterns, topic_regex = regex,
               topic_like = pgbroker.topic_like(subscribe.patterns),
               expire_after = subscribe.expire_after, filter = subscribe.filter,
               updated_at = now()
         WHERE s.name = subscribe.name;
        RETURN false;
    END IF;
    INSERT INTO pgbroker.subscription_cursors (subscription, partition, tx, id)
    SELECT name, p, c_tx, c_id FROM generate_series(0, partitions - 1) p;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION pgbroker.unsubscribe(name text) RETURNS boolean
LANGUAGE sql AS $$
    WITH d AS (DELETE FROM pgbroker.subscriptions s WHERE s.name = $1 RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM d)
$$;

-- The end of the log: the greater of the newest event's position and (horizon, 0). A cursor
-- past it would skip events not written yet, so ack and seek refuse such a position.
CREATE OR REPLACE FUNCTION pgbroker.log_end(OUT tx xid8, OUT id bigint)
LANGUAGE sql STABLE AS $$
    SELECT e.tx, e.id FROM (
        (SELECT e.tx, e.id FROM pgbroker.events e ORDER BY e.tx DESC, e.id DESC LIMIT 1)
        UNION ALL
        SELECT pg_snapshot_xmin(pg_current_snapshot()), 0) e
     ORDER BY e.tx DESC, e.id DESC LIMIT 1
$$;

-- Returns true when (tx, id) is at or before the end of the log (pgbroker.log_end); raises
-- SQLSTATE 22023 (invalid_parameter_value) naming the position and the log's end otherwise.
-- The usual position (an event read, or the horizon of a read) is below the horizon and costs
-- no lookup.
CREATE OR REPLACE FUNCTION pgbroker.check_position(tx xid8, id bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    end_tx xid8;
    end_id bigint;
BEGIN
    IF tx IS NULL OR id IS NULL THEN
        RAISE EXCEPTION 'pgbroker: a position needs a tx and an id, got %-%', tx, id
            USING ERRCODE = '22023';
    END IF;
    IF (tx, id) <= (pg_snapshot_xmin(pg_current_snapshot()), 0::bigint)
       OR EXISTS (SELECT 1 FROM pgbroker.events e WHERE (e.tx, e.id) >= (check_position.tx,
                                                                          check_position.id)) THEN
        RETURN true;
    END IF;
    SELECT l.tx, l.id INTO end_tx, end_id FROM pgbroker.log_end() l;
    RAISE EXCEPTION 'pgbroker: position %-% is beyond the end of the log (%-%): a cursor there '
                    'would skip events not written yet', tx, id, end_tx, end_id
        USING ERRCODE = '22023';
END
$$;

-- Moves a partition's cursor anywhere up to the end of the log (replay from an older position,
-- or skip ahead); a position beyond the end raises 22023 (see check_position). Returns whether
-- the subscription partition exists.
CREATE OR REPLACE FUNCTION pgbroker.seek(subscription text, tx xid8, id bigint,
                                         part integer DEFAULT 0) RETURNS boolean
LANGUAGE sql AS $$
    WITH u AS (UPDATE pgbroker.subscription_cursors c SET tx = $2, id = $3, active_at = now()
                WHERE c.subscription = $1 AND c.partition = $4
                  AND pgbroker.check_position($2, $3)
                RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM u)
$$;

-- Reading -------------------------------------------------------------------------------------

-- pgbroker.read() and pgbroker.read_after(): schema/statements/read_after.sql (the statement
-- is shared with the Rust consumers).

-- The horizon: every transaction below it has ended, so every event with a smaller tx is
-- readable now. A reader that got fewer events than it asked for may ack (horizon, 0) to skip
-- the other topics' events it scanned (take it in the same statement or snapshot as the read).
CREATE OR REPLACE FUNCTION pgbroker.horizon() RETURNS xid8
LANGUAGE sql STABLE AS $$
    SELECT pg_snapshot_xmin(pg_current_snapshot())
$$;

-- Moves the cursor forward to (tx, id); never backwards (use seek for that). Returns whether the
-- subscription partition exists. A position beyond the end of the log raises 22023 (see
-- check_position): it would make the subscription skip events not written yet.
CREATE OR REPLACE FUNCTION pgbroker.ack(subscription text, tx xid8, id bigint,
                                        part integer DEFAULT 0) RETURNS boolean
LANGUAGE sql AS $$
    SELECT pgbroker.check_position($2, $3);
    WITH u AS (UPDATE pgbroker.subscription_cursors c
                  SET tx = $2, id = $3, active_at = now()
                WHERE c.subscription = $1 AND c.partition = $4
                  AND (c.tx, c.id) < ($2, $3)
                RETURNING 1),
         e AS (SELECT 1 FROM pgbroker.subscription_cursors c
                WHERE c.subscription = $1 AND c.partition = $4)
    SELECT EXISTS (SELECT 1 FROM e)
$$;

-- Balanced consumers ----------------------------------------------------------------------------

-- Who consumes which partition is decided by session-level advisory locks: a consumer reads and
-- acknowledges a partition only on the session holding pgbroker.partition_lock_key(s, part)
-- (exclusive), so no two consumers ever read one partition at once. Balancing only decides
-- which partitions each member *tries* to lock: its share, partitions / members, one more for
-- the (partitions % members) oldest members; it takes partitions nobody holds up to its share and
-- hands back (after acknowledging its current batch) those past it.

CREATE OR REPLACE FUNCTION pgbroker.member_lock_key(subscription text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('pgbroker.members:' || subscription, 0)
$$;

CREATE OR REPLACE FUNCTION pgbroker.partition_lock_key(subscription text, part integer)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('pgbroker.topic:' || subscription || ':' || part, 0)
$$;

-- The advisory locks with bigint keys granted in this database now, and their sessions.
CREATE OR REPLACE FUNCTION pgbroker.advisory_locks_held() RETURNS TABLE (key bigint, pid integer)
LANGUAGE sql STABLE AS $$
    SELECT (l.classid::bigint << 32) | l.objid::bigint, l.pid
      FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
       AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
$$;

-- The live members of a subscription, oldest first (the order that gives out the extra
-- partitions), with the partitions each reported holding at its last check-in.
CREATE OR REPLACE FUNCTION pgbroker.live_members(subscription text)
RETURNS TABLE (pid integer, name text, partitions integer[], joined_at timestamptz,
               seen_at timestamptz)
LANGUAGE sql STABLE AS $$
    WITH held AS MATERIALIZED (
        SELECT l.pid FROM pgbroker.advisory_locks_held() l
         WHERE l.key = pgbroker.member_lock_key($1))
    SELECT m.pid, m.name, m.partitions, m.joined_at, m.seen_at
      FROM pgbroker.subscription_members m
     WHERE m.subscription = $1 AND m.pid IN (SELECT held.pid FROM held)
     ORDER BY m.joined_at, m.pid
$$;

-- Joins (first call) or renews the calling session's membership of a subscription, reporting
-- the partitions it holds, and returns what it needs to balance: the number of live members, its
-- rank among them (0 = oldest), its share of the partitions, and the partitions whose lock some
-- session holds now. Call it about every second on a connection kept for it; take only
-- partitions nobody holds (pg_try_advisory_lock(pgbroker.partition_lock_key(...)) on the
-- connection that reads and acks them), up to the share, and release those past it. Fails with
-- SQLSTATE P0002 when the subscription does not exist (any more).
CREATE OR REPLACE FUNCTION pgbroker.member_checkin(subscription text, name text,
                                                   held integer[] DEFAULT '{}')
RETURNS TABLE (members integer, rank integer, share integer, taken integer[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    k     bigint := pgbroker.member_lock_key($1);
    n     integer;
    fresh boolean;
    live  integer[];
BEGIN
    SELECT s.partitions INTO n FROM pgbroker.subscriptions s WHERE s.name = $1;
    IF n IS NULL THEN
        RAISE EXCEPTION 'pgbroker: no subscription %', quote_literal($1) USING ERRCODE = 'P0002';
    END IF;
    fresh := NOT EXISTS (SELECT 1 FROM pgbroker.advisory_locks_held() l
                          WHERE l.key = k AND l.pid = pg_backend_pid());
    IF fresh THEN
        PERFORM pg_advisory_lock_shared(k);
    END IF;
    -- Written only when something changed, or every 10 s: a steady check-in is read-only, so
    -- it takes no transaction id and never holds back the horizon of readers.
    IF fresh OR NOT EXISTS (
        SELECT 1 FROM pgbroker.subscription_members m
         WHERE m.subscription = $1 AND m.pid = pg_backend_pid() AND m.name = $2
           AND m.partitions = coalesce($3, '{}') AND m.seen_at > now() - interval '10 seconds')
    THEN
        INSERT INTO pgbroker.subscription_members AS m (subscription, pid, name, partitions)
        VALUES ($1, pg_backend_pid(), $2, coalesce($3, '{}'))
        ON CONFLICT ON CONSTRAINT subscription_members_pkey DO UPDATE
           SET name = excluded.name, partitions = excluded.partitions, seen_at = now(),
               joined_at = CASE WHEN fresh THEN now() ELSE m.joined_at END;
    END IF;
    -- Dead members' rows go once they are old: a live member's row is renewed every 10 s.
    DELETE FROM pgbroker.subscription_members m
     WHERE m.subscription = $1 AND m.seen_at < now() - interval '1 minute'
       AND m.pid NOT IN (SELECT l.pid FROM pgbroker.advisory_locks_held() l WHERE l.key = k);
    SELECT array_agg(lm.pid ORDER BY lm.joined_at, lm.pid) INTO live
      FROM pgbroker.live_members($1) lm;
    members := coalesce(cardinality(live), 1);
    rank := coalesce(array_position(live, pg_backend_pid()), 1) - 1;
    share := n / members + CASE WHEN rank < n % members THEN 1 ELSE 0 END;
    SELECT coalesce(array_agg(p ORDER BY p), '{}') INTO taken
      FROM generate_series(0, n - 1) p
     WHERE pgbroker.partition_lock_key($1, p) IN (SELECT l.key FROM pgbroker.advisory_locks_held() l);
    RETURN NEXT;
END
$$;

-- Retries and dead letters ----------------------------------------------------------------------

-- Puts every dead event of a subscription (or those with the given ids) back to be retried now.
CREATE OR REPLACE FUNCTION pgbroker.redrive(subscription text, ids bigint[] DEFAULT NULL)
RETURNS integer
LANGUAGE sql AS $$
    WITH u AS (UPDATE pgbroker.event_retries r
                  SET dead = false, attempt = 0, run_at = now()
                WHERE r.subscription = $1 AND r.dead AND ($2 IS NULL OR r.id = ANY ($2))
                RETURNING 1)
    SELECT count(*)::integer FROM u
$$;

-- Table mutation events -----------------------------------------------------------------------

-- Trigger function: TG_ARGV[0] is the topic prefix '<schema>.<table>' (lower case),
-- TG_ARGV[1] the join condition pairing old_rows o and new_rows n on the primary key (updates
-- only), TG_ARGV[2] the primary key columns as a text[] literal ('' without one), TG_ARGV[3]
-- the columns left out of the payload as a text[] literal ('' for none), TG_ARGV[4] the
-- condition a change must meet to be published ('' for none). The event key is the JSON array
-- of the row's primary key values (of the whole row, left-out columns included), so a
-- partitioned subscription keeps each row's changes in order. Without columns left out or a
-- condition, inserts and deletes run static statements (planned once per session); otherwise
-- one statement per change statement is planned, with the condition over the aliases new and
-- old (a row of NULLs where there is none: old for inserts, new for deletes).
CREATE OR REPLACE FUNCTION pgbroker.table_change_publish() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    head  jsonb := jsonb_build_object('schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME);
    keys  text[] := CASE WHEN TG_ARGV[2] = '' THEN NULL ELSE TG_ARGV[2]::text[] END;
    drops text[] := CASE WHEN coalesce(TG_ARGV[3], '') = '' THEN '{}' ELSE TG_ARGV[3]::text[] END;
    cond  text := coalesce(nullif(TG_ARGV[4], ''), 'true');
    nulls text := format('(SELECT (NULL::%s).*)', TG_RELID::regclass);
BEGIN
    IF TG_OP <> 'UPDATE' AND cardinality(drops) = 0 AND cond = 'true' THEN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO pgbroker.events (topic, payload, key)
            SELECT TG_ARGV[0] || '.insert',
                   head || jsonb_build_object('op', 'insert', 'row', x.r),
                   (SELECT jsonb_agg(x.r -> k)::text FROM unnest(keys) k)
              FROM (SELECT to_jsonb(n) AS r FROM new_rows n) x;
        ELSE
            INSERT INTO pgbroker.events (topic, payload, key)
            SELECT TG_ARGV[0] || '.delete',
                   head || jsonb_build_object('op', 'delete', 'old', x.r),
                   (SELECT jsonb_agg(x.r -> k)::text FROM unnest(keys) k)
              FROM (SELECT to_jsonb(o) AS r FROM old_rows o) x;
        END IF;
    ELSE
        -- The condition was checked to be one expression by publish_table_changes.
        EXECUTE format(
            'INSERT INTO pgbroker.events (topic, payload, key) '
            'SELECT $1, $2 || jsonb_build_object(''op'', $5::text%s%s), '
            '       (SELECT jsonb_agg(to_jsonb(%s) -> k)::text FROM unnest($3) k) '
            '  FROM %s '
            ' WHERE (' || chr(10) || '%s' || chr(10) || ')',
            CASE WHEN TG_OP <> 'DELETE' THEN ', ''row'', to_jsonb(new) - $4' ELSE '' END,
            CASE WHEN TG_OP <> 'INSERT' THEN ', ''old'', to_jsonb(old) - $4' ELSE '' END,
            CASE WHEN TG_OP = 'DELETE' THEN 'old' ELSE 'new' END,
            CASE TG_OP
                WHEN 'INSERT' THEN 'new_rows AS new, ' || nulls || ' AS old'
                WHEN 'DELETE' THEN 'old_rows AS old, ' || nulls || ' AS new'
                ELSE format('new_rows n JOIN old_rows o ON %s, LATERAL (SELECT n.*) AS new, '
                            'LATERAL (SELECT o.*) AS old', TG_ARGV[1]) END,
            cond)
        USING TG_ARGV[0] || '.' || lower(TG_OP), head, keys, drops, lower(TG_OP);
    END IF;
    PERFORM pgbroker.log_wake();
    RETURN NULL;
END
$$;

-- Publishes '<schema>.<table>.insert|update|delete' events (lower case) for every changed row,
-- in the changing transaction (statement-level triggers with transition tables): a rolled back
-- change publishes nothing. Updates carry the new row as "row" and the old one as "old",
-- paired by primary key (required for 'update'); the event key is the JSON array of the
-- primary key values. Shaping, per table:
--   columns          only these columns in "row" / "old" (NULL: all)
--   exclude_columns  every column but these (NULL: none); not with columns
--   condition        a SQL boolean expression over the aliases new and old (the row after and
--                    before the change; NULLs where there is none): only changes for which it
--                    is true are published, e.g. 'new.status IS DISTINCT FROM old.status'.
--                    Written by the table's developers (it runs in every changing transaction
--                    with the writer's rights); it must be one expression, checked here.
-- Calling it again replaces the triggers and the shaping.
CREATE OR REPLACE FUNCTION pgbroker.publish_table_changes(
    tbl regclass,
    ops text[] DEFAULT ARRAY['insert', 'update', 'delete'],
    columns text[] DEFAULT NULL,
    exclude_columns text[] DEFAULT NULL,
    condition text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    nsp     text;
    rel     text;
    prefix  text;
    cond    text;
    pkey    text[];
    op      text;
    all_col text[];
    drops   text[] := '{}';
    unknown text;
    cur     refcursor;
BEGIN
    SELECT n.nspname, c.relname INTO nsp, rel
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    prefix := lower(nsp || '.' || rel);
    IF NOT pgbroker.valid_topic(prefix || '.insert') THEN
        RAISE EXCEPTION 'pgbroker: table % cannot name a topic (use letters, digits, _ and -)',
                        tbl USING ERRCODE = '22023';
    END IF;
    IF ops IS NULL OR cardinality(ops) = 0
       OR EXISTS (SELECT 1 FROM unnest(ops) o WHERE o NOT IN ('insert', 'update', 'delete')) THEN
        RAISE EXCEPTION 'pgbroker: ops must be a non-empty subset of insert, update, delete'
            USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO all_col
      FROM pg_attribute a WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped;
    IF columns IS NOT NULL AND exclude_columns IS NOT NULL THEN
        RAISE EXCEPTION 'pgbroker: give the columns to include or those to exclude, not both'
            USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(quote_ident(c), ', ') INTO unknown
      FROM unnest(coalesce(columns, exclude_columns)) c WHERE c IS NULL OR c <> ALL (all_col);
    IF unknown IS NOT NULL OR cardinality(columns) = 0 THEN
        RAISE EXCEPTION 'pgbroker: table % has no column %', tbl, coalesce(unknown, '(none given)')
            USING ERRCODE = '22023';
    END IF;
    IF columns IS NOT NULL THEN
        SELECT coalesce(array_agg(c), '{}') INTO drops FROM unnest(all_col) c WHERE c <> ALL (columns);
    ELSIF exclude_columns IS NOT NULL THEN
        drops := exclude_columns;
    END IF;
    IF condition IS NOT NULL THEN
        -- One expression and nothing else: a cursor refuses several statements before
        -- running any (planned only, never run: no row).
        BEGIN
            OPEN cur FOR EXECUTE format('SELECT (' || chr(10) || '%s' || chr(10) || ')::boolean '
                                        'FROM (SELECT (NULL::%s).*) AS new, '
                                        '(SELECT (NULL::%s).*) AS old WHERE false',
                                        condition, tbl, tbl);
            CLOSE cur;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'pgbroker: invalid condition % for %: %', quote_literal(condition),
                            tbl, SQLERRM USING ERRCODE = '22023';
        END;
    END IF;
    SELECT string_agg(format('o.%1$I IS NOT DISTINCT FROM n.%1$I', a.attname), ' AND '),
           array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
      INTO cond, pkey
      FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = tbl AND i.indisprimary;
    IF 'update' = ANY (ops) AND cond IS NULL THEN
        RAISE EXCEPTION 'pgbroker: update events of % need a primary key to pair old and '
                        'new rows', tbl USING ERRCODE = '22023';
    END IF;
    PERFORM pgbroker.unpublish_table_changes(tbl);
    FOREACH op IN ARRAY ops LOOP
        EXECUTE format(
            'CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT '
            'EXECUTE FUNCTION pgbroker.table_change_publish(%L, %L, %L, %L, %L)',
            'pgbroker_events_' || op, upper(op), tbl,
            CASE op WHEN 'insert' THEN 'NEW TABLE AS new_rows'
                    WHEN 'delete' THEN 'OLD TABLE AS old_rows'
                    ELSE 'OLD TABLE AS old_rows NEW TABLE AS new_rows' END,
            prefix, coalesce(cond, ''), coalesce(pkey::text, ''),
            CASE WHEN cardinality(drops) = 0 THEN '' ELSE drops::text END,
            coalesce(condition, ''));
    END LOOP;
END
$$;

-- Removes the triggers publish_table_changes installed; returns whether there were any.
CREATE OR REPLACE FUNCTION pgbroker.unpublish_table_changes(tbl regclass) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    t     text;
    found boolean := false;
BEGIN
    FOR t IN SELECT tgname FROM pg_trigger
              WHERE tgrelid = tbl AND tgname LIKE 'pgbroker\_events\_%' LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t, tbl);
        found := true;
    END LOOP;
    RETURN found;
END
$$;

-- Maintenance ---------------------------------------------------------------------------------

-- Creates the daily partitions (UTC days) covering [from_day, to_day]; returns how many it made.
-- A day whose rows already sit in the default partition is skipped (with a warning).
CREATE OR REPLACE FUNCTION pgbroker.create_event_partitions(from_day date, to_day date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d       date;
    name    text;
    lo      timestamptz;
    hi      timestamptz;
    created integer := 0;
    old_lt  text := current_setting('lock_timeout');
BEGIN
    -- Installers and maintenance may create the same day at once.
    PERFORM pg_advisory_xact_lock(hashtext('pgbroker.event_partitions'));
    FOR d IN SELECT generate_series(from_day, to_day, interval '1 day')::date LOOP
        name := 'events_p' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('pgbroker.' || name) IS NOT NULL;
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        IF EXISTS (SELECT 1 FROM pgbroker.events_default
                    WHERE created_at >= lo AND created_at < hi) THEN
            RAISE WARNING 'pgbroker: events of % are in events_default; not partitioning it', d;
            CONTINUE;
        END IF;
        -- Creating locks the events table: do not queue publishers behind a long reader.
        BEGIN
            SET LOCAL lock_timeout = '2s';
            EXECUTE format('CREATE TABLE pgbroker.%I PARTITION OF pgbroker.events '
                           'FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
            created := created + 1;
        EXCEPTION WHEN lock_not_available THEN
            RAISE WARNING 'pgbroker: events table busy, partition % not created this time', name;
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', old_lt, true);
    RETURN created;
END
$$;

-- Daily partitions: premake days ahead are created, partitions wholly older than retention are
-- dropped (with their events, read or not), subscriptions unused for their expire_after are
-- deleted, and stale waiter rows are cleared. Runs under an advisory lock: a concurrent call
-- returns zeros at once.
CREATE OR REPLACE FUNCTION pgbroker.log_maintain(
    retention interval DEFAULT '7 days',
    premake integer DEFAULT 3
) RETURNS TABLE (created integer, dropped integer, expired integer)
LANGUAGE plpgsql AS $$
DECLARE
    p      record;
    today  date := (now() AT TIME ZONE 'UTC')::date;
    old_lt text := current_setting('lock_timeout');
BEGIN
    created := 0; dropped := 0; expired := 0;
    IF NOT pg_try_advisory_xact_lock(hashtext('pgbroker.log_maintain')) THEN
        RETURN NEXT;
        RETURN;
    END IF;
    created := pgbroker.create_event_partitions(today, today + premake);
    FOR p IN SELECT c.relname
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'pgbroker.events'::regclass
                AND c.relname ~ '^events_p[0-9]{8}$'
                AND ((to_date(substr(c.relname, 9), 'YYYYMMDD') + 1)::timestamp
                     AT TIME ZONE 'UTC') <= now() - retention
    LOOP
        -- Dropping locks the whole events table: never queue publishers behind a long reader,
        -- give up on this partition for this run instead.
        BEGIN
            SET LOCAL lock_timeout = '2s';
            EXECUTE format('DROP TABLE pgbroker.%I', p.relname);
            dropped := dropped + 1;
        EXCEPTION WHEN lock_not_available THEN
            RAISE WARNING 'pgbroker: partition % is busy, not dropped this time', p.relname;
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', old_lt, true);
    -- Rows that fell into the default partition (no daily one existed) expire row by row.
    DELETE FROM pgbroker.events_default WHERE created_at < now() - retention;
    WITH d AS (
        DELETE FROM pgbroker.subscriptions s
         WHERE s.expire_after IS NOT NULL
           AND greatest(s.updated_at, (SELECT max(c.active_at) FROM pgbroker.subscription_cursors c
                                        WHERE c.subscription = s.name))
               < now() - s.expire_after
        RETURNING 1)
    SELECT count(*) INTO expired FROM d;
    PERFORM pgbroker.drop_unused_conditions();
    DELETE FROM pgbroker.log_waiters w
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = w.pid);
    RETURN NEXT;
END
$$;

SELECT pgbroker.create_event_partitions((now() AT TIME ZONE 'UTC')::date - 1,
                                        (now() AT TIME ZONE 'UTC')::date + 3);

-- Lag -----------------------------------------------------------------------------------------

-- Per partition: matching events after the cursor (read or not yet readable; by topic and
-- filter: a condition is not evaluated here, so its subscriptions count events it may drop),
-- the age of the oldest of them, events not yet readable because the horizon is held back, and the oldest
-- transaction holding the horizon (its pid and age) when there is one.
CREATE OR REPLACE FUNCTION pgbroker.subscription_lag(subscription text)
RETURNS TABLE (part integer, cursor_tx xid8, cursor_id bigint, events_behind bigint,
               oldest_age interval, beyond_horizon bigint, horizon_pid integer,
               horizon_age interval)
LANGUAGE sql STABLE AS $$
    WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin),
    holder AS (
        SELECT a.pid, now() - a.xact_start AS age
          FROM pg_stat_activity a
         WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid()
         ORDER BY age(a.backend_xid) DESC LIMIT 1)
    SELECT c.partition, c.tx, c.id,
           count(ev.id), now() - min(ev.created_at),
           count(ev.id) FILTER (WHERE ev.tx >= (SELECT xmin FROM h)),
           (SELECT pid FROM holder), (SELECT age FROM holder)
      FROM pgbroker.subscription_cursors c
      JOIN pgbroker.subscriptions s ON s.name = c.subscription
      LEFT JOIN pgbroker.events ev
        ON (ev.tx, ev.id) > (c.tx, c.id)
       AND CASE WHEN s.topic_like IS NULL THEN ev.topic ~ s.topic_regex
                ELSE ev.topic LIKE ANY (s.topic_like) END
       AND (s.partitions = 1
            OR pgbroker.event_partition(ev.key, ev.id, s.partitions) = c.partition)
       AND (s.filter IS NULL OR ev.payload @> s.filter)
     WHERE c.subscription = $1
     GROUP BY c.partition, c.tx, c.id
     ORDER BY c.partition
$$;
