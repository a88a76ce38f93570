//! Reading the log after a position for topic patterns, without a subscription: what SSE
//! streams and webhook endpoints read (`pgbroker.events_after`, schema/functions/streams.sql).

use std::time::SystemTime;

use pgbroker::topic::Position;
use postgres::types::Type;
use postgres::GenericClient;

/// The events after `$1`/`$2` matching the patterns `$3`, at most `$4`, in log order, plus a
/// last row with only the horizon of the same snapshot (in the `tx` column) and the next
/// transaction id (in the `key` column).
const EVENTS_AFTER_SQL: &str = "\
SELECT id, topic, payload::text, headers::text, key, tx::text, created_at
  FROM pgbroker.events_after($1::text::xid8, $2, $3, $4)
UNION ALL
SELECT NULL, NULL, NULL, NULL, pg_snapshot_xmax(pg_current_snapshot())::text,
       pg_snapshot_xmin(pg_current_snapshot())::text, NULL";

/// The publication time of the event at a position, and whether it is older than `$3`.
const EVENT_AGE_SQL: &str = "\
SELECT now() - created_at > $3::float8 * interval '1 second'
  FROM pgbroker.events WHERE tx = $1::text::xid8 AND id = $2";

/// An event as streams send it: JSON kept as text, as PostgreSQL prints it (one line).
#[derive(Debug, Clone)]
pub(crate) struct StreamEvent {
    pub(crate) position: Position,
    pub(crate) topic: String,
    pub(crate) payload: String,
    pub(crate) headers: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) created_at: SystemTime,
}

/// One read: the events, and where the next read starts.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) events: Vec<StreamEvent>,
    /// After the last event; when fewer than asked for came, after everything below the
    /// horizon (other topics' events are not scanned again).
    pub(crate) next: Position,
    pub(crate) full: bool,
    /// The read's horizon: every transaction below it had ended (events of later ones may
    /// still come).
    pub(crate) horizon: u64,
    /// The next transaction id when it read: every transaction begun before has a lower one.
    pub(crate) next_xid: u64,
}

pub(crate) fn read_after(
    client: &mut impl GenericClient,
    after: Position,
    patterns: &[String],
    max: usize,
) -> Result<Page, postgres::Error> {
    let tx = after.tx().to_string();
    let limit = max.min(i32::MAX as usize) as i32;
    let rows = client.query_typed(
        EVENTS_AFTER_SQL,
        &[
            (&tx, Type::TEXT),
            (&after.id(), Type::INT8),
            (&patterns, Type::TEXT_ARRAY),
            (&limit, Type::INT4),
        ],
    )?;
    let mut events = Vec::with_capacity(rows.len());
    let mut horizon = None;
    let mut next_xid = 0;
    for row in &rows {
        let tx: Option<String> = row.try_get(5)?;
        let tx: u64 = tx.and_then(|t| t.parse().ok()).unwrap_or(0);
        match row.try_get::<_, Option<i64>>(0)? {
            Some(id) => events.push(StreamEvent {
                position: Position::new(tx, id),
                topic: row.try_get(1)?,
                payload: row.try_get(2)?,
                headers: row.try_get(3)?,
                key: row.try_get(4)?,
                created_at: row.try_get(6)?,
            }),
            None => {
                horizon = Some(tx);
                let xmax: Option<String> = row.try_get(4)?;
                next_xid = xmax.and_then(|t| t.parse().ok()).unwrap_or(0);
            }
        }
    }
    events.sort_by_key(|e| e.position);
    let full = events.len() >= max;
    let last = events.last().map(|e| e.position).unwrap_or(after);
    let next = match horizon {
        Some(h) if !full => last.max(Position::new(h, 0)),
        _ => last,
    };
    Ok(Page {
        events,
        next,
        full,
        horizon: horizon.unwrap_or(0),
        next_xid,
    })
}

/// Whether the event at `at` exists and is older than `max_age_secs`: `None` when no event
/// is there (never was, or dropped by retention).
pub(crate) fn event_too_old(
    client: &mut impl GenericClient,
    at: Position,
    max_age_secs: f64,
) -> Result<Option<bool>, postgres::Error> {
    let tx = at.tx().to_string();
    let row = client.query_typed(
        EVENT_AGE_SQL,
        &[
            (&tx, Type::TEXT),
            (&at.id(), Type::INT8),
            (&max_age_secs, Type::FLOAT8),
        ],
    )?;
    Ok(match row.first() {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

/// The current horizon as a position: before every event not yet readable.
pub(crate) fn horizon(client: &mut impl GenericClient) -> Result<Position, postgres::Error> {
    let row = client.query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])?;
    let h: String = row.try_get(0)?;
    Ok(Position::new(h.parse().unwrap_or(0), 0))
}
