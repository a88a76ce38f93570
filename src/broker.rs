//! `Broker`: the cheap-to-clone handle to one database that everything starts from.

use std::sync::Arc;

use postgres::{Client, NoTls};

use crate::config::{BrokerBuilder, Config};
use crate::id_blocks::IdBlocks;
use crate::pool::{Manager, PooledConn};
use crate::queue::{Gates, WakeChecks};
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
    pg: postgres::Config,
    config: Config,
    pool: r2d2::Pool<Manager>,
    publish: PublishState,
    wake_checks: WakeChecks,
    job_ids: IdBlocks,
    gates: Gates,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("hosts", &self.inner.pg.get_hosts())
            .field("ports", &self.inner.pg.get_ports())
            .field("dbname", &self.inner.pg.get_dbname())
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

    pub(crate) fn from_parts(pg: postgres::Config, config: Config) -> Result<Broker> {
        // Connect once directly: r2d2 would only report "timed out", hiding the real cause.
        let probe = connect_with(&pg)?;
        drop(probe);
        let pool = r2d2::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(config.min_idle.min(config.pool_size)))
            .connection_timeout(config.pool_timeout)
            .test_on_check_out(false)
            .build_unchecked(Manager::new(pg.clone()));
        Ok(Broker {
            inner: Arc::new(Inner {
                pg,
                config,
                pool,
                publish: PublishState::new(),
                wake_checks: WakeChecks::default(),
                job_ids: IdBlocks::jobs(),
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
    pub fn pg_config(&self) -> &postgres::Config {
        &self.inner.pg
    }

    /// Borrows a pooled connection, for the caller's own queries and transactions.
    ///
    /// Fails with [`ErrorKind::Pool`] when none frees up within the pool timeout.
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
    pub fn conn(&self) -> Result<PooledConn> {
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
    pub(crate) fn job_ids(&self) -> &IdBlocks {
        &self.inner.job_ids
    }

    /// A new connection outside the pool (listeners own one each).
    pub(crate) fn connect_dedicated(&self) -> Result<Client> {
        connect_with(&self.inner.pg)
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
        schema::version(&mut **conn)
    }
}

fn connect_with(pg: &postgres::Config) -> Result<Client> {
    pg.connect(NoTls).map_err(|e| {
        let mut err = Error::with_cause(ErrorKind::Connect, None, e);
        if let Some(h) = pg.get_hosts().first() {
            err = err.context(format!("connecting to {h:?} port {:?}", pg.get_ports()));
        }
        err
    })
}
