//! Retention and upkeep of the log: daily partitions ahead, old ones dropped, idle
//! subscriptions expired.

use std::thread::JoinHandle;
use std::time::Duration;

use crate::worker::{Source, SourceContext};
use crate::{Broker, Result, WorkerPoolBuilder};

/// What [`Broker::log_maintain`] did.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let r = broker.log_maintain(std::time::Duration::from_secs(14 * 86400), 3)?;
/// println!("{} created, {} dropped, {} expired", r.created, r.dropped, r.expired);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MaintenanceReport {
    /// Daily partitions created.
    pub created: u32,
    /// Partitions dropped because they were past retention.
    pub dropped: u32,
    /// Subscriptions deleted because they expired.
    pub expired: u32,
}

impl Broker {
    /// Creates the daily partitions of `pgbroker.events` for today and `premake_days` ahead,
    /// drops those wholly older than `retention` (with their events, read or not), and deletes
    /// subscriptions unused for longer than their `expire_after`. Runs under an advisory lock:
    /// when another process is maintaining, returns an empty report at once. The SQL function
    /// is `pgbroker.log_maintain(retention, premake)`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let report = broker.log_maintain(Duration::from_secs(7 * 86400), 3)?;
    /// println!("dropped {} partitions", report.dropped);
    /// # Ok(()) }
    /// ```
    pub fn log_maintain(
        &self,
        retention: Duration,
        premake_days: u32,
    ) -> Result<MaintenanceReport> {
        let mut conn = self.conn()?;
        let row = conn.query_one(
            "SELECT created, dropped, expired
               FROM pgbroker.log_maintain($1::float8 * interval '1 second', $2)",
            &[&retention.as_secs_f64(), &(premake_days.min(366) as i32)],
        )?;
        Ok(MaintenanceReport {
            created: row.get::<_, i32>(0) as u32,
            dropped: row.get::<_, i32>(1) as u32,
            expired: row.get::<_, i32>(2) as u32,
        })
    }
}

impl WorkerPoolBuilder {
    /// Runs [`Broker::log_maintain`] with `retention` (and 3 days of partitions ahead) at start
    /// and then every `every`, on its own thread. Errors are logged. Safe to enable in every
    /// process: concurrent runs skip.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let pool = broker
    ///     .worker_pool()
    ///     .log_maintenance(Duration::from_secs(3600), Duration::from_secs(7 * 86400))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn log_maintenance(self, every: Duration, retention: Duration) -> Self {
        self.source(Box::new(MaintenanceSource { every, retention }))
    }
}

struct MaintenanceSource {
    every: Duration,
    retention: Duration,
}

impl Source for MaintenanceSource {
    fn start(self: Box<Self>, ctx: SourceContext) -> Result<Vec<JoinHandle<()>>> {
        let t = std::thread::Builder::new()
            .name("pgbroker-log-maintenance".into())
            .spawn(move || loop {
                match ctx.broker.log_maintain(self.retention, 3) {
                    Ok(r) => log::debug!("pgbroker log maintenance: {r:?}"),
                    Err(e) => log::warn!("pgbroker log maintenance failed: {e}"),
                }
                if !ctx.sleep(self.every) {
                    return;
                }
            })?;
        Ok(vec![t])
    }
}
