//! The worker pool with C callbacks: register queues and subscriptions, start, shut down.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Mutex;
use std::time::Duration;

use pgbroker_core::{HandlerResult, StatsSnapshot, WorkerPool, WorkerPoolBuilder};

use crate::broker::pgbroker_broker;
use crate::error::{call, guard, pgbroker_error, pgbroker_kind, Failure, Result};
use crate::log::pgbroker_batch;
use crate::queue::pgbroker_job;
use crate::strings::{arg_str, free_handle, handle, opt_arg_str, out_param, write_opt};

/// A pool of worker threads running C callbacks for jobs and event batches. Made by
/// `pgbroker_pool_new`; configured with `pgbroker_pool_queue`, `pgbroker_pool_subscription`;
/// started by `pgbroker_pool_start`; stopped by `pgbroker_pool_shutdown`; freed by
/// `pgbroker_pool_free`.
///
/// Thread safety: the `pgbroker_pool_*` functions may be called from any thread; calls on one
/// pool are serialised (one waits for the other).
pub struct pgbroker_pool {
    state: Mutex<State>,
}

enum State {
    Building(WorkerPoolBuilder),
    Running(WorkerPool),
    Stopped,
}

/// What a callback reports besides its return value: the reason of a failure, set with
/// `pgbroker_outcome_set_error`. Valid only during the callback that received it.
pub struct pgbroker_outcome {
    error: Option<String>,
}

/// Sets the reason a callback failed (stored as the job's last error, or logged for a batch);
/// the callback must still return non-zero. The text is copied. Accepts NULL `outcome` or
/// `message` (then does nothing).
///
/// Thread safety: only from the callback that received `outcome`.
#[no_mangle]
pub extern "C" fn pgbroker_outcome_set_error(
    outcome: *mut pgbroker_outcome,
    message: *const c_char,
) {
    guard((), || {
        // SAFETY: NULL or the outcome passed to the running callback, used only by it.
        let Some(outcome) = (unsafe { outcome.as_mut() }) else {
            return;
        };
        if let Ok(Some(m)) = opt_arg_str(message, "message") {
            outcome.error = Some(m.to_owned());
        }
    })
}

/// A callback for one job: return 0 to complete the job, anything else to fail this attempt
/// (it is retried with backoff, dead after its last attempt). `job` is borrowed for the call.
/// Runs on a pool thread, possibly on several at once (up to the queue's concurrency).
pub type pgbroker_job_callback = Option<
    extern "C" fn(
        user_data: *mut c_void,
        job: *const pgbroker_job,
        outcome: *mut pgbroker_outcome,
    ) -> c_int,
>;

/// A callback for a batch of events of a subscription, in log order: return 0 to acknowledge
/// the batch, anything else to send its events to the retry table (they come back one at a
/// time, with backoff). `batch` is borrowed for the call. Runs on a pool thread.
pub type pgbroker_batch_callback = Option<
    extern "C" fn(
        user_data: *mut c_void,
        batch: *const pgbroker_batch,
        outcome: *mut pgbroker_outcome,
    ) -> c_int,
>;

/// The caller's `user_data`, moved to pool threads.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);

// SAFETY: pgbroker never dereferences the pointer; it only hands it back to the caller's
// callback, and the header requires `user_data` to be usable from the pool's threads.
unsafe impl Send for UserData {}
// SAFETY: as above: shared only to be passed back to the callback, which may run on several
// threads at once (documented).
unsafe impl Sync for UserData {}

impl UserData {
    fn get(self) -> *mut c_void {
        self.0
    }
}

/// A C callback and its `user_data`, as a pool handler calls it.
struct Callback<T: 'static> {
    function: extern "C" fn(*mut c_void, *const T, *mut pgbroker_outcome) -> c_int,
    user_data: UserData,
    what: &'static str,
}

impl<T> Callback<T> {
    /// Calls the callback with `item`: 0 is `Ok`, anything else an error with the reason it
    /// set (or its status).
    fn run(&self, item: &T) -> HandlerResult {
        let mut outcome = pgbroker_outcome { error: None };
        match (self.function)(self.user_data.get(), item, &mut outcome) {
            0 => Ok(()),
            n => Err(outcome
                .error
                .unwrap_or_else(|| format!("{} callback returned {n}", self.what))
                .into()),
        }
    }
}

/// Counters of a worker pool, filled by `pgbroker_pool_shutdown`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct pgbroker_pool_stats {
    /// Callbacks that returned 0.
    pub handled: u64,
    /// Callbacks that returned non-zero.
    pub failed: u64,
    /// Items received but not started because the pool shut down (jobs are released).
    pub abandoned: u64,
}

impl From<StatsSnapshot> for pgbroker_pool_stats {
    fn from(s: StatsSnapshot) -> Self {
        pgbroker_pool_stats {
            handled: s.handled,
            failed: s.failed,
            abandoned: s.abandoned,
        }
    }
}

/// A new, not yet started pool of `threads` worker threads (0: one per CPU) on `broker`,
/// stored in `*pool`. `shutdown_grace_ms` is how long `pgbroker_pool_shutdown` lets running
/// callbacks finish (0: the broker's default, 30 s).
///
/// Ownership: the caller owns `*pool` and frees it with `pgbroker_pool_free`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_pool_new(
    broker: *const pgbroker_broker,
    threads: usize,
    shutdown_grace_ms: u64,
    pool: *mut *mut pgbroker_pool,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        let out = out_param(pool, "pool")?;
        let mut builder = b.broker.worker_pool();
        if threads > 0 {
            builder = builder.threads(threads);
        }
        if shutdown_grace_ms > 0 {
            builder = builder.shutdown_grace(Duration::from_millis(shutdown_grace_ms));
        }
        let state = Mutex::new(State::Building(builder));
        *out = Box::into_raw(Box::new(pgbroker_pool { state }));
        Ok(())
    })
}

/// The builder of a pool not yet started, leaving `Stopped` in its place (the caller puts the
/// next state back); `Shutdown` once started.
fn take_builder(state: &mut State) -> Result<WorkerPoolBuilder> {
    match std::mem::replace(state, State::Stopped) {
        State::Building(b) => Ok(b),
        other => {
            *state = other;
            Err(Failure::new(
                pgbroker_kind::Shutdown,
                "the pool was already started: register queues and subscriptions before \
                 pgbroker_pool_start",
            ))
        }
    }
}

/// Adds a builder step to a pool not yet started.
fn configure(
    pool: *const pgbroker_pool,
    step: impl FnOnce(WorkerPoolBuilder) -> WorkerPoolBuilder,
) -> Result<()> {
    let pool = handle(pool, "pool")?;
    let mut state = pool.state.lock().unwrap_or_else(|p| p.into_inner());
    let builder = take_builder(&mut state)?;
    *state = State::Building(step(builder));
    Ok(())
}

/// Runs `callback(user_data, job, outcome)` for the jobs of `queue`, at most `concurrency` at
/// a time (0 is refused by `pgbroker_pool_start` with PGBROKER_KIND_CONFIG), on the pool's
/// threads. The callback's return value completes (0) or fails (non-zero) each job.
///
/// `user_data` is passed back as is; it must stay valid, and be safe to use from the pool's
/// threads concurrently, until the pool is shut down or freed. A bad queue name makes
/// `pgbroker_pool_start` fail with PGBROKER_KIND_INVALID_NAME.
///
/// Thread safety: any thread; fails with PGBROKER_KIND_SHUTDOWN once the pool was started.
#[no_mangle]
pub extern "C" fn pgbroker_pool_queue(
    pool: *const pgbroker_pool,
    queue: *const c_char,
    concurrency: usize,
    callback: pgbroker_job_callback,
    user_data: *mut c_void,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let queue = arg_str(queue, "queue")?;
        let callback = Callback {
            function: callback.ok_or_else(|| Failure::invalid("`callback` is NULL"))?,
            user_data: UserData(user_data),
            what: "job",
        };
        configure(pool, |b| {
            b.queue(queue, concurrency, move |ctx| {
                callback.run(&pgbroker_job::new(ctx.claimed().clone()))
            })
        })
    })
}

/// Runs `callback(user_data, batch, outcome)` for batches of events of subscription `name`
/// (which must exist: `pgbroker_subscribe`) in log order, on the pool's threads. The
/// callback's return value acknowledges (0) or retries (non-zero) the batch. Pools in several
/// processes consuming one subscription share its partitions.
///
/// `user_data` is passed back as is; it must stay valid, and be safe to use from the pool's
/// threads, until the pool is shut down or freed.
///
/// Thread safety: any thread; fails with PGBROKER_KIND_SHUTDOWN once the pool was started.
#[no_mangle]
pub extern "C" fn pgbroker_pool_subscription(
    pool: *const pgbroker_pool,
    name: *const c_char,
    callback: pgbroker_batch_callback,
    user_data: *mut c_void,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let name = arg_str(name, "name")?;
        let callback = Callback {
            function: callback.ok_or_else(|| Failure::invalid("`callback` is NULL"))?,
            user_data: UserData(user_data),
            what: "batch",
        };
        configure(pool, |b| {
            b.subscription(name, move |batch| {
                callback.run(&pgbroker_batch::new(batch.clone()))
            })
        })
    })
}

/// Starts the pool's threads: callbacks begin to run. On failure nothing is left running and
/// the pool can only be freed.
///
/// Fails with PGBROKER_KIND_SHUTDOWN when already started, PGBROKER_KIND_CONFIG for a
/// concurrency of 0, PGBROKER_KIND_INVALID_NAME for a bad queue name, PGBROKER_KIND_NOT_FOUND
/// for a subscription that does not exist.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_pool_start(
    pool: *const pgbroker_pool,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let pool = handle(pool, "pool")?;
        let mut state = pool.state.lock().unwrap_or_else(|p| p.into_inner());
        let builder = take_builder(&mut state)?;
        *state = State::Running(builder.start()?);
        Ok(())
    })
}

/// Stops the pool gracefully and waits: no new work starts, running callbacks get up to the
/// shutdown grace period, jobs not yet started are released, every thread is joined. Fills
/// `*stats` unless `stats` is NULL. Calling it on a pool never started, or again, does
/// nothing (the counters are zero).
///
/// Fails with PGBROKER_KIND_TIMEOUT when callbacks still ran at the deadline (their threads
/// finish on their own; `user_data` must stay valid until they do).
///
/// Thread safety: any thread, but never from one of the pool's own callbacks.
#[no_mangle]
pub extern "C" fn pgbroker_pool_shutdown(
    pool: *const pgbroker_pool,
    stats: *mut pgbroker_pool_stats,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let pool = handle(pool, "pool")?;
        let mut state = pool.state.lock().unwrap_or_else(|p| p.into_inner());
        write_opt(stats, pgbroker_pool_stats::default());
        if let State::Running(p) = std::mem::replace(&mut *state, State::Stopped) {
            write_opt(stats, p.shutdown()?.into());
        }
        Ok(())
    })
}

/// Frees a pool, shutting it down first if it runs (as `pgbroker_pool_shutdown`, waiting up
/// to the grace period). Accepts NULL.
///
/// Thread safety: no other call may use `pool` at the same time or afterwards; never from one
/// of the pool's own callbacks.
#[no_mangle]
pub extern "C" fn pgbroker_pool_free(pool: *mut pgbroker_pool) {
    free_handle(pool)
}
