//! Events: what is published ([`NewEvent`]) and what is read ([`LogEvent`]).

use std::time::SystemTime;

use serde_json::Value;

use super::{validate_topic, Position};
use crate::{Error, ErrorKind, Result};

/// The longest event key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The id the log gave a published event: unique. The events of one transaction have
/// increasing ids in publishing order; events of different transactions are ordered by their
/// transactions, not their ids (the log is read in `(tx, id)` order, see [`Position`]). Single
/// publishes ([`Broker::publish`](crate::Broker::publish),
/// [`publish_event`](crate::Broker::publish_event)) take ids from blocks their broker reserves
/// ahead, so their ids may be lower than those of events published before them by other means.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let id = broker.publish("orders.created", &serde_json::json!({"id": 1}))?;
/// println!("event {id} ({})", id.get());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub i64);

impl EventId {
    /// The id as a number.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An event to publish: a topic and a JSON payload, with optional headers (a JSON object) and
/// key (events of one key go to one partition of a partitioned subscription, in order).
///
/// # Examples
///
/// ```
/// use pgbroker::topic::NewEvent;
/// use serde_json::json;
///
/// let event = NewEvent::new("orders.created", json!({"id": 42}))
///     .key("customer-7")
///     .headers(json!({"trace": "abc"}));
/// assert_eq!(event.topic(), "orders.created");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub(crate) topic: String,
    pub(crate) payload: Value,
    pub(crate) headers: Option<Value>,
    pub(crate) key: Option<String>,
}

impl NewEvent {
    /// An event on `topic` with `payload`, no headers and no key.
    pub fn new(topic: impl Into<String>, payload: Value) -> NewEvent {
        NewEvent {
            topic: topic.into(),
            payload,
            headers: None,
            key: None,
        }
    }

    /// Sets the key (default: none, and then partitioned subscriptions spread by event id).
    pub fn key(mut self, key: impl Into<String>) -> NewEvent {
        self.key = Some(key.into());
        self
    }

    /// Sets the headers; they must be a JSON object (checked when publishing).
    pub fn headers(mut self, headers: Value) -> NewEvent {
        self.headers = Some(headers);
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The payload.
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// Checks the topic, headers and key; what publishing checks before writing anything.
    ///
    /// # Examples
    ///
    /// ```
    /// use pgbroker::{topic::NewEvent, ErrorKind};
    /// let bad = NewEvent::new("orders", serde_json::json!(1)).headers(serde_json::json!([1]));
    /// assert_eq!(bad.validate().unwrap_err().kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn validate(&self) -> Result<()> {
        validate_topic(&self.topic)?;
        if let Some(h) = &self.headers {
            if !h.is_object() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("event headers must be a JSON object, got {h}"),
                ));
            }
        }
        if let Some(k) = &self.key {
            if k.len() > MAX_KEY_BYTES || k.contains('\0') {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("event key must be at most {MAX_KEY_BYTES} bytes without NUL"),
                ));
            }
        }
        Ok(())
    }
}

/// An event read from the log.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// for e in broker.read("billing", 10)?.events() {
///     let trace = e.headers().and_then(|h| h.get("trace"));
///     println!("{} {} key={:?} trace={trace:?} at {:?}", e.id(), e.topic(), e.key(), e.created_at());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    pub(crate) id: i64,
    pub(crate) tx: u64,
    pub(crate) topic: String,
    pub(crate) payload: Value,
    pub(crate) headers: Option<Value>,
    pub(crate) key: Option<String>,
    pub(crate) created_at: SystemTime,
}

impl LogEvent {
    /// The event id.
    pub fn id(&self) -> EventId {
        EventId(self.id)
    }

    /// Where the event is in the log; acknowledging it moves a cursor past it.
    pub fn position(&self) -> Position {
        Position::new(self.tx, self.id)
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The payload.
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// The headers, when published with some.
    pub fn headers(&self) -> Option<&Value> {
        self.headers.as_ref()
    }

    /// The key, when published with one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// When it was published (the publishing transaction's start).
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// Reads the columns `id, topic, payload, headers, key, tx::text, created_at`.
    pub(crate) fn from_row(row: &postgres::Row) -> Result<LogEvent> {
        let tx: &str = row.try_get(5)?;
        Ok(LogEvent {
            id: row.try_get(0)?,
            topic: row.try_get(1)?,
            payload: row.try_get(2)?,
            headers: row.try_get(3)?,
            key: row.try_get(4)?,
            tx: tx
                .parse()
                .map_err(|_| Error::new(ErrorKind::Db, format!("unexpected xid8 value {tx:?}")))?,
            created_at: row.try_get(6)?,
        })
    }
}
