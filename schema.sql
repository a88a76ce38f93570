-- pgbroker schema: tables, indexes and SQL functions of the pgbroker protocol.
--
-- Apply it to install or upgrade (existing data is kept), either with
--     psql -v ON_ERROR_STOP=1 -1 -f schema.sql "$DATABASE_URL"
-- or from Rust with `Broker::install()` (the CLI: `pgbroker setup`). Everything lives in the
-- `pgbroker` schema.
--
-- Layout:
--   schema/core.sql          the install lock, the schema and the version table
--   schema/migrations/*.sql  numbered steps that change tables, types and indexes; each runs
--                            once, in order, and records its number in pgbroker.schema_version
--   schema/functions/*.sql   every function, trigger function and view, (re)created after the
--                            migrations on every install (one source per statement)
-- A new schema change is a new migration file listed below and in src/schema.rs (MIGRATIONS),
-- and SCHEMA_VERSION goes up to its number.
\ir schema/core.sql

SELECT NOT EXISTS (SELECT 1 FROM pgbroker.schema_version WHERE version = 1) AS pgbroker_migration_1 \gset
\if :pgbroker_migration_1
\ir schema/migrations/0001_baseline.sql
INSERT INTO pgbroker.schema_version (version) VALUES (1);
\endif

SELECT NOT EXISTS (SELECT 1 FROM pgbroker.schema_version WHERE version = 6) AS pgbroker_migration_6 \gset
\if :pgbroker_migration_6
\ir schema/migrations/0006_job_features.sql
INSERT INTO pgbroker.schema_version (version) VALUES (6);
\endif

\ir schema/functions/notify.sql
\ir schema/functions/log.sql
\ir schema/functions/queue.sql
\ir schema/functions/queue_controls.sql
\ir schema/functions/job_options.sql
\ir schema/functions/schedule.sql
\ir schema/functions/routing.sql
