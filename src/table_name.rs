//! Table names given by users (table watches, table-change events): checked before they reach
//! SQL, then resolved by PostgreSQL as a bound `$1::text::regclass`, never spliced into SQL.

use crate::{Error, ErrorKind, Result};

/// Rejects names PostgreSQL could never resolve (empty, NUL, longer than `schema.table` can be).
pub(crate) fn validate_table(table: &str) -> Result<()> {
    if table.trim().is_empty() || table.len() > 2 * 63 + 5 || table.contains('\0') {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!("invalid table name {table:?}"),
        ));
    }
    Ok(())
}

/// Maps "no such table" and "not a name" errors to clear ones; any other error is handed back
/// for the caller's own mapping.
pub(crate) fn table_error(
    table: &str,
    e: postgres::Error,
) -> std::result::Result<Error, postgres::Error> {
    match e.code().map(|c| c.code()) {
        Some("42P01") => Ok(Error::with_cause(
            ErrorKind::NotFound,
            Some(format!("table {table:?} does not exist")),
            e,
        )),
        Some("42602" | "42601") => Ok(Error::with_cause(
            ErrorKind::InvalidName,
            Some(format!("invalid table name {table:?}")),
            e,
        )),
        _ => Err(e),
    }
}
