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

    /// Creates the subscription, or updates its patterns and expiry. Returns `true` when it was
    /// created. Fails with [`ErrorKind::InvalidName`] for a bad name or pattern,
    /// [`ErrorKind::InvalidInput`] for a partition count out of 1..=1024 or different from
    /// the existing subscription's.
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
        let mut conn = self.broker.conn()?;
        let expire = self.expire_after.map(|d| d.as_secs_f64());
        let row = conn
            .query_one(
                "SELECT pgbroker.subscribe($1, $2, $3, $4, $5::float8 * interval '1 second')",
                &[
                    &self.name,
                    &self.patterns,
                    &(self.partitions as i32),
                    &self.start_at.as_sql(),
                    &expire,
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
        let mut conn = self.conn()?;
        let rows = conn.query(
            "SELECT name, patterns, partitions, extract(epoch FROM expire_after)::float8,
                    created_at
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
