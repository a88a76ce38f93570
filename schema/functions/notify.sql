-- Pub/sub: table-change notifications (a trigger notifies every row change as JSON).
--
-- pgbroker.watch_table(tbl, channel, ops) installs an AFTER ... FOR EACH ROW trigger that sends
-- one NOTIFY per changed row on `channel`, with a JSON payload:
--   insert: {"op":"insert","schema":..,"table":..,"row":{..}}
--   update: {"op":"update","schema":..,"table":..,"row":{..new..},"old":{..old..}}
--   delete: {"op":"delete","schema":..,"table":..,"old":{..}}
-- When that would exceed NOTIFY's 7999-byte limit, the payload carries the primary key instead:
--   {"op":..,"schema":..,"table":..,"truncated":true,"key":{..}} ("key" is absent without a
--   primary key). The notification is sent when the writing transaction commits.

CREATE OR REPLACE FUNCTION pgbroker.watch_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    channel text := TG_ARGV[0];
    head    jsonb := jsonb_build_object('op', lower(TG_OP), 'schema', TG_TABLE_SCHEMA,
                                        'table', TG_TABLE_NAME);
    body    jsonb;
    payload text;
    keyrow  jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        body := jsonb_build_object('row', to_jsonb(NEW));
    ELSIF TG_OP = 'UPDATE' THEN
        body := jsonb_build_object('row', to_jsonb(NEW), 'old', to_jsonb(OLD));
    ELSE
        body := jsonb_build_object('old', to_jsonb(OLD));
    END IF;
    payload := (head || body)::text;
    IF octet_length(payload) > 7999 THEN
        keyrow := CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
        SELECT jsonb_object_agg(a.attname, keyrow -> a.attname::text)
          INTO body
          FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = TG_RELID AND i.indisprimary;
        payload := (head || jsonb_build_object('truncated', true)
                         || CASE WHEN body IS NULL THEN '{}'::jsonb
                                 ELSE jsonb_build_object('key', body) END)::text;
        IF octet_length(payload) > 7999 THEN
            payload := (head || jsonb_build_object('truncated', true))::text;
        END IF;
    END IF;
    PERFORM pg_notify(channel, payload);
    RETURN NULL;
END
$$;

-- The trigger's name for a channel: readable when it fits in an identifier.
CREATE OR REPLACE FUNCTION pgbroker.watch_trigger_name(channel text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN octet_length(channel) <= 48 THEN 'pgbroker_watch_' || channel
                ELSE 'pgbroker_watch_' || md5(channel) END
$$;

CREATE OR REPLACE FUNCTION pgbroker.watch_table(
    tbl regclass,
    channel text,
    ops text[] DEFAULT ARRAY['insert', 'update', 'delete']
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    events text;
BEGIN
    IF channel IS NULL OR channel = '' OR octet_length(channel) > 63 THEN
        RAISE EXCEPTION 'pgbroker: channel name must be 1 to 63 bytes, got %', channel
            USING ERRCODE = '22023';
    END IF;
    IF ops IS NULL OR cardinality(ops) = 0
       OR EXISTS (SELECT 1 FROM unnest(ops) op WHERE op NOT IN ('insert', 'update', 'delete')) THEN
        RAISE EXCEPTION 'pgbroker: ops must be a non-empty subset of insert, update, delete'
            USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(DISTINCT upper(op), ' OR ') INTO events FROM unnest(ops) op;
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', pgbroker.watch_trigger_name(channel), tbl);
    EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s FOR EACH ROW '
                   'EXECUTE FUNCTION pgbroker.watch_notify(%L)',
                   pgbroker.watch_trigger_name(channel), events, tbl, channel);
END
$$;

CREATE OR REPLACE FUNCTION pgbroker.unwatch_table(tbl regclass, channel text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    existed boolean;
BEGIN
    SELECT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = tbl AND tgname = pgbroker.watch_trigger_name(channel))
      INTO existed;
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', pgbroker.watch_trigger_name(channel), tbl);
    RETURN existed;
END
$$;
