//! A listener: one thread with a dedicated connection, LISTENing on one channel and forwarding
//! what arrives into an unbounded crossbeam channel, reconnecting when the connection is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use fallible_iterator::FallibleIterator;
use postgres::Client;

use super::{quote_ident, validate_channel};
use crate::{Broker, Error, ErrorKind, Result};

/// One notification as PostgreSQL delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    channel: String,
    payload: String,
    process_id: i32,
}

impl Notification {
    /// The channel it was sent on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The payload text (empty when none was given).
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// The payload parsed as JSON; [`ErrorKind::Serialize`] when it is not JSON.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let listener = broker.listen("orders")?;
    /// if let pgbroker::Event::Notification(n) = listener.recv()? {
    ///     let order = n.json()?;
    ///     println!("order {}", order["id"]);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.payload)?)
    }

    /// The process id of the server backend that sent it.
    pub fn process_id(&self) -> i32 {
        self.process_id
    }
}

/// What a [`Listener`] delivers: notifications, and changes of its connection that a consumer
/// must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A notification arrived.
    Notification(Notification),
    /// The connection was lost; the listener is reconnecting. Notifications sent from now
    /// until [`Event::Reconnected`] are lost.
    Disconnected {
        /// The channel of the listener.
        channel: String,
        /// Why the connection was considered lost.
        error: String,
    },
    /// The listener is connected and LISTENing again. Notifications sent while it was away
    /// are lost: re-read durable state (tables, the log, the queue) now.
    Reconnected {
        /// The channel of the listener.
        channel: String,
        /// How many connection attempts it took.
        attempts: u32,
        /// How long the listener was disconnected.
        downtime: Duration,
    },
}

/// Receives notifications of one channel. Created by [`Broker::listen`].
///
/// A background thread owns a dedicated connection (never a pooled one), LISTENs, and forwards
/// every notification into an unbounded channel, so a slow consumer never stops the server's
/// notification queue from draining. When the connection drops it reconnects with capped
/// exponential backoff and delivers [`Event::Disconnected`] then [`Event::Reconnected`].
///
/// Dropping the listener (or [`stop`](Self::stop)) ends the thread within about one
/// `listener_poll` period.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// use std::time::Duration;
/// use pgbroker::Event;
///
/// let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let listener = broker.listen("orders")?;
/// broker.notify("orders", "42")?;
/// while let Some(event) = listener.recv_timeout(Duration::from_secs(1))? {
///     match event {
///         Event::Notification(n) => println!("{}: {}", n.channel(), n.payload()),
///         Event::Reconnected { .. } => println!("reconnected: re-check state"),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Listener {
    channel: String,
    events: Receiver<Event>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("channel", &self.channel)
            .field("pending", &self.events.len())
            .finish()
    }
}

impl Broker {
    /// Starts listening on `channel`. Returns once `LISTEN` has taken effect, so every
    /// notification committed after this call is delivered.
    ///
    /// Fails with [`ErrorKind::InvalidName`] for a bad channel name and
    /// [`ErrorKind::Connect`] when the first connection cannot be made (later losses are
    /// retried forever).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let listener = broker.listen("Mixed Case")?; // exact, case-sensitive channel name
    /// # Ok(()) }
    /// ```
    pub fn listen(&self, channel: &str) -> Result<Listener> {
        Listener::start(self, channel)
    }
}

impl Listener {
    pub(crate) fn start(broker: &Broker, channel: &str) -> Result<Listener> {
        validate_channel(channel)?;
        let listen_sql = format!("LISTEN {}", quote_ident(channel));
        let mut client = broker.connect_dedicated()?;
        client.batch_execute(&listen_sql)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let worker = ListenerThread {
            broker: broker.clone(),
            channel: channel.to_owned(),
            listen_sql,
            events: tx,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("pgbroker-listen-{channel}"))
            .spawn(move || worker.run(client))?;
        Ok(Listener {
            channel: channel.to_owned(),
            events: rx,
            stop,
            thread: Some(thread),
        })
    }

    /// The channel this listener receives.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Waits for the next event. Fails with [`ErrorKind::Shutdown`] once the listener has
    /// stopped and everything it received has been taken.
    pub fn recv(&self) -> Result<Event> {
        self.events
            .recv()
            .map_err(|_| Error::new(ErrorKind::Shutdown, "listener stopped"))
    }

    /// Waits up to `timeout` for the next event; `Ok(None)` when none came.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Event>> {
        match self.events.recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                Err(Error::new(ErrorKind::Shutdown, "listener stopped"))
            }
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// A blocking iterator over events; ends when the listener stops.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.events.iter()
    }

    /// The underlying receiver, for `crossbeam_channel::select!` over several sources.
    pub fn receiver(&self) -> &Receiver<Event> {
        &self.events
    }

    /// How many events are received and not yet taken.
    pub fn pending(&self) -> usize {
        self.events.len()
    }

    /// Stops the thread and closes its connection; events already received can no longer be
    /// taken. Same as dropping the listener, but says so explicitly.
    pub fn stop(self) {}

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("pgbroker listener thread for {:?} panicked", self.channel);
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct ListenerThread {
    broker: Broker,
    channel: String,
    listen_sql: String,
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
}

/// Why draining the connection ended.
enum Drained {
    Stop,
    Lost(Error),
}

impl ListenerThread {
    fn run(self, mut client: Client) {
        loop {
            match self.drain(&mut client) {
                Drained::Stop => return,
                Drained::Lost(err) => {
                    log::warn!(
                        "pgbroker listener {:?} lost its connection: {err}",
                        self.channel
                    );
                    let sent = self.events.send(Event::Disconnected {
                        channel: self.channel.clone(),
                        error: err.to_string(),
                    });
                    if sent.is_err() {
                        return;
                    }
                    match self.reconnect() {
                        Some(c) => client = c,
                        None => return,
                    }
                }
            }
        }
    }

    /// Forwards notifications until told to stop or the connection fails.
    fn drain(&self, client: &mut Client) -> Drained {
        let config = self.broker.config();
        let mut last_seen = Instant::now();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Drained::Stop;
            }
            // A fresh timeout_iter each pass: it ends for good after its first timeout.
            let mut notifications = client.notifications();
            let mut iter = notifications.timeout_iter(config.listener_poll);
            loop {
                match iter.next() {
                    Ok(Some(n)) => {
                        last_seen = Instant::now();
                        let event = Event::Notification(Notification {
                            channel: n.channel().to_owned(),
                            payload: n.payload().to_owned(),
                            process_id: n.process_id(),
                        });
                        if self.events.send(event).is_err() {
                            return Drained::Stop; // nobody receives any more
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Drained::Lost(e.into()),
                }
            }
            drop(iter);
            drop(notifications);
            // A silently dead peer shows no error until we talk to it.
            if last_seen.elapsed() >= config.health_check_interval {
                if let Err(e) = client.is_valid(config.connect_timeout) {
                    return Drained::Lost(e.into());
                }
                last_seen = Instant::now();
            }
        }
    }

    /// Reconnects with capped exponential backoff and LISTENs again. `None` when stopped.
    fn reconnect(&self) -> Option<Client> {
        let config = self.broker.config();
        let down_since = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            if attempt > 0 && !self.sleep(config.reconnect_delay(attempt - 1)) {
                return None;
            }
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            attempt += 1;
            let connected = self.broker.connect_dedicated().and_then(|mut c| {
                c.batch_execute(&self.listen_sql)?;
                Ok(c)
            });
            match connected {
                Ok(client) => {
                    log::info!(
                        "pgbroker listener {:?} reconnected after {attempt} attempt(s)",
                        self.channel
                    );
                    let event = Event::Reconnected {
                        channel: self.channel.clone(),
                        attempts: attempt,
                        downtime: down_since.elapsed(),
                    };
                    return self.events.send(event).ok().map(|_| client);
                }
                Err(e) => log::debug!(
                    "pgbroker listener {:?} reconnect attempt {attempt} failed: {e}",
                    self.channel
                ),
            }
        }
    }

    /// Sleeps up to `d`, waking early to stop. False when stopped.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        !self.stop.load(Ordering::SeqCst)
    }
}
