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
--   schema/statements/*.sql  statements that the Rust code runs too, each in a file named for
--                            it that creates the function(s) running it, like the files above;
--                            the statement itself stands between the lines
--                                -- statement <name>
--                                -- end statement <name>
--                            and the Rust code takes exactly those lines out of the same file
--                            when it is compiled (src/statements.rs): one source, no copy
-- A new schema change is a new migration file listed below and in src/schema.rs (MIGRATIONS),
-- and SCHEMA_VERSION goes up to its number.
\ir schema/core.sql

SELECT NOT EXISTS (SELECT 1 FROM pgbroker.schema_version WHERE version = 1) AS pgbroker_migration_1 \gset
\if :pgbroker_migration_1
\ir schema/migrations/0001_baseline.sql
INSERT INTO pgbroker.schema_version (version) VALUES (1);
\endif

SELECT NOT EXISTS (SELECT 1 FROM pgbroker.schema_version WHERE version = 2) AS pgbroker_migration_2 \gset
\if :pgbroker_migration_2
\ir schema/migrations/0002_take_guard.sql
INSERT INTO pgbroker.schema_version (version) VALUES (2);
\endif

SELECT NOT EXISTS (SELECT 1 FROM pgbroker.schema_version WHERE version = 3) AS pgbroker_migration_3 \gset
\if :pgbroker_migration_3
\ir schema/migrations/0003_job_features.sql
INSERT INTO pgbroker.schema_version (version) VALUES (3);
\endif

SELECT NOT EXISTS (SELECT 1 FROM pgbroker.schema_version WHERE version = 4) AS pgbroker_migration_4 \gset
\if :pgbroker_migration_4
\ir schema/migrations/0004_webhooks.sql
INSERT INTO pgbroker.schema_version (version) VALUES (4);
\endif

SELECT NOT EXISTS (SELECT 1 FROM pgbroker.schema_version WHERE version = 5) AS pgbroker_migration_5 \gset
\if :pgbroker_migration_5
\ir schema/migrations/0005_log_filters.sql
INSERT INTO pgbroker.schema_version (version) VALUES (5);
\endif

\ir schema/functions/notify.sql
\ir schema/functions/log.sql
\ir schema/statements/read_after.sql
\ir schema/functions/queue.sql
\ir schema/functions/queue_controls.sql
\ir schema/functions/job_options.sql
\ir schema/functions/schedule.sql
\ir schema/functions/routing.sql
\ir schema/functions/streams.sql
\ir schema/functions/webhooks.sql
