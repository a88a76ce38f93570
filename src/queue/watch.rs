//! Watching a queue: a [`JobEvent`] for every state change of its jobs (what a
//! websocket gateway showing CI runs live would feed on).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{status_channel, validate_queue, JobId, JobState};
use crate::notify::{Event, Listener};
use crate::{Broker, Error, ErrorKind, Result};

/// One state change of a job, as seen by a [`JobWatcher`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let watcher = broker.watch_jobs("ci")?;
/// for event in watcher.iter() {
///     match (&event.state, &event.error) {
///         (_, Some(err)) => println!("job {} failed attempt {}: {err}", event.id, event.attempt),
///         (state, None) => println!("job {} is {state}", event.id),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobEvent {
    /// The job's id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its new state. A completed job that is deleted (the default) is reported `Completed`.
    pub state: JobState,
    /// Its attempt number at the change (claiming increments it).
    pub attempt: i32,
    /// Its maximum number of attempts.
    pub max_attempts: i32,
    /// The error of the attempt that just failed, when the change records a failure (retry
    /// scheduled: state `Available`; or `Dead`).
    pub error: Option<String>,
    /// The progress its handler reported ([`JobContext::set_progress`](super::JobContext)):
    /// set on progress events (state `Running`), `None` on state changes.
    pub progress: Option<serde_json::Value>,
}

impl JobEvent {
    fn parse(payload: &str) -> Result<JobEvent> {
        let v: serde_json::Value = serde_json::from_str(payload)?;
        let bad = || {
            Error::new(
                ErrorKind::Serialize,
                format!("malformed job event {payload:?}"),
            )
        };
        Ok(JobEvent {
            id: JobId(v["id"].as_i64().ok_or_else(bad)?),
            queue: v["queue"].as_str().ok_or_else(bad)?.to_owned(),
            state: v["state"].as_str().ok_or_else(bad)?.parse()?,
            attempt: v["attempt"].as_i64().ok_or_else(bad)? as i32,
            max_attempts: v["max_attempts"].as_i64().ok_or_else(bad)? as i32,
            error: v["error"].as_str().map(str::to_owned),
            progress: v.get("progress").filter(|p| !p.is_null()).cloned(),
        })
    }
}

/// Receives the state changes of one queue's jobs. Created by [`Broker::watch_jobs`].
///
/// Events travel as notifications: in commit order, and lost while the watcher's connection is
/// down (it reconnects by itself; query [`Broker::job`] for the current state of a job you
/// care about after [`reconnects`](Self::reconnects) grows).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let watcher = broker.watch_jobs("emails")?;
/// let id = broker.enqueue("emails", "{}")?;
/// while let Some(event) = watcher.recv_timeout(Duration::from_secs(5))? {
///     println!("job {} -> {}", event.id, event.state);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct JobWatcher {
    listener: Listener,
    reconnects: AtomicU64,
}

impl Broker {
    /// Starts watching the jobs of `queue`: from now on every state change of its jobs sends a
    /// notification on channel `pgbroker.jobs.<queue>` (also usable with plain `LISTEN`).
    /// Watching is recorded in the database (`pgbroker.watched_queues`) and stays on for all
    /// clients until [`unwatch_jobs`](Self::unwatch_jobs); it makes every state change of
    /// the queue's jobs send one NOTIFY, so producers and workers of a watched queue pay for
    /// it (NOTIFY serializes commits).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let watcher = broker.watch_jobs("ci")?;
    /// # Ok(()) }
    /// ```
    pub fn watch_jobs(&self, queue: &str) -> Result<JobWatcher> {
        validate_queue(queue)?;
        // Listen before switching notifications on, so no change is missed.
        let listener = self.listen(&status_channel(queue))?;
        let mut conn = self.conn()?;
        conn.execute("SELECT pgbroker.watch_queue($1)", &[&queue])?;
        Ok(JobWatcher {
            listener,
            reconnects: AtomicU64::new(0),
        })
    }

    /// Stops sending state changes of `queue`'s jobs (for every watcher). Returns false when
    /// it was not watched.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker.unwatch_jobs("ci")?;
    /// # Ok(()) }
    /// ```
    pub fn unwatch_jobs(&self, queue: &str) -> Result<bool> {
        validate_queue(queue)?;
        let mut conn = self.conn()?;
        Ok(conn
            .query_one("SELECT pgbroker.unwatch_queue($1)", &[&queue])?
            .get(0))
    }
}

impl JobWatcher {
    /// Waits up to `timeout` for the next event; `Ok(None)` when none came. Fails with
    /// [`ErrorKind::Shutdown`] when the watcher stopped.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// # let watcher = broker.watch_jobs("q")?;
    /// if let Some(ev) = watcher.recv_timeout(std::time::Duration::from_secs(1))? {
    ///     println!("{ev:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<JobEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.listener.recv_timeout(left)? {
                None => return Ok(None),
                Some(Event::Notification(n)) => match JobEvent::parse(n.payload()) {
                    Ok(ev) => return Ok(Some(ev)),
                    Err(e) => log::warn!("pgbroker: ignoring a malformed job event: {e}"),
                },
                Some(Event::Reconnected { .. }) => {
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => {}
            }
        }
    }

    /// Waits for the next event.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// # let watcher = broker.watch_jobs("q")?;
    /// let ev = watcher.recv()?;
    /// # Ok(()) }
    /// ```
    pub fn recv(&self) -> Result<JobEvent> {
        loop {
            if let Some(ev) = self.recv_timeout(Duration::from_secs(3600))? {
                return Ok(ev);
            }
        }
    }

    /// A blocking iterator over events; ends when the watcher stops.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// for ev in broker.watch_jobs("q")?.iter().take(10) {
    ///     println!("{} {}", ev.id, ev.state);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = JobEvent> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// How many times the watcher's connection was re-established; events in between were
    /// lost.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// # let watcher = broker.watch_jobs("q")?;
    /// if watcher.reconnects() > 0 { /* re-read job states */ }
    /// # Ok(()) }
    /// ```
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parses_events() {
        let ev = JobEvent::parse(
            r#"{"id":7,"queue":"q","state":"available","attempt":1,"max_attempts":3,"run_at":"x","error":"boom"}"#,
        )
        .unwrap();
        assert_eq!(ev.id, JobId(7));
        assert_eq!(ev.state, JobState::Available);
        assert_eq!(ev.error.as_deref(), Some("boom"));
        assert!(JobEvent::parse("{}").is_err());
    }
}
