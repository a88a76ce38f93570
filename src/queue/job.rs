//! `Job`: what to enqueue, with its options.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::validate_queue;
use crate::json_nul::contains_nul;
use crate::{Error, ErrorKind, Payload, Result, ToPayload};

/// What a job payload was before every publishing call took [`ToPayload`]: a JSON value, or
/// text that must parse as JSON. Every `ToPayload` is one.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// broker.enqueue("emails", &serde_json::json!({"to": "a@example.com"}))?;
/// broker.enqueue("emails", r#"{"to": "b@example.com"}"#)?;
/// assert!(broker.enqueue("emails", "not json").is_err());
/// # Ok(()) }
/// ```
#[deprecated(
    since = "0.1.0",
    note = "use pgbroker::ToPayload, which notify and publish take too"
)]
pub trait JobPayload: ToPayload {}

#[allow(deprecated)]
impl<T: ToPayload + ?Sized> JobPayload for T {}

/// A job to enqueue: queue, payload and options. Each setter documents its default; nothing
/// is checked until the job is enqueued.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use pgbroker::queue::Job;
///
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let job = Job::new("reports", &serde_json::json!({"month": "2024-05"}))
///     .priority(-1)                         // smaller runs first
///     .delay(Duration::from_secs(30))       // not before 30 s from now
///     .max_attempts(5)
///     .unique_key("report:2024-05")         // one pending or running at a time
///     .backoff(Duration::from_secs(2), Duration::from_secs(600));
/// let id = broker.enqueue_job(&job)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Job {
    pub(crate) queue: String,
    pub(crate) payload: std::result::Result<Value, String>,
    pub(crate) priority: i32,
    pub(crate) run_at: Option<SystemTime>,
    pub(crate) delay: Option<Duration>,
    pub(crate) max_attempts: u32,
    pub(crate) unique_key: Option<String>,
    pub(crate) backoff: Option<(Duration, Duration)>,
    /// Dependencies, timeout, group (src/queue/job_options.rs); `None` for most jobs.
    pub(crate) features: Option<Box<super::job_options::JobFeatures>>,
}

/// The default number of attempts of a job (as in the SQL function `pgbroker.enqueue`).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 25;

impl Job {
    /// A job for `queue` with `payload` (see [`ToPayload`]) and default options. A payload
    /// that is not JSON makes enqueueing fail with [`ErrorKind::Serialize`].
    ///
    /// # Examples
    ///
    /// ```
    /// let job = pgbroker::queue::Job::new("emails", &serde_json::json!({"to": "a@example.com"}));
    /// assert_eq!(job.queue(), "emails");
    /// ```
    pub fn new<P: ToPayload + ?Sized>(queue: &str, payload: &P) -> Job {
        Job {
            queue: queue.to_owned(),
            payload: payload
                .to_payload()
                .and_then(Payload::into_json)
                .map_err(|e| e.to_string()),
            priority: 0,
            run_at: None,
            delay: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            unique_key: None,
            backoff: None,
            features: None,
        }
    }

    /// The queue this job goes to.
    ///
    /// # Examples
    ///
    /// ```
    /// let job = pgbroker::queue::Job::new("q", "{}");
    /// assert_eq!(job.queue(), "q");
    /// ```
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Priority among available jobs of the queue: smaller runs first. Default 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let urgent = pgbroker::queue::Job::new("q", "{}").priority(-100);
    /// ```
    pub fn priority(mut self, priority: i32) -> Job {
        self.priority = priority;
        self
    }

    /// Not before this time (the database's clock decides). Default: now. From 1970 to
    /// the end of year 9999 ([`RUN_AT_END`](super::RUN_AT_END)); enqueueing fails with
    /// [`ErrorKind::InvalidInput`] outside.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let at = SystemTime::now() + Duration::from_secs(3600);
    /// let job = pgbroker::queue::Job::new("q", "{}").run_at(at);
    /// ```
    pub fn run_at(mut self, at: SystemTime) -> Job {
        self.run_at = Some(at);
        self
    }

    /// Not before this long after enqueueing (added to [`run_at`](Self::run_at) when both are
    /// set, measured by the database's clock). Default: none. At most 100 years
    /// ([`MAX_DELAY`](super::MAX_DELAY)); enqueueing fails with [`ErrorKind::InvalidInput`]
    /// beyond.
    ///
    /// # Examples
    ///
    /// ```
    /// let job = pgbroker::queue::Job::new("q", "{}").delay(std::time::Duration::from_secs(5));
    /// ```
    pub fn delay(mut self, delay: Duration) -> Job {
        self.delay = Some(delay);
        self
    }

    /// How many times the job may run before it is dead; at least 1. Default 25.
    ///
    /// # Examples
    ///
    /// ```
    /// let once = pgbroker::queue::Job::new("q", "{}").max_attempts(1);
    /// ```
    pub fn max_attempts(mut self, n: u32) -> Job {
        self.max_attempts = n;
        self
    }

    /// Makes the job unique in its queue: enqueueing another job with the same key while one
    /// is available or running returns the existing job's id instead. Default: none.
    ///
    /// # Examples
    ///
    /// ```
    /// let job = pgbroker::queue::Job::new("sync", "{}").unique_key("account:42");
    /// ```
    pub fn unique_key(mut self, key: impl Into<String>) -> Job {
        self.unique_key = Some(key.into());
        self
    }

    /// Retry delays: `base * 2^(attempt-1)` with ±25% jitter, at most `max`. Default 1 s and
    /// 1 hour. Each at most 365 days ([`MAX_BACKOFF`](super::MAX_BACKOFF)); enqueueing fails
    /// with [`ErrorKind::InvalidInput`] beyond.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let job = pgbroker::queue::Job::new("q", "{}")
    ///     .backoff(Duration::from_millis(100), Duration::from_secs(60));
    /// ```
    pub fn backoff(mut self, base: Duration, max: Duration) -> Job {
        self.backoff = Some((base, max));
        self
    }

    /// Checks everything that can be checked without the database and returns the payload.
    pub(crate) fn checked(&self) -> Result<&Value> {
        validate_queue(&self.queue)?;
        let payload = self
            .payload
            .as_ref()
            .map_err(|e| Error::new(ErrorKind::Serialize, format!("job payload: {e}")))?;
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
        if let Some(k) = &self.unique_key {
            if k.is_empty() || k.contains('\0') {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "unique_key must be non-empty and free of NUL characters",
                ));
            }
        }
        if let Some((base, max)) = self.backoff {
            if base.is_zero() && max.is_zero() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "backoff must not be zero",
                ));
            }
        }
        super::validate::check_job_times(self)?;
        check_payload(payload)?;
        Ok(payload)
    }

    /// True when the job has default timing and backoff and no unique key: it is enqueued by
    /// the shortest statement.
    pub(crate) fn is_plain(&self) -> bool {
        self.run_at.is_none()
            && self.delay.is_none()
            && self.unique_key.is_none()
            && self.backoff.is_none()
            && self.features.is_none()
    }

    pub(crate) fn max_attempts_i32(&self) -> i32 {
        self.max_attempts as i32
    }
}

/// jsonb cannot store NUL characters; say so before the server does.
pub(crate) fn check_payload(payload: &Value) -> Result<()> {
    if contains_nul(payload) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "job payload contains a NUL character (\\u0000), which jsonb cannot store",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn checks() {
        assert!(Job::new("q", "{}").checked().is_ok());
        let kind = |j: Job| j.checked().unwrap_err().kind();
        assert_eq!(kind(Job::new("a b", "{}")), ErrorKind::InvalidName);
        assert_eq!(kind(Job::new("q", "nope")), ErrorKind::Serialize);
        assert_eq!(
            kind(Job::new("q", "{}").max_attempts(0)),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(Job::new("q", &serde_json::json!({"a": ["x\u{0}"]}))),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(Job::new("q", "{}").unique_key("")),
            ErrorKind::InvalidInput
        );
    }
}
