//! `Broker`: the cheap-to-clone handle to one database that everything starts from.

use std::sync::Arc;

use postgres::Client;

use crate::config::{BrokerBuilder, Config};
use crate::connect::{note_database, process_env, Target};
use crate::id_blocks::IdBlocks;
use crate::pool::{Manager, PooledConn};
use crate::queue::{Gates, WakeChecks};
use crate::replicas::Replicas;
use crate::topic::PublishState;
use crate::{schema, Error, ErrorKind, Result};

/// The handle to a PostgreSQL database used as a broker: a connection pool plus settings.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`: share one per process. Publishing,
/// enqueueing and acking use pooled connections; each [`Listener`](crate::Listener) owns a
/// dedicated connection.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// let broker = pgbroker::Broker::connect("postgres://app@localhost/app")?;
/// broker.install()?; // create or upgrade the pgbroker schema
/// broker.notify("greetings", "hello")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// A session connection's target when pooled ones go through a transaction-mode pooler.
    session: Option<Target>,
    dbname: Arc<str>,
    config: Config,
    pool: r2d2::Pool<Manager>,
    publish: PublishState,
    wake_checks: WakeChecks,
    job_ids: IdBlocks,
    replicas: Replicas,
    gates: Gates,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("servers", &self.inner.target.endpoints())
            .field("dbname", &self.inner.target.pg().get_dbname())
            .field("sslmode", &self.inner.target.sslmode())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Broker {
    /// Connects with a URL and default settings. See [`Broker::builder`] for the settings.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// let broker = pgbroker::Broker::connect("postgres://app@localhost/app")?;
    /// # Ok(()) }
    /// ```
    pub fn connect(url: &str) -> Result<Broker> {
        BrokerBuilder::new().url(url).build()
    }

    /// Connects as `psql` would without arguments: with `$DATABASE_URL` when it is set, else
    /// from libpq's `PG*` variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
    /// `PGSSLMODE`, `PGSSLROOTCERT`, ...), `~/.pgpass` and libpq's defaults (the local socket
    /// in `/var/run/postgresql`, port 5432, the operating-system user name).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// // PGHOST=db.internal PGUSER=app PGSSLMODE=verify-full PGSSLROOTCERT=ca.pem ./app
    /// let broker = pgbroker::Broker::from_env()?;
    /// # Ok(()) }
    /// ```
    ///
    /// `PGBROKER_TRANSACTION_POOLING=1` and `PGBROKER_SESSION_URL` set
    /// [`BrokerBuilder::transaction_pooling`] and [`BrokerBuilder::session_url`].
    pub fn from_env() -> Result<Broker> {
        let url = process_env("DATABASE_URL").unwrap_or_default();
        let mut builder = BrokerBuilder::new().url(&url);
        if process_env("PGBROKER_TRANSACTION_POOLING").is_some_and(|v| v == "1" || v == "true") {
            builder = builder.transaction_pooling(true);
        }
        if let Some(session) = process_env("PGBROKER_SESSION_URL") {
            builder = builder.session_url(&session);
        }
        builder.build()
    }

    /// A builder for a broker with non-default settings.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// let broker = pgbroker::Broker::builder()
    ///     .url("postgres://app@localhost/app")
    ///     .pool_size(4)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::new()
    }

    pub(crate) fn from_parts(
        target: Target,
        session: Option<Target>,
        config: Config,
        replicas: Vec<Target>,
    ) -> Result<Broker> {
        // Connect once directly: r2d2 would only report "timed out", hiding the real cause.
        let probe = target.connect()?;
        drop(probe);
        let pool = r2d2::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(config.min_idle.min(config.pool_size)))
            .connection_timeout(config.pool_timeout)
            .test_on_check_out(false)
            .build_unchecked(Manager::new(target.clone(), config.transaction_pooling));
        let replicas = Replicas::new(
            replicas,
            config.replica_max_lag,
            config.pool_size,
            config.pool_timeout,
        );
        Ok(Broker {
            inner: Arc::new(Inner {
                dbname: target.dbname().into(),
                target,
                session,
                config,
                pool,
                publish: PublishState::new(),
                wake_checks: WakeChecks::default(),
                job_ids: IdBlocks::jobs(),
                replicas,
                gates: Gates::default(),
            }),
        })
    }

    /// The settings this broker was built with.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// assert_eq!(broker.config().pool_size(), 10);
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The connection settings (with pgbroker's timeouts and keepalives applied).
    ///
    /// `sslmode` here is only what the `postgres` crate knows (disable, prefer, require); the
    /// TLS checks of `verify-ca` and `verify-full` are in the broker's connector, which
    /// [`new_client`](Self::new_client) uses.
    pub fn pg_config(&self) -> &postgres::Config {
        self.inner.target.pg()
    }

    /// Opens a new connection outside the pool, with the broker's settings and TLS connector;
    /// the caller owns it.
    ///
    /// Fails like [`Broker::connect`]: [`ErrorKind::Connect`], [`ErrorKind::Tls`] or
    /// [`ErrorKind::Timeout`], with a message naming the server and what happened.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut client = broker.new_client()?;
    /// client.batch_execute("LISTEN my_own_channel")?;
    /// # Ok(()) }
    /// ```
    pub fn new_client(&self) -> Result<Client> {
        self.inner.target.connect()
    }

    /// Borrows a pooled connection, for the caller's own queries and transactions.
    ///
    /// Fails with [`ErrorKind::Pool`] when none frees up within the pool timeout.
    ///
    /// With [`transaction_pooling`](BrokerBuilder::transaction_pooling), run your statements
    /// in a transaction or with `query_typed`: a statement prepared by name outside a
    /// transaction may find itself on another server connection of the pooler.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut conn = broker.conn()?;
    /// let one: i32 = conn.query_one("SELECT 1", &[])?.get(0);
    /// # Ok(()) }
    /// ```
    ///
    /// A connection that sat idle is checked first; one found dead (after a server restart,
    /// a terminated backend, a network cut) is discarded and another handed out, so the
    /// first call after a restart does not fail.
    pub fn conn(&self) -> Result<PooledConn> {
        note_database(&self.inner.dbname);
        let check_timeout = self.inner.config.connect_timeout;
        // Every connection of a full pool may be dead: look at each once, then a fresh one.
        for _ in 0..=self.inner.config.pool_size {
            let mut conn = self.inner.pool.get().map_err(Error::from)?;
            if conn.usable(check_timeout) {
                return Ok(conn);
            }
        }
        self.inner.pool.get().map_err(Error::from)
    }

    /// What single publishes share: reserved event ids, the last look for waiting consumers.
    pub(crate) fn publish_state(&self) -> &PublishState {
        &self.inner.publish
    }

    /// When single enqueues ask for waiting workers (src/queue/wake_checks.rs).
    pub(crate) fn wake_checks(&self) -> &WakeChecks {
        &self.inner.wake_checks
    }

    /// Which queues this broker found gated (paused or limited, src/queue/limits.rs).
    pub(crate) fn gates(&self) -> &Gates {
        &self.inner.gates
    }

    /// The job ids reserved for single enqueues (src/id_blocks.rs).
    pub(crate) fn replicas(&self) -> &Replicas {
        &self.inner.replicas
    }

    pub(crate) fn job_ids(&self) -> &IdBlocks {
        &self.inner.job_ids
    }

    /// A new connection outside the pool (listeners own one each).
    ///
    /// Behind a transaction-mode pooler it connects with the session URL, and fails with
    /// [`ErrorKind::Config`] when none was given: LISTEN and advisory locks need a session.
    pub(crate) fn connect_dedicated(&self) -> Result<Client> {
        if !self.inner.config.transaction_pooling {
            return self.inner.target.connect();
        }
        match &self.inner.session {
            Some(session) => session.connect(),
            None => Err(Error::new(
                ErrorKind::Config,
                "this needs a session connection (LISTEN, advisory locks), which a transaction-mode \
                 pooler cannot give: set BrokerBuilder::session_url (CLI --session-url, \
                 PGBROKER_SESSION_URL) to the server or a session-mode pool",
            )),
        }
    }

    /// Creates or upgrades the `pgbroker` schema (tables, functions); safe to call on every
    /// start and from several processes at once. Returns the installed version.
    ///
    /// The same SQL can be applied with `psql -1 -f schema.sql`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let version = broker.install()?;
    /// assert_eq!(version, pgbroker::SCHEMA_VERSION);
    /// # Ok(()) }
    /// ```
    pub fn install(&self) -> Result<i32> {
        let mut conn = self.conn()?;
        schema::install(&mut conn)
    }

    /// The installed schema version, or `None` when the schema is not installed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// if broker.schema_version()?.is_none() {
    ///     broker.install()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn schema_version(&self) -> Result<Option<i32>> {
        let mut conn = self.conn()?;
        if conn.transaction_pooling() {
            // Its queries are SQL text: in a transaction they stay on one server connection.
            let mut tx = conn.transaction()?;
            let version = schema::version(&mut tx)?;
            tx.commit()?;
            return Ok(version);
        }
        schema::version(&mut **conn)
    }
}
