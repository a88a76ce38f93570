//! A background publisher: buffers events and writes them in batches from its own thread.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::NewEvent;
use crate::{Broker, Error, ErrorKind, Result};

type ErrorHandler = Arc<dyn Fn(&Error, &[NewEvent]) + Send + Sync>;

enum Command {
    Event(NewEvent),
    Flush(Sender<Result<()>>),
}

/// Configures a [`Publisher`]. Get one from [`Broker::publisher`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// use std::time::Duration;
/// let publisher = broker
///     .publisher()
///     .flush_interval(Duration::from_millis(20))
///     .max_batch(5000)
///     .start()?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until start() is called"]
pub struct PublisherBuilder {
    broker: Broker,
    flush_interval: Duration,
    max_batch: usize,
    on_error: Option<ErrorHandler>,
}

impl std::fmt::Debug for PublisherBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherBuilder")
            .field("flush_interval", &self.flush_interval)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

impl PublisherBuilder {
    /// The longest an event waits in the buffer. Default: 50 ms.
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }

    /// Writes as soon as this many events are buffered. Default: 1000 (clamped to
    /// 1..=[`MAX_BATCH_EVENTS`](super::MAX_BATCH_EVENTS)).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.clamp(1, super::MAX_BATCH_EVENTS);
        self
    }

    /// Called on the publisher thread with the error and every event of a batch that could
    /// not be written (transient errors are first retried 3 times, over about 0.7 s). Default:
    /// log them all (as JSON) at error level.
    pub fn on_error<F>(mut self, f: F) -> Self
    where
        F: Fn(&Error, &[NewEvent]) + Send + Sync + 'static,
    {
        self.on_error = Some(Arc::new(f));
        self
    }

    /// Starts the publisher thread.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let publisher = broker
    ///     .publisher()
    ///     .on_error(|err, events| eprintln!("{} events lost: {err}", events.len()))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn start(self) -> Result<Publisher> {
        let (tx, rx) = crossbeam_channel::unbounded::<Command>();
        let on_error = self.on_error.unwrap_or_else(|| Arc::new(log_failed));
        let broker = self.broker;
        let (interval, max) = (self.flush_interval, self.max_batch);
        let thread = std::thread::Builder::new()
            .name("pgbroker-publisher".into())
            .spawn(move || {
                let mut buf: Vec<NewEvent> = Vec::new();
                let mut failed: Option<(usize, String)> = None;
                let mut deadline: Option<Instant> = None;
                let write = |buf: &mut Vec<NewEvent>, failed: &mut Option<(usize, String)>| {
                    if buf.is_empty() {
                        return;
                    }
                    let events = std::mem::take(buf);
                    // Transient failures (connection lost, pool exhausted) are retried a few
                    // times before the events go to on_error.
                    let mut attempt = 0;
                    let written = loop {
                        match broker.publish_batch(events.iter().cloned()) {
                            Err(e) if e.is_transient() && attempt < 3 => {
                                std::thread::sleep(Duration::from_millis(100 << attempt));
                                attempt += 1;
                            }
                            other => break other,
                        }
                    };
                    if let Err(e) = written {
                        on_error(&e, &events);
                        let n = failed.as_ref().map_or(0, |f| f.0) + events.len();
                        *failed = Some((n, e.to_string()));
                    }
                };
                loop {
                    let cmd = match deadline {
                        Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    };
                    match cmd {
                        Ok(Command::Event(e)) => {
                            buf.push(e);
                            deadline.get_or_insert_with(|| Instant::now() + interval);
                            if buf.len() >= max {
                                write(&mut buf, &mut failed);
                                deadline = None;
                            }
                        }
                        Ok(Command::Flush(reply)) => {
                            write(&mut buf, &mut failed);
                            deadline = None;
                            let result = match failed.take() {
                                None => Ok(()),
                                Some((n, msg)) => Err(Error::new(
                                    ErrorKind::Db,
                                    format!("{n} event(s) could not be published: {msg}"),
                                )),
                            };
                            let _ = reply.send(result);
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            write(&mut buf, &mut failed);
                            deadline = None;
                        }
                        Err(RecvTimeoutError::Disconnected) => {
                            write(&mut buf, &mut failed);
                            return;
                        }
                    }
                }
            })?;
        Ok(Publisher {
            tx: Some(tx),
            thread: Some(thread),
        })
    }
}

fn log_failed(err: &Error, events: &[NewEvent]) {
    log::error!(
        "pgbroker publisher could not write {} event(s): {err}",
        events.len()
    );
    for e in events {
        log::error!(
            "pgbroker unpublished event: topic={} key={:?} headers={} payload={}",
            e.topic,
            e.key,
            e.headers.as_ref().map_or("null".into(), |h| h.to_string()),
            e.payload
        );
    }
}

/// Publishes events from a background thread, in batches: an event is written at most
/// `flush_interval` after [`publish`](Self::publish), or as soon as `max_batch` are buffered.
/// [`flush`](Self::flush) waits until everything published so far is written and reports
/// failures; dropping or [`close`](Self::close) flushes too. Events of a failed batch go to
/// the `on_error` callback (by default logged in full), never silently away.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// use pgbroker::topic::NewEvent;
/// let publisher = broker.publisher().start()?;
/// for i in 0..10_000 {
///     publisher.publish(NewEvent::new("ticks", serde_json::json!(i)))?;
/// }
/// publisher.flush()?;
/// # Ok(()) }
/// ```
pub struct Publisher {
    tx: Option<Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("buffered", &self.tx.as_ref().map_or(0, |t| t.len()))
            .finish()
    }
}

impl Broker {
    /// A builder for a background [`Publisher`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let publisher = broker.publisher().start()?;
    /// # Ok(()) }
    /// ```
    pub fn publisher(&self) -> PublisherBuilder {
        PublisherBuilder {
            broker: self.clone(),
            flush_interval: Duration::from_millis(50),
            max_batch: 1000,
            on_error: None,
        }
    }
}

impl Publisher {
    /// Buffers an event. Checks it first ([`NewEvent::validate`]); fails with
    /// [`ErrorKind::Shutdown`] once closed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use pgbroker::topic::NewEvent;
    /// let publisher = broker.publisher().start()?;
    /// publisher.publish(NewEvent::new("clicks", serde_json::json!({"x": 1})))?;
    /// # Ok(()) }
    /// ```
    pub fn publish(&self, event: NewEvent) -> Result<()> {
        event.validate()?;
        self.sender()?
            .send(Command::Event(event))
            .map_err(|_| Error::new(ErrorKind::Shutdown, "publisher thread is gone"))
    }

    /// Writes everything buffered and waits for it. Fails when some event published since the
    /// last flush could not be written (those went to `on_error`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// # let publisher = broker.publisher().start()?;
    /// if let Err(e) = publisher.flush() {
    ///     eprintln!("some events were not published: {e}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn flush(&self) -> Result<()> {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        self.sender()?
            .send(Command::Flush(reply_tx))
            .map_err(|_| Error::new(ErrorKind::Shutdown, "publisher thread is gone"))?;
        reply_rx
            .recv()
            .map_err(|_| Error::new(ErrorKind::Shutdown, "publisher thread is gone"))?
    }

    /// Flushes and stops the thread.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let publisher = broker.publisher().start()?;
    /// // ...
    /// publisher.close()?;
    /// # Ok(()) }
    /// ```
    pub fn close(mut self) -> Result<()> {
        let result = self.flush();
        self.stop();
        result
    }

    fn sender(&self) -> Result<&Sender<Command>> {
        self.tx
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Shutdown, "publisher closed"))
    }

    fn stop(&mut self) {
        drop(self.tx.take()); // the thread writes what is left, then ends
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("pgbroker publisher thread panicked");
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop();
    }
}
