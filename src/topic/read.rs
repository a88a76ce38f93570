//! The pull API: read a batch after a subscription's cursor, then acknowledge it.

use std::sync::Arc;

use postgres::GenericClient;

use super::json_text::Xid8;
use super::subscription::{not_found, sql_error};
use super::{validate_subscription, LogEvent, Position};
use crate::statement::Stmt;
use crate::statements::{self, statement};
use crate::{Broker, Error, ErrorKind, Result};

/// The most events one read returns.
pub const MAX_READ: usize = 10_000;

/// The pull API reads through the SQL function, whose settings give the right plan, and also
/// returns the horizon of the same snapshot in a last row (the function is STABLE: it shares
/// the statement's snapshot). No join or sort around the function: they cost the server a
/// third more than the function itself.
const READ_FN_SQL: &str = "\
SELECT id, topic, payload, headers, key, tx, created_at, NULL::xid8
  FROM pgbroker.read($1, $2, $3)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, pg_snapshot_xmin(pg_current_snapshot())";

/// Planner settings for [`READ_SQL`], set on consumer connections (as `pgbroker.read_after()` sets
/// them for its body): walk the `(tx, id)` index in order and stop at the limit.
pub(crate) const READ_SETTINGS: &str =
    "SET enable_sort = off; SET enable_bitmapscan = off; SET jit = off";

/// The statement of `pgbroker.read_after()` (schema/statements/read_after.sql): the events after
/// a given position (`$4`, `$5`) rather than the stored cursor, plus a last row with only the
/// horizon of the same snapshot (in the `tx` column). A consumer holds its partition alone, so
/// it knows where it is: it can read the next batch before acknowledging the one its handler
/// has. Prepared once per consumer connection.
pub(crate) const READ_SQL: &str = statements::as_str(&READ_SQL_BYTES);

const READ_SQL_PARTS: &[&str] = &[
    "(",
    statement!("read_after"),
    ")\nUNION ALL\nSELECT NULL, NULL, NULL, NULL, NULL, pg_snapshot_xmin(pg_current_snapshot()), NULL",
];
const READ_SQL_BYTES: [u8; statements::total_len(READ_SQL_PARTS)] =
    statements::concat(READ_SQL_PARTS);

/// Moves the cursor forward (never back): the pull API's `ack`. A position beyond the end of
/// the log raises 22023 (`pgbroker.check_position`, schema/functions/log.sql): the cursor would
/// skip events not written yet.
pub(crate) const ACK_SQL: &str = "\
UPDATE pgbroker.subscription_cursors SET tx = $3, id = $4, active_at = now()
 WHERE subscription = $1 AND partition = $2 AND (tx, id) < ($3, $4)
   AND pgbroker.check_position($3, $4)";

/// Moves the cursor from where the consumer left it (`$3`, `$4`) to `$5`, `$6`: no row when
/// someone else moved it meanwhile ([`Broker::seek`]), which the consumer then follows.
pub(crate) const CONSUMER_ACK_SQL: &str = "\
UPDATE pgbroker.subscription_cursors SET tx = $5, id = $6, active_at = now()
 WHERE subscription = $1 AND partition = $2 AND tx = $3 AND id = $4";

/// A partition's stored cursor.
pub(crate) const CURSOR_SQL: &str =
    "SELECT tx, id FROM pgbroker.subscription_cursors WHERE subscription = $1 AND partition = $2";

pub(crate) const EXISTS_SQL: &str =
    "SELECT 1 FROM pgbroker.subscription_cursors WHERE subscription = $1 AND partition = $2";

/// Events read from one subscription partition, in log order: what
/// [`Broker::read`] returns and what handlers on the worker pool receive.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let batch = broker.read("audit", 100)?;
/// println!("{} events of {:?}, partition {}", batch.len(), batch.subscription(), batch.partition());
/// for e in batch.events() {
///     println!("{} {} {}", e.position(), e.topic(), e.payload());
/// }
/// if let Some(pos) = batch.ack_position() {
///     broker.ack("audit", pos)?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Batch {
    pub(crate) subscription: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) events: Vec<LogEvent>,
    pub(crate) attempt: u32,
    /// The read's horizon: every transaction below it had ended.
    pub(crate) horizon: Option<u64>,
    /// How many events were asked for.
    pub(crate) requested: usize,
}

impl Batch {
    /// The subscription read.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// The partition read (0 for an unpartitioned subscription).
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The events, in `(tx, id)` order.
    pub fn events(&self) -> &[LogEvent] {
        &self.events
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// How many times these events failed before (0 on first delivery; retries deliver one
    /// event at a time).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The position of the last event.
    pub fn last_position(&self) -> Option<Position> {
        self.events.last().map(LogEvent::position)
    }

    /// Where to acknowledge once the batch is handled: past the last event, or, when the read
    /// found fewer events than asked for, past everything it scanned (up to the horizon) so
    /// the next read does not scan the other topics' events again. `None` when there is
    /// nothing to acknowledge.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let batch = broker.read("rare-topic", 100)?;
    /// // ... handle batch.events() ...
    /// if let Some(pos) = batch.ack_position() {
    ///     broker.ack("rare-topic", pos)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ack_position(&self) -> Option<Position> {
        let last = self.last_position();
        match self.horizon {
            Some(h) if self.events.len() < self.requested => {
                let scanned = Position::new(h, 0);
                Some(last.map_or(scanned, |l| l.max(scanned)))
            }
            _ => last,
        }
    }
}

/// Splits rows of events plus one horizon row (NULL id, the horizon in column 5, or in column 7
/// of every row) into events and the horizon.
fn split_rows(rows: &[postgres::Row], horizon_col: usize) -> Result<(Vec<LogEvent>, Option<u64>)> {
    let mut events = Vec::with_capacity(rows.len());
    let mut horizon = None;
    for row in rows {
        if row.try_get::<_, Option<i64>>(0)?.is_some() {
            events.push(LogEvent::from_row(row)?);
        } else if let Some(h) = row.try_get::<_, Option<Xid8>>(horizon_col)? {
            horizon = Some(h.0);
        }
    }
    // The rows come in log order; a sort of sorted input is one pass, and keeps the order
    // independent of how the horizon row and the function's rows are put together.
    events.sort_by_key(LogEvent::position);
    Ok((events, horizon))
}

/// Reads with a prepared READ_SQL statement, after `after`.
pub(crate) fn read_events(
    client: &mut impl GenericClient,
    stmt: &postgres::Statement,
    subscription: &Arc<str>,
    partition: u32,
    after: Position,
    max: usize,
) -> Result<Batch> {
    let rows = client.query(
        stmt,
        &[
            &&**subscription,
            &(max as i64),
            &(partition as i32),
            &Xid8(after.tx()),
            &after.id(),
        ],
    )?;
    let (events, horizon) = split_rows(&rows, 5)?;
    Ok(Batch {
        subscription: subscription.clone(),
        partition,
        events,
        attempt: 0,
        horizon,
        requested: max,
    })
}

/// The stored cursor of a partition; `NotFound` when there is none.
pub(crate) fn stored_cursor(
    client: &mut impl GenericClient,
    subscription: &str,
    partition: u32,
) -> Result<Position> {
    let row = client
        .query_opt(CURSOR_SQL, &[&subscription, &(partition as i32)])?
        .ok_or_else(|| not_found(subscription, partition))?;
    Ok(Position::new(row.try_get::<_, Xid8>(0)?.0, row.try_get(1)?))
}

fn check_max(max: usize) -> Result<()> {
    if max == 0 || max > MAX_READ {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("read size must be in 1..={MAX_READ}, got {max}"),
        ));
    }
    Ok(())
}

impl Broker {
    /// Reads up to `max` events after the cursor of an unpartitioned subscription, without
    /// moving it: [`ack`](Self::ack) the batch once handled, or the next read returns the same
    /// events again. Only events of transactions that every reader can see are returned, so
    /// none is ever skipped. Fails with [`ErrorKind::NotFound`] for an unknown subscription.
    ///
    /// Reading and acking from several processes at once is not coordinated: use the
    /// [worker pool](crate::WorkerPoolBuilder::subscription) for one consumer per partition.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let batch = broker.read("audit", 100)?;
    /// for event in batch.events() {
    ///     println!("{} {}", event.topic(), event.payload());
    /// }
    /// if let Some(pos) = batch.ack_position() {
    ///     broker.ack("audit", pos)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn read(&self, subscription: &str, max: usize) -> Result<Batch> {
        self.read_partition(subscription, 0, max)
    }

    /// [`read`](Self::read) for one partition of a partitioned subscription.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let batch = broker.read_partition("billing", 2, 100)?;
    /// # Ok(()) }
    /// ```
    pub fn read_partition(&self, subscription: &str, partition: u32, max: usize) -> Result<Batch> {
        validate_subscription(subscription)?;
        check_max(max)?;
        let mut conn = self.conn()?;
        let stmt = conn.statement(READ_FN_SQL)?;
        // pgbroker.read raises P0002 when the subscription partition does not exist.
        let rows = conn
            .query(&stmt, &[&subscription, &(max as i32), &(partition as i32)])
            .map_err(|e| match e.code() {
                Some(c) if c.code() == "P0002" => not_found(subscription, partition),
                _ => e.into(),
            })?;
        let (events, horizon) = split_rows(&rows, 7)?;
        Ok(Batch {
            subscription: subscription.into(),
            partition,
            events,
            attempt: 0,
            horizon,
            requested: max,
        })
    }

    /// Moves the cursor of an unpartitioned subscription forward to `position` (never
    /// backwards: see [`seek`](Self::seek)). Fails with [`ErrorKind::NotFound`] for an unknown
    /// subscription, and with [`ErrorKind::InvalidInput`] (naming the position and the log's
    /// end) for a position beyond the end of the log (past the newest event and the horizon):
    /// acknowledging it would skip events not written yet.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let batch = broker.read("audit", 100)?;
    /// if let Some(last) = batch.last_position() {
    ///     broker.ack("audit", last)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ack(&self, subscription: &str, position: Position) -> Result<()> {
        self.ack_partition(subscription, 0, position)
    }

    /// [`ack`](Self::ack) for one partition.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let batch = broker.read_partition("billing", 1, 100)?;
    /// if let Some(last) = batch.last_position() {
    ///     broker.ack_partition("billing", 1, last)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ack_partition(
        &self,
        subscription: &str,
        partition: u32,
        position: Position,
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(ACK_SQL)?;
        ack_with(&mut **conn, &stmt, subscription, partition, position)
    }

    /// Acknowledges in the caller's transaction: the cursor moves if and when `tx` commits,
    /// together with the results the handler wrote (exactly-once effects).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let batch = broker.read("audit", 100)?;
    /// let mut conn = broker.conn()?;
    /// let mut tx = conn.transaction()?;
    /// // ... write the results of handling the batch with `tx` ...
    /// if let Some(last) = batch.last_position() {
    ///     broker.ack_in(&mut tx, "audit", 0, last)?;
    /// }
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn ack_in(
        &self,
        tx: &mut postgres::Transaction<'_>,
        subscription: &str,
        partition: u32,
        position: Position,
    ) -> Result<()> {
        let stmt = Stmt::Named(tx.prepare(ACK_SQL)?);
        ack_with(tx, &stmt, subscription, partition, position)
    }
}

pub(crate) fn ack_with(
    client: &mut impl GenericClient,
    stmt: &Stmt,
    subscription: &str,
    partition: u32,
    position: Position,
) -> Result<()> {
    validate_subscription(subscription)?;
    let part = partition as i32;
    let n = stmt
        .execute(
            client,
            &[&subscription, &part, &Xid8(position.tx()), &position.id()],
        )
        .map_err(sql_error)?;
    if n == 0
        && client
            .query_opt(EXISTS_SQL, &[&subscription, &part])?
            .is_none()
    {
        return Err(not_found(subscription, partition));
    }
    Ok(())
}
