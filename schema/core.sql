-- Core: an install lock, the schema and the version table.

-- Concurrent installers (several processes starting at once) run one after another; even
-- CREATE ... IF NOT EXISTS races without this.
SELECT pg_advisory_xact_lock(hashtext('pgbroker.install'));

CREATE SCHEMA IF NOT EXISTS pgbroker;

CREATE TABLE IF NOT EXISTS pgbroker.schema_version (
    version      integer PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON SCHEMA pgbroker IS 'pgbroker: pub/sub, durable event log and job queue';
