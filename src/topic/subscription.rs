//! Subscriptions: named, durable cursors over the topics matching some patterns.

use std::time::{Duration, SystemTime};

use super::{validate_pattern, validate_subscription, Position};
use crate::{Broker, Error, ErrorKind, Result};

/// Where a new subscription starts reading.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// use pgbroker::topic::{Position, StartAt};
/// let last_seen: Position = "7412-90".parse()?; // e.g. an SSE Last-Event-ID
/// broker.subscription("sse-42").pattern("orders.#").start_at(StartAt::Position(last_seen)).save()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// Only events published from now on (default).
    #[default]
    End,
    /// Every event still in the log.
    Beginning,
    /// The events after this position.
    Position(Position),
}

impl StartAt {
    fn as_sql(&self) -> String {
        match self {
            StartAt::End => "end".into(),
            StartAt::Beginning => "beginning".into(),
            StartAt::Position(p) => p.to_string(),
        }
    }
}

/// A subscription as stored: listed by [`Broker::subscriptions`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// for s in broker.subscriptions()? {
///     println!("{} {:?} x{}", s.name, s.patterns, s.partitions);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionInfo {
    /// The name.
    pub name: String,
    /// The topic patterns.
    pub patterns: Vec<String>,
    /// The number of partitions.
    pub partitions: u32,
    /// Deleted by maintenance after this long unused, if set.
    pub expire_after: Option<Duration>,
    /// When it was created.
    pub created_at: SystemTime,
    /// The JSON object the payloads of its events contain, if set
    /// ([`SubscriptionBuilder::filter`]).
    pub filter: Option<serde_json::Value>,
    /// Its SQL condition and the params it reads, if set
    /// ([`SubscriptionBuilder::condition`]).
    pub condition: Option<(String, serde_json::Value)>,
}

/// Creates or updates a subscription. Get one from [`Broker::subscription`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// use pgbroker::topic::StartAt;
/// let created = broker
///     .subscription("billing")
///     .pattern("orders.*")
///     .pattern("refunds.#")
///     .partitions(4)
///     .start_at(StartAt::Beginning)
///     .save()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "nothing is saved until save() is called"]
pub struct SubscriptionBuilder {
    broker: Broker,
    name: String,
    patterns: Vec<String>,
    partitions: u32,
    start_at: StartAt,
    expire_after: Option<Duration>,
    filter: Option<serde_json::Value>,
    condition: Option<(String, serde_json::Value)>,
}

impl SubscriptionBuilder {
    /// Adds a topic pattern (see [`validate_pattern`]). At least one is needed.
    pub fn pattern(mut self, pattern: &str) -> Self {
        self.patterns.push(pattern.to_owned());
        self
    }

    /// Splits the subscription into `n` partitions by `hash(key) % n` (by event id for events
    /// without a key), each with its own cursor, consumed by one consumer at a time. Events of
    /// one key stay in order. Default: 1. Fixed once the subscription exists.
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n;
        self
    }

    /// Where a new subscription starts. Default: [`StartAt::End`]. Ignored when the
    /// subscription exists (use [`Broker::seek`] to move it).
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.start_at = start;
        self
    }

    /// Deletes the subscription (by [`Broker::log_maintain`]) once nothing acknowledged or
    /// polled it for this long. Default: never.
    pub fn expire_after(mut self, d: Duration) -> Self {
        self.expire_after = Some(d);
        self
    }

    /// Reads only events whose payload contains this JSON object (`payload @> filter`):
    /// `{"customer": 42}` matches `{"customer": 42, "total": 9}`, `{"tags": ["a"]}` matches
    /// payloads whose `tags` array holds `"a"`. The filter is a value, never SQL, so it may come
    /// from end users (an SSE query parameter). Events filtered out are passed over: the cursor
    /// moves past them. It may change on a later [`save`](Self::save). Default: none.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use serde_json::json;
    /// broker.subscription("customer-42").pattern("orders.#").filter(json!({"customer": 42})).save()?;
    /// # Ok(()) }
    /// ```
    pub fn filter(mut self, filter: serde_json::Value) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Reads only events for which `sql`, a boolean SQL expression over the event's `topic`,
    /// `key` (text), `payload`, `headers` (jsonb) and `params` (this JSON object), is true.
    /// Written by developers, never from end users' input (pass their values in `params`).
    /// It is compiled once, at [`save`](Self::save), into a SQL function shared by every
    /// subscription with the same text; a syntax error, or a reference to anything but the
    /// event and side-effect-free functions (a table, `nextval`, a stable function of your own
    /// schema...), fails there with [`ErrorKind::InvalidInput`], never at read. Functions of
    /// your own must be schema-qualified. The condition and params are fixed once the
    /// subscription exists. Default: none.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use serde_json::json;
    /// let big_orders = "(payload->>'total')::numeric >= (params->>'min')::numeric";
    /// broker
    ///     .subscription("big-orders")
    ///     .pattern("orders.created")
    ///     .condition(big_orders, json!({"min": 1000}))
    ///     .save()?;
    /// # Ok(()) }
    /// ```
    pub fn condition(mut self, sql: &str, params: serde_json::Value) -> Self {
        self.condition = Some((sql.to_owned(), params));
        self
    }

    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn expiry(&self) -> Option<Duration> {
        self.expire_after
    }

    /// Saves with this expiry and one partition (a stream's subscription).
    pub(crate) fn save_new(mut self, expire_after: Duration) -> Result<bool> {
        if self.partitions != 1 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a stream reads one partition: leave partitions at 1",
            ));
        }
        self.expire_after = Some(expire_after);
        self.save()
    }

    /// Creates the subscription, or updates its patterns, filter and expiry. Returns `true`
    /// when it was created. Fails with [`ErrorKind::InvalidName`] for a bad name or pattern,
    /// [`ErrorKind::InvalidInput`] for a partition count out of 1..=1024 or different from
    /// the existing subscription's, a filter or params that is not a JSON object, a condition
    /// that does not compile or is not confined to the event, or one (or params) different
    /// from the existing subscription's.
    pub fn save(self) -> Result<bool> {
        validate_subscription(&self.name)?;
        if self.patterns.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidName,
                "a subscription needs at least one topic pattern",
            ));
        }
        for p in &self.patterns {
            validate_pattern(p)?;
        }
        if !(1..=1024).contains(&self.partitions) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("partitions must be in 1..=1024, got {}", self.partitions),
            ));
        }
        for (what, value) in [
            ("filter", self.filter.as_ref()),
            ("condition params", self.condition.as_ref().map(|c| &c.1)),
        ] {
            if value.is_some_and(|v| !v.is_object()) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("a subscription {what} must be a JSON object"),
                ));
            }
        }
        let (condition, params) = match &self.condition {
            Some((sql, params)) => (Some(sql.as_str()), Some(params)),
            None => (None, None),
        };
        let mut conn = self.broker.conn()?;
        let expire = self.expire_after.map(|d| d.as_secs_f64());
        let row = conn
            .query_one(
                "SELECT pgbroker.subscribe($1, $2, $3, $4, $5::float8 * interval '1 second', \
                                           $6, $7, $8)",
                &[
                    &self.name,
                    &self.patterns,
                    &(self.partitions as i32),
                    &self.start_at.as_sql(),
                    &expire,
                    &self.filter,
                    &condition,
                    &params,
                ],
            )
            .map_err(sql_error)?;
        Ok(row.get(0))
    }
}

/// Maps the SQL functions' "invalid parameter" errors to [`ErrorKind::InvalidInput`].
pub(crate) fn sql_error(e: postgres::Error) -> Error {
    if e.code().map(|c| c.code()) == Some("22023") {
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        return Error::with_cause(ErrorKind::InvalidInput, Some(msg), e);
    }
    e.into()
}

impl Broker {
    /// Creates (starting at the end of the log) or updates a subscription named `name` to the
    /// topics matching `patterns`. Returns `true` when it was created. See
    /// [`subscription`](Self::subscription) for partitions and start positions.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker.subscribe("audit", &["#"])?;
    /// broker.subscribe("billing", &["orders.*", "refunds.*"])?;
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, name: &str, patterns: &[&str]) -> Result<bool> {
        patterns
            .iter()
            .fold(self.subscription(name), |b, p| b.pattern(p))
            .save()
    }

    /// A builder to create or update a subscription with options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker.subscription("emails").pattern("users.#").partitions(2).save()?;
    /// # Ok(()) }
    /// ```
    pub fn subscription(&self, name: &str) -> SubscriptionBuilder {
        SubscriptionBuilder {
            broker: self.clone(),
            name: name.to_owned(),
            patterns: Vec::new(),
            partitions: 1,
            start_at: StartAt::End,
            expire_after: None,
            filter: None,
            condition: None,
        }
    }

    /// Deletes a subscription with its cursors, retries and dead events. Returns whether it
    /// existed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker.unsubscribe("emails")?;
    /// # Ok(()) }
    /// ```
    pub fn unsubscribe(&self, name: &str) -> Result<bool> {
        validate_subscription(name)?;
        let mut conn = self.conn()?;
        Ok(conn
            .query_one("SELECT pgbroker.unsubscribe($1)", &[&name])?
            .get(0))
    }

    /// Moves the cursor of `partition` of a subscription to `position`, backwards (replay) or
    /// forwards (skip) up to the end of the log. Fails with [`ErrorKind::NotFound`] when there
    /// is no such subscription partition, and with [`ErrorKind::InvalidInput`] (naming the
    /// position and the log's end) for a position beyond the end of the log: past the newest
    /// event and the horizon, where the cursor would skip events not written yet.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use pgbroker::topic::Position;
    /// broker.seek("audit", 0, Position::BEGINNING)?; // replay everything
    /// # Ok(()) }
    /// ```
    pub fn seek(&self, subscription: &str, partition: u32, position: Position) -> Result<()> {
        validate_subscription(subscription)?;
        let mut conn = self.conn()?;
        let found: bool = conn
            .query_one(
                "SELECT pgbroker.seek($1, $2::text::xid8, $3, $4)",
                &[
                    &subscription,
                    &position.tx_text(),
                    &position.id(),
                    &(partition as i32),
                ],
            )
            .map_err(sql_error)?
            .get(0);
        if !found {
            return Err(not_found(subscription, partition));
        }
        Ok(())
    }

    /// Every subscription, by name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let names: Vec<String> = broker.subscriptions()?.into_iter().map(|s| s.name).collect();
    /// # Ok(()) }
    /// ```
    pub fn subscriptions(&self) -> Result<Vec<SubscriptionInfo>> {
        // A read replica when there is one: a listing may be a moment stale.
        let mut conn = self.listing_conn()?;
        let rows = conn.query(
            "SELECT name, patterns, partitions, extract(epoch FROM expire_after)::float8,
                    created_at, filter, condition, coalesce(params, '{}')
               FROM pgbroker.subscriptions ORDER BY name",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| SubscriptionInfo {
                name: r.get(0),
                patterns: r.get(1),
                partitions: r.get::<_, i32>(2) as u32,
                expire_after: r
                    .get::<_, Option<f64>>(3)
                    .map(|s| Duration::from_secs_f64(s.max(0.0))),
                created_at: r.get(4),
                filter: r.get(5),
                condition: r
                    .get::<_, Option<String>>(6)
                    .map(|sql| (sql, r.get::<_, serde_json::Value>(7))),
            })
            .collect())
    }

    /// The number of partitions of a subscription; [`ErrorKind::NotFound`] when it does not
    /// exist.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let n = broker.subscription_partitions("billing")?;
    /// # Ok(()) }
    /// ```
    pub fn subscription_partitions(&self, name: &str) -> Result<u32> {
        validate_subscription(name)?;
        let mut conn = self.conn()?;
        match conn.query_opt(
            "SELECT partitions FROM pgbroker.subscriptions WHERE name = $1",
            &[&name],
        )? {
            Some(row) => Ok(row.get::<_, i32>(0) as u32),
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!("no subscription {name:?}"),
            )),
        }
    }
}

pub(crate) fn not_found(subscription: &str, partition: u32) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no subscription {subscription:?} with partition {partition}"),
    )
}
