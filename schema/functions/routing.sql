-- Routing (AMQP exchange -> queue): a queue bound to topic patterns receives one job per
-- matching event, inserted in the publishing transaction (so a rolled-back publish enqueues
-- nothing). The job's payload carries the event:
--   {"event_id": .., "topic": .., "key": .., "headers": .., "payload": ..}
-- The routing trigger exists only while at least one binding exists: publishers pay nothing
-- when routing is unused.

CREATE OR REPLACE FUNCTION pgbroker.route_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    q text;
BEGIN
    FOR q IN
        WITH routed AS (
            INSERT INTO pgbroker.jobs (queue, payload)
            SELECT b.queue,
                   jsonb_build_object('event_id', e.id, 'topic', e.topic, 'key', e.key,
                                      'headers', e.headers, 'payload', e.payload)
              FROM new_events e
              JOIN pgbroker.queue_bindings b ON e.topic ~ b.regex
             ORDER BY e.id, b.queue
            RETURNING queue
        )
        SELECT DISTINCT queue FROM routed
    LOOP
        PERFORM pgbroker.wake(q);
    END LOOP;
    RETURN NULL;
END
$$;

-- Binds `queue` to topic `pattern` (same syntax as subscriptions). True when newly bound.
CREATE OR REPLACE FUNCTION pgbroker.bind_queue(queue text, pattern text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    added boolean;
BEGIN
    PERFORM pgbroker.check_queue_name(bind_queue.queue);
    -- Serialises binding changes so the trigger is created or dropped exactly once.
    PERFORM pg_advisory_xact_lock(hashtext('pgbroker.queue_bindings'));
    INSERT INTO pgbroker.queue_bindings (queue, pattern, regex)
    VALUES (bind_queue.queue, bind_queue.pattern, pgbroker.topic_regex(ARRAY[bind_queue.pattern]))
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = 'pgbroker.events'::regclass AND tgname = 'events_route') THEN
        CREATE TRIGGER events_route AFTER INSERT ON pgbroker.events
            REFERENCING NEW TABLE AS new_events
            FOR EACH STATEMENT EXECUTE FUNCTION pgbroker.route_events();
    END IF;
    RETURN added;
END
$$;

-- Removes a binding. True when it existed. Drops the trigger with the last binding.
CREATE OR REPLACE FUNCTION pgbroker.unbind_queue(queue text, pattern text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    removed boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgbroker.queue_bindings'));
    DELETE FROM pgbroker.queue_bindings b
     WHERE b.queue = unbind_queue.queue AND b.pattern = unbind_queue.pattern;
    GET DIAGNOSTICS removed = ROW_COUNT;
    IF NOT EXISTS (SELECT 1 FROM pgbroker.queue_bindings) THEN
        DROP TRIGGER IF EXISTS events_route ON pgbroker.events;
    END IF;
    RETURN removed;
END
$$;
