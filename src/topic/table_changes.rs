//! Table mutation events: statement-level triggers publishing every changed row.

use crate::table_name::validate_table;
use crate::{Broker, Error, ErrorKind, Result, TableOp};

fn table_error(table: &str, e: postgres::Error) -> Error {
    crate::table_name::table_error(table, e).unwrap_or_else(super::subscription::sql_error)
}

/// Publishes a table's row changes as events, shaped; get one from [`Broker::table_changes`].
/// Topics are `<schema>.<table>.insert|update|delete`, lower case (`"Users"` publishes on
/// `public.users.insert`); a rolled back change publishes nothing.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// use pgbroker::TableOp;
/// broker
///     .table_changes("orders")
///     .ops(&[TableOp::Insert, TableOp::Update])
///     .columns(&["id", "status", "total"])
///     .condition("new.status IS DISTINCT FROM old.status")
///     .publish()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "nothing is installed until publish() is called"]
pub struct TableChangesBuilder {
    broker: Broker,
    table: String,
    ops: Vec<TableOp>,
    columns: Option<Vec<String>>,
    exclude_columns: Option<Vec<String>>,
    condition: Option<String>,
}

impl TableChangesBuilder {
    /// The operations published. Default: [`TableOp::ALL`].
    pub fn ops(mut self, ops: &[TableOp]) -> Self {
        self.ops = ops.to_vec();
        self
    }

    /// Only these columns in the payloads' `row` and `old` (the event key still holds the
    /// primary key). Default: every column. Not with
    /// [`exclude_columns`](Self::exclude_columns).
    pub fn columns(mut self, columns: &[&str]) -> Self {
        self.columns = Some(columns.iter().map(|c| c.to_string()).collect());
        self
    }

    /// Every column but these in the payloads (secrets, large blobs). Default: none left out.
    pub fn exclude_columns(mut self, columns: &[&str]) -> Self {
        self.exclude_columns = Some(columns.iter().map(|c| c.to_string()).collect());
        self
    }

    /// Publishes only the changes for which `sql`, a boolean SQL expression over `new` (the
    /// row after the change) and `old` (before it), is true; where there is no such row
    /// (`old` of an insert, `new` of a delete) its columns are NULL. Written by the table's
    /// developers: it runs in every changing transaction with the writer's rights. It must be
    /// one expression, checked at [`publish`](Self::publish). Default: every change.
    pub fn condition(mut self, sql: &str) -> Self {
        self.condition = Some(sql.to_owned());
        self
    }

    /// Installs (or replaces) the triggers. Fails with [`ErrorKind::NotFound`] for a missing
    /// table, [`ErrorKind::InvalidName`] for a bad table name, [`ErrorKind::InvalidInput`] for
    /// no operations, an update without primary key, an unknown column, both column lists, or
    /// a condition that is not one valid expression.
    pub fn publish(self) -> Result<()> {
        validate_table(&self.table)?;
        if self.ops.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "publish_table_changes needs at least one operation",
            ));
        }
        let mut ops: Vec<&str> = self.ops.iter().map(|o| o.as_str()).collect();
        ops.sort_unstable();
        ops.dedup();
        let mut conn = self.broker.conn()?;
        conn.execute(
            "SELECT pgbroker.publish_table_changes($1::text::regclass, $2, $3, $4, $5)",
            &[
                &self.table,
                &ops,
                &self.columns,
                &self.exclude_columns,
                &self.condition,
            ],
        )
        .map_err(|e| table_error(&self.table, e))?;
        Ok(())
    }
}

impl Broker {
    /// Publishes an event for every row `ops` change in `table`, in the changing transaction,
    /// on topics `<schema>.<table>.insert|update|delete` in lower case (statement-level triggers with
    /// transition tables: one INSERT into the log per statement). Payloads are
    /// `{"op", "schema", "table", "row"}` for inserts, `{.., "row", "old"}` for updates (paired
    /// by primary key, which updates require) and `{.., "old"}` for deletes. The event key is
    /// the JSON array of the row's primary key values (`[42]`), so a partitioned subscription
    /// keeps each row's changes in order. A rolled back change publishes nothing. Calling it
    /// again replaces the triggers. To choose columns or changes, see
    /// [`table_changes`](Self::table_changes).
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
        self.table_changes(table).ops(ops).publish()
    }

    /// A builder for [`publish_table_changes`](Self::publish_table_changes) with the events
    /// shaped: which columns the payloads carry and which changes are published.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker
    ///     .table_changes("public.users")
    ///     .exclude_columns(&["password_hash"])
    ///     .condition("new.email IS DISTINCT FROM old.email")
    ///     .publish()?;
    /// # Ok(()) }
    /// ```
    pub fn table_changes(&self, table: &str) -> TableChangesBuilder {
        TableChangesBuilder {
            broker: self.clone(),
            table: table.to_owned(),
            ops: TableOp::ALL.to_vec(),
            columns: None,
            exclude_columns: None,
            condition: None,
        }
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
