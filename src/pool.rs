//! The connection pool: r2d2 over `postgres` clients, each with a cache of prepared statements.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, Row};
use r2d2::ManageConnection;

use crate::connect::Target;
use crate::statement::Stmt;
use crate::{Error, Result};

/// A pooled connection idle for longer than this is checked with a round trip before it is
/// handed out. Shorter than any server restart, so after a restart every connection is
/// checked (and a dead one replaced) before its first use; a busy connection is never checked.
const CHECK_AFTER_IDLE: Duration = Duration::from_millis(100);

/// The r2d2 connection manager: connects through the broker's [`Target`] (TLS, timeouts,
/// errors in words) and keeps a statement cache per connection.
#[derive(Debug)]
pub struct Manager {
    target: Target,
    /// Behind a transaction-mode pooler: unnamed statements only.
    unnamed: bool,
}

impl Manager {
    pub(crate) fn new(target: Target, transaction_pooling: bool) -> Manager {
        Manager {
            target,
            unnamed: transaction_pooling,
        }
    }
}

/// A client with the statements pgbroker prepared on it.
pub struct CachedClient {
    client: Client,
    statements: HashMap<SqlKey, Stmt, BuildHasherDefault<SqlKeyHasher>>,
    /// Statements run unnamed (transaction pooling), never prepared by name.
    unnamed: bool,
    /// When the connection last went back to the pool (or was opened).
    returned_at: Instant,
    /// Set when a check found the connection dead: the pool then discards it.
    broken: bool,
}

/// A statement's cache key: the address and length of its `&'static str`, not its text.
/// Hashing and comparing the text cost every call about 1 000 instructions for the 600-byte
/// enqueue statement (SipHash, then memcmp); the address costs a few. Two constants with the
/// same text at different addresses only make two cache entries of one statement.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SqlKey(usize, usize);

impl SqlKey {
    fn of(sql: &'static str) -> SqlKey {
        SqlKey(sql.as_ptr() as usize, sql.len())
    }
}

/// A hasher for [`SqlKey`]: mixes the two words with a multiply, enough for a few dozen keys.
#[derive(Default)]
struct SqlKeyHasher(u64);

impl Hasher for SqlKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl CachedClient {
    /// Whether the connection may be handed out: true when it was used moments ago or
    /// answers a round trip; false (and marked for the pool to discard) when it is dead.
    pub(crate) fn usable(&mut self, timeout: Duration) -> bool {
        if self.client.is_closed() {
            self.broken = true;
        } else if self.returned_at.elapsed() >= CHECK_AFTER_IDLE {
            self.broken = self.client.is_valid(timeout).is_err();
        }
        !self.broken
    }

    /// The statement for `sql`, prepared on first use on this connection (or, with
    /// transaction pooling, its parameter types learned once). `sql` must be a constant: its
    /// address is the cache key.
    pub(crate) fn statement(&mut self, sql: &'static str) -> Result<Stmt> {
        let key = SqlKey::of(sql);
        if let Some(s) = self.statements.get(&key) {
            return Ok(s.clone());
        }
        let s = if self.unnamed {
            Stmt::unnamed(&mut self.client, sql)?
        } else {
            Stmt::Named(self.client.prepare(sql)?)
        };
        self.statements.insert(key, s.clone());
        Ok(s)
    }

    /// `q` as something this connection can run: a statement as it is, SQL text prepared for
    /// this call (by name in a session, unnamed behind a transaction-mode pooler).
    fn resolve<'q, Q: Query + ?Sized>(
        &mut self,
        q: &'q Q,
    ) -> Result<Resolved<'q>, postgres::Error> {
        match q.as_query() {
            QueryRef::Stmt(s) => Ok(Resolved::Ref(s)),
            QueryRef::Text(sql) if self.unnamed => {
                Ok(Resolved::Owned(Stmt::unnamed(&mut self.client, sql)?))
            }
            QueryRef::Text(sql) => Ok(Resolved::Text(sql)),
        }
    }

    // pgbroker's own queries on pooled connections go through these (they shadow `Client`'s
    // methods inside the crate), so that none prepares a named statement behind a
    // transaction-mode pooler.

    pub(crate) fn execute<Q: Query + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        match self.resolve(q)? {
            Resolved::Ref(s) => s.execute(&mut self.client, params),
            Resolved::Owned(s) => s.execute(&mut self.client, params),
            Resolved::Text(sql) => self.client.execute(sql, params),
        }
    }

    pub(crate) fn query<Q: Query + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        match self.resolve(q)? {
            Resolved::Ref(s) => s.query(&mut self.client, params),
            Resolved::Owned(s) => s.query(&mut self.client, params),
            Resolved::Text(sql) => self.client.query(sql, params),
        }
    }

    pub(crate) fn query_one<Q: Query + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        match self.resolve(q)? {
            Resolved::Ref(s) => s.query_one(&mut self.client, params),
            Resolved::Owned(s) => s.query_one(&mut self.client, params),
            Resolved::Text(sql) => self.client.query_one(sql, params),
        }
    }

    pub(crate) fn query_opt<Q: Query + ?Sized>(
        &mut self,
        q: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        match self.resolve(q)? {
            Resolved::Ref(s) => s.query_opt(&mut self.client, params),
            Resolved::Owned(s) => s.query_opt(&mut self.client, params),
            Resolved::Text(sql) => self.client.query_opt(sql, params),
        }
    }

    /// Whether statements run unnamed (transaction pooling).
    pub(crate) fn transaction_pooling(&self) -> bool {
        self.unnamed
    }
}

/// What pgbroker runs on a pooled connection: a [`Stmt`] or SQL text.
pub(crate) trait Query {
    fn as_query(&self) -> QueryRef<'_>;
}

pub(crate) enum QueryRef<'q> {
    Stmt(&'q Stmt),
    Text(&'q str),
}

enum Resolved<'q> {
    Ref(&'q Stmt),
    Owned(Stmt),
    Text(&'q str),
}

impl Query for Stmt {
    fn as_query(&self) -> QueryRef<'_> {
        QueryRef::Stmt(self)
    }
}

impl Query for str {
    fn as_query(&self) -> QueryRef<'_> {
        QueryRef::Text(self)
    }
}

impl Query for String {
    fn as_query(&self) -> QueryRef<'_> {
        QueryRef::Text(self)
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
    type Error = Error;

    fn connect(&self) -> Result<CachedClient> {
        Ok(CachedClient {
            client: self.target.connect()?,
            statements: HashMap::default(),
            unnamed: self.unnamed,
            returned_at: Instant::now(),
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut CachedClient) -> Result<()> {
        Ok(conn.client.simple_query("").map(|_| ())?)
    }

    /// Called by r2d2 whenever a connection goes back to the pool.
    fn has_broken(&self, conn: &mut CachedClient) -> bool {
        conn.returned_at = Instant::now();
        conn.broken || conn.client.is_closed()
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

#[cfg(test)]
mod test {
    use super::*;
    use std::hash::BuildHasher;

    const A: &str = "SELECT 1";
    const B: &str = "SELECT 1 + 1";

    fn hash(k: SqlKey) -> u64 {
        BuildHasherDefault::<SqlKeyHasher>::default().hash_one(k)
    }

    #[test]
    fn a_constant_is_one_key_and_a_prefix_another() {
        assert!(SqlKey::of(A) == SqlKey::of(A));
        assert_eq!(hash(SqlKey::of(A)), hash(SqlKey::of(A)));
        // Same address, different length: a prefix of a constant is a different statement.
        assert!(SqlKey::of(&B[..8]) != SqlKey::of(B));
        assert_ne!(hash(SqlKey::of(&B[..8])), hash(SqlKey::of(B)));
    }
}
