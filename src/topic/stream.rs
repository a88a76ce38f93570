//! Throwaway subscriptions: an iterator of events from now on, with nothing to clean up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::subscription::SubscriptionBuilder;
use super::LogEvent;
use crate::{Broker, Error, ErrorKind, Result};

/// How long a stream's subscription outlives a process that died without dropping it (unless
/// [`SubscriptionBuilder::expire_after`] says otherwise): it is deleted by the first
/// [`Broker::log_maintain`] after that long without a read.
pub const STREAM_EXPIRY: Duration = Duration::from_secs(60);

/// Events per read.
const READ_BATCH: usize = 100;

/// The longest sleep between reads of an idle log.
const MAX_IDLE: Duration = Duration::from_millis(250);

/// Events of a throwaway subscription, as they come: an [`Iterator`] that blocks until the
/// next event. Get one from [`Broker::stream`] or [`SubscriptionBuilder::into_stream`].
///
/// The subscription behind it has a generated name and an expiry
/// ([`STREAM_EXPIRY`], 60 s): the stream renews it while it reads (at least every third of
/// the expiry, also when idle), drops it when the stream is dropped, and
/// [`Broker::log_maintain`] deletes it once the expiry passed without a read, should the process
/// die first. Delivery is at most once: an event is acknowledged when it is read into the
/// stream, so events the process had read but not yet handled when it died are not seen
/// again; use a named subscription and a worker pool for anything that must not be lost.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// for event in broker.stream(&["orders.#"])?.take(10) {
///     let event = event?;
///     println!("{} {}", event.topic(), event.payload());
/// }
/// // The subscription is gone now.
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct EventStream {
    broker: Broker,
    name: String,
    expire_after: Duration,
    buffered: VecDeque<LogEvent>,
    renewed: Instant,
    idle: Duration,
}

impl EventStream {
    /// The name of the subscription behind the stream.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let stream = broker.stream(&["#"])?;
    /// assert!(stream.name().starts_with("pgbroker-stream-"));
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next event, waiting up to `timeout` for one; `Ok(None)` when none came by then.
    /// Fails with [`ErrorKind::NotFound`] when the subscription expired meanwhile (the stream
    /// went unread for longer than its expiry and maintenance deleted it), or with the
    /// database's error; the next call tries again.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let mut stream = broker.stream(&["orders.#"])?;
    /// match stream.next_timeout(Duration::from_secs(1))? {
    ///     Some(event) => println!("{}", event.payload()),
    ///     None => println!("nothing within a second"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<LogEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.buffered.pop_front() {
                return Ok(Some(e));
            }
            self.renew_when_due()?;
            let batch = self.broker.read(&self.name, READ_BATCH)?;
            if let Some(pos) = batch.ack_position() {
                self.broker.ack(&self.name, pos)?;
            }
            if !batch.is_empty() {
                self.idle = Duration::from_millis(10);
                self.buffered.extend(batch.events);
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(self.idle.min(deadline - now));
            self.idle = (self.idle * 2).min(MAX_IDLE);
        }
    }

    /// Keeps maintenance from expiring the subscription while the stream is alive but the
    /// log is quiet (reads that move nothing do not count as activity).
    fn renew_when_due(&mut self) -> Result<()> {
        if self.renewed.elapsed() < self.expire_after / 3 {
            return Ok(());
        }
        let mut conn = self.broker.conn()?;
        let n = conn.execute(
            "UPDATE pgbroker.subscriptions SET updated_at = now() WHERE name = $1",
            &[&self.name],
        )?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("the stream's subscription {:?} expired", self.name),
            ));
        }
        self.renewed = Instant::now();
        Ok(())
    }
}

impl Iterator for EventStream {
    type Item = Result<LogEvent>;

    /// Blocks until the next event; never returns `None`.
    fn next(&mut self) -> Option<Result<LogEvent>> {
        loop {
            match self.next_timeout(Duration::from_secs(1)) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Err(e) = self.broker.unsubscribe(&self.name) {
            log::warn!(
                "pgbroker: could not remove stream subscription {:?} (maintenance will): {e}",
                self.name
            );
        }
    }
}

impl SubscriptionBuilder {
    /// Saves this as a throwaway subscription and returns its events as an [`EventStream`]:
    /// the subscription is removed when the stream is dropped, and by maintenance after
    /// [`expire_after`](Self::expire_after) (default [`STREAM_EXPIRY`]) when the process dies.
    /// Name it uniquely ([`Broker::stream`] generates a name). It must have one partition;
    /// fails like [`save`](Self::save), and with [`ErrorKind::InvalidInput`] when the
    /// subscription exists already.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use serde_json::json;
    /// let stream = broker
    ///     .subscription("sse-user-42")
    ///     .pattern("orders.#")
    ///     .filter(json!({"user": 42}))
    ///     .into_stream()?;
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> Result<EventStream> {
        let broker = self.broker().clone();
        let name = self.name().to_owned();
        let expire_after = self.expiry().unwrap_or(STREAM_EXPIRY);
        if !self.save_new(expire_after)? {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("subscription {name:?} exists already: a stream needs a new one"),
            ));
        }
        Ok(EventStream {
            broker,
            name,
            expire_after,
            buffered: VecDeque::new(),
            renewed: Instant::now(),
            idle: Duration::from_millis(10),
        })
    }
}

impl Broker {
    /// Events of the topics matching `patterns` published from now on, through a throwaway
    /// subscription (see [`EventStream`]): nothing to create or clean up.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for event in broker.stream(&["orders.#"])? {
    ///     let event = event?;
    ///     if event.topic() == "orders.shutdown" {
    ///         break; // dropping the stream drops its subscription
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&self, patterns: &[&str]) -> Result<EventStream> {
        patterns
            .iter()
            .fold(self.subscription(&stream_name()), |b, p| b.pattern(p))
            .into_stream()
    }
}

/// `pgbroker-stream-<pid>-<nanos>-<n>`: unique across processes and hosts in practice.
fn stream_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("pgbroker-stream-{}-{nanos}-{n}", std::process::id())
}
