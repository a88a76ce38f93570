//! Broker configuration: connection, pool, listener and shutdown settings.

use std::time::Duration;

use crate::connect::{process_env, Target};
use crate::{Broker, Error, ErrorKind, Result};

/// Settings shared by everything a [`Broker`] starts. Built once by [`BrokerBuilder`], immutable
/// afterwards; read them back with [`Broker::config`].
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) pool_size: u32,
    pub(crate) min_idle: u32,
    pub(crate) pool_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) keepalives_idle: Duration,
    pub(crate) tcp_user_timeout: Duration,
    pub(crate) listener_poll: Duration,
    pub(crate) health_check_interval: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) application_name: String,
    pub(crate) transaction_pooling: bool,
    pub(crate) replica_max_lag: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            pool_size: 10,
            min_idle: 0,
            pool_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            keepalives_idle: Duration::from_secs(30),
            tcp_user_timeout: Duration::from_secs(30),
            listener_poll: Duration::from_millis(250),
            health_check_interval: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            application_name: "pgbroker".into(),
            transaction_pooling: false,
            replica_max_lag: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Largest number of pooled connections.
    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }
    /// How long a listener waits for a notification before it checks its stop flag.
    pub fn listener_poll(&self) -> Duration {
        self.listener_poll
    }
    /// First and largest delay between reconnection attempts.
    pub fn reconnect_backoff(&self) -> (Duration, Duration) {
        (self.reconnect_min, self.reconnect_max)
    }
    /// How long a shutdown waits for running handlers.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }
    /// Whether pooled connections go through a transaction-mode pooler (see
    /// [`BrokerBuilder::transaction_pooling`]).
    pub fn transaction_pooling(&self) -> bool {
        self.transaction_pooling
    }

    /// The delay before reconnection attempt `attempt` (0-based): doubling from the minimum,
    /// capped at the maximum.
    pub(crate) fn reconnect_delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.reconnect_min
            .checked_mul(factor)
            .unwrap_or(self.reconnect_max)
            .min(self.reconnect_max)
    }
}

/// Builds a [`Broker`]: where to connect, and how.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// # fn main() -> pgbroker::Result<()> {
/// let broker = pgbroker::Broker::builder()
///     .url("postgres://app@localhost/app")
///     .pool_size(16)
///     .connect_timeout(Duration::from_secs(5))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct BrokerBuilder {
    url: Option<String>,
    pg: Option<postgres::Config>,
    session_url: Option<String>,
    config: Config,
    replicas: Vec<String>,
}

impl BrokerBuilder {
    /// A builder with every setting at its default.
    pub fn new() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// Connect with a libpq connection string, read as libpq reads it: a URL
    /// (`postgres://user:pass@host:port/db?sslmode=verify-full`, several `host:port` pairs
    /// separated by commas, `postgres:///db` for the local socket) or key/value settings
    /// (`host=... dbname=... sslrootcert=...`). What it leaves out comes from the `PG*`
    /// variables, then libpq's defaults; a missing password from `PGPASSWORD` or `~/.pgpass`.
    /// An empty string is all environment (see [`Broker::from_env`]). Parsed in
    /// [`build`](Self::build).
    ///
    /// TLS follows `sslmode` (default `prefer`): `disable`, `prefer` (TLS when the server
    /// offers it), `require` (always TLS; the certificate is checked only when a root
    /// certificate is given), `verify-ca` (the certificate chains to `sslrootcert`),
    /// `verify-full` (and names the host). `sslcert`/`sslkey` give a client certificate.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// let broker = pgbroker::Broker::builder()
    ///     .url("postgres://app@db.internal/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem")
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn url(mut self, url: &str) -> Self {
        self.url = Some(url.to_owned());
        self.pg = None;
        self
    }

    /// Connect with an already built `postgres::Config`. pgbroker still applies its own timeout
    /// and keepalive settings where the config leaves them unset. Its `ssl_mode` encrypts
    /// without verifying the server (`prefer`, `require`); for certificate checks use
    /// [`url`](Self::url) with `sslmode=verify-full`.
    pub fn pg_config(mut self, config: postgres::Config) -> Self {
        self.pg = Some(config);
        self.url = None;
        self
    }

    /// Largest number of pooled connections (used for publishing, enqueueing, claiming and
    /// acking; listeners have their own). Default 10.
    pub fn pool_size(mut self, n: u32) -> Self {
        self.config.pool_size = n;
        self
    }

    /// Connections the pool keeps open while idle. Default 0.
    pub fn min_idle(mut self, n: u32) -> Self {
        self.config.min_idle = n;
        self
    }

    /// How long to wait for a free pooled connection before failing with
    /// [`ErrorKind::Pool`]. Default 10 s.
    pub fn pool_timeout(mut self, d: Duration) -> Self {
        self.config.pool_timeout = d;
        self
    }

    /// How long opening a connection may take, per host: TCP, TLS and authentication together,
    /// so a server that accepts connections but never answers fails with
    /// [`ErrorKind::Timeout`]. A `connect_timeout` in the URL (or `PGCONNECT_TIMEOUT`) wins.
    /// Default 10 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// Idle time before TCP keepalive probes start; a dead peer is noticed after roughly this
    /// plus the user timeout. Default 30 s.
    pub fn keepalives_idle(mut self, d: Duration) -> Self {
        self.config.keepalives_idle = d;
        self
    }

    /// How long sent data may stay unacknowledged before the kernel drops the connection
    /// (`TCP_USER_TIMEOUT`). Default 30 s.
    pub fn tcp_user_timeout(mut self, d: Duration) -> Self {
        self.config.tcp_user_timeout = d;
        self
    }

    /// How long a listener thread waits for notifications before checking whether it should
    /// stop. Bounds how long [`Listener`](crate::Listener) shutdown takes. Default 250 ms.
    pub fn listener_poll(mut self, d: Duration) -> Self {
        self.config.listener_poll = d;
        self
    }

    /// How often an idle listener checks that its connection is alive. Default 10 s.
    pub fn health_check_interval(mut self, d: Duration) -> Self {
        self.config.health_check_interval = d;
        self
    }

    /// Reconnection backoff: first delay and cap; the delay doubles between attempts.
    /// Default 100 ms and 10 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.reconnect_min = min;
        self.config.reconnect_max = max.max(min);
        self
    }

    /// How long [`WorkerPool::shutdown`](crate::WorkerPool::shutdown) waits for running
    /// handlers to finish. Default 30 s.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.config.shutdown_grace = d;
        self
    }

    /// Says that [`url`](Self::url) leads to a transaction-mode pooler (PgBouncer
    /// `pool_mode = transaction`, and others like it), where each transaction may run on
    /// another server connection. pgbroker then prepares no named statements on pooled
    /// connections (each statement is parsed with every execution: a little more server CPU)
    /// and keeps no session state on them. Listeners, consumer wake-ups and partition
    /// members need a session of their own: they connect with
    /// [`session_url`](Self::session_url), and fail with [`ErrorKind::Config`] without one.
    /// Default false; [`Broker::from_env`] reads `PGBROKER_TRANSACTION_POOLING=1`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// let broker = pgbroker::Broker::builder()
    ///     .url("postgres://app@pgbouncer:6432/app")
    ///     .transaction_pooling(true)
    ///     .session_url("postgres://app@db-primary:5432/app")
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn transaction_pooling(mut self, on: bool) -> Self {
        self.config.transaction_pooling = on;
        self
    }

    /// A connection string for what needs a session of its own (LISTEN, advisory locks):
    /// the server itself, or a session-mode pool, when [`url`](Self::url) is a
    /// transaction-mode pooler. Read like [`url`](Self::url). Without
    /// [`transaction_pooling`](Self::transaction_pooling) it is not used. Default none;
    /// [`Broker::from_env`] reads `PGBROKER_SESSION_URL`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// let broker = pgbroker::Broker::builder()
    ///     .url("postgres://app@pgbouncer:6432/app")
    ///     .transaction_pooling(true)
    ///     .session_url("postgres://app@db-primary:5432/app")
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn session_url(mut self, url: &str) -> Self {
        self.session_url = Some(url.to_owned());
        self
    }

    /// `application_name` shown in `pg_stat_activity`. Default `pgbroker`.
    pub fn application_name(mut self, name: &str) -> Self {
        self.config.application_name = name.to_owned();
        self
    }

    /// Sends the event log's reads ([`Broker::read`], [`Broker::stream`], the listing
    /// [`Broker::subscriptions`]) to this streaming replica (a hot standby of the database);
    /// call it again for more, used in turn. Acknowledgements and every write go to the
    /// primary, and so do reads when no replica is usable (unreachable, promoted, or staler
    /// than [`replica_max_lag`](Self::replica_max_lag)). Reads there stay gap-free and never
    /// show an event the primary has not committed; see [`Broker::replica_lag`] and the
    /// `replicas` notes in the README. Worker-pool consumers read on the primary (their
    /// partition lock lives there). Default: none. The URL is checked in
    /// [`build`](Self::build); the replica need not be up then.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// let broker = pgbroker::Broker::builder()
    ///     .url("postgres://app@primary/app")
    ///     .read_replica("postgres://app@replica-1/app")
    ///     .read_replica("postgres://app@replica-2/app")
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn read_replica(mut self, url: &str) -> Self {
        self.replicas.push(url.to_owned());
        self
    }

    /// How stale a replica may be and still serve reads: staler ones are passed over until
    /// they catch up. Staleness is measured about every second, so reads are at most this
    /// plus a second behind the primary. Default 10 s.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// use std::time::Duration;
    /// let broker = pgbroker::Broker::builder()
    ///     .url("postgres://app@primary/app")
    ///     .read_replica("postgres://app@replica-1/app")
    ///     .replica_max_lag(Duration::from_secs(2))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn replica_max_lag(mut self, d: Duration) -> Self {
        self.config.replica_max_lag = d;
        self
    }

    /// Connects (once, to report a clear error now rather than later) and builds the broker.
    ///
    /// Fails with [`ErrorKind::Config`] for a bad URL or setting, and [`ErrorKind::Connect`]
    /// when the server cannot be reached.
    pub fn build(self) -> Result<Broker> {
        let mut target = match (self.pg, self.url) {
            (Some(pg), _) => Target::from_pg_config(pg)?,
            (None, Some(url)) => Target::from_string(&url, &process_env)?,
            (None, None) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "no connection given: call url() or pg_config(), or use Broker::from_env()",
                ))
            }
        };
        let c = &self.config;
        if c.pool_size == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "pool_size must be at least 1",
            ));
        }
        apply_connection_settings(target.pg_mut(), c);
        let session = match (&self.session_url, c.transaction_pooling) {
            (Some(url), true) => {
                let mut session =
                    Target::from_string(url, &process_env).map_err(|e| e.context("session_url"))?;
                apply_connection_settings(session.pg_mut(), c);
                Some(session)
            }
            _ => None,
        };
        let mut replicas = Vec::with_capacity(self.replicas.len());
        for url in &self.replicas {
            let mut replica =
                Target::from_string(url, &process_env).map_err(|e| e.context("read_replica"))?;
            apply_connection_settings(replica.pg_mut(), c);
            replicas.push(replica);
        }
        Broker::from_parts(target, session, self.config, replicas)
    }
}

/// pgbroker's timeouts, keepalives and application name, where the connection string left
/// them unset.
fn apply_connection_settings(pg: &mut postgres::Config, c: &Config) {
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(c.connect_timeout);
    }
    if pg.get_tcp_user_timeout().is_none() {
        pg.tcp_user_timeout(c.tcp_user_timeout);
    }
    pg.keepalives(true).keepalives_idle(c.keepalives_idle);
    if pg.get_keepalives_interval().is_none() {
        pg.keepalives_interval(Duration::from_secs(5));
    }
    if pg.get_keepalives_retries().is_none() {
        pg.keepalives_retries(3);
    }
    if pg.get_application_name().is_none() {
        pg.application_name(&c.application_name);
    }
}
