-- Migration 5: filtered subscriptions (issue 18).
--
-- filter     a JSON object: the subscription reads only events whose payload contains it
--            (payload @> filter). A value, bound, never SQL: safe for end users' input.
-- condition  a SQL boolean expression over the event (topic, key, payload, headers) and
--            params, written by developers; compiled once by pgbroker.compile_condition into
--            the function pgbroker.<condition_fn> (shared by every subscription with the same
--            text) that reads call with the subscription's params.
-- params     the JSON object the condition reads as `params` (per subscription).
ALTER TABLE pgbroker.subscriptions ADD COLUMN IF NOT EXISTS filter jsonb;
ALTER TABLE pgbroker.subscriptions ADD COLUMN IF NOT EXISTS condition text;
ALTER TABLE pgbroker.subscriptions ADD COLUMN IF NOT EXISTS condition_fn text;
ALTER TABLE pgbroker.subscriptions ADD COLUMN IF NOT EXISTS params jsonb;

-- Every compiled condition: its function (pgbroker.cond_<md5 of the text>) and its text.
-- Maintenance drops those no subscription uses any more.
CREATE TABLE IF NOT EXISTS pgbroker.event_conditions (
    fn         text        PRIMARY KEY,
    condition  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- pgbroker.subscribe gained filter, condition and params (schema/functions/log.sql).
DROP FUNCTION IF EXISTS pgbroker.subscribe(text, text[], integer, text, interval);

-- pgbroker.publish_table_changes gained columns, exclude_columns and condition.
DROP FUNCTION IF EXISTS pgbroker.publish_table_changes(regclass, text[]);
