-- Webhook endpoints (pgbroker-http): managing them, and the delivery state changes that
-- `pgbroker serve` makes. An endpoint gets the events matching its patterns in log order;
-- an event that keeps failing holds back the endpoint's later events until its retry
-- schedule runs out, then it is dead (kept in webhook_dead_deliveries, re-drivable).

-- The session-level advisory lock a server holds while it delivers to an endpoint, so several
-- servers never deliver to one endpoint at once.
CREATE OR REPLACE FUNCTION pgbroker.webhook_lock_key(endpoint bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT hashtextextended('pgbroker.webhook:' || endpoint, 0)
$$;

-- Adds an endpoint and returns its id and secret (generated when NULL: whsec_ and 32 random
-- bytes in base64). It gets the events published from now on. The retry schedule is the
-- wait after each failure; NULL means 1 min, 5 min, 15 min, 1 h, 6 h; after the last, dead.
CREATE OR REPLACE FUNCTION pgbroker.webhook_add(url text, patterns text[], secret text DEFAULT NULL,
                                                headers jsonb DEFAULT '{}',
                                                retry_schedule interval[] DEFAULT NULL)
RETURNS TABLE (endpoint_id bigint, endpoint_secret text)
LANGUAGE plpgsql AS $$
DECLARE
    s   text := webhook_add.secret;
    rs  interval[] := coalesce(webhook_add.retry_schedule,
                               '{1 minute,5 minutes,15 minutes,1 hour,6 hours}'::interval[]);
    h   jsonb := coalesce(webhook_add.headers, '{}');
    new bigint;
BEGIN
    IF url IS NULL OR url !~ '^https?://[^/\s?#]+(/\S*)?$' THEN
        RAISE EXCEPTION 'pgbroker: invalid webhook URL %: use http(s)://host/path', quote_nullable(url)
            USING ERRCODE = '22023';
    END IF;
    PERFORM pgbroker.topic_regex(patterns); -- checks them
    IF s IS NULL THEN
        s := 'whsec_' || encode(decode(replace(gen_random_uuid()::text, '-', '')
                                       || replace(gen_random_uuid()::text, '-', ''), 'hex'), 'base64');
    ELSIF s !~ '^whsec_[A-Za-z0-9+/]{4,}={0,2}$' THEN
        RAISE EXCEPTION 'pgbroker: a webhook secret is whsec_ followed by base64'
            USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(h) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_each(h) e
                   WHERE jsonb_typeof(e.value) <> 'string' OR e.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$') THEN
        RAISE EXCEPTION 'pgbroker: webhook headers must be an object of header names to strings'
            USING ERRCODE = '22023';
    END IF;
    IF cardinality(rs) IS NULL OR EXISTS (SELECT 1 FROM unnest(rs) r WHERE r IS NULL OR r <= interval '0') THEN
        RAISE EXCEPTION 'pgbroker: a webhook retry schedule is a list of positive intervals'
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO pgbroker.webhook_endpoints (url, patterns, secret, headers, retry_schedule, cursor_tx)
    VALUES (url, patterns, s, h, rs, pg_snapshot_xmin(pg_current_snapshot()))
    RETURNING id INTO new;
    RETURN QUERY SELECT new, s;
END
$$;

-- Enables or disables an endpoint (a disabled one keeps its place and resumes there).
-- Returns whether it exists.
CREATE OR REPLACE FUNCTION pgbroker.webhook_set_enabled(endpoint bigint, enabled boolean,
                                                        reason text DEFAULT NULL)
RETURNS boolean LANGUAGE sql AS $$
    WITH u AS (UPDATE pgbroker.webhook_endpoints w
                  SET enabled = $2, disabled_reason = CASE WHEN $2 THEN NULL ELSE $3 END,
                      attempt = CASE WHEN $2 THEN 0 ELSE w.attempt END,
                      next_attempt_at = CASE WHEN $2 THEN NULL ELSE w.next_attempt_at END,
                      updated_at = now()
                WHERE w.id = $1 RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM u)
$$;

-- Removes an endpoint and its dead deliveries. Returns whether it existed.
CREATE OR REPLACE FUNCTION pgbroker.webhook_remove(endpoint bigint) RETURNS boolean
LANGUAGE sql AS $$
    WITH d AS (DELETE FROM pgbroker.webhook_endpoints w WHERE w.id = $1 RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM d)
$$;

-- Marks an endpoint's dead deliveries (all, or one event's) for one more delivery each; they
-- go out before the endpoint's next event. Returns how many.
CREATE OR REPLACE FUNCTION pgbroker.webhook_redrive(endpoint bigint, event_id bigint DEFAULT NULL)
RETURNS bigint LANGUAGE sql AS $$
    WITH u AS (UPDATE pgbroker.webhook_dead_deliveries d SET redrive = true
                WHERE d.endpoint_id = $1 AND ($2 IS NULL OR d.event_id = $2) AND NOT d.redrive
                RETURNING 1)
    SELECT count(*) FROM u
$$;

-- The endpoint delivered the event at (tx, id), the one after its cursor (from_tx, from_id):
-- the cursor moves there. False when the cursor had moved meanwhile.
CREATE OR REPLACE FUNCTION pgbroker.webhook_delivered(endpoint bigint, from_tx xid8, from_id bigint,
                                                      tx xid8, id bigint, status integer)
RETURNS boolean LANGUAGE sql AS $$
    WITH u AS (UPDATE pgbroker.webhook_endpoints w
                  SET cursor_tx = $4, cursor_id = $5, attempt = 0, next_attempt_at = NULL,
                      last_status = $6, last_error = NULL, delivered = w.delivered + 1,
                      updated_at = now()
                WHERE w.id = $1 AND w.cursor_tx = $2 AND w.cursor_id = $3 RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM u)
$$;

-- Delivering the event at (tx, id) failed: wait the schedule's next interval, or after the
-- last one copy the event into webhook_dead_deliveries and move past it. Returns 'retry',
-- 'dead', or 'moved' when the cursor had moved meanwhile.
CREATE OR REPLACE FUNCTION pgbroker.webhook_failed(endpoint bigint, from_tx xid8, from_id bigint,
                                                   tx xid8, id bigint, status integer, error text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    w pgbroker.webhook_endpoints;
BEGIN
    SELECT * INTO w FROM pgbroker.webhook_endpoints e
     WHERE e.id = endpoint AND e.cursor_tx = from_tx AND e.cursor_id = from_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'moved';
    END IF;
    IF w.attempt < cardinality(w.retry_schedule) THEN
        UPDATE pgbroker.webhook_endpoints e
           SET attempt = w.attempt + 1, next_attempt_at = now() + w.retry_schedule[w.attempt + 1],
               last_status = status, last_error = error, failed = e.failed + 1, updated_at = now()
         WHERE e.id = endpoint;
        RETURN 'retry';
    END IF;
    INSERT INTO pgbroker.webhook_dead_deliveries AS d
           (endpoint_id, event_id, tx, topic, payload, headers, key, created_at, attempts,
            last_status, last_error)
    SELECT endpoint, ev.id, ev.tx, ev.topic, ev.payload, ev.headers, ev.key, ev.created_at,
           w.attempt + 1, status, error
      FROM pgbroker.events ev WHERE ev.tx = webhook_failed.tx AND ev.id = webhook_failed.id
    ON CONFLICT (endpoint_id, event_id) DO UPDATE
       SET attempts = d.attempts + EXCLUDED.attempts, last_status = EXCLUDED.last_status,
           last_error = EXCLUDED.last_error, failed_at = now(), redrive = false;
    UPDATE pgbroker.webhook_endpoints e
       SET cursor_tx = webhook_failed.tx, cursor_id = webhook_failed.id, attempt = 0,
           next_attempt_at = NULL, last_status = status, last_error = error,
           failed = e.failed + 1, updated_at = now()
     WHERE e.id = endpoint;
    RETURN 'dead';
END
$$;

-- A re-driven dead delivery succeeded (the row goes) or failed again (it stays dead).
CREATE OR REPLACE FUNCTION pgbroker.webhook_redriven(endpoint bigint, event_id bigint,
                                                     ok boolean, status integer, error text)
RETURNS void LANGUAGE sql AS $$
    DELETE FROM pgbroker.webhook_dead_deliveries d
     WHERE $3 AND d.endpoint_id = $1 AND d.event_id = $2;
    UPDATE pgbroker.webhook_dead_deliveries d
       SET redrive = false, attempts = d.attempts + 1, last_status = $4, last_error = $5,
           failed_at = now()
     WHERE NOT $3 AND d.endpoint_id = $1 AND d.event_id = $2;
$$;

-- Every endpoint with its delivery state and number of dead deliveries.
CREATE OR REPLACE FUNCTION pgbroker.webhook_list()
RETURNS TABLE (id bigint, url text, patterns text[], enabled boolean, disabled_reason text,
               headers jsonb, retry_schedule interval[], attempt integer,
               next_attempt_at timestamptz, last_status integer, last_error text,
               delivered bigint, failed bigint, dead bigint, created_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT w.id, w.url, w.patterns, w.enabled, w.disabled_reason, w.headers, w.retry_schedule,
           w.attempt, w.next_attempt_at, w.last_status, w.last_error, w.delivered, w.failed,
           (SELECT count(*) FROM pgbroker.webhook_dead_deliveries d WHERE d.endpoint_id = w.id),
           w.created_at
      FROM pgbroker.webhook_endpoints w ORDER BY w.id
$$;
