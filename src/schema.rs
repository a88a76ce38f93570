//! Installing and upgrading the SQL side of pgbroker (`schema.sql` and the files it includes).

use postgres::GenericClient;

use crate::{Error, ErrorKind, Result};

/// The schema version this library installs and expects.
pub const SCHEMA_VERSION: i32 = 1;

const MAIN: &str = include_str!("../schema.sql");

/// The files `schema.sql` includes with `\ir`, embedded so the library needs no files at run time.
const PARTS: &[(&str, &str)] = &[
    ("schema/core.sql", include_str!("../schema/core.sql")),
    ("schema/notify.sql", include_str!("../schema/notify.sql")),
    ("schema/log.sql", include_str!("../schema/log.sql")),
    ("schema/queue.sql", include_str!("../schema/queue.sql")),
    ("schema/routing.sql", include_str!("../schema/routing.sql")),
    ("schema/version.sql", include_str!("../schema/version.sql")),
];

/// The whole schema as one SQL script: `schema.sql` with its `\ir` includes expanded.
///
/// # Examples
///
/// ```
/// let sql = pgbroker::schema_sql();
/// assert!(sql.contains("CREATE SCHEMA IF NOT EXISTS pgbroker"));
/// ```
pub fn schema_sql() -> String {
    let mut out = String::with_capacity(64 * 1024);
    for line in MAIN.lines() {
        match line.strip_prefix("\\ir ") {
            Some(path) => {
                let path = path.trim();
                // A missing part is a packaging bug caught by the unit test below.
                let part = PARTS
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map_or("", |(_, s)| s);
                out.push_str(part);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Applies the schema inside one transaction and returns the installed version.
pub(crate) fn install(client: &mut postgres::Client) -> Result<i32> {
    let mut tx = client.transaction()?;
    // Refuse to "upgrade" a database that a newer pgbroker already set up.
    if let Some(found) = version(&mut tx)? {
        if found > SCHEMA_VERSION {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "database has pgbroker schema version {found}, newer than this library's \
                     {SCHEMA_VERSION}: upgrade pgbroker"
                ),
            ));
        }
    }
    tx.batch_execute(&schema_sql())
        .map_err(|e| Error::from(e).context("installing the pgbroker schema"))?;
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

    #[test]
    fn every_include_is_embedded() {
        for line in MAIN.lines() {
            if let Some(path) = line.strip_prefix("\\ir ") {
                assert!(
                    PARTS.iter().any(|(p, _)| *p == path.trim()),
                    "{path} is not embedded in PARTS"
                );
            }
        }
        assert!(!schema_sql().contains("\\ir"));
    }

    #[test]
    fn version_file_matches_constant() {
        let v = PARTS
            .iter()
            .find(|(p, _)| *p == "schema/version.sql")
            .unwrap()
            .1;
        assert!(v.contains(&format!("VALUES ({SCHEMA_VERSION})")));
    }
}
