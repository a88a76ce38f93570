//! Periodic jobs: schedules in `pgbroker.schedules`, cron expressions parsed and stepped by
//! SQL functions (schema/functions/schedule.sql), and the scheduler thread every worker pool
//! with a queue runs.
//!
//! Cron is computed in SQL rather than with a Rust crate: `pgbroker.schedule()` then checks an
//! expression and its time zone for every client (psql, other languages) when it is written,
//! not when a worker first reads it; every process agrees on the next time; and the core
//! needs no new dependency. PostgreSQL's own time-zone database does the conversions.
//!
//! Exactly one job per tick, whatever the number of processes: `pgbroker.run_schedules()`
//! locks each due schedule with `SKIP LOCKED`, enqueues its job (unique key
//! `schedule:<name>:<tick>`) and moves `next_run_at` past now in one transaction. A process
//! killed in the middle rolls all of it back; the next run does it. No leader is elected.

use std::time::{Duration, SystemTime};

use postgres::Row;
use serde_json::Value;

use super::job::check_payload;
use super::{input_error, validate_queue, JobId, DEFAULT_MAX_ATTEMPTS};
use crate::worker::{Source, SourceContext};
use crate::{Broker, Error, ErrorKind, Payload, Result, ToPayload, WorkerPoolBuilder};

const SCHEDULE_SQL: &str = "SELECT pgbroker.schedule($1, $2, $3, $4, $5, $6, $7, $8)";
const UNSCHEDULE_SQL: &str = "SELECT pgbroker.unschedule($1)";
const RUN_SQL: &str = "SELECT pgbroker.run_schedules()";
const LIST_SQL: &str = "SELECT name, cron, time_zone, queue, payload, priority, max_attempts,
        skip_missed, next_run_at, last_run_at, last_job_id
   FROM pgbroker.schedules ORDER BY next_run_at, name";
const NEXT_SQL: &str = "SELECT pgbroker.cron_next($1, $2, $3)";

/// How often worker pools run due schedules by default.
pub const DEFAULT_SCHEDULE_INTERVAL: Duration = Duration::from_secs(1);

/// A periodic job: a job on a queue at every time a cron expression names. Written with
/// [`Broker::schedule`].
///
/// Cron expressions have 5 fields (minute, hour, day of month, month, weekday) or 6 (seconds
/// first); each field is a list of `*`, `n`, `a-b`, with an optional step (`*/15`,
/// `10-50/5`); months and weekdays also by name (`JAN`, `MON-FRI`); weekday 0 or 7 is Sunday.
/// When both day fields are restricted a day matches either (as in Vixie cron). Macros:
/// `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`. Times are in the schedule's
/// [time zone](Self::time_zone) (default UTC).
///
/// # Examples
///
/// ```
/// use pgbroker::queue::Schedule;
/// let nightly = Schedule::new("nightly-report", "0 3 * * *", "reports", "{}")
///     .time_zone("Europe/Paris")
///     .skip_missed(true);
/// assert_eq!(nightly.name(), "nightly-report");
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    cron: String,
    queue: String,
    payload: std::result::Result<Value, String>,
    time_zone: String,
    priority: i32,
    max_attempts: u32,
    skip_missed: bool,
}

impl Schedule {
    /// A schedule named `name` (1 to 200 printable characters, its key: writing it again
    /// replaces it) that enqueues `payload` on `queue` at every time of `cron`.
    ///
    /// # Examples
    ///
    /// ```
    /// let every_5_min = pgbroker::queue::Schedule::new("sync", "*/5 * * * *", "sync", "{}");
    /// let every_10_s = pgbroker::queue::Schedule::new("ping", "*/10 * * * * *", "ping", "{}");
    /// ```
    pub fn new<P: ToPayload + ?Sized>(
        name: &str,
        cron: &str,
        queue: &str,
        payload: &P,
    ) -> Schedule {
        Schedule {
            name: name.to_owned(),
            cron: cron.to_owned(),
            queue: queue.to_owned(),
            payload: payload
                .to_payload()
                .and_then(Payload::into_json)
                .map_err(|e| e.to_string()),
            time_zone: "UTC".to_owned(),
            priority: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            skip_missed: false,
        }
    }

    /// The schedule's name.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = pgbroker::queue::Schedule::new("sync", "@hourly", "sync", "{}");
    /// assert_eq!(s.name(), "sync");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The time zone of the cron expression: a name of the IANA database (`Europe/Paris`) or
    /// anything else PostgreSQL's `AT TIME ZONE` takes. Default `UTC`. A wall-clock time a
    /// daylight-saving change skips runs at the same offset after the change (02:30 becomes
    /// 03:30); one it repeats runs once.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = pgbroker::queue::Schedule::new("s", "0 9 * * MON-FRI", "q", "{}")
    ///     .time_zone("America/New_York");
    /// ```
    pub fn time_zone(mut self, tz: &str) -> Schedule {
        self.time_zone = tz.to_owned();
        self
    }

    /// The priority of the jobs (smaller runs first). Default 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = pgbroker::queue::Schedule::new("s", "@daily", "q", "{}").priority(-5);
    /// ```
    pub fn priority(mut self, priority: i32) -> Schedule {
        self.priority = priority;
        self
    }

    /// The attempts each job may have. Default 25.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = pgbroker::queue::Schedule::new("s", "@daily", "q", "{}").max_attempts(3);
    /// ```
    pub fn max_attempts(mut self, n: u32) -> Schedule {
        self.max_attempts = n;
        self
    }

    /// What to do with ticks nobody ran the scheduler for (every worker pool was down): by
    /// default (false) they are enqueued as one job when a scheduler runs again; with true
    /// they are skipped. A tick counts as missed when the scheduler reaches it more than a
    /// minute late.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = pgbroker::queue::Schedule::new("s", "*/5 * * * *", "q", "{}").skip_missed(true);
    /// ```
    pub fn skip_missed(mut self, skip: bool) -> Schedule {
        self.skip_missed = skip;
        self
    }

    fn checked(&self) -> Result<&Value> {
        validate_queue(&self.queue)?;
        let payload = self.payload.as_ref().map_err(|e| {
            Error::new(
                ErrorKind::Serialize,
                format!("schedule payload is not valid JSON: {e}"),
            )
        })?;
        check_payload(payload)?;
        if self.max_attempts == 0 || self.max_attempts > i32::MAX as u32 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "max_attempts must be between 1 and {}, got {}",
                    i32::MAX,
                    self.max_attempts
                ),
            ));
        }
        Ok(payload)
    }
}

/// A stored schedule, as [`Broker::schedules`] lists it.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// for s in broker.schedules()? {
///     println!("{} ({} {}) next at {:?}", s.name, s.cron, s.time_zone, s.next_run_at);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// The schedule's name.
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// The time zone of the expression.
    pub time_zone: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// Their payload.
    pub payload: Value,
    /// Their priority.
    pub priority: i32,
    /// Their attempts.
    pub max_attempts: i32,
    /// Whether missed ticks are skipped.
    pub skip_missed: bool,
    /// The next tick.
    pub next_run_at: SystemTime,
    /// The last tick handled (enqueued, or skipped as missed).
    pub last_run_at: Option<SystemTime>,
    /// The last job enqueued.
    pub last_job_id: Option<JobId>,
}

impl ScheduleInfo {
    fn from_row(row: &Row) -> ScheduleInfo {
        ScheduleInfo {
            name: row.get(0),
            cron: row.get(1),
            time_zone: row.get(2),
            queue: row.get(3),
            payload: row.get(4),
            priority: row.get(5),
            max_attempts: row.get(6),
            skip_missed: row.get(7),
            next_run_at: row.get(8),
            last_run_at: row.get(9),
            last_job_id: row.get(10),
        }
    }
}

impl Broker {
    /// Creates or replaces a [`Schedule`]; returns its next run time. Any running worker
    /// pool with a queue (of any process) enqueues its jobs from then on: exactly one job per
    /// tick, with the unique key `schedule:<name>:<tick in UTC>`. Replacing a schedule
    /// starts it afresh from now. In SQL: `pgbroker.schedule(name, cron, queue, payload,
    /// time_zone => .., priority => .., max_attempts => .., skip_missed => ..)`.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] naming what is wrong for a bad cron expression
    /// (or one that names no time in the next five years), an unknown time zone, a bad name
    /// or `max_attempts` 0; [`ErrorKind::InvalidName`] for a bad queue name,
    /// [`ErrorKind::Serialize`] for a payload that is not JSON. Nothing is written then.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker::queue::Schedule;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let next = broker.schedule(
    ///     &Schedule::new("nightly-report", "0 3 * * *", "reports", r#"{"kind": "daily"}"#)
    ///         .time_zone("Europe/Paris"),
    /// )?;
    /// println!("first report at {next:?}");
    /// # Ok(()) }
    /// ```
    pub fn schedule(&self, schedule: &Schedule) -> Result<SystemTime> {
        let payload = schedule.checked()?;
        let max_attempts = schedule.max_attempts as i32;
        let mut conn = self.conn()?;
        let row = conn
            .query_one(
                SCHEDULE_SQL,
                &[
                    &schedule.name,
                    &schedule.cron,
                    &schedule.queue,
                    payload,
                    &schedule.time_zone,
                    &schedule.priority,
                    &max_attempts,
                    &schedule.skip_missed,
                ],
            )
            .map_err(input_error)?;
        Ok(row.get(0))
    }

    /// Removes a schedule (jobs it already enqueued stay). Returns false when there was none.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker.unschedule("nightly-report")?;
    /// # Ok(()) }
    /// ```
    pub fn unschedule(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn()?;
        Ok(conn.query_one(UNSCHEDULE_SQL, &[&name])?.get(0))
    }

    /// Every schedule, soonest next run first.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let names: Vec<String> = broker.schedules()?.into_iter().map(|s| s.name).collect();
    /// # Ok(()) }
    /// ```
    pub fn schedules(&self) -> Result<Vec<ScheduleInfo>> {
        let mut conn = self.conn()?;
        let rows = conn.query(LIST_SQL, &[])?;
        Ok(rows.iter().map(ScheduleInfo::from_row).collect())
    }

    /// Enqueues the jobs of every due schedule now; returns how many. Worker pools do this
    /// every second (see [`WorkerPoolBuilder::schedule_interval`]); call it yourself only
    /// when no pool runs (`SELECT pgbroker.run_schedules()` from any client works too). Safe
    /// to run from many processes at once.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let enqueued = broker.run_schedules()?;
    /// # Ok(()) }
    /// ```
    pub fn run_schedules(&self) -> Result<u64> {
        let mut conn = self.conn()?;
        let stmt = conn.statement(RUN_SQL)?;
        Ok(conn.query_one(&stmt, &[])?.get::<_, i32>(0) as u64)
    }

    /// The first time after `after` that `cron` names in `time_zone`: what a schedule's next
    /// run would be. Fails as [`schedule`](Self::schedule) does for a bad expression or zone.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, SystemTime};
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let next = broker.cron_next("*/15 * * * *", SystemTime::now(), "UTC")?;
    /// assert!(next <= SystemTime::now() + Duration::from_secs(15 * 60));
    /// # Ok(()) }
    /// ```
    pub fn cron_next(&self, cron: &str, after: SystemTime, time_zone: &str) -> Result<SystemTime> {
        let mut conn = self.conn()?;
        let row = conn
            .query_one(NEXT_SQL, &[&cron, &after, &time_zone])
            .map_err(input_error)?;
        Ok(row.get(0))
    }
}

impl WorkerPoolBuilder {
    /// How often this pool runs due schedules ([`Broker::run_schedules`]), from a small
    /// thread of its own. Every pool with at least one queue runs the scheduler; several pools
    /// (in one process or many) share the work without duplicates. Default 1 s, which is
    /// also how late a tick may start.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker
    ///     .worker_pool()
    ///     .queue("reports", 1, |job| Ok(()))
    ///     .schedule_interval(Duration::from_millis(200))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn schedule_interval(mut self, every: Duration) -> Self {
        self.scheduler = Some(every.max(Duration::from_millis(10)));
        self
    }

    /// Whether this pool runs the scheduler (when it has a queue). Default true; turn it off
    /// when other processes run it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker
    ///     .worker_pool()
    ///     .queue("reports", 1, |job| Ok(()))
    ///     .run_schedules(false)
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn run_schedules(mut self, yes: bool) -> Self {
        self.scheduler = if yes {
            Some(self.scheduler.unwrap_or(DEFAULT_SCHEDULE_INTERVAL))
        } else {
            None
        };
        self
    }
}

/// The scheduler thread of a worker pool.
pub(crate) struct SchedulerSource {
    pub(crate) every: Duration,
}

impl Source for SchedulerSource {
    fn start(self: Box<Self>, ctx: SourceContext) -> Result<Vec<std::thread::JoinHandle<()>>> {
        let every = self.every;
        let t = std::thread::Builder::new()
            .name("pgbroker-scheduler".into())
            .spawn(move || {
                let mut failures = 0u32;
                loop {
                    let wait = match ctx.broker.run_schedules() {
                        Ok(n) => {
                            if n > 0 {
                                log::debug!("pgbroker: enqueued {n} scheduled job(s)");
                            }
                            failures = 0;
                            every
                        }
                        Err(e) => {
                            log::warn!("pgbroker: running schedules failed: {e}");
                            failures += 1;
                            ctx.broker.config().reconnect_delay(failures - 1).max(every)
                        }
                    };
                    if !ctx.sleep(wait) {
                        return;
                    }
                }
            })?;
        Ok(vec![t])
    }
}
