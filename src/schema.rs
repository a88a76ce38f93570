//! Installing and upgrading the SQL side of pgbroker (`schema.sql` and the files it includes).
//!
//! The schema has three parts (see `schema.sql`): `schema/core.sql` (the install lock and the
//! version table), numbered migrations in `schema/migrations/` that change tables, types and
//! indexes and each run once, in order, and `schema/functions/` with `schema/statements/`, every
//! function, trigger function and view, re-created after the migrations on every install (a
//! statement file also gives the Rust code its statement, see src/statements.rs). All of it is
//! embedded, so the library needs no files at run time.

use postgres::GenericClient;

use crate::{Error, ErrorKind, Result};

/// The schema version this library installs and expects: the number of its newest migration.
pub const SCHEMA_VERSION: i32 = 5;

const CORE: &str = include_str!("../schema/core.sql");

/// One numbered step of the tables' history.
struct Migration {
    version: i32,
    path: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first; the last one's number is [`SCHEMA_VERSION`].
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        path: "schema/migrations/0001_baseline.sql",
        sql: include_str!("../schema/migrations/0001_baseline.sql"),
    },
    Migration {
        version: 2,
        path: "schema/migrations/0002_take_guard.sql",
        sql: include_str!("../schema/migrations/0002_take_guard.sql"),
    },
    Migration {
        version: 3,
        path: "schema/migrations/0003_job_features.sql",
        sql: include_str!("../schema/migrations/0003_job_features.sql"),
    },
    Migration {
        version: 4,
        path: "schema/migrations/0004_webhooks.sql",
        sql: include_str!("../schema/migrations/0004_webhooks.sql"),
    },
    Migration {
        version: 5,
        path: "schema/migrations/0005_log_filters.sql",
        sql: include_str!("../schema/migrations/0005_log_filters.sql"),
    },
];

/// The functions, re-created in this order after the migrations.
const FUNCTIONS: &[(&str, &str)] = &[
    (
        "schema/functions/notify.sql",
        include_str!("../schema/functions/notify.sql"),
    ),
    (
        "schema/functions/log.sql",
        include_str!("../schema/functions/log.sql"),
    ),
    (
        "schema/statements/read_after.sql",
        include_str!("../schema/statements/read_after.sql"),
    ),
    (
        "schema/functions/queue.sql",
        include_str!("../schema/functions/queue.sql"),
    ),
    (
        "schema/functions/queue_controls.sql",
        include_str!("../schema/functions/queue_controls.sql"),
    ),
    (
        "schema/functions/job_options.sql",
        include_str!("../schema/functions/job_options.sql"),
    ),
    (
        "schema/functions/schedule.sql",
        include_str!("../schema/functions/schedule.sql"),
    ),
    (
        "schema/functions/routing.sql",
        include_str!("../schema/functions/routing.sql"),
    ),
    (
        "schema/functions/streams.sql",
        include_str!("../schema/functions/streams.sql"),
    ),
    (
        "schema/functions/webhooks.sql",
        include_str!("../schema/functions/webhooks.sql"),
    ),
];

/// The whole schema of a fresh install as one SQL script: the core, every migration and the
/// functions, in the order `Broker::install` applies them.
///
/// # Examples
///
/// ```
/// let sql = pgbroker::schema_sql();
/// assert!(sql.contains("CREATE SCHEMA IF NOT EXISTS pgbroker"));
/// ```
pub fn schema_sql() -> String {
    let mut out = String::with_capacity(160 * 1024);
    out.push_str(CORE);
    for m in MIGRATIONS {
        out.push_str(&format!("\n-- {}\n", m.path));
        out.push_str(m.sql);
        out.push_str(&format!(
            "\nINSERT INTO pgbroker.schema_version (version) VALUES ({}) \
             ON CONFLICT (version) DO NOTHING;\n",
            m.version
        ));
    }
    for (path, sql) in FUNCTIONS {
        out.push_str(&format!("\n-- {path}\n"));
        out.push_str(sql);
    }
    out
}

/// Applies the migrations this database lacks and re-creates the functions, inside one
/// transaction; returns the installed version.
pub(crate) fn install(client: &mut postgres::Client) -> Result<i32> {
    let mut tx = client.transaction()?;
    tx.batch_execute(CORE)
        .map_err(|e| Error::from(e).context("installing the pgbroker schema (schema/core.sql)"))?;
    let found = version(&mut tx)?.unwrap_or(0);
    // Refuse to "upgrade" a database that a newer pgbroker already set up.
    if found > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "database has pgbroker schema version {found}, newer than this library's \
                 {SCHEMA_VERSION}: upgrade pgbroker"
            ),
        ));
    }
    for m in MIGRATIONS {
        let applied = tx
            .query_opt(
                "SELECT 1 FROM pgbroker.schema_version WHERE version = $1",
                &[&m.version],
            )?
            .is_some();
        if applied {
            continue;
        }
        tx.batch_execute(m.sql)
            .map_err(|e| Error::from(e).context(format!("applying migration {}", m.path)))?;
        tx.execute(
            "INSERT INTO pgbroker.schema_version (version) VALUES ($1)",
            &[&m.version],
        )?;
    }
    for (path, sql) in FUNCTIONS {
        tx.batch_execute(sql)
            .map_err(|e| Error::from(e).context(format!("installing {path}")))?;
    }
    tx.commit()?;
    Ok(SCHEMA_VERSION)
}

/// The highest installed schema version, or `None` when pgbroker is not installed.
pub(crate) fn version(client: &mut impl GenericClient) -> Result<Option<i32>> {
    let row = client.query_one(
        "SELECT to_regclass('pgbroker.schema_version') IS NOT NULL",
        &[],
    )?;
    if !row.get::<_, bool>(0) {
        return Ok(None);
    }
    let row = client.query_one("SELECT max(version) FROM pgbroker.schema_version", &[])?;
    Ok(row.get(0))
}

#[cfg(test)]
mod test {
    use super::*;

    const MAIN: &str = include_str!("../schema.sql");

    /// `schema.sql` (for psql) names the same files, in the same order, as the lists above.
    #[test]
    fn schema_sql_for_psql_names_every_part_in_order() {
        let included: Vec<&str> = MAIN
            .lines()
            .filter_map(|l| l.strip_prefix("\\ir "))
            .map(str::trim)
            .collect();
        let mut expected = vec!["schema/core.sql"];
        expected.extend(MIGRATIONS.iter().map(|m| m.path));
        expected.extend(FUNCTIONS.iter().map(|(p, _)| *p));
        assert_eq!(included, expected);
        for m in MIGRATIONS {
            assert!(
                MAIN.contains(&format!("VALUES ({})", m.version)),
                "schema.sql does not record migration {}",
                m.version
            );
        }
    }

    /// Every statement file is installed (its function exists for SQL clients too).
    #[test]
    fn every_statement_file_is_installed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/statements");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let path = format!("schema/statements/{name}");
            assert!(
                FUNCTIONS.iter().any(|(p, _)| *p == path),
                "{path} is not in FUNCTIONS"
            );
        }
    }

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_version() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version,
                i as i32 + 1,
                "migrations are numbered 1, 2, 3, ..."
            );
            assert!(m.path.contains(&format!("{:04}_", m.version)));
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }
}
