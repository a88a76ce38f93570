//! The ranges of a job's times: checked before enqueueing, so that every job written can be
//! scheduled and retried (PostgreSQL's timestamps end in year 294276 and its intervals at
//! about 178 million years; a job past them fails at enqueue with a bare "out of range", or
//! worse, at its first failure).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Job;
use crate::{Error, ErrorKind, Result};

/// The longest [`Job::delay`] (and `delay` of `pgbroker.enqueue`): 100 years (36 500 days).
///
/// # Examples
///
/// ```
/// use pgbroker::queue::{Job, MAX_DELAY};
/// let latest = Job::new("reminders", "{}").delay(MAX_DELAY); // accepted; a second more is not
/// ```
pub const MAX_DELAY: Duration = Duration::from_secs(36_500 * 86_400);

/// The longest backoff base or maximum of [`Job::backoff`] (and `backoff_base`, `backoff_max`
/// of `pgbroker.enqueue`): 365 days.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pgbroker::queue::{Job, MAX_BACKOFF};
/// let patient = Job::new("sync", "{}").backoff(Duration::from_secs(60), MAX_BACKOFF);
/// ```
pub const MAX_BACKOFF: Duration = Duration::from_secs(365 * 86_400);

/// The end of [`Job::run_at`]'s range, as the time since the Unix epoch: a job must be due
/// before 10000-01-01T00:00:00Z (`pgbroker.enqueue` refuses `run_at` from then on, and
/// `infinity`). Times before 1970 are refused too.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use pgbroker::queue::{Job, RUN_AT_END};
/// let last_second = UNIX_EPOCH + RUN_AT_END - Duration::from_secs(1);
/// let job = Job::new("y10k", "{}").run_at(last_second); // 9999-12-31T23:59:59Z
/// ```
pub const RUN_AT_END: Duration = Duration::from_secs(253_402_300_800);

/// Checks the delay, run_at and backoff of `job` against their ranges.
pub(crate) fn check_job_times(job: &Job) -> Result<()> {
    if let Some(d) = job.delay {
        if d > MAX_DELAY {
            return Err(invalid(format!(
                "delay must be at most {} (100 years), got {}",
                secs(MAX_DELAY),
                secs(d)
            )));
        }
    }
    if let Some(at) = job.run_at {
        let ok = at
            .duration_since(UNIX_EPOCH)
            .is_ok_and(|since| since < RUN_AT_END);
        if !ok {
            return Err(invalid(format!(
                "run_at must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z, got {}",
                describe_time(at)
            )));
        }
    }
    if let Some((base, max)) = job.backoff {
        for (name, d) in [("base", base), ("max", max)] {
            if d > MAX_BACKOFF {
                return Err(invalid(format!(
                    "backoff {name} must be at most {} (365 days), got {}",
                    secs(MAX_BACKOFF),
                    secs(d)
                )));
            }
        }
    }
    Ok(())
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
}

fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

/// A time as a UTC date and time when it has one in the proleptic Gregorian calendar we can
/// print, else as seconds from the Unix epoch.
fn describe_time(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => {
            let s = d.as_secs();
            let (y, m, day) = civil_from_days((s / 86_400) as i64);
            let r = s % 86_400;
            format!(
                "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}Z",
                r / 3600,
                r / 60 % 60,
                r % 60
            )
        }
        Err(e) => format!("{} s before the Unix epoch", e.duration().as_secs()),
    }
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(describe_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            describe_time(UNIX_EPOCH + RUN_AT_END),
            "10000-01-01T00:00:00Z"
        );
        assert_eq!(
            describe_time(UNIX_EPOCH + Duration::from_secs(951_827_696)),
            "2000-02-29T12:34:56Z"
        );
    }

    #[test]
    fn ranges() {
        let job = || Job::new("q", "{}");
        assert!(check_job_times(&job().delay(MAX_DELAY)).is_ok());
        assert!(check_job_times(&job().delay(MAX_DELAY + Duration::from_secs(1))).is_err());
        assert!(check_job_times(&job().delay(Duration::MAX)).is_err());
        let last = UNIX_EPOCH + RUN_AT_END - Duration::from_secs(1);
        assert!(check_job_times(&job().run_at(last)).is_ok());
        assert!(check_job_times(&job().run_at(last + Duration::from_secs(1))).is_err());
        assert!(check_job_times(&job().backoff(MAX_BACKOFF, MAX_BACKOFF)).is_ok());
        let e = check_job_times(&job().backoff(Duration::MAX, Duration::MAX)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e
            .to_string()
            .contains("backoff base must be at most 31536000 s"));
    }
}
