//! How far behind a subscription is, and why.

use std::time::Duration;

use super::{validate_subscription, Position};
use crate::{Broker, Error, ErrorKind, Result};

/// The lag of one partition of a subscription. Returned by [`Broker::lag`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let behind: u64 = broker.lag("billing")?.iter().map(|p| p.events_behind).sum();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The partition (0 for an unpartitioned subscription).
    pub partition: u32,
    /// The cursor: the last event acknowledged.
    pub cursor: Position,
    /// Matching events after the cursor (readable or not yet).
    pub events_behind: u64,
    /// The age of the oldest of them.
    pub oldest_age: Option<Duration>,
    /// Of those, events not readable yet because an older transaction is still running.
    pub beyond_horizon: u64,
    /// The backend pid of the oldest running writing transaction in the cluster, which holds
    /// the horizon back, and how long it has run.
    pub horizon_held_by: Option<(i32, Duration)>,
    /// With [read replicas](crate::BrokerBuilder::read_replica): how stale the log the
    /// reads see may be, at most (the worst of the replicas in use, measured now; zero when
    /// reads go to the primary). `None` without replicas. Details: [`Broker::replica_lag`].
    pub replica_staleness: Option<Duration>,
}

fn interval_secs(v: Option<f64>) -> Option<Duration> {
    v.map(|s| Duration::from_secs_f64(s.max(0.0)))
}

impl Broker {
    /// The lag of every partition of a subscription. Counting scans the unread part of the
    /// log: meant for monitoring, not for hot paths. Fails with [`ErrorKind::NotFound`] for an
    /// unknown subscription. SQL: `pgbroker.subscription_lag(name)`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for p in broker.lag("billing")? {
    ///     println!("partition {}: {} behind", p.partition, p.events_behind);
    ///     if let Some((pid, age)) = p.horizon_held_by {
    ///         println!("  backend {pid} has held a transaction open for {age:?}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn lag(&self, subscription: &str) -> Result<Vec<PartitionLag>> {
        validate_subscription(subscription)?;
        let mut conn = self.conn()?;
        let rows = conn.query(
            "SELECT part, cursor_tx::text, cursor_id, events_behind,
                    extract(epoch FROM oldest_age)::float8, beyond_horizon, horizon_pid,
                    extract(epoch FROM horizon_age)::float8
               FROM pgbroker.subscription_lag($1)",
            &[&subscription],
        )?;
        if rows.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no subscription {subscription:?}"),
            ));
        }
        let replica_staleness = self.replica_staleness()?;
        rows.iter()
            .map(|r| {
                let tx: &str = r.get(1);
                let holder: Option<i32> = r.get(6);
                Ok(PartitionLag {
                    partition: r.get::<_, i32>(0) as u32,
                    cursor: Position::new(tx.parse().unwrap_or(0), r.get(2)),
                    events_behind: r.get::<_, i64>(3) as u64,
                    oldest_age: interval_secs(r.get(4)),
                    beyond_horizon: r.get::<_, i64>(5) as u64,
                    horizon_held_by: holder
                        .map(|pid| (pid, interval_secs(r.get(7)).unwrap_or_default())),
                    replica_staleness,
                })
            })
            .collect()
    }
}
