//! Table mutation events: statement-level triggers publishing every changed row.

use crate::table_name::validate_table;
use crate::{Broker, Error, ErrorKind, Result, TableOp};

fn table_error(table: &str, e: postgres::Error) -> Error {
    crate::table_name::table_error(table, e).unwrap_or_else(super::subscription::sql_error)
}

impl Broker {
    /// Publishes an event for every row `ops` change in `table`, in the changing transaction,
    /// on topics `<schema>.<table>.insert|update|delete` (statement-level triggers with
    /// transition tables: one INSERT into the log per statement). Payloads are
    /// `{"op", "schema", "table", "row"}` for inserts, `{.., "row", "old"}` for updates (paired
    /// by primary key, which updates require) and `{.., "old"}` for deletes. The event key is
    /// the JSON array of the row's primary key values (`[42]`), so a partitioned subscription
    /// keeps each row's changes in order. Calling it again replaces the triggers.
    ///
    /// `table` is a SQL name (`users`, `public.users`, `"Users"`) resolved by PostgreSQL, never
    /// spliced into SQL; schema and table name must be valid topic segments. Fails with
    /// [`ErrorKind::NotFound`] for a missing table, [`ErrorKind::InvalidInput`] for an update
    /// without primary key or an unusable name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use pgbroker::TableOp;
    /// broker.publish_table_changes("public.users", &TableOp::ALL)?;
    /// broker.subscribe("user-sync", &["public.users.*"])?;
    /// # Ok(()) }
    /// ```
    pub fn publish_table_changes(&self, table: &str, ops: &[TableOp]) -> Result<()> {
        validate_table(table)?;
        if ops.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "publish_table_changes needs at least one operation",
            ));
        }
        let mut ops: Vec<&str> = ops.iter().map(|o| o.as_str()).collect();
        ops.sort_unstable();
        ops.dedup();
        let mut conn = self.conn()?;
        conn.execute(
            "SELECT pgbroker.publish_table_changes($1::text::regclass, $2)",
            &[&table, &ops],
        )
        .map_err(|e| table_error(table, e))?;
        Ok(())
    }

    /// Removes the triggers of [`publish_table_changes`](Self::publish_table_changes).
    /// Returns whether there were any.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker.unpublish_table_changes("public.users")?;
    /// # Ok(()) }
    /// ```
    pub fn unpublish_table_changes(&self, table: &str) -> Result<bool> {
        validate_table(table)?;
        let mut conn = self.conn()?;
        let row = conn
            .query_one(
                "SELECT pgbroker.unpublish_table_changes($1::text::regclass)",
                &[&table],
            )
            .map_err(|e| table_error(table, e))?;
        Ok(row.get(0))
    }
}
