//! Table watch: a trigger that notifies every inserted, updated or deleted row as JSON.

use super::validate_channel;
use crate::table_name::validate_table;
use crate::{Broker, Error, ErrorKind, Result};

/// A kind of row change a table watch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableOp {
    /// `INSERT`: the payload has `row`.
    Insert,
    /// `UPDATE`: the payload has `row` (new) and `old`.
    Update,
    /// `DELETE`: the payload has `old`.
    Delete,
}

impl TableOp {
    /// All three operations.
    pub const ALL: [TableOp; 3] = [TableOp::Insert, TableOp::Update, TableOp::Delete];

    /// The lower-case name used in payloads (`"insert"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TableOp::Insert => "insert",
            TableOp::Update => "update",
            TableOp::Delete => "delete",
        }
    }
}

fn table_error(table: &str, e: postgres::Error) -> Error {
    crate::table_name::table_error(table, e).unwrap_or_else(Error::from)
}

impl Broker {
    /// Installs a trigger on `table` that notifies `channel` of every row change in `ops`,
    /// as JSON `{"op","schema","table","row","old"}` (see `schema/functions/notify.sql`). A row too
    /// large for a notification is reported by its primary key with `"truncated": true`.
    /// Calling it again for the same table and channel replaces the trigger.
    ///
    /// `table` is a SQL name (`orders`, `public.orders`, `"My Table"`), resolved by
    /// PostgreSQL; it is never spliced into SQL text.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use pgbroker::TableOp;
    /// broker.watch_table("job", "job_channel", &TableOp::ALL)?;
    /// let listener = broker.listen("job_channel")?;
    /// # Ok(()) }
    /// ```
    pub fn watch_table(&self, table: &str, channel: &str, ops: &[TableOp]) -> Result<()> {
        validate_table(table)?;
        validate_channel(channel)?;
        if ops.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "watch_table needs at least one operation",
            ));
        }
        let ops: Vec<&str> = ops.iter().map(|o| o.as_str()).collect();
        let mut conn = self.conn()?;
        conn.execute(
            "SELECT pgbroker.watch_table($1::text::regclass, $2, $3)",
            &[&table, &channel, &ops],
        )
        .map_err(|e| table_error(table, e))?;
        Ok(())
    }

    /// Removes the trigger [`watch_table`](Self::watch_table) installed for `table` and
    /// `channel`. Returns whether there was one.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// assert!(broker.unwatch_table("job", "job_channel")?);
    /// # Ok(()) }
    /// ```
    pub fn unwatch_table(&self, table: &str, channel: &str) -> Result<bool> {
        validate_table(table)?;
        validate_channel(channel)?;
        let mut conn = self.conn()?;
        let row = conn
            .query_one(
                "SELECT pgbroker.unwatch_table($1::text::regclass, $2)",
                &[&table, &channel],
            )
            .map_err(|e| table_error(table, e))?;
        Ok(row.get(0))
    }
}
