-- Core: the schema, an install lock and the version table.
CREATE SCHEMA IF NOT EXISTS pgbroker;

-- Concurrent installers (several processes starting at once) run one after another.
SELECT pg_advisory_xact_lock(hashtext('pgbroker.install'));

CREATE TABLE IF NOT EXISTS pgbroker.schema_version (
    version      integer PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON SCHEMA pgbroker IS 'pgbroker: pub/sub, durable event log and job queue';
