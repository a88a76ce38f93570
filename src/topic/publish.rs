//! Publishing events: one at a time (one round trip), or in batches (one INSERT from arrays
//! for up to 1 000, binary COPY for more).

use std::time::Instant;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::GenericClient;
use serde_json::Value;

use super::{EventId, NewEvent};
use crate::id_blocks::{reserve_ids, NEXT_EVENT_IDS_SQL};
use crate::statement::Stmt;
use crate::trace::span;
use crate::{Broker, Error, ErrorKind, Result, ToPayload};

/// The most events one [`Broker::publish_batch`] call accepts.
pub const MAX_BATCH_EVENTS: usize = 100_000;

/// Batches up to this size use one INSERT from arrays (one round trip); larger ones binary COPY
/// (three). Measured: at 100 events the INSERT is 7% faster, at 1 000 the two are even.
const COPY_THRESHOLD: usize = 1000;

// Every pgbroker statement writing events wakes the waiting consumers itself (schema/functions/log.sql,
// pgbroker.log_wake): one NOTIFY, only while one waits. In RETURNING, the uncorrelated
// subquery runs once per statement whatever the number of rows; it says whether it notified
// (true, or NULL when nobody waits). Statements in their own transaction look only when the
// broker's last look is older than WAITER_CHECK_INTERVAL or found a waiter (see
// publish_state.rs); statements in the caller's transaction look every time (the caller's
// snapshot may be older than the statement, so their looks cannot excuse later ones).

/// One event with an id the broker reserved: no RETURNING.
const INSERT_ONE_SQL: &str = "INSERT INTO pgbroker.events (id, topic, payload, headers, key) \
     VALUES ($1, $2, $3, $4, $5)";

/// The same without headers and key: binding two NULLs costs the server ~700 instructions
/// more than leaving the columns to their defaults.
const INSERT_ONE_BARE_SQL: &str =
    "INSERT INTO pgbroker.events (id, topic, payload) VALUES ($1, $2, $3)";

const INSERT_ONE_LOOK_SQL: &str = "INSERT INTO pgbroker.events (id, topic, payload, headers, key) \
     VALUES ($1, $2, $3, $4, $5) \
     RETURNING (SELECT pg_notify('pgbroker_events', '') IS NOT NULL \
                  FROM pgbroker.log_waiters LIMIT 1)";

/// One event in the caller's transaction: the id comes from the sequence, so the events of
/// one transaction get increasing ids in publishing order, whichever way each was published
/// (the log is read in (tx, id) order).
pub(crate) const INSERT_SQL: &str = "INSERT INTO pgbroker.events (topic, payload, headers, key) \
     VALUES ($1, $2, $3, $4) \
     RETURNING id, (SELECT pg_notify('pgbroker_events', '') IS NOT NULL \
                      FROM pgbroker.log_waiters LIMIT 1)";

const INSERT_MANY_SQL: &str = "INSERT INTO pgbroker.events (topic, payload, headers, key) \
     SELECT * FROM unnest($1::text[], $2::jsonb[], $3::jsonb[], $4::text[]) \
     RETURNING id";

const INSERT_MANY_LOOK_SQL: &str = "INSERT INTO pgbroker.events (topic, payload, headers, key) \
     SELECT * FROM unnest($1::text[], $2::jsonb[], $3::jsonb[], $4::text[]) \
     RETURNING id, (SELECT pg_notify('pgbroker_events', '') IS NOT NULL \
                      FROM pgbroker.log_waiters LIMIT 1)";

const WAKE_SQL: &str = "SELECT pgbroker.log_wake()";

const COPY_SQL: &str =
    "COPY pgbroker.events (id, topic, payload, headers, key) FROM STDIN (FORMAT binary)";

impl Broker {
    /// Publishes one event on `topic` now, in its own transaction on a pooled connection.
    /// Returns its id. Subscribers see it once it commits (and every older transaction ended).
    ///
    /// The payload is a JSON value, JSON text or any `Serialize` value in [`Json`](crate::Json)
    /// (see [`ToPayload`]).
    ///
    /// Fails with [`ErrorKind::InvalidName`] for an invalid topic, [`ErrorKind::Serialize`]
    /// for text that is not JSON and [`ErrorKind::InvalidInput`] for a NUL character
    /// (`\u0000`) in the payload (jsonb cannot store it), before writing anything.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let id = broker.publish("orders.created", &serde_json::json!({"id": 42}))?;
    /// println!("published event {id}");
    /// # Ok(()) }
    /// ```
    pub fn publish<P: ToPayload + ?Sized>(&self, topic: &str, payload: &P) -> Result<EventId> {
        super::validate_topic(topic)?;
        let payload = payload.to_payload()?;
        let value = payload.as_json()?;
        super::event::check_event_payload(value.as_ref())?;
        self.insert_one(topic, value.as_ref(), None, None)
    }

    /// Publishes one event with headers and/or a key; see [`NewEvent`]. Fails with
    /// [`ErrorKind::InvalidName`] or [`ErrorKind::InvalidInput`] (headers not an object)
    /// before writing anything.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use pgbroker::topic::NewEvent;
    /// use serde_json::json;
    /// broker.publish_event(&NewEvent::new("orders.paid", json!({"id": 42})).key("42"))?;
    /// # Ok(()) }
    /// ```
    pub fn publish_event(&self, event: &NewEvent) -> Result<EventId> {
        event.validate()?;
        self.insert_one(
            &event.topic,
            &event.payload,
            event.headers.as_ref(),
            event.key.as_deref(),
        )
    }

    /// One event in its own transaction, with an id from the broker's reserved block.
    fn insert_one(
        &self,
        topic: &str,
        payload: &Value,
        headers: Option<&Value>,
        key: Option<&str>,
    ) -> Result<EventId> {
        let span = span!("pgbroker.publish", topic = topic, event_id = empty);
        let state = self.publish_state();
        let mut conn = self.conn()?;
        let id = state
            .ids()
            .next(&mut conn)?
            .ok_or_else(|| Error::new(ErrorKind::Db, "no event id reserved"))?;
        let params: [&(dyn ToSql + Sync); 5] = [&id, &topic, payload, &headers, &key];
        let sent = Instant::now();
        if state.waiters().must_look(sent) {
            let stmt = conn.statement(INSERT_ONE_LOOK_SQL)?;
            let row = conn.query_one(&stmt, &params)?;
            let found = row.try_get::<_, Option<bool>>(0)?.is_some();
            state.waiters().looked(sent, found);
        } else if headers.is_none() && key.is_none() {
            let stmt = conn.statement(INSERT_ONE_BARE_SQL)?;
            conn.execute(&stmt, &params[..3])?;
        } else {
            let stmt = conn.statement(INSERT_ONE_SQL)?;
            conn.execute(&stmt, &params)?;
        }
        span.record("event_id", id);
        Ok(EventId(id))
    }

    /// Publishes an event in the caller's transaction: it exists if and when `tx` commits,
    /// atomically with the caller's other writes (the transactional outbox, built in).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use pgbroker::topic::NewEvent;
    /// let mut conn = broker.conn()?;
    /// let mut tx = conn.transaction()?;
    /// tx.execute("INSERT INTO orders (id) VALUES (42)", &[])?;
    /// broker.publish_in(&mut tx, &NewEvent::new("orders.created", serde_json::json!({"id": 42})))?;
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn publish_in(
        &self,
        tx: &mut postgres::Transaction<'_>,
        event: &NewEvent,
    ) -> Result<EventId> {
        event.validate()?;
        let span = span!(
            "pgbroker.publish",
            topic = event.topic.as_str(),
            event_id = empty
        );
        // One round trip: no prepare on a connection we do not own.
        let row = tx.query_typed_one(
            INSERT_SQL,
            &[
                (&event.topic, Type::TEXT),
                (&event.payload, Type::JSONB),
                (&event.headers, Type::JSONB),
                (&event.key, Type::TEXT),
            ],
        )?;
        let id = row.get(0);
        span.record("event_id", id);
        Ok(EventId(id))
    }

    /// Publishes many events atomically (one transaction) and returns their ids in order.
    /// Up to 1 000 events go in one INSERT, more by binary COPY.
    ///
    /// Every event is checked first: an invalid one, or more than [`MAX_BATCH_EVENTS`]
    /// events ([`ErrorKind::PayloadTooLarge`]), fails the call with nothing written.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use pgbroker::topic::NewEvent;
    /// let events = (0..1000).map(|i| NewEvent::new("ticks", serde_json::json!(i)));
    /// let ids = broker.publish_batch(events)?;
    /// assert_eq!(ids.len(), 1000);
    /// # Ok(()) }
    /// ```
    pub fn publish_batch<I>(&self, events: I) -> Result<Vec<EventId>>
    where
        I: IntoIterator<Item = NewEvent>,
    {
        let events = checked_batch(events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let waiters = self.publish_state().waiters();
        let mut conn = self.conn()?;
        let sent = Instant::now();
        let look = waiters.must_look(sent);
        if events.len() <= COPY_THRESHOLD {
            let stmt = conn.statement(if look {
                INSERT_MANY_LOOK_SQL
            } else {
                INSERT_MANY_SQL
            })?;
            let (ids, found) = insert_many(&mut **conn, &stmt, &events)?;
            if look {
                waiters.looked(sent, found);
            }
            return Ok(ids);
        }
        // No transaction around these: the COPY alone is atomic, ids drawn from the sequence
        // are never given out again whatever happens to the COPY, and the wake-up comes after
        // the COPY committed, so a woken consumer finds the events. Prepared once per
        // connection: four round trips instead of eight (three when nobody waited lately).
        let next = conn.statement(NEXT_EVENT_IDS_SQL)?;
        let copy = conn.statement(COPY_SQL)?;
        let ids = if conn.transaction_pooling() {
            // COPY by SQL text prepares a named statement: keep it on one server connection.
            let mut tx = conn.transaction()?;
            let ids = copy_batch(&mut tx, &next, &copy, &events)?;
            tx.commit()?;
            ids
        } else {
            copy_batch(&mut **conn, &next, &copy, &events)?
        };
        // The events are written: from here on the call succeeds. A failed wake-up only
        // delays consumers to their next poll; it is logged, never reported as a failure of
        // the batch (the caller would publish it again).
        let sent = Instant::now();
        if waiters.must_look(sent) {
            match wake(&mut conn) {
                Ok(found) => waiters.looked(sent, found),
                Err(e) => log::warn!(
                    "pgbroker: {} events published, but waking consumers failed \
                     (they find the events at their next poll): {e}",
                    ids.len()
                ),
            }
        }
        Ok(ids)
    }

    /// [`publish_batch`](Self::publish_batch) in the caller's transaction.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use pgbroker::topic::NewEvent;
    /// let mut conn = broker.conn()?;
    /// let mut tx = conn.transaction()?;
    /// broker.publish_batch_in(&mut tx, vec![NewEvent::new("a", serde_json::json!(1))])?;
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn publish_batch_in<I>(
        &self,
        tx: &mut postgres::Transaction<'_>,
        events: I,
    ) -> Result<Vec<EventId>>
    where
        I: IntoIterator<Item = NewEvent>,
    {
        let events = checked_batch(events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if events.len() <= COPY_THRESHOLD {
            let stmt = Stmt::Named(tx.prepare(INSERT_MANY_LOOK_SQL)?);
            return Ok(insert_many(tx, &stmt, &events)?.0);
        }
        let next = Stmt::Named(tx.prepare(NEXT_EVENT_IDS_SQL)?);
        let copy = Stmt::Named(tx.prepare(COPY_SQL)?);
        let ids = copy_batch(tx, &next, &copy, &events)?;
        tx.execute(WAKE_SQL, &[])?;
        Ok(ids)
    }
}

/// Wakes waiting consumers after a COPY; whether one was waiting.
fn wake(conn: &mut crate::PooledConn) -> Result<bool> {
    let stmt = conn.statement(WAKE_SQL)?;
    Ok(conn.query_one(&stmt, &[])?.try_get(0)?)
}

fn checked_batch<I: IntoIterator<Item = NewEvent>>(events: I) -> Result<Vec<NewEvent>> {
    let mut out = Vec::new();
    for (i, e) in events.into_iter().enumerate() {
        if i >= MAX_BATCH_EVENTS {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!("a batch holds at most {MAX_BATCH_EVENTS} events; split it"),
            ));
        }
        e.validate()
            .map_err(|err| err.context(format!("event {i} of the batch")))?;
        out.push(e);
    }
    Ok(out)
}

/// Inserts `events` with `stmt` (one of the INSERT_MANY statements); returns their ids and
/// whether the statement found a waiting consumer (false when it did not look).
fn insert_many(
    client: &mut impl GenericClient,
    stmt: &Stmt,
    events: &[NewEvent],
) -> Result<(Vec<EventId>, bool)> {
    let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    let payloads: Vec<&Value> = events.iter().map(|e| &e.payload).collect();
    let headers: Vec<Option<&Value>> = events.iter().map(|e| e.headers.as_ref()).collect();
    let keys: Vec<Option<&str>> = events.iter().map(|e| e.key.as_deref()).collect();
    let rows = stmt.query(client, &[&topics, &payloads, &headers, &keys])?;
    let mut ids: Vec<EventId> = rows.iter().map(|r| EventId(r.get(0))).collect();
    // Ids come from the sequence in row order; sort in case RETURNING reorders.
    ids.sort();
    let found = match rows.first() {
        Some(r) if r.len() > 1 => r.try_get::<_, Option<bool>>(1)?.is_some(),
        _ => false,
    };
    Ok((ids, found))
}

fn copy_batch(
    client: &mut impl GenericClient,
    next_ids: &Stmt,
    copy: &Stmt,
    events: &[NewEvent],
) -> Result<Vec<EventId>> {
    let ids = reserve_ids(client, next_ids, events.len() as i32, "event")?;
    let writer = match copy {
        Stmt::Named(s) => client.copy_in(s)?,
        // Behind a transaction-mode pooler: the caller runs this in a transaction.
        Stmt::Unnamed(sql, _) => client.copy_in(&**sql)?,
    };
    let types = [Type::INT8, Type::TEXT, Type::JSONB, Type::JSONB, Type::TEXT];
    let mut writer = BinaryCopyInWriter::new(writer, &types);
    for (id, e) in ids.iter().zip(events) {
        writer.write(&[id, &e.topic, &e.payload, &e.headers, &e.key])?;
    }
    writer.finish()?;
    Ok(ids.into_iter().map(EventId).collect())
}
