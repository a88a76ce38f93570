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

/// The first re-read delay after a wake-up whose read found nothing (the event is behind the
/// horizon: an older transaction is still open, and its end sends no wake-up); it doubles up
/// to [`QUICK_MAX`] or the poll interval, whichever is shorter.
const QUICK_FIRST: Duration = Duration::from_millis(5);
const QUICK_MAX: Duration = Duration::from_secs(1);

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
                    inner.settings.poll_interval
                );
                None
            }
        };
        let thread = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("pgbroker-http-sse".into())
                .spawn(move || inner.run())
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
    fn run(&self) {
        let mut idle = Idle::default();
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
                    found = Some((page.full, !page.events.is_empty()));
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
                Some((false, events)) => {
                    drop(s);
                    let wait = idle.after_read(&self.broker, events, woke, &self.settings);
                    s = lock(&self.state);
                    wait
                }
                None => Some(self.settings.poll_interval),
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
    waiter: Option<LogWaiter>,
    /// Since when every read found events while registered (see [`STAY_REGISTERED`]).
    busy_since: Option<Instant>,
    /// The next wait instead of the poll interval: after registering, and after a wake-up
    /// whose read found nothing; doubling until it reaches the poll interval.
    quick: Option<Duration>,
    /// When registering last failed (it is tried again a poll interval later).
    failed_at: Option<Instant>,
}

impl Idle {
    fn registered(&self) -> bool {
        self.waiter.as_ref().is_some_and(LogWaiter::is_registered)
    }

    /// After a read that was not full: how long to wait before the next (`None`: read again
    /// now), registering or unregistering as waiting on the way.
    fn after_read(
        &mut self,
        broker: &Broker,
        found_events: bool,
        woke: bool,
        settings: &Settings,
    ) -> Option<Duration> {
        let poll = settings.poll_interval;
        if found_events {
            self.quick = None;
            if self.registered() {
                let since = *self.busy_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= STAY_REGISTERED {
                    self.unregister();
                }
            }
            // Read on at once: the next read that finds nothing waits (registering first
            // if it unregistered).
            return None;
        }
        self.busy_since = None;
        if !self.registered() {
            if self.register(broker, poll) {
                // Read once more now and again shortly: an event published meanwhile
                // may have sent no wake-up.
                self.quick = Some(LogWaiter::RECHECK_AFTER);
                return None;
            }
            return Some(poll);
        }
        if woke && self.quick.is_none() {
            self.quick = Some(QUICK_FIRST);
        }
        let most = poll.min(QUICK_MAX);
        match self.quick.take() {
            Some(q) if q < most => {
                self.quick = Some(q * 2).filter(|next| *next <= most);
                Some(q)
            }
            _ => Some(poll),
        }
    }

    /// Registers as waiting; false when it failed (logged, and not tried again for a poll
    /// interval).
    fn register(&mut self, broker: &Broker, poll: Duration) -> bool {
        if self.failed_at.is_some_and(|t| t.elapsed() < poll) {
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
        self.quick = None;
    }
}
