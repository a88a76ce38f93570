//! Rate limits and group concurrency (schema/functions/queue_controls.sql): a limited (or
//! paused) queue is gated, skipped by the plain claim statement, and claimed through
//! `pgbroker.claim_limited`, which enforces the limits in the database for every process.
//!
//! Which queues are gated each broker learns from its claims ([`Gates`]): a claim that comes
//! back empty looks (at most once a second per queue) whether the queue is gated, claiming
//! through `pgbroker.claim_limited` in the same statement; the claims of a queue found gated
//! go there directly until it no longer is. Claims of ungated queues that find jobs cost
//! one atomic load more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::{input_error, secs, validate_queue, ClaimedJob};
use crate::{Broker, Error, ErrorKind, Result};

const LIMIT_SQL: &str = "SELECT pgbroker.limit_queue($1, $2, make_interval(secs => $3), $4)";
const LIMITS_SQL: &str = "SELECT queue, paused_at, rate_limit,
        extract(epoch FROM rate_period)::float8, group_limit
   FROM pgbroker.queue_limits ORDER BY queue";
/// The statement of `pgbroker.claim_limited` (prepared once per connection: through the SQL
/// function PostgreSQL would plan it on every call), and whether the queue is gated: one row
/// per job, or one row of NULLs and the flag when none was claimed.
const CLAIM_GATED_SQL: &str = "WITH claimed AS (
        UPDATE pgbroker.jobs j
           SET state = 'running', attempt = j.attempt + 1, worker = $2,
               lease_until = now() + coalesce(make_interval(secs => (j.details ->> 'timeout')::float8),
                                              make_interval(secs => $4))
         WHERE j.id = ANY (ARRAY(SELECT unnest(pgbroker.pick_limited($1, $3))))
        RETURNING j.id, j.queue, j.payload, j.attempt, j.max_attempts, j.priority, j.run_at,
                  j.lease_until, j.created_at, j.unique_key
    )
    SELECT c.*, g.gated
      FROM (SELECT EXISTS (SELECT FROM pgbroker.queue_controls qc WHERE qc.queue = $1) AS gated) g
      LEFT JOIN claimed c ON true";

/// How often an empty claim of a queue not known to be gated looks whether it is.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Limits of a queue, set with [`Broker::limit_queue`]. Each setter documents its default.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pgbroker::queue::QueueLimits;
/// // At most 100 jobs started per minute, and 2 running at once per tenant.
/// let limits = QueueLimits::new()
///     .rate(100, Duration::from_secs(60))
///     .group_concurrency(2);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueLimits {
    rate: Option<(u32, Duration)>,
    group: Option<u32>,
}

impl QueueLimits {
    /// No limits (setting them clears a queue's limits).
    ///
    /// # Examples
    ///
    /// ```
    /// let none = pgbroker::queue::QueueLimits::new();
    /// ```
    pub fn new() -> QueueLimits {
        QueueLimits::default()
    }

    /// At most `n` jobs of the queue started per `period`, across all processes: a fixed
    /// window that opens at the first claim after the previous window closed. Default: no
    /// rate limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = pgbroker::queue::QueueLimits::new().rate(10, Duration::from_secs(1));
    /// ```
    pub fn rate(mut self, n: u32, period: Duration) -> QueueLimits {
        self.rate = Some((n, period));
        self
    }

    /// At most `k` running jobs per group key ([`Job::group`](super::Job::group)) across all
    /// processes; jobs without a group are not limited. A claim looks at most 1000 jobs into
    /// the queue for ones whose group has room. Default: no group limit.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = pgbroker::queue::QueueLimits::new().group_concurrency(1);
    /// ```
    pub fn group_concurrency(mut self, k: u32) -> QueueLimits {
        self.group = Some(k);
        self
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::new(ErrorKind::InvalidInput, m));
        if let Some((n, period)) = self.rate {
            if n == 0 || n > i32::MAX as u32 || period < Duration::from_millis(1) {
                return bad(format!(
                    "a rate limit must be at least 1 job per at least 1 ms, got {n} per {period:?}"
                ));
            }
        }
        if let Some(k) = self.group {
            if k == 0 || k > i32::MAX as u32 {
                return bad(format!("a group limit must be at least 1, got {k}"));
            }
        }
        Ok(())
    }
}

/// A gated queue, as [`Broker::queue_limits`] lists it.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// for q in broker.queue_limits()? {
///     println!("{}: paused {:?}, rate {:?}, groups {:?}", q.queue, q.paused_at, q.rate, q.group_concurrency);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueueLimitsInfo {
    /// The queue.
    pub queue: String,
    /// When it was paused, if it is.
    pub paused_at: Option<SystemTime>,
    /// Its rate limit: jobs per period.
    pub rate: Option<(u32, Duration)>,
    /// Its group limit.
    pub group_concurrency: Option<u32>,
}

impl Broker {
    /// Sets the limits of `queue` (replacing earlier ones; [`QueueLimits::new`] clears them),
    /// enforced by the database for every worker of every process: at most N jobs started
    /// per interval, at most K running per group key. Leased claims (worker pools,
    /// [`claim_jobs`](Self::claim_jobs), SQL `pgbroker.claim_limited`) honour them; a limited
    /// queue's jobs are not taken by transactional workers or `pgbroker.take`. Idle workers
    /// are woken (the limits may let more run). In SQL: `pgbroker.limit_queue(queue,
    /// rate_limit, rate_period, group_limit)`.
    ///
    /// Limited claims of one queue run one at a time (each locks the queue's row of
    /// `pgbroker.queue_controls`), which is what makes the limits exact.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] for a zero limit or period and
    /// [`ErrorKind::InvalidName`] for a bad queue name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use pgbroker::queue::{Job, QueueLimits};
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker.limit_queue(
    ///     "exports",
    ///     &QueueLimits::new().rate(60, Duration::from_secs(60)).group_concurrency(1),
    /// )?;
    /// broker.enqueue_job(&Job::new("exports", "{}").group("tenant-7"))?;
    /// # Ok(()) }
    /// ```
    pub fn limit_queue(&self, queue: &str, limits: &QueueLimits) -> Result<()> {
        validate_queue(queue)?;
        limits.check()?;
        let rate_n = limits.rate.map(|(n, _)| n as i32);
        let rate_secs = limits.rate.map(|(_, p)| secs(p));
        let group = limits.group.map(|k| k as i32);
        let mut conn = self.conn()?;
        conn.execute(LIMIT_SQL, &[&queue, &rate_n, &rate_secs, &group])
            .map_err(input_error)?;
        Ok(())
    }

    /// The gated queues (paused or limited), by name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let limited = broker.queue_limits()?.len();
    /// # Ok(()) }
    /// ```
    pub fn queue_limits(&self) -> Result<Vec<QueueLimitsInfo>> {
        let mut conn = self.conn()?;
        let rows = conn.query(LIMITS_SQL, &[])?;
        Ok(rows
            .iter()
            .map(|r| QueueLimitsInfo {
                queue: r.get(0),
                paused_at: r.get(1),
                rate: r
                    .get::<_, Option<i32>>(2)
                    .zip(r.get::<_, Option<f64>>(3))
                    .map(|(n, s)| (n as u32, Duration::from_secs_f64(s.max(0.0)))),
                group_concurrency: r.get::<_, Option<i32>>(4).map(|k| k as u32),
            })
            .collect())
    }

    /// Claims through `pgbroker.claim_limited` and notes whether the queue is gated.
    pub(crate) fn claim_gated(
        &self,
        queue: &str,
        worker: &str,
        max: i32,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(CLAIM_GATED_SQL)?;
        let rows = conn.query(&stmt, &[&queue, &worker, &max, &secs(lease)])?;
        let gated = rows.first().is_some_and(|r| r.get::<_, bool>(10));
        self.gates().looked(queue, gated);
        Ok(rows
            .iter()
            .filter(|r| r.get::<_, Option<i64>>(0).is_some())
            .map(ClaimedJob::from_row)
            .collect())
    }
}

/// What one broker knows about which queues are gated.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    /// How many queues in `seen` are gated: while 0, no claim looks at the map.
    gated: AtomicUsize,
    seen: Mutex<HashMap<String, Gate>>,
}

#[derive(Debug)]
struct Gate {
    gated: bool,
    looked: Instant,
}

impl Gates {
    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Gate>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when the last look found `queue` gated: claim through `claim_gated`.
    pub(crate) fn is_gated(&self, queue: &str) -> bool {
        self.gated.load(Ordering::Relaxed) > 0 && self.seen().get(queue).is_some_and(|g| g.gated)
    }

    /// True when an empty plain claim of `queue` should look whether it is gated.
    pub(crate) fn should_look(&self, queue: &str) -> bool {
        self.seen()
            .get(queue)
            .is_none_or(|g| g.looked.elapsed() >= LOOK_EVERY)
    }

    fn looked(&self, queue: &str, gated: bool) {
        let mut seen = self.seen();
        let was = seen.get(queue).is_some_and(|g| g.gated);
        if was != gated {
            if gated {
                self.gated.fetch_add(1, Ordering::Relaxed);
            } else {
                self.gated.fetch_sub(1, Ordering::Relaxed);
            }
        }
        seen.insert(
            queue.to_owned(),
            Gate {
                gated,
                looked: Instant::now(),
            },
        );
    }
}
