//! The shared reader: one per server, whatever the number of clients. It reads the log for the
//! union of the connected clients' patterns and fans each event out, in process, to every
//! group of clients with the same patterns whose patterns match it.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use pgbroker::topic::{pattern_matches, Position};
use pgbroker::Broker;

use crate::log_reader::{horizon, read_after, StreamEvent};
use crate::metrics::{add, ServerMetrics};
use crate::server::{lock, Settings};
use crate::{Error, ErrorKind, Result};

/// The most events one read of the shared reader takes.
const PAGE: usize = 1000;

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

    /// Takes a client out (its stream ended).
    pub(crate) fn leave(&self, patterns: &Arc<[String]>, id: u64) {
        let mut s = lock(&self.inner.state);
        if let Some(clients) = s.groups.get_mut(patterns) {
            clients.retain(|c| c.id != id);
            if clients.is_empty() {
                s.groups.remove(patterns);
            }
        }
    }
}

impl Inner {
    fn run(&self) {
        let mut s = lock(&self.state);
        loop {
            while !s.stopped && s.groups.is_empty() {
                s.position = None;
                s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.stopped {
                return;
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
            s.reading = true;
            drop(s);
            let read = self
                .broker
                .conn()
                .and_then(|mut c| Ok(read_after(&mut **c, at, &patterns, PAGE)?));
            s = lock(&self.state);
            s.reading = false;
            let mut full = false;
            match read {
                Ok(page) => {
                    full = page.full;
                    self.fan_out(&mut s, &page.events);
                    s.position = Some(page.next);
                }
                Err(e) => log::warn!("pgbroker-http: SSE reader: {e}"),
            }
            self.changed.notify_all();
            if !full && !s.stopped {
                s = self
                    .changed
                    .wait_timeout(s, self.settings.poll_interval)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
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
