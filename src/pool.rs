//! The connection pool: r2d2 over `postgres` clients, each with a cache of prepared statements.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use postgres::{Client, NoTls, Statement};
use r2d2::ManageConnection;
use r2d2_postgres::PostgresConnectionManager;

use crate::Result;

/// The r2d2 connection manager: r2d2_postgres's, plus a statement cache per connection.
#[derive(Debug)]
pub struct Manager {
    inner: PostgresConnectionManager<NoTls>,
}

impl Manager {
    pub(crate) fn new(config: postgres::Config) -> Manager {
        Manager {
            inner: PostgresConnectionManager::new(config, NoTls),
        }
    }
}

/// A client with the statements pgbroker prepared on it.
pub struct CachedClient {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl CachedClient {
    /// The statement for `sql`, prepared on first use on this connection. `sql` must be a
    /// constant (it is the cache key).
    pub(crate) fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

impl Deref for CachedClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for CachedClient {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl ManageConnection for Manager {
    type Connection = CachedClient;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<CachedClient, postgres::Error> {
        Ok(CachedClient {
            client: self.inner.connect()?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut CachedClient) -> std::result::Result<(), postgres::Error> {
        self.inner.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut CachedClient) -> bool {
        self.inner.has_broken(&mut conn.client)
    }
}

/// A connection borrowed from the broker's pool; returned to it on drop.
///
/// Dereferences to [`postgres::Client`], so it can run any query or open a transaction for
/// [`Broker::notify_in`](crate::Broker::notify_in) and friends.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let mut conn = broker.conn()?;
/// let mut tx = conn.transaction()?;
/// tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1", &[])?;
/// broker.notify_in(&mut tx, "accounts", "1")?;
/// tx.commit()?; // the notification is sent only now
/// # Ok(()) }
/// ```
pub type PooledConn = r2d2::PooledConnection<Manager>;
