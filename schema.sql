-- pgbroker schema: tables, indexes and SQL functions of the pgbroker protocol.
--
-- Idempotent: apply it to install or upgrade (existing data is kept), either with
--     psql -v ON_ERROR_STOP=1 -1 -f schema.sql "$DATABASE_URL"
-- or from Rust with `Broker::install()`. Everything lives in the `pgbroker` schema.
-- The parts are included in this order; each is safe to run again.
\ir schema/core.sql
\ir schema/notify.sql
\ir schema/log.sql
\ir schema/queue.sql
\ir schema/routing.sql
\ir schema/version.sql
