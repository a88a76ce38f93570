//! The worker pool: a fixed number of threads running handlers for work that sources
//! (listeners, log consumers, queue fetchers) feed them through a bounded crossbeam channel.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use crate::middleware::{Chain, HandlerRun, Middleware, Next};
use crate::notify::{Event, Listener, Notification};
use crate::{Broker, Error, ErrorKind, Result};

/// The error a handler returns: any error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler returns.
pub type HandlerResult = std::result::Result<(), BoxError>;

type NotifyHandler = Arc<dyn Fn(&Notification) -> HandlerResult + Send + Sync>;
type ReconnectHandler = Arc<dyn Fn(&str, Duration) + Send + Sync>;

/// One unit of work for a worker thread. `abandon` runs instead of `run` when the pool shuts
/// down before the task started (a queue task releases its lease there).
pub(crate) struct Task {
    run: Box<dyn FnOnce() + Send>,
    abandon: Option<Box<dyn FnOnce() + Send>>,
}

impl Task {
    pub(crate) fn new(run: impl FnOnce() + Send + 'static) -> Task {
        Task {
            run: Box::new(run),
            abandon: None,
        }
    }

    #[allow(dead_code)] // used by queue tasks
    pub(crate) fn on_abandon(mut self, abandon: impl FnOnce() + Send + 'static) -> Task {
        self.abandon = Some(Box::new(abandon));
        self
    }
}

/// What a source gets to feed the pool and to learn that it must stop.
#[derive(Clone)]
#[allow(dead_code)] // parts are used only by some sources
pub(crate) struct SourceContext {
    pub(crate) broker: Broker,
    pub(crate) stats: Arc<Stats>,
    tasks: Sender<Task>,
    stopping: Arc<AtomicBool>,
    /// Never receives a value; it disconnects when the pool stops (select on it to wake up).
    stop_signal: Receiver<()>,
}

#[allow(dead_code)]
impl SourceContext {
    /// Hands a task to the workers, waiting while all are busy (bounded prefetch). On
    /// shutdown the task is abandoned instead and `false` returned.
    pub(crate) fn submit(&self, task: Task) -> bool {
        let mut task = task;
        loop {
            if self.is_stopping() {
                self.abandon(task);
                return false;
            }
            // A timeout rather than select! on the stop signal: a task that loses a select is
            // dropped without its abandon hook.
            match self.tasks.send_timeout(task, Duration::from_millis(50)) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(t)) => task = t,
                Err(SendTimeoutError::Disconnected(t)) => {
                    self.abandon(t);
                    return false;
                }
            }
        }
    }

    /// Runs a task's abandon hook and counts it.
    fn abandon(&self, task: Task) {
        self.stats.abandoned.fetch_add(1, Ordering::Relaxed);
        abandon(task);
    }

    /// True once shutdown began: stop producing.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A receiver that disconnects at shutdown, to `select!` on while waiting.
    pub(crate) fn stop_signal(&self) -> &Receiver<()> {
        &self.stop_signal
    }

    /// Sleeps up to `d`; returns false early when the pool stops.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        match self.stop_signal.recv_timeout(d) {
            Err(RecvTimeoutError::Timeout) => !self.is_stopping(),
            _ => false,
        }
    }
}

fn abandon(task: Task) {
    if let Some(a) = task.abandon {
        if catch_unwind(AssertUnwindSafe(a)).is_err() {
            log::error!("pgbroker: abandoning a task panicked");
        }
    }
}

/// Something that produces work for the pool from its own thread(s).
pub(crate) trait Source: Send {
    /// Starts the source's threads; they must return soon after `ctx.is_stopping()`.
    fn start(self: Box<Self>, ctx: SourceContext) -> Result<Vec<JoinHandle<()>>>;

    /// True for a queue's source: its pool also runs the scheduler.
    fn runs_jobs(&self) -> bool {
        false
    }

    /// How many tasks it hands over at once (a lease-mode queue: a claimed batch): the
    /// pool's channel holds that many besides one per thread.
    fn handover(&self) -> usize {
        0
    }
}

/// The most room the pool's channel makes for a source's hand-over.
const MAX_HANDOVER: usize = 1_024;

/// Counters of a [`WorkerPool`], read with [`WorkerPool::stats`].
#[derive(Debug, Default)]
pub struct Stats {
    /// The pool's middleware, run around every handler.
    middleware: Chain,
    handled: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    abandoned: AtomicU64,
    reconnects: AtomicU64,
}

/// A snapshot of a worker pool's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Handler calls that returned `Ok` and whose success was recorded (or is being).
    pub handled: u64,
    /// Handler calls that returned an error, and successes that could not be recorded even
    /// after retries (the database was unreachable: such a job runs again when its lease
    /// expires). A success is never counted as handled once its recording failed.
    pub failed: u64,
    /// Handler calls that panicked (also counted in `failed`).
    pub panicked: u64,
    /// Items received but not started because the pool shut down.
    pub abandoned: u64,
    /// Listener reconnections.
    pub reconnects: u64,
}

impl Stats {
    /// Runs a handler, catching a panic, and counts the outcome. Returns the handler's error
    /// (a panic becomes an error of kind [`ErrorKind::Handler`]). `what` names the item in
    /// those errors; it is formatted only then (formatting it for every job cost the queues'
    /// worker pools 1 300 instructions per job). The pool's middleware runs around `f`
    /// (inside the panic guard: a panicking middleware fails the item as its handler would).
    pub(crate) fn run_handler<F>(
        &self,
        what: &HandlerRun<'_>,
        f: F,
    ) -> std::result::Result<(), Error>
    where
        F: FnOnce() -> HandlerResult,
    {
        match catch_unwind(AssertUnwindSafe(|| self.middleware.run(what, f))) {
            Ok(Ok(())) => {
                self.handled.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                log::warn!("pgbroker handler for {what} failed: {e}");
                Err(Error::with_cause(
                    ErrorKind::Handler,
                    Some(format!("handler for {what} failed")),
                    e,
                ))
            }
            Err(panic) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.panicked.fetch_add(1, Ordering::Relaxed);
                let msg = panic_message(&*panic);
                log::error!("pgbroker handler for {what} panicked: {msg}");
                Err(Error::new(
                    ErrorKind::Handler,
                    format!("handler for {what} panicked: {msg}"),
                ))
            }
        }
    }

    /// Moves `n` successes from `handled` to `failed`: their completion could not be
    /// recorded, so the work will be done again.
    pub(crate) fn count_unrecorded(&self, n: u64) {
        let _ = self
            .handled
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some(h.saturating_sub(n))
            });
        self.failed.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` items given back unstarted at shutdown (jobs of a transactional batch).
    pub(crate) fn count_abandoned(&self, n: u64) {
        self.abandoned.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            handled: self.handled.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            panicked: self.panicked.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Configures and starts a [`WorkerPool`]. Get one from [`Broker::worker_pool`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let pool = broker
///     .worker_pool()
///     .threads(4)
///     .handler("orders", |n| {
///         println!("order {}", n.payload());
///         Ok(())
///     })
///     .start()?;
/// // ... later
/// pool.shutdown()?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until start() is called"]
pub struct WorkerPoolBuilder {
    broker: Broker,
    threads: usize,
    grace: Duration,
    notify: Vec<(String, NotifyHandler)>,
    reconnect: HashMap<String, ReconnectHandler>,
    sources: Vec<Box<dyn Source>>,
    middleware: Vec<Middleware>,
    /// How often the scheduler runs (`src/queue/schedule.rs`); `None`: not in this pool.
    pub(crate) scheduler: Option<Duration>,
}

impl Broker {
    /// A builder for a pool of worker threads that run handlers.
    pub fn worker_pool(&self) -> WorkerPoolBuilder {
        WorkerPoolBuilder {
            broker: self.clone(),
            threads: std::thread::available_parallelism().map_or(4, |n| n.get()),
            grace: self.config().shutdown_grace,
            notify: Vec::new(),
            reconnect: HashMap::new(),
            sources: Vec::new(),
            middleware: Vec::new(),
            scheduler: Some(crate::queue::DEFAULT_SCHEDULE_INTERVAL),
        }
    }
}

impl WorkerPoolBuilder {
    /// Number of worker threads. Default: the number of CPUs.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// How long [`WorkerPool::shutdown`] waits for running handlers. Default: the broker's
    /// `shutdown_grace` (30 s).
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Handles every notification on `channel` (one listener thread per channel); each
    /// notification is handled once, by one worker thread. A handler that errors or panics is
    /// logged and counted in [`WorkerPool::stats`]; its thread lives on.
    ///
    /// Registering two handlers for one channel makes [`start`](Self::start) fail.
    pub fn handler<F>(mut self, channel: &str, f: F) -> Self
    where
        F: Fn(&Notification) -> HandlerResult + Send + Sync + 'static,
    {
        self.notify.push((channel.to_owned(), Arc::new(f)));
        self
    }

    /// Called (on a worker thread) when the listener of `channel` reconnected, with how long
    /// it was down: notifications of that time are lost, so re-read durable state here.
    pub fn on_reconnect<F>(mut self, channel: &str, f: F) -> Self
    where
        F: Fn(&str, Duration) + Send + Sync + 'static,
    {
        self.reconnect.insert(channel.to_owned(), Arc::new(f));
        self
    }

    /// Adds middleware: `f(run, next)` runs around every handler run of this pool (each job,
    /// notification or batch of events), and calls `next()` to run the rest of the chain and
    /// the handler, returning (or replacing) its result. Registered first runs outermost.
    /// Not calling `next` skips the handler; what `f` returns is then the outcome. A panic in
    /// `f` fails the item as a panicking handler would. Use it for logging, metrics and
    /// per-run context (a thread-local, a tracing span). Default: none.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Instant;
    /// use pgbroker::middleware::HandlerRun;
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker
    ///     .worker_pool()
    ///     .middleware(|run, next| {
    ///         let started = Instant::now();
    ///         let result = next();
    ///         if let HandlerRun::Job { queue, id, .. } = run {
    ///             println!("{queue} job {id}: {:?} in {:?}", result.is_ok(), started.elapsed());
    ///         }
    ///         result
    ///     })
    ///     .queue("emails", 4, |job| Ok(()))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn middleware<F>(mut self, f: F) -> Self
    where
        F: Fn(&HandlerRun<'_>, Next<'_>) -> HandlerResult + Send + Sync + 'static,
    {
        self.middleware.push(Arc::new(f));
        self
    }

    /// Adds a source of work (log consumers, queue fetchers).
    #[allow(dead_code)]
    pub(crate) fn source(mut self, source: Box<dyn Source>) -> Self {
        self.sources.push(source);
        self
    }

    /// Starts the listeners, sources and worker threads.
    ///
    /// Fails with [`ErrorKind::Config`] for zero threads or a channel registered twice, and
    /// with the listener's error when a channel is invalid or the database is unreachable;
    /// nothing is left running then.
    pub fn start(self) -> Result<WorkerPool> {
        if self.threads == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                "a worker pool needs at least 1 thread",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (channel, _) in &self.notify {
            if !seen.insert(channel.as_str()) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("two handlers registered for channel {channel:?}"),
                ));
            }
        }
        for channel in self.reconnect.keys() {
            if !seen.contains(channel.as_str()) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("on_reconnect for {channel:?}, which has no handler"),
                ));
            }
        }

        // Room for a source's whole hand-over besides a task per thread: a claimed batch of
        // jobs fed through a channel the size of the pool crossed from the fetch thread to a
        // worker and back for every job (two context switches each; with 1 thread and 50
        // jobs per claim, 11 us per job, more than the claim).
        let handover = self.sources.iter().map(|s| s.handover()).max().unwrap_or(0);
        let capacity = self.threads + handover.min(MAX_HANDOVER);
        let (task_tx, task_rx) = crossbeam_channel::bounded::<Task>(capacity);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let stats = Arc::new(Stats {
            middleware: Chain(self.middleware),
            ..Stats::default()
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let ctx = SourceContext {
            broker: self.broker.clone(),
            stats: stats.clone(),
            tasks: task_tx,
            stopping: stopping.clone(),
            stop_signal: stop_rx,
        };

        let mut pool = WorkerPool {
            stats,
            stopping,
            stop_tx: Some(stop_tx),
            source_threads: Vec::new(),
            workers: Vec::new(),
            done_rx: None,
            grace: self.grace,
        };

        // Workers first, so sources have somewhere to send.
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<usize>();
        for i in 0..self.threads {
            let rx = task_rx.clone();
            let ctx = ctx.clone();
            let done = done_tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("pgbroker-worker-{i}"))
                .spawn(move || {
                    worker_loop(rx, ctx);
                    let _ = done.send(i);
                })?;
            pool.workers.push(Some(t));
        }
        pool.done_rx = Some(done_rx);

        // On error the half-started pool is shut down by its Drop.
        let mut reconnect = self.reconnect;
        for (channel, handler) in self.notify {
            let listener = self.broker.listen(&channel)?;
            let source = NotifySource {
                listener,
                handler,
                on_reconnect: reconnect.remove(&channel),
            };
            pool.source_threads
                .extend(Box::new(source).start(ctx.clone())?);
        }
        // Pools that run jobs also run the schedules that enqueue them.
        let scheduler = self
            .scheduler
            .filter(|_| self.sources.iter().any(|s| s.runs_jobs()));
        for source in self.sources {
            pool.source_threads.extend(source.start(ctx.clone())?);
        }
        if let Some(every) = scheduler {
            let source = crate::queue::SchedulerSource { every };
            pool.source_threads
                .extend(Box::new(source).start(ctx.clone())?);
        }
        Ok(pool)
    }
}

/// Runs tasks until the pool stops; then abandons the tasks not started (an idle worker
/// wakes on the stop signal, so `shutdown()` does not wait for a poll).
fn worker_loop(tasks: Receiver<Task>, ctx: SourceContext) {
    loop {
        select! {
            recv(tasks) -> task => match task {
                Ok(task) if ctx.is_stopping() => ctx.abandon(task),
                Ok(task) => {
                    if catch_unwind(AssertUnwindSafe(task.run)).is_err() {
                        // Tasks catch handler panics themselves; this is a bug in pgbroker.
                        log::error!("pgbroker: a task panicked outside its handler");
                    }
                }
                Err(_) => return,
            },
            recv(ctx.stop_signal()) -> _ => {
                while let Ok(task) = tasks.try_recv() {
                    ctx.abandon(task);
                }
                return;
            }
        }
    }
}

/// Feeds one listener's notifications to the workers.
struct NotifySource {
    listener: Listener,
    handler: NotifyHandler,
    on_reconnect: Option<ReconnectHandler>,
}

impl Source for NotifySource {
    fn start(self: Box<Self>, ctx: SourceContext) -> Result<Vec<JoinHandle<()>>> {
        let name = format!("pgbroker-notify-{}", self.listener.channel());
        let t = std::thread::Builder::new()
            .name(name)
            .spawn(move || self.pump(ctx))?;
        Ok(vec![t])
    }
}

impl NotifySource {
    fn pump(self, ctx: SourceContext) {
        let channel = self.listener.channel().to_owned();
        loop {
            let event = select! {
                recv(self.listener.receiver()) -> ev => match ev {
                    Ok(ev) => ev,
                    Err(_) => return,
                },
                recv(ctx.stop_signal()) -> _ => return,
            };
            let task = match event {
                Event::Notification(n) => {
                    let handler = self.handler.clone();
                    let stats = ctx.stats.clone();
                    Task::new(move || {
                        let _ = stats.run_handler(&HandlerRun::Notification(&n), || handler(&n));
                    })
                }
                Event::Reconnected { downtime, .. } => {
                    ctx.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = self.on_reconnect.clone() else {
                        continue;
                    };
                    let channel = channel.clone();
                    Task::new(move || {
                        if catch_unwind(AssertUnwindSafe(|| f(&channel, downtime))).is_err() {
                            log::error!("pgbroker on_reconnect handler for {channel:?} panicked");
                        }
                    })
                }
                _ => continue,
            };
            if !ctx.submit(task) {
                // Shutting down: what is still queued in the listener is dropped with it.
                let left = self.listener.pending() as u64;
                ctx.stats.abandoned.fetch_add(left, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// A running pool of worker threads. Created by [`WorkerPoolBuilder::start`].
///
/// [`shutdown`](Self::shutdown) (or dropping it) stops listening and claiming, lets running
/// handlers finish within the grace period, abandons work not yet started (queue leases are
/// released) and joins every thread.
pub struct WorkerPool {
    stats: Arc<Stats>,
    stopping: Arc<AtomicBool>,
    stop_tx: Option<Sender<()>>,
    source_threads: Vec<JoinHandle<()>>,
    workers: Vec<Option<JoinHandle<()>>>,
    done_rx: Option<Receiver<usize>>,
    grace: Duration,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.workers.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl WorkerPool {
    /// The pool's counters so far.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// # let pool = broker.worker_pool().handler("c", |_| Ok(())).start()?;
    /// let stats = pool.stats();
    /// println!("{} handled, {} failed", stats.handled, stats.failed);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops gracefully: no new work starts, running handlers get up to the grace period,
    /// every thread is joined. Returns the final counters. Fails with [`ErrorKind::Timeout`]
    /// when handlers still ran at the deadline (their threads are left to finish on their own).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker.worker_pool().handler("c", |_| Ok(())).start()?;
    /// pool.shutdown()?;
    /// # Ok(()) }
    /// ```
    pub fn shutdown(mut self) -> Result<StatsSnapshot> {
        self.stop()?;
        Ok(self.stats())
    }

    fn stop(&mut self) -> Result<()> {
        if self.stop_tx.is_none() {
            return Ok(());
        }
        let deadline = Instant::now() + self.grace;
        self.stopping.store(true, Ordering::SeqCst);
        drop(self.stop_tx.take()); // wakes every select on the stop signal
        for t in self.source_threads.drain(..) {
            if t.join().is_err() {
                log::error!("pgbroker: a source thread panicked");
            }
        }
        let Some(done) = self.done_rx.take() else {
            return Ok(());
        };
        let mut running = self.workers.iter().filter(|w| w.is_some()).count();
        while running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match done.recv_timeout(left) {
                Ok(i) => {
                    if let Some(t) = self.workers.get_mut(i).and_then(Option::take) {
                        let _ = t.join();
                    }
                    running -= 1;
                }
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "{running} worker thread(s) still running handlers after the \
                             {:?} grace period",
                            self.grace
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::error!("pgbroker worker pool shutdown: {e}");
        }
    }
}
