//! Streaming replicas that take the event log's reads off the primary.
//!
//! Reads sent to a replica (see [`BrokerBuilder::read_replica`](crate::BrokerBuilder::read_replica))
//! stay gap-free and never deliver an event before the primary committed it:
//!
//! - A hot standby's snapshots are the primary's as of some point in the WAL: an event is
//!   visible there only once the commit record of its transaction was replayed, and the primary
//!   sends WAL only once it flushed it, so the transaction committed on the primary first
//!   (asynchronous replication changes when, never whether). Aborted transactions are never
//!   visible.
//! - The horizon `pg_snapshot_xmin(pg_current_snapshot())` taken on the standby is below every
//!   transaction the standby considers running, and it considers running every transaction id
//!   it has seen assigned (WAL of an insert names its xid, and the ids between are taken as
//!   running too) without a commit or abort yet. So every event with a smaller `tx` is final
//!   on the standby, as on the primary: reading up to it skips nothing.
//! - The cursor lives on the primary: it is read there (so an acknowledgement made a moment
//!   ago is not undone by a replica that has not replayed it) and acknowledgements go there,
//!   and only move it forward. A replica that lags shows fewer events and a lower horizon;
//!   acknowledging up to that horizon never moves a cursor back.
//! - A replica that has not replayed the subscription itself yet (just created) is not used
//!   for it: the read goes to the primary.
//!
//! Staleness: every [`CHECK_INTERVAL`] a replica's replay position is compared with the
//! primary's WAL insert position. When it is behind, the age (by the primary's clock) of the last
//! transaction it replayed bounds how stale it is; a replica staler than
//! [`BrokerBuilder::replica_max_lag`](crate::BrokerBuilder::replica_max_lag), unreachable, or
//! no longer in recovery (promoted: its history may have forked) is passed over until the next
//! check, and reads go to another replica or to the primary. So reads are at most
//! `replica_max_lag + CHECK_INTERVAL` behind the primary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use postgres::GenericClient;

use std::sync::Arc;

use crate::connect::Target;
use crate::pool::{Manager, PooledConn};
use crate::topic::{read_events, read_sql_for, stored_cursor, Batch};
use crate::{Broker, Error, ErrorKind, Result};

/// How often each replica's staleness is measured while it is in use.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The staleness of one read replica, measured by [`Broker::replica_lag`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// for r in broker.replica_lag()? {
///     println!("{}: {:?} behind ({} bytes), used: {}", r.replica, r.staleness, r.bytes_behind, r.used);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaLag {
    /// The replica, as `host:port`.
    pub replica: String,
    /// WAL bytes the replica has yet to replay (0 when unreachable).
    pub bytes_behind: u64,
    /// An upper bound of how far behind the primary its data is: zero when it replayed
    /// everything the primary had written when measured, else the age of the last
    /// transaction it replayed. `None` when it is unreachable or not a standby.
    pub staleness: Option<Duration>,
    /// Whether reads go to it now (reachable, a standby, within the allowed lag).
    pub used: bool,
    /// Why not, when not used.
    pub problem: Option<String>,
}

/// The replicas of a broker, with what the last check found.
pub(crate) struct Replicas {
    members: Vec<Replica>,
    next: AtomicUsize,
    max_lag: Duration,
}

struct Replica {
    label: String,
    pool: r2d2::Pool<Manager>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    checked: Option<Instant>,
    lag: Option<ReplicaLag>,
    /// When (by the primary's clock) a check last found it caught up: its data is at most as
    /// old as that, a bound that stays tight after the primary was idle for long.
    caught_up_at: Option<SystemTime>,
}

/// Reads run with the settings `pgbroker.read()` sets for itself (see `READ_SETTINGS`).
#[derive(Debug)]
struct ReadSettings;

impl r2d2::CustomizeConnection<crate::pool::CachedClient, crate::Error> for ReadSettings {
    fn on_acquire(&self, conn: &mut crate::pool::CachedClient) -> Result<()> {
        Ok(conn.batch_execute(crate::topic::READ_SETTINGS)?)
    }
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.members.iter().map(|r| r.label.as_str()).collect();
        f.debug_struct("Replicas")
            .field("members", &labels)
            .field("max_lag", &self.max_lag)
            .finish()
    }
}

impl Replicas {
    pub(crate) fn new(
        targets: Vec<Target>,
        max_lag: Duration,
        pool_size: u32,
        pool_timeout: Duration,
    ) -> Replicas {
        let members = targets
            .into_iter()
            .map(|target| {
                let pg = target.pg();
                let host = match pg.get_hosts().first() {
                    Some(postgres::config::Host::Tcp(h)) => h.clone(),
                    Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
                    None => "localhost".into(),
                };
                let port = pg.get_ports().first().copied().unwrap_or(5432);
                Replica {
                    label: format!("{host}:{port}"),
                    // Unchecked: an unreachable replica must not keep the broker from starting.
                    pool: r2d2::Pool::builder()
                        .max_size(pool_size)
                        .min_idle(Some(0))
                        .connection_timeout(pool_timeout)
                        .connection_customizer(Box::new(ReadSettings))
                        // Reads only: named statements are fine (a pooler in front of a
                        // replica is not supported; the session is the replica's own).
                        .build_unchecked(Manager::new(target, false)),
                    health: Mutex::new(Health::default()),
                }
            })
            .collect();
        Replicas {
            members,
            next: AtomicUsize::new(0),
            max_lag,
        }
    }
}

impl Broker {
    /// A connection for reading the log: to the next replica in turn that the last check found
    /// usable (checking again when that is older than [`CHECK_INTERVAL`]); `None` when there is
    /// no usable replica (read on the primary).
    pub(crate) fn replica_conn(&self) -> Option<PooledConn> {
        let replicas = self.replicas();
        let n = replicas.members.len();
        let first = replicas.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let replica = &replicas.members[(first + i) % n];
            let lag = {
                let mut health = replica.health.lock().unwrap_or_else(|p| p.into_inner());
                if health.checked.is_none_or(|t| t.elapsed() >= CHECK_INTERVAL) {
                    self.check_replica(replica, &mut health);
                }
                health.lag.clone()
            };
            if !lag.is_some_and(|l| l.used) {
                continue;
            }
            match replica.pool.get() {
                Ok(conn) => return Some(conn),
                Err(e) => log::warn!("pgbroker: read replica {}: {e}", replica.label),
            }
        }
        None
    }

    /// Measures every replica now. Without replicas, an empty list.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// let broker = pgbroker::Broker::builder()
    ///     .url("postgres://app@primary/app")
    ///     .read_replica("postgres://app@replica-1/app")
    ///     .build()?;
    /// let worst = broker.replica_lag()?.iter().filter_map(|r| r.staleness).max();
    /// # Ok(()) }
    /// ```
    pub fn replica_lag(&self) -> Result<Vec<ReplicaLag>> {
        let replicas = self.replicas();
        let mut out = Vec::with_capacity(replicas.members.len());
        for replica in &replicas.members {
            let mut health = replica.health.lock().unwrap_or_else(|p| p.into_inner());
            out.push(self.check_replica(replica, &mut health));
        }
        Ok(out)
    }

    fn check_replica(&self, replica: &Replica, health: &mut Health) -> ReplicaLag {
        let mut lag = ReplicaLag {
            replica: replica.label.clone(),
            bytes_behind: 0,
            staleness: None,
            used: false,
            problem: None,
        };
        match self.measure(replica, &mut health.caught_up_at) {
            Ok((bytes, staleness)) => {
                lag.bytes_behind = bytes;
                lag.staleness = Some(staleness);
                if staleness > self.replicas().max_lag {
                    lag.problem = Some(format!(
                        "{staleness:?} behind, more than the allowed {:?}",
                        self.replicas().max_lag
                    ));
                } else {
                    lag.used = true;
                }
            }
            Err(e) => lag.problem = Some(e.to_string()),
        }
        if let Some(p) = &lag.problem {
            log::debug!("pgbroker: read replica {} not used: {p}", replica.label);
        }
        health.lag = Some(lag.clone());
        health.checked = Some(Instant::now());
        lag
    }

    /// (bytes behind, staleness bound) of a replica, against the primary's WAL position taken
    /// just before; records when it was found caught up.
    fn measure(
        &self,
        replica: &Replica,
        caught_up_at: &mut Option<SystemTime>,
    ) -> Result<(u64, Duration)> {
        let mut primary = self.conn()?;
        // The insert position: with asynchronous commit a transaction is visible on the
        // primary before its WAL is written, let alone sent.
        let row = primary.query_one("SELECT pg_current_wal_insert_lsn()::text, now()", &[])?;
        let (primary_lsn, primary_now): (String, SystemTime) = (row.get(0), row.get(1));
        let mut conn = replica.pool.get().map_err(|e| {
            Error::with_cause(ErrorKind::Pool, Some("connecting to the replica".into()), e)
        })?;
        let row = conn.query_one(
            "SELECT pg_is_in_recovery(),
                    greatest(pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn()), 0)::int8,
                    pg_last_xact_replay_timestamp()",
            &[&primary_lsn],
        )?;
        let (in_recovery, behind): (bool, Option<i64>) = (row.get(0), row.get(1));
        let replayed_at: Option<SystemTime> = row.get(2);
        if !in_recovery {
            return Err(Error::new(
                ErrorKind::Config,
                "not a standby (promoted, or a primary): its history may differ",
            ));
        }
        let behind = behind.unwrap_or(0).max(0) as u64;
        if behind == 0 {
            *caught_up_at = Some(primary_now);
            return Ok((0, Duration::ZERO));
        }
        // Behind: its data is no older than the last transaction it replayed, nor than the
        // last time it was found caught up. Neither known (a replica that has replayed no
        // transaction since it started, first seen behind): unknown, so too stale.
        let age = |t: SystemTime| primary_now.duration_since(t).unwrap_or_default();
        let staleness = [replayed_at, *caught_up_at]
            .into_iter()
            .flatten()
            .map(age)
            .min()
            .unwrap_or(Duration::MAX);
        Ok((behind, staleness))
    }
}

impl Broker {
    /// [`Broker::read_partition`] on a replica, after the cursor stored on the primary; `None`
    /// when no replica is usable for it (then read on the primary). Fails only with what the
    /// primary says (an unknown subscription); a replica's failure means `None`.
    pub(crate) fn read_on_replica(
        &self,
        subscription: &str,
        partition: u32,
        max: usize,
    ) -> Result<Option<Batch>> {
        if self.replicas().members.is_empty() {
            return Ok(None);
        }
        let Some(mut replica) = self.replica_conn() else {
            return Ok(None);
        };
        let cursor = {
            let mut primary = self.conn()?;
            stored_cursor(&mut **primary, subscription, partition)?
        };
        let name: Arc<str> = subscription.into();
        let read = (|| -> Result<Option<Batch>> {
            if !has_subscription(&mut **replica, subscription)? {
                return Ok(None);
            }
            let sql = read_sql_for(&mut **replica, subscription)?;
            // A replica connection is a session of its own (no pooler in front of it): the
            // statement is prepared by name, as the consumers prepare theirs.
            let stmt = replica.prepare(&sql)?;
            read_events(&mut **replica, &stmt, &name, partition, cursor, max).map(Some)
        })();
        read.or_else(|e| {
            log::warn!(
                "pgbroker: reading {subscription:?} on a replica failed, using the primary: {e}"
            );
            Ok(None)
        })
    }

    /// The worst staleness of the replicas reads may use now (zero when none is usable: reads
    /// go to the primary); `None` without replicas.
    pub(crate) fn replica_staleness(&self) -> Result<Option<Duration>> {
        if self.replicas().members.is_empty() {
            return Ok(None);
        }
        let lags = self.replica_lag()?;
        let used = lags.iter().filter(|l| l.used).filter_map(|l| l.staleness);
        Ok(Some(used.max().unwrap_or(Duration::ZERO)))
    }

    /// A connection to a usable replica for a listing, else to the primary.
    pub(crate) fn listing_conn(&self) -> Result<PooledConn> {
        match self.replica_conn() {
            Some(conn) => Ok(conn),
            None => self.conn(),
        }
    }
}

/// Whether the replica behind `conn` has replayed subscription `name` (a new one may not be
/// there yet: reading it there would find nothing and acknowledge past events).
pub(crate) fn has_subscription(conn: &mut impl GenericClient, name: &str) -> Result<bool> {
    Ok(conn
        .query_opt(
            "SELECT 1 FROM pgbroker.subscriptions WHERE name = $1",
            &[&name],
        )?
        .is_some())
}
