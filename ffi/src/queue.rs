//! The job queue: enqueue, claim, and complete or fail claimed jobs.

use std::ffi::{c_char, c_int, CString};
use std::time::Duration;

use pgbroker_core::queue::{ClaimedJob, Job};

use crate::broker::pgbroker_broker;
use crate::error::{call, guard, pgbroker_error, pgbroker_kind, Failure};
use crate::strings::{
    arg_str, free_handle, handle, opt_arg_str, opt_ptr, out_param, to_cstring, to_opt_cstring,
    view, write_opt,
};

/// Options of `pgbroker_enqueue`. Zero-initialise it (`pgbroker_job_options o = {0};`) and set
/// what you need: every zero or NULL field means the default.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pgbroker_job_options {
    /// Smaller runs first. Default 0.
    pub priority: i32,
    /// Not run before this many milliseconds from now. Default 0 (runnable at once).
    pub delay_ms: u64,
    /// How many attempts the job gets before it is dead. 0 means the default, 25.
    pub max_attempts: u32,
    /// While a job with this key is pending or running, enqueueing another with the same key
    /// returns the existing job's id instead. NULL for none.
    pub unique_key: *const c_char,
    /// The wait before the first retry after a failure, doubling with each attempt (±25%
    /// jitter). 0 means the default, 1 s.
    pub backoff_base_ms: u64,
    /// The longest wait between retries. 0 means the default: 1 hour, or `backoff_base_ms`
    /// when that is longer.
    pub backoff_max_ms: u64,
}

/// Enqueues a job on `queue` with the JSON text `json` as payload and `options` (NULL for the
/// defaults). Stores the job's id in `*job_id` unless `job_id` is NULL. Durable once this
/// returns 0.
///
/// Fails with PGBROKER_KIND_SERIALIZE when `json` is not JSON and PGBROKER_KIND_INVALID_NAME
/// for a bad queue name, before writing anything.
///
/// Ownership: everything is borrowed for the call. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_enqueue(
    broker: *const pgbroker_broker,
    queue: *const c_char,
    json: *const c_char,
    options: *const pgbroker_job_options,
    job_id: *mut i64,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        let queue = arg_str(queue, "queue")?;
        let json = arg_str(json, "json")?;
        crate::log::parse_json(json, "json")?;
        let mut job = Job::new(queue, json);
        if let Some(o) = view(options) {
            job = job.priority(o.priority);
            if o.delay_ms > 0 {
                job = job.delay(Duration::from_millis(o.delay_ms));
            }
            if o.max_attempts > 0 {
                job = job.max_attempts(o.max_attempts);
            }
            if o.backoff_base_ms > 0 || o.backoff_max_ms > 0 {
                let base = match o.backoff_base_ms {
                    0 => Duration::from_secs(1),
                    ms => Duration::from_millis(ms),
                };
                let max = match o.backoff_max_ms {
                    0 => Duration::from_secs(3600).max(base),
                    ms => Duration::from_millis(ms),
                };
                job = job.backoff(base, max);
            }
            if let Some(key) = opt_arg_str(o.unique_key, "options.unique_key")? {
                job = job.unique_key(key);
            }
        }
        write_opt(job_id, b.broker.enqueue_job(&job)?.get());
        Ok(())
    })
}

/// A claimed job. Read it with the `pgbroker_job_*` accessors; finish it with
/// `pgbroker_complete` or `pgbroker_fail` (a callback's job is finished by its return value).
/// Borrowed from its `pgbroker_jobs` (or, in a callback, for the call); immutable, so its
/// accessors may be called from any thread.
pub struct pgbroker_job {
    pub(crate) job: ClaimedJob,
    queue: CString,
    payload: CString,
    unique_key: Option<CString>,
}

impl pgbroker_job {
    pub(crate) fn new(job: ClaimedJob) -> pgbroker_job {
        pgbroker_job {
            queue: to_cstring(job.queue.as_str()),
            payload: to_cstring(job.payload.to_string()),
            unique_key: to_opt_cstring(job.unique_key.as_deref()),
            job,
        }
    }
}

/// Jobs claimed by `pgbroker_claim`, freed by `pgbroker_jobs_free`. Immutable: its accessors
/// may be called from any thread.
pub struct pgbroker_jobs {
    jobs: Vec<pgbroker_job>,
}

/// Claims up to `max` available jobs of `queue` (by priority, then age) with a lease of
/// `lease_ms` milliseconds, and stores them in `*jobs` (possibly none). Each job's attempt
/// is counted; finish each with `pgbroker_complete` or `pgbroker_fail` before the lease ends,
/// or it is given to another worker.
///
/// Fails with PGBROKER_KIND_INVALID_NAME for a bad queue name and PGBROKER_KIND_INVALID_INPUT
/// for a lease of 0.
///
/// Ownership: the caller owns `*jobs` and frees it with `pgbroker_jobs_free`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_claim(
    broker: *const pgbroker_broker,
    queue: *const c_char,
    max: usize,
    lease_ms: u64,
    jobs: *mut *mut pgbroker_jobs,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        let out = out_param(jobs, "jobs")?;
        let queue = arg_str(queue, "queue")?;
        let worker = format!("ffi-{}", std::process::id());
        let lease = Duration::from_millis(lease_ms);
        let claimed = b.broker.claim_jobs(queue, &worker, max, lease)?;
        let jobs = claimed.into_iter().map(pgbroker_job::new).collect();
        *out = Box::into_raw(Box::new(pgbroker_jobs { jobs }));
        Ok(())
    })
}

/// Completes a claimed job: it is done and deleted.
///
/// Fails with PGBROKER_KIND_NOT_FOUND when the job is no longer held by this claim (its lease
/// ran out and another worker claimed it, or it was cancelled): the work must not count.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_complete(
    broker: *const pgbroker_broker,
    job: *const pgbroker_job,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        let job = &handle(job, "job")?.job;
        match b.broker.complete_jobs(std::slice::from_ref(job))? {
            0 => Err(lost(job)),
            _ => Ok(()),
        }
    })
}

/// Records a failed attempt of a claimed job with the reason `message` (NULL for none): it
/// runs again after its backoff, or is dead once its attempts are used up.
///
/// Fails with PGBROKER_KIND_NOT_FOUND when the job is no longer held by this claim.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_fail(
    broker: *const pgbroker_broker,
    job: *const pgbroker_job,
    message: *const c_char,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        let job = &handle(job, "job")?.job;
        let message = opt_arg_str(message, "message")?.unwrap_or("failed (no reason given)");
        match b.broker.fail_job(job, message, None)? {
            None => Err(lost(job)),
            Some(_) => Ok(()),
        }
    })
}

fn lost(job: &ClaimedJob) -> Failure {
    Failure::new(
        pgbroker_kind::NotFound,
        format!(
            "job {} (attempt {}) is no longer held by this claim",
            job.id, job.attempt
        ),
    )
}

/// The number of jobs in `jobs` (0 for NULL).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_jobs_len(jobs: *const pgbroker_jobs) -> usize {
    guard(0, || view(jobs).map_or(0, |j| j.jobs.len()))
}

/// Job `index` of `jobs`. Borrowed: valid until `pgbroker_jobs_free(jobs)`. NULL when `jobs`
/// is NULL or `index` out of range.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_jobs_get(
    jobs: *const pgbroker_jobs,
    index: usize,
) -> *const pgbroker_job {
    guard(std::ptr::null(), || {
        view(jobs)
            .and_then(|j| j.jobs.get(index))
            .map_or(std::ptr::null(), |j| j as *const pgbroker_job)
    })
}

/// Frees claimed jobs (and the `pgbroker_job` pointers taken from them). Accepts NULL.
/// Freeing does not finish the jobs: unfinished ones are retried after their lease.
///
/// Thread safety: no other call may use `jobs` (or its jobs) at the same time or afterwards.
#[no_mangle]
pub extern "C" fn pgbroker_jobs_free(jobs: *mut pgbroker_jobs) {
    free_handle(jobs)
}

/// The id of `job` (0 for NULL).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_job_id(job: *const pgbroker_job) -> i64 {
    guard(0, || view(job).map_or(0, |j| j.job.id.get()))
}

/// The queue of `job`. Borrowed: valid as long as the job. "" for NULL.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_job_queue(job: *const pgbroker_job) -> *const c_char {
    guard(c"".as_ptr(), || {
        view(job).map_or(c"".as_ptr(), |j| j.queue.as_ptr())
    })
}

/// The payload of `job` as JSON text. Borrowed: valid as long as the job. "" for NULL.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_job_payload(job: *const pgbroker_job) -> *const c_char {
    guard(c"".as_ptr(), || {
        view(job).map_or(c"".as_ptr(), |j| j.payload.as_ptr())
    })
}

/// This attempt's number, from 1 (0 for NULL).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_job_attempt(job: *const pgbroker_job) -> i32 {
    guard(0, || view(job).map_or(0, |j| j.job.attempt))
}

/// How many attempts `job` may have (0 for NULL).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_job_max_attempts(job: *const pgbroker_job) -> i32 {
    guard(0, || view(job).map_or(0, |j| j.job.max_attempts))
}

/// The priority of `job` (smaller runs first; 0 for NULL).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_job_priority(job: *const pgbroker_job) -> i32 {
    guard(0, || view(job).map_or(0, |j| j.job.priority))
}

/// The unique key of `job`, NULL when it has none (or for NULL). Borrowed: valid as long as
/// the job.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_job_unique_key(job: *const pgbroker_job) -> *const c_char {
    guard(std::ptr::null(), || {
        view(job).map_or(std::ptr::null(), |j| opt_ptr(&j.unique_key))
    })
}
