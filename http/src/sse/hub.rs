//! The shared reader: one per server, whatever the number of clients. It reads the log for the
//! union of the connected clients' patterns and fans each event out, in process, to every
//! group of clients with the same patterns whose patterns match it.
//!
//! Between reads it waits for a wake-up: while idle it is registered as a waiting reader
//! ([`LogWaiter`]), so pgbroker's publishers NOTIFY it, and a thread of its own passes those
//! notifications on. It polls only as a fallback (events written with plain SQL notify
//! nobody), and unregisters while events keep coming, so that a busy log's publishers send
//! no NOTIFY (NOTIFY serializes the commits that send it).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender, TrySendError};
use pgbroker::topic::{pattern_matches, LogWaiter, Position, WAKEUP_CHANNEL};
use pgbroker::{Broker, Listener};

use crate::log_reader::{horizon, read_after, StreamEvent};
use crate::metrics::{add, ServerMetrics};
use crate::server::{lock, Settings};
use crate::{Error, ErrorKind, Result};

/// The most events one read of the shared reader takes.
const PAGE: usize = 1000;

/// How long the reader stays registered as waiting while its reads keep finding events:
/// unregistering at once would cost two statements per wake-up; busy for longer, it
/// unregisters, and reads on without waiting until a read finds nothing.
const STAY_REGISTERED: Duration = Duration::from_millis(50);

/// Re-reads after a wake-up whose read found nothing (the event is behind the horizon: an
/// older transaction is still open, and its end sends no wake-up), and after registering (a
/// publish that skipped looking for waiters sent none): until a read's horizon passed every
/// transaction begun by then, first after this, doubling up to [`QUICK_MAX`] (or the poll
/// interval), for at most [`QUICK_WINDOW`]; as partitioned consumers do.
const QUICK_FIRST: Duration = Duration::from_millis(5);
const QUICK_MAX: Duration = Duration::from_secs(1);
const QUICK_WINDOW: Duration = Duration::from_secs(60);

/// While unregistered because busy, how long the reader waits after a read that found events
/// but did not fill its page: a stream of events is read a page of many at a time rather
/// than one query per event.
const BUSY_READ_EVERY: Duration = Duration::from_millis(10);

/// The longest poll interval without wake-ups (LISTEN unavailable: a transaction-mode
/// pooler without a session URL).
const POLL_WITHOUT_WAKE_UPS: Duration = Duration::from_millis(20);

/// How long after a failed registration the reader tries again (it polls meanwhile).
const REGISTER_RETRY: Duration = Duration::from_secs(5);

/// One event, rendered once for every client.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) position: Position,
    pub(crate) text: String,
}

impl Frame {
    pub(crate) fn of(e: &StreamEvent) -> Frame {
        Frame {
            position: e.position,
            text: format!(
                "id: {}\nevent: {}\ndata: {}\n\n",
                e.position, e.topic, e.payload
            ),
        }
    }
}

struct Client {
    id: u64,
    /// Only events after this go to the client (it joined or caught up here).
    from: Position,
    tx: Sender<Arc<Frame>>,
}

#[derive(Default)]
struct State {
    stopped: bool,
    /// Where the reader is: every event up to here went to the clients connected then.
    /// `None` while nobody is connected.
    position: Option<Position>,
    /// A read is under way: joining waits, so no client misses events of a read that did
    /// not include its patterns.
    reading: bool,
    /// A wake-up came since the last read began.
    woken: bool,
    groups: HashMap<Arc<[String]>, Vec<Client>>,
    next_id: u64,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    broker: Broker,
    settings: Settings,
    metrics: Arc<ServerMetrics>,
}

/// The fan-out hub of a server.
pub(crate) struct Hub {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The thread passing wake-ups on, and the sender whose drop stops it; `None` when
    /// LISTEN failed (the reader then polls).
    wake_ups: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

/// Where a joining client stands.
pub(crate) enum Joined {
    /// In: events after the position arrive on the receiver.
    Live(Receiver<Arc<Frame>>, u64),
    /// The reader is ahead of the client: catch up to (at least) this position first.
    Behind,
    Stopped,
}

impl Hub {
    pub(crate) fn start(
        broker: Broker,
        settings: Settings,
        metrics: Arc<ServerMetrics>,
    ) -> Result<Hub> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            broker,
            settings,
            metrics,
        });
        let wake_ups = match inner.broker.listen(WAKEUP_CHANNEL) {
            Ok(listener) => {
                let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
                let inner = inner.clone();
                let thread = std::thread::Builder::new()
                    .name("pgbroker-http-sse-wake".into())
                    .spawn(move || inner.pass_wake_ups(&listener, &stopped))
                    .map_err(|e| Error::with_source(ErrorKind::Io, "starting the SSE reader", e))?;
                Some((stop, thread))
            }
            Err(e) => {
                log::warn!(
                    "pgbroker-http: SSE reader without wake-ups, polling every {:?}: {e}",
                    inner.settings.poll_interval.min(POLL_WITHOUT_WAKE_UPS)
                );
                None
            }
        };
        let thread = {
            let inner = inner.clone();
            let woken = wake_ups.is_some();
            std::thread::Builder::new()
                .name("pgbroker-http-sse".into())
                .spawn(move || inner.run(woken))
                .map_err(|e| Error::with_source(ErrorKind::Io, "starting the SSE reader", e))?
        };
        Ok(Hub {
            inner,
            thread: Mutex::new(Some(thread)),
            wake_ups: Mutex::new(wake_ups),
        })
    }

    /// Ends every stream and joins the reader.
    pub(crate) fn stop(&self) {
        {
            let mut s = lock(&self.inner.state);
            s.stopped = true;
            s.groups.clear(); // dropping the senders ends the streams
        }
        self.inner.changed.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        if let Some((stop, thread)) = lock(&self.wake_ups).take() {
            drop(stop);
            let _ = thread.join();
        }
    }

    /// The position a new client (without `Last-Event-ID`) starts after: the reader's, or
    /// the horizon when nobody is connected.
    pub(crate) fn start_position(&self) -> std::result::Result<Position, pgbroker::Error> {
        if let Some(p) = lock(&self.inner.state).position {
            return Ok(p);
        }
        let mut conn = self.inner.broker.conn()?;
        Ok(horizon(&mut **conn)?)
    }

    /// Joins the client with `patterns`, caught up to `at`.
    pub(crate) fn join(&self, patterns: &Arc<[String]>, at: Position) -> Joined {
        let mut s = lock(&self.inner.state);
        while s.reading && !s.stopped {
            s = self
                .inner
                .changed
                .wait(s)
                .unwrap_or_else(|p| p.into_inner());
        }
        if s.stopped {
            return Joined::Stopped;
        }
        match s.position {
            Some(p) if p > at => return Joined::Behind,
            None => s.position = Some(at),
            _ => {}
        }
        let (tx, rx) = crossbeam_channel::bounded(self.inner.settings.client_buffer);
        let id = s.next_id;
        s.next_id += 1;
        s.groups
            .entry(patterns.clone())
            .or_default()
            .push(Client { id, from: at, tx });
        drop(s);
        self.inner.changed.notify_all();
        Joined::Live(rx, id)
    }

    /// Takes a client out (its stream ended). The last one out wakes the reader, which then
    /// ends its registration as a waiting reader.
    pub(crate) fn leave(&self, patterns: &Arc<[String]>, id: u64) {
        let mut s = lock(&self.inner.state);
        if let Some(clients) = s.groups.get_mut(patterns) {
            clients.retain(|c| c.id != id);
            if clients.is_empty() {
                s.groups.remove(patterns);
            }
        }
        if s.groups.is_empty() {
            drop(s);
            self.inner.changed.notify_all();
        }
    }
}

impl Inner {
    /// The reader's loop; `woken`: whether wake-ups are passed on (else it only polls).
    fn run(&self, woken: bool) {
        let poll = match woken {
            true => self.settings.poll_interval,
            false => self.settings.poll_interval.min(POLL_WITHOUT_WAKE_UPS),
        };
        let mut idle = Idle {
            enabled: woken,
            ..Idle::default()
        };
        let mut s = lock(&self.state);
        loop {
            while !s.stopped && s.groups.is_empty() {
                s.position = None;
                if idle.registered() {
                    // Nobody to read for: publishers need not notify.
                    drop(s);
                    idle.unregister();
                    s = lock(&self.state);
                    continue;
                }
                s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.stopped {
                return; // dropping `idle` ends the registration
            }
            let Some(at) = s.position else {
                // Cannot happen: a client joining sets the position.
                s.groups.clear();
                continue;
            };
            let mut patterns: Vec<String> =
                s.groups.keys().flat_map(|g| g.iter().cloned()).collect();
            patterns.sort();
            patterns.dedup();
            let woke = std::mem::take(&mut s.woken);
            let started = Instant::now();
            s.reading = true;
            drop(s);
            let read = self
                .broker
                .conn()
                .and_then(|mut c| Ok(read_after(&mut **c, at, &patterns, PAGE)?));
            s = lock(&self.state);
            s.reading = false;
            let mut found = None;
            match read {
                Ok(page) => {
                    found = Some((
                        page.full,
                        Read {
                            events: !page.events.is_empty(),
                            woke,
                            started,
                            horizon: page.horizon,
                            next_xid: page.next_xid,
                        },
                    ));
                    self.fan_out(&mut s, &page.events);
                    s.position = Some(page.next);
                }
                Err(e) => log::warn!("pgbroker-http: SSE reader: {e}"),
            }
            self.changed.notify_all();
            if s.stopped {
                continue;
            }
            let wait = match found {
                Some((true, _)) => continue, // more to read
                Some((false, read)) => {
                    drop(s);
                    let wait = idle.after_read(&self.broker, &read, poll);
                    s = lock(&self.state);
                    wait
                }
                None => Some(poll),
            };
            if let Some(wait) = wait {
                s = self.wait_for_wake_up(s, wait);
            }
        }
    }

    /// Waits up to `wait` for a wake-up, a stop, or the last client leaving.
    fn wait_for_wake_up<'a>(
        &'a self,
        mut s: MutexGuard<'a, State>,
        wait: Duration,
    ) -> MutexGuard<'a, State> {
        let deadline = Instant::now() + wait;
        while !s.woken && !s.stopped && !s.groups.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s
    }

    /// Passes every notification on `WAKEUP_CHANNEL` (and every reconnect of the listener,
    /// after which notifications may have been missed) to the reader, until `stop` closes.
    fn pass_wake_ups(&self, listener: &Listener, stop: &Receiver<()>) {
        loop {
            select! {
                recv(listener.receiver()) -> event => {
                    if event.is_err() {
                        return;
                    }
                    lock(&self.state).woken = true;
                    self.changed.notify_all();
                }
                recv(stop) -> _ => return,
            }
        }
    }

    fn fan_out(&self, s: &mut State, events: &[StreamEvent]) {
        if events.is_empty() {
            return;
        }
        let frames: Vec<(Arc<Frame>, &str)> = events
            .iter()
            .map(|e| (Arc::new(Frame::of(e)), e.topic.as_str()))
            .collect();
        let mut slow = 0u64;
        for (patterns, clients) in s.groups.iter_mut() {
            for (frame, topic) in &frames {
                if !patterns.iter().any(|p| pattern_matches(p, topic)) {
                    continue;
                }
                clients.retain(|c| {
                    if frame.position <= c.from {
                        return true;
                    }
                    match c.tx.try_send(frame.clone()) {
                        Ok(()) => true,
                        Err(TrySendError::Full(_)) => {
                            slow += 1;
                            log::info!(
                                "pgbroker-http: SSE client {} fell behind: disconnected",
                                c.id
                            );
                            false
                        }
                        Err(TrySendError::Disconnected(_)) => false,
                    }
                });
            }
        }
        s.groups.retain(|_, clients| !clients.is_empty());
        add(&self.metrics.sse_slow_disconnects, slow);
    }
}

/// The reader's registration as a waiting reader of the log, and how long it waits next.
#[derive(Default)]
struct Idle {
    /// Wake-ups are passed on: registering is worth it.
    enabled: bool,
    waiter: Option<LogWaiter>,
    /// Since when every read found events while registered (see [`STAY_REGISTERED`]).
    busy_since: Option<Instant>,
    /// Re-reads due after registering or after a wake-up whose read found nothing.
    recheck: Option<Recheck>,
    /// When registering last failed (it is tried again [`REGISTER_RETRY`] later).
    failed_at: Option<Instant>,
}

impl Idle {
    fn registered(&self) -> bool {
        self.waiter.as_ref().is_some_and(LogWaiter::is_registered)
    }

    /// After a read that was not full: how long to wait before the next (`None`: read again
    /// now), registering or unregistering as waiting on the way.
    fn after_read(&mut self, broker: &Broker, read: &Read, poll: Duration) -> Option<Duration> {
        if !self.enabled {
            return Some(poll);
        }
        if read.events {
            self.recheck = None;
            if self.registered() {
                let since = *self.busy_since.get_or_insert_with(Instant::now);
                if since.elapsed() < STAY_REGISTERED {
                    // Read on at once: the read that finds nothing waits for a wake-up.
                    return None;
                }
                self.unregister();
            }
            // Busy and unregistered: nobody wakes the reader, the next read comes shortly
            // (and the first that finds nothing registers again).
            return Some(BUSY_READ_EVERY.min(poll));
        }
        self.busy_since = None;
        if !self.registered() {
            if self.register(broker) {
                // Read once more now, and again until the horizon passed the transactions
                // begun by then: a publish that skipped looking for waiters sent no wake-up.
                self.recheck = Some(Recheck::new(
                    None,
                    Instant::now() + LogWaiter::RECHECK_AFTER,
                ));
                return None;
            }
            return Some(poll);
        }
        if read.woke {
            // What woke the reader is not readable yet (or was of other topics): re-read
            // until the horizon passed it too.
            match self.recheck.as_mut() {
                None => self.recheck = Some(Recheck::new(Some(read.next_xid), read.started)),
                Some(Recheck {
                    target: Some(t), ..
                }) => *t = (*t).max(read.next_xid),
                Some(_) => {} // a registration's: its target is taken later anyway
            }
        }
        let Some(r) = self.recheck.as_mut() else {
            return Some(poll);
        };
        let target = match r.target {
            Some(t) => t,
            // Every publish that sent no wake-up began before `take_target_at`.
            None if read.started >= r.take_target_at => *r.target.insert(read.next_xid),
            None => return Some(r.take_target_at.saturating_duration_since(Instant::now())),
        };
        if read.horizon >= target || Instant::now() >= r.until {
            self.recheck = None;
            return Some(poll);
        }
        let wait = r.delay.min(poll);
        r.delay = (r.delay * 2).min(QUICK_MAX).min(poll);
        Some(wait)
    }

    /// Registers as waiting; false when it failed (logged, and not tried again for
    /// [`REGISTER_RETRY`]).
    fn register(&mut self, broker: &Broker) -> bool {
        if self.failed_at.is_some_and(|t| t.elapsed() < REGISTER_RETRY) {
            return false;
        }
        let result = match self.waiter.as_mut() {
            Some(w) => w.register(),
            None => LogWaiter::new(broker).and_then(|mut w| {
                w.register()?;
                self.waiter = Some(w);
                Ok(())
            }),
        };
        match result {
            Ok(()) => {
                self.failed_at = None;
                true
            }
            Err(e) => {
                log::warn!("pgbroker-http: SSE reader: registering for wake-ups failed: {e}");
                self.waiter = None; // a new connection next time
                self.failed_at = Some(Instant::now());
                false
            }
        }
    }

    fn unregister(&mut self) {
        if let Some(w) = self.waiter.as_mut() {
            if let Err(e) = w.unregister() {
                log::info!("pgbroker-http: SSE reader: unregistering failed: {e}");
                self.waiter = None; // its session's row is cleared when it ends
            }
        }
        self.busy_since = None;
        self.recheck = None;
    }
}

/// What a read that did not fill its page found.
struct Read {
    /// Events for the connected clients.
    events: bool,
    /// It followed a wake-up.
    woke: bool,
    /// When it began (its snapshot is of then).
    started: Instant,
    horizon: u64,
    next_xid: u64,
}

/// Re-reads until a read's horizon reaches `target` (see [`QUICK_FIRST`]).
struct Recheck {
    /// The next transaction id of the first read begun at or after `take_target_at`.
    target: Option<u64>,
    take_target_at: Instant,
    /// The next wait.
    delay: Duration,
    until: Instant,
}

impl Recheck {
    fn new(target: Option<u64>, take_target_at: Instant) -> Recheck {
        Recheck {
            target,
            take_target_at,
            delay: QUICK_FIRST,
            until: Instant::now() + QUICK_WINDOW,
        }
    }
}
