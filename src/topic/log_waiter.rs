//! [`LogWaiter`]: a reader's registration as waiting for new events, so that publishers send
//! it a wake-up instead of it polling the log.

use std::time::Duration;

use postgres::Client;

use crate::topic::publish_state::WAITER_RECHECK;
use crate::{Broker, Result};

/// Registers the session as waiting: publishers NOTIFY [`WAKEUP_CHANNEL`](super::WAKEUP_CHANNEL)
/// while a row exists (`pgbroker.log_wake()`). Rows of sessions that ended are cleared by
/// consumers connecting and by `pgbroker.log_maintain()`.
pub(crate) const REGISTER_SQL: &str = "INSERT INTO pgbroker.log_waiters (pid) \
     VALUES (pg_backend_pid()) ON CONFLICT DO NOTHING";

/// Ends the session's registration.
pub(crate) const UNREGISTER_SQL: &str =
    "DELETE FROM pgbroker.log_waiters WHERE pid = pg_backend_pid()";

/// Clears the rows of sessions that ended without unregistering (a killed process): they make
/// publishers notify for nothing.
pub(crate) const CLEAR_ENDED_SQL: &str = "DELETE FROM pgbroker.log_waiters w \
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = w.pid)";

/// A reader of the log registered as waiting for new events: while it is
/// [registered](Self::register), every publish through pgbroker (the Rust API,
/// `pgbroker.publish`, table change events, `pgbroker.log_wake()`) sends a NOTIFY on
/// [`WAKEUP_CHANNEL`](super::WAKEUP_CHANNEL), which a [`Listener`](crate::Listener) receives.
///
/// Register while idle, not while busy: every publishing transaction notifies while anyone
/// is registered, and NOTIFY serializes the commits that send it. A publish that looked for
/// waiters shortly before the registration may not notify: read once more
/// [`RECHECK_AFTER`](Self::RECHECK_AFTER) after registering. Events written with plain SQL
/// notify nobody: keep a polling interval for them.
///
/// The registration belongs to a connection of its own (outside the broker's pool; behind a
/// transaction-mode pooler, the session URL's). Dropping the waiter ends it; the rows of
/// waiters whose process was killed are cleared when the next waiter connects.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use pgbroker::topic::{LogWaiter, WAKEUP_CHANNEL};
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let wake_ups = broker.listen(WAKEUP_CHANNEL)?;
/// let mut waiter = LogWaiter::new(&broker)?;
/// waiter.register()?;
/// // ... read the log once more, then:
/// if wake_ups.recv_timeout(Duration::from_secs(1))?.is_some() {
///     // read the log: something was published
/// }
/// waiter.unregister()?;
/// # Ok(()) }
/// ```
pub struct LogWaiter {
    client: Client,
    registered: bool,
}

impl std::fmt::Debug for LogWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWaiter")
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

impl LogWaiter {
    /// How long after [`register`](Self::register) to read the log once more: publishes that
    /// skipped looking for waiters (they do for 2 ms after a look that found none) began by
    /// then.
    ///
    /// # Examples
    ///
    /// ```
    /// use pgbroker::topic::LogWaiter;
    /// assert!(LogWaiter::RECHECK_AFTER.as_millis() > 2);
    /// ```
    pub const RECHECK_AFTER: Duration = WAITER_RECHECK;

    /// Opens the waiter's connection, not registered yet, and clears the registrations of
    /// sessions that ended without unregistering.
    ///
    /// Fails as connecting fails ([`ErrorKind::Connect`](crate::ErrorKind), ...), and with
    /// [`ErrorKind::Config`](crate::ErrorKind) behind a transaction-mode pooler without a
    /// session URL.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let waiter = pgbroker::topic::LogWaiter::new(&broker)?;
    /// assert!(!waiter.is_registered());
    /// # Ok(()) }
    /// ```
    pub fn new(broker: &Broker) -> Result<LogWaiter> {
        let mut client = broker.connect_dedicated()?;
        client.execute(CLEAR_ENDED_SQL, &[])?;
        Ok(LogWaiter {
            client,
            registered: false,
        })
    }

    /// Registers as waiting (again, if it was): publishers send wake-ups from now on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut waiter = pgbroker::topic::LogWaiter::new(&broker)?;
    /// waiter.register()?;
    /// assert!(waiter.is_registered());
    /// # Ok(()) }
    /// ```
    pub fn register(&mut self) -> Result<()> {
        self.client.execute(REGISTER_SQL, &[])?;
        self.registered = true;
        Ok(())
    }

    /// Ends the registration: publishers stop sending wake-ups for this waiter.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut waiter = pgbroker::topic::LogWaiter::new(&broker)?;
    /// waiter.register()?;
    /// waiter.unregister()?;
    /// assert!(!waiter.is_registered());
    /// # Ok(()) }
    /// ```
    pub fn unregister(&mut self) -> Result<()> {
        self.client.execute(UNREGISTER_SQL, &[])?;
        self.registered = false;
        Ok(())
    }

    /// Whether the last [`register`](Self::register) has not been undone.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let waiter = pgbroker::topic::LogWaiter::new(&broker)?;
    /// assert!(!waiter.is_registered());
    /// # Ok(()) }
    /// ```
    pub fn is_registered(&self) -> bool {
        self.registered
    }
}

impl Drop for LogWaiter {
    fn drop(&mut self) {
        if self.registered {
            // Best effort: the row of a session that ended is cleared later anyway.
            let _ = self.client.execute(UNREGISTER_SQL, &[]);
        }
    }
}
