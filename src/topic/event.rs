//! Events: what is published ([`NewEvent`]) and what is read ([`LogEvent`]).

use std::time::SystemTime;

use serde_json::Value;

use super::json_text::{JsonText, Xid8};
use super::{validate_topic, Position};
use crate::json_nul::contains_nul;
use crate::{Error, ErrorKind, Result, ToPayload};

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
    /// Why the payload given is not JSON (then `payload` is null); reported by `validate`.
    payload_error: Option<String>,
    pub(crate) headers: Option<Value>,
    pub(crate) key: Option<String>,
}

impl NewEvent {
    /// An event on `topic` with `payload` (see [`ToPayload`]), no headers and no key. A
    /// payload that is not JSON makes publishing fail with [`ErrorKind::Serialize`].
    pub fn new(topic: impl Into<String>, payload: impl ToPayload) -> NewEvent {
        let (payload, payload_error) = match payload.into_json_value() {
            Ok(value) => (value, None),
            Err(e) => (Value::Null, Some(e.to_string())),
        };
        NewEvent {
            topic: topic.into(),
            payload,
            payload_error,
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

    /// Checks the topic, payload, headers and key; what publishing checks before writing
    /// anything. A NUL character (`\u0000`) in the payload or headers is
    /// [`ErrorKind::InvalidInput`]: jsonb cannot store it.
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
        if let Some(e) = &self.payload_error {
            return Err(Error::new(
                ErrorKind::Serialize,
                format!("event payload: {e}"),
            ));
        }
        check_event_payload(&self.payload)?;
        if let Some(h) = &self.headers {
            if !h.is_object() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("event headers must be a JSON object, got {h}"),
                ));
            }
            if contains_nul(h) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "event headers contain a NUL character (\\u0000), which jsonb cannot store",
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

/// jsonb cannot store NUL characters; say so (as enqueue does for jobs) before the server does.
pub(crate) fn check_event_payload(payload: &Value) -> Result<()> {
    if contains_nul(payload) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "event payload contains a NUL character (\\u0000), which jsonb cannot store",
        ));
    }
    Ok(())
}

/// An event read from the log.
///
/// The payload and headers arrive as JSON text and are parsed into a [`Value`] when
/// [`payload`](Self::payload) or [`headers`](Self::headers) is first called (then kept):
/// reading costs no parsing for events whose payload is not looked at, or only deserialized
/// into a type of yours with [`payload_as`](Self::payload_as).
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
    pub(crate) payload: JsonText,
    pub(crate) headers: Option<JsonText>,
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

    /// The payload, parsed on the first call. A payload that `serde_json::Value` cannot hold
    /// (nested more than 128 levels deep, which PostgreSQL allows) reads as `Value::Null`,
    /// with a warning logged: [`payload_json`](Self::payload_json) still has it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for e in broker.read("billing", 10)?.events() {
    ///     println!("amount {}", e.payload()["amount"]);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn payload(&self) -> &Value {
        self.payload.value()
    }

    /// The payload as JSON text, as PostgreSQL prints `jsonb` (keys sorted, `", "` and
    /// `": "` between items): to store or forward it without parsing.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for e in broker.read("billing", 10)?.events() {
    ///     println!("data: {}", e.payload_json()); // e.g. an SSE line
    /// }
    /// # Ok(()) }
    /// ```
    pub fn payload_json(&self) -> &str {
        self.payload.as_str()
    }

    /// Deserializes the payload into `T`, straight from its text (cheaper than
    /// `serde_json::from_value(e.payload().clone())`). Fails with [`ErrorKind::Serialize`]
    /// when it does not fit `T`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// // Any `serde::Deserialize` type: usually a `#[derive(Deserialize)]` struct of yours.
    /// type Amounts = std::collections::HashMap<String, f64>;
    /// for e in broker.read("billing", 10)?.events() {
    ///     let amounts: Amounts = e.payload_as()?;
    ///     println!("{amounts:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        self.payload.parse().map_err(|e| {
            Error::with_cause(
                ErrorKind::Serialize,
                Some(format!("payload of event {}", self.id)),
                e,
            )
        })
    }

    /// The headers, when published with some; parsed on the first call (see
    /// [`payload`](Self::payload)).
    pub fn headers(&self) -> Option<&Value> {
        self.headers.as_ref().map(JsonText::value)
    }

    /// The headers as JSON text, when published with some.
    pub fn headers_json(&self) -> Option<&str> {
        self.headers.as_ref().map(JsonText::as_str)
    }

    /// The key, when published with one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// When it was published (the publishing transaction's start).
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// Reads the columns `id, topic, payload, headers, key, tx, created_at` (`tx` as `xid8`
    /// or text).
    pub(crate) fn from_row(row: &postgres::Row) -> Result<LogEvent> {
        Ok(LogEvent {
            id: row.try_get(0)?,
            topic: row.try_get(1)?,
            payload: row.try_get(2)?,
            headers: row.try_get(3)?,
            key: row.try_get(4)?,
            tx: row.try_get::<_, Xid8>(5)?.0,
            created_at: row.try_get(6)?,
        })
    }
}
