//! One partition's consumer: a thread holding the partition's advisory lock on its own
//! connection, reading batches, running the handler on the pool's workers, acknowledging, and
//! retrying failed events. A balanced consumer (see `balancer`) also stops when told to hand
//! the partition back, after acknowledging the batch in hand.

use crate::middleware::HandlerRun;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, TryRecvError};
use postgres::{Client, GenericClient};

use super::options::{ConsumerOptions, FailedEvents, Handler};
use crate::topic::json_text::Xid8;
use crate::topic::publish_state::WAITER_RECHECK;
use crate::topic::read::{
    read_events, read_sql_for, stored_cursor, CONSUMER_ACK_SQL, EXISTS_SQL, READ_SETTINGS,
};
use crate::topic::{
    Batch, LogEvent, Position, LOG_UNWAIT_SQL, LOG_WAITERS_CLEAR_SQL, LOG_WAIT_SQL,
};
use crate::worker::{SourceContext, Task};
use crate::{Error, ErrorKind, Result};

pub(crate) struct PartitionConsumer {
    pub(crate) name: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) options: Arc<ConsumerOptions>,
    pub(crate) handler: Handler,
    pub(crate) wake: Receiver<()>,
    pub(crate) ctx: SourceContext,
    /// Disconnects when the consumer must hand the partition back (balanced consumers);
    /// `crossbeam_channel::never()` for assigned ones.
    pub(crate) release: Receiver<()>,
    /// Assigned consumers wait while another session holds the lock; balanced ones try once
    /// and leave the partition to its holder (their balancer picks again).
    pub(crate) wait_for_lock: bool,
    /// True while this consumer holds the partition's lock.
    pub(crate) holding: Arc<AtomicBool>,
}

/// What became of a handler call.
enum Outcome {
    /// The handler ran; `finished` when its success was already recorded in its transaction,
    /// `followed` then when that found the cursor moved by someone else (see [`Acked`]).
    Done {
        result: std::result::Result<(), Error>,
        finished: bool,
        followed: bool,
    },
    /// The pool is stopping and the task was not run.
    Abandoned,
    /// The connection failed around a transactional handler.
    Lost(Error),
}

/// What success of a handler call records.
enum Finish {
    /// Move the cursor from `from` (where this consumer left it) to `to`.
    Ack { from: Position, to: Position },
    /// Remove the retried event from the retry table.
    Retried { tx: String, id: i64 },
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acked {
    /// The cursor moved from where this consumer left it.
    Moved,
    /// Someone else had moved the cursor ([`Broker::seek`](crate::Broker::seek)): it was
    /// left there, and the consumer reads on from it.
    Followed,
}

/// The consumer connection, shared with transactional handlers while they run.
type Shared = Arc<Mutex<Client>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Client> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

const RETRY_DUE_SQL: &str = "\
SELECT id, topic, payload, headers, key, tx::text, created_at, attempt
  FROM pgbroker.event_retries
 WHERE subscription = $1 AND partition = $2 AND NOT dead AND run_at <= now()
 ORDER BY run_at, tx, id LIMIT 100";

/// The first and the longest re-read delay after a wake-up that found nothing readable, and how
/// long after the wake-up such re-reads go on (the horizon may be held by a transaction anywhere
/// in the cluster for that long without delaying delivery by a whole poll interval).
const QUICK_FIRST: Duration = Duration::from_millis(5);
const QUICK_MAX: Duration = Duration::from_secs(1);
const QUICK_WINDOW: Duration = Duration::from_secs(60);

/// After registering as waiting, a consumer reads again at [`WAITER_RECHECK`], and then until
/// the horizon passed every transaction begun by then. An event whose publisher skipped looking
/// for waiters (its last look, shortly before the consumer registered, found none) brings no
/// wake-up, but its transaction began by then.
struct Recheck {
    /// When to read next.
    at: Instant,
    /// The next transaction id when the recheck began (`None` until then): a read whose
    /// horizon reached it saw every transaction begun before.
    target: Option<u64>,
    /// The next wait while the horizon is held back, doubling up to `QUICK_MAX`.
    delay: Duration,
}

/// How long a consumer that went idle stays registered as waiting while it finds events
/// again: unregistering at once cost two round trips per wake-up (out, then in again at the
/// next idle moment). Within this time publishers keep sending wake-ups; a consumer busy for
/// longer unregisters, so a busy topic's publishers send none.
const STAY_REGISTERED: Duration = Duration::from_millis(50);

/// The session setting of consumers with plain handlers (see `Consumption::start`).
const ASYNC_ACKS: &str = "SET synchronous_commit = off";

const NEXT_XID_SQL: &str = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text";

const DELETE_RETRY_SQL: &str = "DELETE FROM pgbroker.event_retries \
     WHERE subscription = $1 AND tx = $2::text::xid8 AND id = $3";

const NEXT_RETRY_SQL: &str = "\
SELECT extract(epoch FROM min(run_at) - now())::float8 FROM pgbroker.event_retries
 WHERE subscription = $1 AND partition = $2 AND NOT dead";

impl PartitionConsumer {
    pub(crate) fn run(self) {
        let mut failures: u32 = 0;
        while !self.should_stop() {
            let Some(client) = self.connect_and_lock() else {
                return;
            };
            self.holding.store(true, Ordering::SeqCst);
            let shared: Shared = Arc::new(Mutex::new(client));
            let started = Instant::now();
            let result = self.consume(&shared);
            if started.elapsed() > Duration::from_secs(30) {
                failures = 0; // it worked for a while: back off from scratch
            }
            let mut client = lock(&shared);
            match result {
                Ok(()) => {
                    self.leave(&mut client);
                    return;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    log::warn!(
                        "pgbroker consumer of {:?} partition {} stops: {e}",
                        self.name,
                        self.partition
                    );
                    self.leave(&mut client);
                    return;
                }
                Err(e) => {
                    self.holding.store(false, Ordering::SeqCst);
                    failures += 1;
                    log::warn!(
                        "pgbroker consumer of {:?} partition {} failed, reconnecting: {e}",
                        self.name,
                        self.partition
                    );
                    let delay = self
                        .ctx
                        .broker
                        .config()
                        .reconnect_delay(failures.min(16) - 1);
                    if !self.pause(delay) {
                        return;
                    }
                }
            }
        }
    }

    /// The advisory lock key of this partition (`pgbroker.partition_lock_key()` in SQL).
    fn lock_key(&self) -> String {
        format!("pgbroker.topic:{}:{}", self.name, self.partition)
    }

    /// Stops waiting for wake-ups and hands the partition back at once, rather than when the
    /// server notices the closed connection.
    fn leave(&self, client: &mut Client) {
        let _ = client.execute(LOG_UNWAIT_SQL, &[]);
        let _ = client.execute(
            "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
            &[&self.lock_key()],
        );
        self.holding.store(false, Ordering::SeqCst);
    }

    /// Whether the balancer asked for the partition back.
    fn released(&self) -> bool {
        matches!(self.release.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// The pool stops or the partition is to be handed back.
    fn should_stop(&self) -> bool {
        self.ctx.is_stopping() || self.released()
    }

    /// Sleeps up to `d`; false early when the consumer must stop.
    fn pause(&self, d: Duration) -> bool {
        select! {
            recv(self.ctx.stop_signal()) -> _ => false,
            recv(self.release) -> _ => false,
            default(d) => !self.should_stop(),
        }
    }

    /// A dedicated connection holding this partition's advisory lock; waits while another
    /// consumer holds it (assigned consumers) or gives up (balanced ones). `None` when it gives
    /// up or must stop first.
    fn connect_and_lock(&self) -> Option<Client> {
        let key = self.lock_key();
        let mut attempt = 0;
        loop {
            if self.should_stop() {
                return None;
            }
            let mut client = match self.ctx.broker.connect_dedicated() {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("pgbroker consumer of {:?}: {e}", self.name);
                    let delay = self.ctx.broker.config().reconnect_delay(attempt);
                    attempt = (attempt + 1).min(16);
                    if !self.pause(delay) {
                        return None;
                    }
                    continue;
                }
            };
            // Waiter rows of consumers that died make publishers notify for nothing.
            let _ = client.execute(LOG_WAITERS_CLEAR_SQL, &[]);
            loop {
                match client.query_one(
                    "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                    &[&key],
                ) {
                    Ok(row) if row.get::<_, bool>(0) => return Some(client),
                    Ok(_) if !self.wait_for_lock => return None,
                    Ok(_) => {
                        if !self.pause(self.options.lock_retry) {
                            return None;
                        }
                    }
                    Err(e) => {
                        log::warn!("pgbroker consumer of {:?}: {e}", self.name);
                        break; // reconnect
                    }
                }
            }
        }
    }

    /// Reads, dispatches and acknowledges until the pool stops (`Ok`) or the connection fails
    /// (see [`Consumption`]).
    fn consume(&self, shared: &Shared) -> Result<()> {
        Consumption::start(self, shared)?.run()
    }

    /// Moves the cursor from `from` (where this consumer left it) to `to`. Fails with
    /// `NotFound` when the subscription partition is gone.
    fn ack(
        &self,
        client: &mut impl GenericClient,
        ack: &postgres::Statement,
        from: Position,
        to: Position,
    ) -> Result<Acked> {
        cas_ack(client, ack, &self.name, self.partition, from, to)
    }

    /// Runs the handler on a worker and waits for it. A transactional handler runs in a
    /// transaction on the consumer connection that also records `finish` on success.
    fn dispatch(
        &self,
        shared: &Shared,
        ack: &postgres::Statement,
        batch: Arc<Batch>,
        finish: Finish,
    ) -> Outcome {
        self.start_handler(shared, ack, batch, finish)
            .map_or(Outcome::Abandoned, |rx| {
                rx.recv().unwrap_or(Outcome::Abandoned)
            })
    }

    /// Hands the handler call to a worker; its outcome arrives on the returned channel.
    /// `None` when the pool is stopping and the call was abandoned.
    fn start_handler(
        &self,
        shared: &Shared,
        ack: &postgres::Statement,
        batch: Arc<Batch>,
        finish: Finish,
    ) -> Option<Receiver<Outcome>> {
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let abandoned = done_tx.clone();
        let stats = self.ctx.stats.clone();
        let what = format!("subscription {:?}", self.name);
        let task = match self.handler.clone() {
            Handler::Plain(handler) => Task::new(move || {
                let result = stats.run_handler(&HandlerRun::Batch(&batch), || handler(&batch));
                let _ = done_tx.send(Outcome::Done {
                    result,
                    finished: false,
                    followed: false,
                });
            }),
            Handler::Tx(handler) => {
                let shared = shared.clone();
                let ack = ack.clone();
                let name = self.name.clone();
                let partition = self.partition;
                Task::new(move || {
                    let mut client = lock(&shared);
                    let outcome = (|| {
                        let mut tx = match client.transaction() {
                            Ok(tx) => tx,
                            Err(e) => return Outcome::Lost(e.into()),
                        };
                        let result = stats
                            .run_handler(&HandlerRun::Batch(&batch), || handler(&batch, &mut tx));
                        if result.is_err() {
                            return Outcome::Done {
                                result,
                                finished: false,
                                followed: false,
                            }; // dropping tx rolls the handler's writes back
                        }
                        let recorded = match &finish {
                            Finish::Ack { from, to } => {
                                cas_ack(&mut tx, &ack, &name, partition, *from, *to)
                                    .map(|a| a == Acked::Followed)
                            }
                            Finish::Retried { tx: t, id } => tx
                                .execute(DELETE_RETRY_SQL, &[&&*name, t, id])
                                .map(|_| false)
                                .map_err(Error::from),
                        };
                        let recorded =
                            recorded.and_then(|f| tx.commit().map(|()| f).map_err(Error::from));
                        match recorded {
                            Ok(followed) => Outcome::Done {
                                result,
                                finished: true,
                                followed,
                            },
                            // The handler swallowed an SQL error: its transaction is dead.
                            Err(e) if e.db_code() == Some("25P02") => Outcome::Done {
                                result: Err(Error::with_cause(
                                    ErrorKind::Handler,
                                    Some(format!(
                                        "handler for {what} returned Ok with its transaction \
                                         aborted by an earlier error"
                                    )),
                                    e,
                                )),
                                finished: false,
                                followed: false,
                            },
                            Err(e) => Outcome::Lost(e),
                        }
                    })();
                    drop(client);
                    let _ = done_tx.send(outcome);
                })
            }
        }
        .on_abandon(move || {
            let _ = abandoned.send(Outcome::Abandoned);
        });
        self.ctx.submit(task).then_some(done_rx)
    }

    /// Puts the failed events of a batch (all, or those a [`FailedEvents`] names) in the
    /// retry table, dead at once when the policy has no retries.
    fn record_failure(
        &self,
        tx: &mut postgres::Transaction<'_>,
        batch: &Batch,
        err: &Error,
    ) -> Result<()> {
        let named = std::error::Error::source(err).and_then(|s| s.downcast_ref::<FailedEvents>());
        let failed: Vec<&LogEvent> = match named {
            Some(f) => batch
                .events
                .iter()
                .filter(|e| f.ids.contains(&e.id()))
                .collect(),
            None => batch.events.iter().collect(),
        };
        let message = err.to_string();
        let delay = self.options.retry.delay(1);
        let dead = delay.is_none();
        let secs = delay.unwrap_or_default().as_secs_f64();
        for e in failed {
            tx.execute(
                "INSERT INTO pgbroker.event_retries
                    (subscription, partition, id, tx, topic, payload, headers, key, created_at,
                     attempt, run_at, dead, last_error)
                 VALUES ($1, $2, $3, $4::text::xid8, $5, $6, $7, $8, $9, 1,
                         now() + $10::float8 * interval '1 second', $11, $12)
                 ON CONFLICT (subscription, tx, id) DO NOTHING",
                &[
                    &&*self.name,
                    &(self.partition as i32),
                    &e.id,
                    &e.tx.to_string(),
                    &e.topic,
                    &e.payload,
                    &e.headers,
                    &e.key,
                    &e.created_at,
                    &secs,
                    &dead,
                    &message,
                ],
            )?;
        }
        Ok(())
    }

    /// Delivers the due retries, one event at a time. False when the consumer must stop.
    fn run_due_retries(&self, shared: &Shared, ack: &postgres::Statement) -> Result<bool> {
        let part = self.partition as i32;
        let rows = lock(shared).query(RETRY_DUE_SQL, &[&&*self.name, &part])?;
        for row in rows {
            if self.released() {
                return Ok(false);
            }
            let event = LogEvent::from_row(&row)?;
            let attempt = row.get::<_, i32>(7).max(0) as u32;
            let batch = Arc::new(Batch {
                subscription: self.name.clone(),
                partition: self.partition,
                events: vec![event.clone()],
                attempt,
                horizon: None,
                requested: 1,
            });
            let tx_text = event.tx.to_string();
            let finish = Finish::Retried {
                tx: tx_text.clone(),
                id: event.id,
            };
            let result = match self.dispatch(shared, ack, batch, finish) {
                Outcome::Done { finished: true, .. } => continue,
                Outcome::Done { result, .. } => result,
                Outcome::Abandoned => return Ok(false),
                Outcome::Lost(e) => return Err(e),
            };
            let mut client = lock(shared);
            match result {
                Ok(()) => {
                    client.execute(DELETE_RETRY_SQL, &[&&*self.name, &tx_text, &event.id])?;
                }
                Err(e) => {
                    let failures = attempt + 1;
                    let delay = self.options.retry.delay(failures);
                    client.execute(
                        "UPDATE pgbroker.event_retries
                            SET attempt = $4, dead = $5, last_error = $6, failed_at = now(),
                                run_at = now() + $7::float8 * interval '1 second'
                          WHERE subscription = $1 AND tx = $2::text::xid8 AND id = $3",
                        &[
                            &&*self.name,
                            &tx_text,
                            &event.id,
                            &(failures as i32),
                            &delay.is_none(),
                            &e.to_string(),
                            &delay.unwrap_or_default().as_secs_f64(),
                        ],
                    )?;
                }
            }
        }
        Ok(true)
    }
}

/// Whether consuming goes on.
enum Step {
    Next,
    Stop,
}

/// One session of consuming a partition (from connecting to an error or the stop): the state
/// its phases share, one method per phase.
///
/// The consumer holds its partition alone, so it reads after the position it reached rather
/// than after the stored cursor: while a plain handler runs, it reads the next batch, and a
/// busy consumer never waits for a read. Acknowledging moves the cursor only from where this
/// consumer left it; when someone else moved it meanwhile (a seek), the consumer drops the
/// batch it read ahead and goes on from there.
struct Consumption<'a> {
    consumer: &'a PartitionConsumer,
    shared: &'a Shared,
    read: postgres::Statement,
    ack: postgres::Statement,
    /// Where the next read starts.
    pos: Position,
    /// The stored cursor, as this consumer left it.
    acked: Position,
    /// The batch after `pos`, read while the handler ran.
    ahead: Option<Result<Batch>>,
    /// Registered in `pgbroker.log_waiters` (publishers send a wake-up), and since when it
    /// has delivered in every round while registered (see [`STAY_REGISTERED`]).
    waiting: bool,
    busy_since: Option<Instant>,
    /// When the cursor row was last written (its `active_at` is kept fresh while idle).
    touched: Instant,
    /// When the next retry is due, if known; when retries were last looked at.
    retry_due: Option<Instant>,
    retry_checked: Instant,
    /// After a wake-up that found nothing readable: the next re-read delay, and the wake-up.
    quick: Option<Duration>,
    woken_at: Instant,
    recheck: Option<Recheck>,
}

impl<'a> Consumption<'a> {
    /// Sets the session up and reads the stored cursor.
    fn start(consumer: &'a PartitionConsumer, shared: &'a Shared) -> Result<Self> {
        let mut client = lock(shared);
        client.batch_execute(READ_SETTINGS)?;
        if matches!(consumer.handler, Handler::Plain(_)) {
            // A plain handler's acknowledgements commit without waiting for the WAL flush:
            // one lost in a server crash only delivers its events again (at least once, as
            // after a consumer crash), and the next durable commit anywhere flushes it. A
            // transactional handler's acknowledgement is its transaction's, as durable as its
            // writes. (batch_size(1) at 200 events a second: an fsync per event kept the
            // consumer busy longer than the gap between events.)
            client.batch_execute(ASYNC_ACKS)?;
        }
        let read_sql = read_sql_for(&mut *client, &consumer.name)?;
        let read = client.prepare(&read_sql)?;
        let ack = client.prepare(CONSUMER_ACK_SQL)?;
        let pos = stored_cursor(&mut *client, &consumer.name, consumer.partition)?;
        drop(client);
        let now = Instant::now();
        Ok(Consumption {
            consumer,
            shared,
            read,
            ack,
            pos,
            acked: pos,
            ahead: None,
            waiting: false,
            busy_since: None,
            touched: now,
            retry_due: Some(now),
            retry_checked: now,
            quick: None,
            woken_at: now,
            recheck: None,
        })
    }

    fn run(mut self) -> Result<()> {
        loop {
            if self.consumer.should_stop() {
                return Ok(());
            }
            if let Step::Stop = self.due_retries()? {
                return Ok(());
            }
            let shared = self.shared;
            let mut client = lock(shared);
            self.recheck_target(&mut client)?;
            let batch = self.next_batch(&mut client)?;
            // Past the batch, or past what the read scanned (see `Batch::ack_position`).
            let ack_to = batch.ack_position().filter(|p| *p > self.pos);
            let step = match ack_to {
                Some(to) if !batch.is_empty() => self.deliver(client, batch, to)?,
                _ => self.idle(client, &batch, ack_to)?,
            };
            if let Step::Stop = step {
                return Ok(());
            }
        }
    }

    /// Retries are looked at when one is due, and at least every poll interval (a re-drive
    /// from elsewhere makes some due at once): not on every batch.
    fn due_retries(&mut self) -> Result<Step> {
        let c = self.consumer;
        if c.options.reliable
            && (self.retry_due.is_some_and(|d| d <= Instant::now())
                || self.retry_checked.elapsed() >= c.options.poll_interval)
        {
            if !c.run_due_retries(self.shared, &self.ack)? {
                return Ok(Step::Stop);
            }
            self.retry_checked = Instant::now();
            self.retry_due = None;
        }
        Ok(Step::Next)
    }

    /// A recheck after registering as waiting takes the next transaction id when it is due.
    fn recheck_target(&mut self, client: &mut Client) -> Result<()> {
        if let Some(r) = self.recheck.as_mut() {
            if r.target.is_none() && Instant::now() >= r.at {
                let next: String = client.query_one(NEXT_XID_SQL, &[])?.try_get(0)?;
                r.target = Some(next.parse().map_err(|_| {
                    Error::new(ErrorKind::Db, format!("not a transaction id: {next:?}"))
                })?);
            }
        }
        Ok(())
    }

    /// The batch read ahead, or a fresh read after `pos`.
    fn next_batch(&mut self, client: &mut Client) -> Result<Batch> {
        match self.ahead.take() {
            Some(batch) => batch,
            None => self.read_after_pos(client),
        }
    }

    fn read_after_pos(&self, client: &mut Client) -> Result<Batch> {
        let c = self.consumer;
        read_events(
            client,
            &self.read,
            &c.name,
            c.partition,
            self.pos,
            c.options.batch_size,
        )
    }

    /// Hands a batch to the handler (reading the next one meanwhile for a plain handler) and
    /// records the outcome: the acknowledgement up to `to`, and the failed events' retries.
    fn deliver(
        &mut self,
        mut client: MutexGuard<'a, Client>,
        batch: Batch,
        to: Position,
    ) -> Result<Step> {
        let c = self.consumer;
        self.quick = None;
        self.recheck = None;
        if self.waiting {
            let since = *self.busy_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= STAY_REGISTERED {
                client.execute(LOG_UNWAIT_SQL, &[])?;
                self.waiting = false;
                self.busy_since = None;
            }
        }
        drop(client); // a transactional handler uses it
        let batch = Arc::new(batch);
        let finish = Finish::Ack {
            from: self.acked,
            to,
        };
        let pending = c.start_handler(self.shared, &self.ack, batch.clone(), finish);
        self.pos = to;
        let plain = matches!(c.handler, Handler::Plain(_));
        if plain && pending.is_some() && !c.should_stop() {
            let mut client = lock(self.shared);
            self.ahead = Some(self.read_after_pos(&mut client));
        }
        let outcome = pending.map_or(Outcome::Abandoned, |rx| {
            rx.recv().unwrap_or(Outcome::Abandoned)
        });
        let result = match outcome {
            Outcome::Done {
                finished: true,
                followed,
                ..
            } => {
                let done = if followed {
                    Acked::Followed
                } else {
                    Acked::Moved
                };
                self.after_ack(done, to)?;
                return Ok(Step::Next);
            }
            Outcome::Done { result, .. } => result,
            Outcome::Abandoned => return Ok(Step::Stop),
            Outcome::Lost(e) => return Err(e),
        };
        let mut client = lock(self.shared);
        let done = match result {
            Ok(()) => c.ack(&mut *client, &self.ack, self.acked, to)?,
            Err(e) if c.options.reliable => {
                let mut tx = client.transaction()?;
                c.record_failure(&mut tx, &batch, &e)?;
                let done = c.ack(&mut tx, &self.ack, self.acked, to)?;
                tx.commit()?;
                let first = c.options.retry.delay(1).unwrap_or_default();
                let due = Instant::now() + first;
                self.retry_due = Some(self.retry_due.map_or(due, |d| d.min(due)));
                done
            }
            Err(_) => {
                log::warn!(
                    "pgbroker fire-and-forget handler of {:?} failed; {} events skipped",
                    c.name,
                    batch.len()
                );
                c.ack(&mut *client, &self.ack, self.acked, to)?
            }
        };
        drop(client);
        self.after_ack(done, to)?;
        Ok(Step::Next)
    }

    /// Nothing to deliver: move past what was scanned, register as waiting (then read once
    /// more), or wait for a wake-up, a recheck, a due retry or the poll interval.
    fn idle(
        &mut self,
        mut client: MutexGuard<'a, Client>,
        batch: &Batch,
        ack_to: Option<Position>,
    ) -> Result<Step> {
        let c = self.consumer;
        self.busy_since = None;
        // Nothing matched up to the horizon: move past what was scanned, once per change.
        if let Some(to) = ack_to {
            let done = c.ack(&mut *client, &self.ack, self.acked, to)?;
            drop(client);
            self.after_ack(done, to)?;
            client = lock(self.shared);
        }
        if !self.waiting {
            // Register as waiting, then read once more: an event committed in between is seen
            // by that read, and a later one sends a wake-up, except from a publisher that
            // skipped looking for waiters because it found none shortly before: the read at
            // `recheck` finds those.
            client.execute(LOG_WAIT_SQL, &[])?;
            self.waiting = true;
            self.recheck = Some(Recheck {
                at: Instant::now() + WAITER_RECHECK,
                target: None,
                delay: QUICK_FIRST,
            });
            return Ok(Step::Next);
        }
        self.recheck_passed(batch);
        self.touch(&mut client)?;
        let wait = self.wait_time(&mut client)?;
        drop(client);
        Ok(self.wait(wait))
    }

    /// After a recheck read: done once its horizon passed the target, else read again later.
    fn recheck_passed(&mut self, batch: &Batch) {
        if let Some(r) = self.recheck.as_mut() {
            if let Some(target) = r.target {
                if batch.horizon.is_some_and(|h| h >= target) {
                    self.recheck = None;
                } else {
                    // A transaction begun by then is still open: read again once it ended.
                    r.at = Instant::now() + r.delay;
                    r.delay = (r.delay * 2).min(QUICK_MAX);
                }
            }
        }
    }

    /// Keeps the cursor's `active_at` fresh while idle; fails with `NotFound` when the
    /// subscription partition is gone.
    fn touch(&mut self, client: &mut Client) -> Result<()> {
        let c = self.consumer;
        if self.touched.elapsed() > Duration::from_secs(10) {
            let found = client.execute(
                "UPDATE pgbroker.subscription_cursors SET active_at = now() \
                 WHERE subscription = $1 AND partition = $2",
                &[&&*c.name, &(c.partition as i32)],
            )?;
            if found == 0 {
                return Err(crate::topic::subscription::not_found(&c.name, c.partition));
            }
            self.touched = Instant::now();
        }
        Ok(())
    }

    /// How long to wait: the poll interval, or less until a retry is due, a re-read after a
    /// wake-up that found nothing readable, or a recheck.
    fn wait_time(&mut self, client: &mut Client) -> Result<Duration> {
        let c = self.consumer;
        let mut wait = c.options.poll_interval;
        if c.options.reliable {
            let next: Option<f64> = client
                .query_one(NEXT_RETRY_SQL, &[&&*c.name, &(c.partition as i32)])?
                .get(0);
            if let Some(secs) = next {
                let due = Duration::from_secs_f64(secs.max(0.0));
                self.retry_due = Some(Instant::now() + due);
                wait = wait.min(due);
            }
        }
        // Woken but nothing readable: the event is behind the horizon (an older transaction
        // is still open), and its end sends no wake-up. Re-read soon, backing off, rather than
        // after a whole poll interval.
        if let Some(q) = self.quick {
            wait = wait.min(q);
            self.quick = (self.woken_at.elapsed() < QUICK_WINDOW).then(|| (q * 2).min(QUICK_MAX));
        }
        if let Some(r) = &self.recheck {
            wait = wait.min(r.at.saturating_duration_since(Instant::now()));
        }
        Ok(wait)
    }

    fn wait(&mut self, wait: Duration) -> Step {
        let c = self.consumer;
        select! {
            recv(c.wake) -> _ => {
                self.quick = Some(QUICK_FIRST);
                self.woken_at = Instant::now();
                Step::Next
            }
            recv(c.ctx.stop_signal()) -> _ => Step::Stop,
            recv(c.release) -> _ => Step::Stop,
            default(wait) => Step::Next,
        }
    }

    /// After an acknowledgement up to `to`: on from there, or, when someone else moved the
    /// cursor, from where they put it (dropping the batch read ahead).
    fn after_ack(&mut self, done: Acked, to: Position) -> Result<()> {
        let c = self.consumer;
        match done {
            Acked::Moved => self.acked = to,
            Acked::Followed => {
                self.ahead = None;
                self.pos = stored_cursor(&mut *lock(self.shared), &c.name, c.partition)?;
                self.acked = self.pos;
                log::info!(
                    "pgbroker consumer of {:?} partition {}: the cursor was moved elsewhere; \
                     reading on from {}",
                    c.name,
                    c.partition,
                    self.pos
                );
            }
        }
        self.touched = Instant::now();
        Ok(())
    }
}

/// Moves a partition's cursor from `from` to `to` (`CONSUMER_ACK_SQL`): [`Acked::Followed`]
/// when it was elsewhere, `NotFound` when it is gone.
fn cas_ack(
    client: &mut impl GenericClient,
    ack: &postgres::Statement,
    name: &str,
    partition: u32,
    from: Position,
    to: Position,
) -> Result<Acked> {
    let part = partition as i32;
    let n = client.execute(
        ack,
        &[
            &name,
            &part,
            &Xid8(from.tx()),
            &from.id(),
            &Xid8(to.tx()),
            &to.id(),
        ],
    )?;
    if n > 0 {
        return Ok(Acked::Moved);
    }
    if client.query_opt(EXISTS_SQL, &[&name, &part])?.is_none() {
        return Err(crate::topic::subscription::not_found(name, partition));
    }
    Ok(Acked::Followed)
}
