//! Webhooks: endpoints are rows of `pgbroker.webhook_endpoints` (managed here, by the SQL
//! functions of `schema/functions/webhooks.sql` and by `pgbroker webhooks`), and every running
//! [`Server`](crate::Server) delivers to them.
//!
//! # How delivery behaves
//! - Every event matching an enabled endpoint's patterns is POSTed to it at least once, **in
//!   log order per endpoint**: a failing event holds back that endpoint's later events until it
//!   succeeds or its retry schedule runs out (then it is dead, copied to
//!   `pgbroker.webhook_dead_deliveries`, and the endpoint moves on). Other endpoints are not
//!   delayed: each has its own thread.
//! - The body is JSON: `{"type": topic, "timestamp": RFC 3339, "id": position, "event_id",
//!   "key", "headers", "data": payload}`. Headers: Standard Webhooks `webhook-id` (the same on
//!   every retry of that event to that endpoint, `msg_<endpoint>_<event id>`),
//!   `webhook-timestamp` (Unix seconds), `webhook-signature` (`v1,<base64 HMAC-SHA256>`), a
//!   plain `idempotency-key` with the `webhook-id`, and the endpoint's own headers.
//! - A 2xx answer is success; `410 Gone` disables the endpoint; anything else, a timeout (5 s
//!   by default) or a connection error is a failure.
//! - The state (cursor, attempt, next attempt) lives in PostgreSQL: a server stopped or killed
//!   mid-delivery sends that event again after restart, with the same `webhook-id`. Several
//!   servers share the endpoints: each endpoint is delivered by the server holding its
//!   advisory lock.

pub(crate) mod delivery;
mod schedule;
mod signature;

use std::time::Duration;

use pgbroker::Broker;
use serde_json::{Map, Value};

pub use schedule::parse_schedule;
pub use signature::sign;

use crate::{Error, ErrorKind, Result};

/// A webhook endpoint to add: URL, topic patterns and options.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use pgbroker_http::webhooks::{NewEndpoint, Webhooks};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let added = Webhooks::new(&broker).add(
///     &NewEndpoint::new("https://example.com/hooks", ["orders.*"])
///         .header("Authorization", "Bearer abc")
///         .retries(vec![Duration::from_secs(60), Duration::from_secs(600)]),
/// )?;
/// println!("endpoint {} signs with {}", added.id, added.secret);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    url: String,
    patterns: Vec<String>,
    secret: Option<String>,
    headers: Vec<(String, String)>,
    retries: Option<Vec<Duration>>,
}

impl NewEndpoint {
    /// An endpoint at `url` for the topics matching `patterns`.
    pub fn new<I, S>(url: impl Into<String>, patterns: I) -> NewEndpoint
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        NewEndpoint {
            url: url.into(),
            patterns: patterns.into_iter().map(Into::into).collect(),
            secret: None,
            headers: Vec::new(),
            retries: None,
        }
    }

    /// The signing secret, `whsec_<base64>` (default: 32 random bytes, generated).
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// A header sent with every request (default: none).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The waits after each failure (default 1 min, 5 min, 15 min, 1 h, 6 h); after the last
    /// failure the delivery is dead (an empty schedule: at the first failure).
    pub fn retries(mut self, schedule: Vec<Duration>) -> Self {
        self.retries = Some(schedule);
        self
    }
}

/// What [`Webhooks::add`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedEndpoint {
    /// The endpoint's id.
    pub id: i64,
    /// Its signing secret (`whsec_...`), given or generated.
    pub secret: String,
}

/// An endpoint and its delivery state.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// The id.
    pub id: i64,
    /// Where events are POSTed.
    pub url: String,
    /// The topic patterns.
    pub patterns: Vec<String>,
    /// Whether it receives events.
    pub enabled: bool,
    /// Why it was disabled (`410 Gone from ...`, or what the operator said).
    pub disabled_reason: Option<String>,
    /// Failures of the event in flight so far.
    pub attempt: i32,
    /// The last HTTP status received.
    pub last_status: Option<i32>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Requests answered 2xx.
    pub delivered: i64,
    /// Requests failed.
    pub failed: i64,
    /// Dead deliveries kept.
    pub dead: i64,
}

/// A delivery given up after the retry schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadDelivery {
    /// The endpoint.
    pub endpoint_id: i64,
    /// The event.
    pub event_id: i64,
    /// The event's topic.
    pub topic: String,
    /// Requests made.
    pub attempts: i32,
    /// The last HTTP status, if any.
    pub last_status: Option<i32>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Whether it is marked for re-delivery.
    pub redrive: bool,
}

/// Managing webhook endpoints of a broker's database.
///
/// # Examples
///
/// ```no_run
/// use pgbroker_http::webhooks::{NewEndpoint, Webhooks};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let hooks = Webhooks::new(&broker);
/// let added = hooks.add(&NewEndpoint::new("http://localhost:9000/in", ["#"]))?;
/// for e in hooks.list()? {
///     println!("{} {} delivered={} dead={}", e.id, e.url, e.delivered, e.dead);
/// }
/// hooks.redrive(added.id, None)?;
/// hooks.disable(added.id)?;
/// hooks.remove(added.id)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Webhooks {
    broker: Broker,
}

impl Webhooks {
    /// Endpoints of `broker`'s database.
    pub fn new(broker: &Broker) -> Webhooks {
        Webhooks {
            broker: broker.clone(),
        }
    }

    /// Adds an endpoint; it gets the events published from now on. Fails with
    /// [`ErrorKind::InvalidInput`] for a bad URL, pattern, secret, header or schedule.
    pub fn add(&self, e: &NewEndpoint) -> Result<AddedEndpoint> {
        if e.patterns.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a webhook endpoint needs at least one topic pattern",
            ));
        }
        for p in &e.patterns {
            pgbroker::topic::validate_pattern(p)?;
        }
        if let Some(s) = &e.secret {
            signature::secret_key(s)?;
        }
        let mut headers = Map::new();
        for (k, v) in &e.headers {
            headers.insert(k.clone(), Value::String(v.clone()));
        }
        let retries: Option<Vec<String>> = e.retries.as_ref().map(|r| {
            r.iter()
                .map(|d| format!("{} milliseconds", d.as_millis()))
                .collect()
        });
        let mut conn = self.broker.conn()?;
        let row = conn
            .query_one(
                "SELECT endpoint_id, endpoint_secret
                   FROM pgbroker.webhook_add($1, $2, $3, $4, $5::text[]::interval[])",
                &[
                    &e.url,
                    &e.patterns,
                    &e.secret,
                    &Value::Object(headers),
                    &retries,
                ],
            )
            .map_err(input_error)?;
        Ok(AddedEndpoint {
            id: row.get(0),
            secret: row.get(1),
        })
    }

    /// Every endpoint with its delivery state, by id.
    pub fn list(&self) -> Result<Vec<Endpoint>> {
        let mut conn = self.broker.conn()?;
        let rows = conn.query(
            "SELECT id, url, patterns, enabled, disabled_reason, attempt, last_status,
                    last_error, delivered, failed, dead FROM pgbroker.webhook_list()",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| Endpoint {
                id: r.get(0),
                url: r.get(1),
                patterns: r.get(2),
                enabled: r.get(3),
                disabled_reason: r.get(4),
                attempt: r.get(5),
                last_status: r.get(6),
                last_error: r.get(7),
                delivered: r.get(8),
                failed: r.get(9),
                dead: r.get(10),
            })
            .collect())
    }

    /// The dead deliveries of an endpoint, oldest event first.
    pub fn dead(&self, endpoint: i64) -> Result<Vec<DeadDelivery>> {
        let mut conn = self.broker.conn()?;
        let rows = conn.query(
            "SELECT endpoint_id, event_id, topic, attempts, last_status, last_error, redrive
               FROM pgbroker.webhook_dead_deliveries WHERE endpoint_id = $1 ORDER BY tx, event_id",
            &[&endpoint],
        )?;
        Ok(rows
            .iter()
            .map(|r| DeadDelivery {
                endpoint_id: r.get(0),
                event_id: r.get(1),
                topic: r.get(2),
                attempts: r.get(3),
                last_status: r.get(4),
                last_error: r.get(5),
                redrive: r.get(6),
            })
            .collect())
    }

    /// Stops deliveries to an endpoint (it keeps its place). [`ErrorKind::NotFound`] when
    /// there is no such endpoint.
    pub fn disable(&self, endpoint: i64) -> Result<()> {
        self.set_enabled(endpoint, false)
    }

    /// Resumes deliveries to an endpoint where it stopped.
    pub fn enable(&self, endpoint: i64) -> Result<()> {
        self.set_enabled(endpoint, true)
    }

    fn set_enabled(&self, endpoint: i64, enabled: bool) -> Result<()> {
        let mut conn = self.broker.conn()?;
        let reason = (!enabled).then_some("disabled by the operator");
        let found: bool = conn
            .query_one(
                "SELECT pgbroker.webhook_set_enabled($1, $2, $3)",
                &[&endpoint, &enabled, &reason],
            )?
            .get(0);
        found.then_some(()).ok_or_else(|| not_found(endpoint))
    }

    /// Removes an endpoint and its dead deliveries.
    pub fn remove(&self, endpoint: i64) -> Result<()> {
        let mut conn = self.broker.conn()?;
        let found: bool = conn
            .query_one("SELECT pgbroker.webhook_remove($1)", &[&endpoint])?
            .get(0);
        found.then_some(()).ok_or_else(|| not_found(endpoint))
    }

    /// Marks dead deliveries of an endpoint (all, or one event's) for one more delivery;
    /// returns how many.
    pub fn redrive(&self, endpoint: i64, event: Option<i64>) -> Result<u64> {
        let mut conn = self.broker.conn()?;
        let exists = conn
            .query_opt(
                "SELECT 1 FROM pgbroker.webhook_endpoints WHERE id = $1",
                &[&endpoint],
            )?
            .is_some();
        if !exists {
            return Err(not_found(endpoint));
        }
        let n: i64 = conn
            .query_one(
                "SELECT pgbroker.webhook_redrive($1, $2)",
                &[&endpoint, &event],
            )?
            .get(0);
        Ok(n as u64)
    }
}

fn not_found(endpoint: i64) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no webhook endpoint {endpoint}"),
    )
}

/// SQLSTATE 22023 (what pgbroker's functions raise for bad arguments) is the caller's fault.
fn input_error(e: postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) if db.code().code() == "22023" => {
            Error::new(ErrorKind::InvalidInput, db.message().to_owned())
        }
        _ => Error::from(e),
    }
}
