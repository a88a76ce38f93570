//! Consuming subscriptions on the worker pool: options, registration and the source that starts
//! the consumers: one thread per assigned partition, or a balancer (see `balancer`) that starts
//! one for each partition of the pool's share (see `partition_consumer`).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, Sender};

use super::balancer::{default_member_name, Balancer};
use super::partition_consumer::PartitionConsumer;
use super::{validate_subscription, Batch, EventId, RetryPolicy, WAKEUP_CHANNEL};
use crate::notify::Event;
use crate::worker::{Source, SourceContext};
use crate::{HandlerResult, Result, WorkerPoolBuilder};

pub(crate) type BatchHandler = Arc<dyn Fn(&Batch) -> HandlerResult + Send + Sync>;
pub(crate) type TxHandler =
    Arc<dyn Fn(&Batch, &mut postgres::Transaction<'_>) -> HandlerResult + Send + Sync>;

/// A registered handler: plain, or given the transaction that acknowledges the batch.
#[derive(Clone)]
pub(crate) enum Handler {
    Plain(BatchHandler),
    Tx(TxHandler),
}

/// Returned (boxed) by a reliable handler to fail only some events of a batch: those go to
/// retry, the others count as handled.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// use pgbroker::topic::FailedEvents;
/// let pool = broker
///     .worker_pool()
///     .subscription("billing", |batch| {
///         let bad: Vec<_> = batch
///             .events()
///             .iter()
///             .filter(|e| e.payload()["amount"].is_null())
///             .map(|e| e.id())
///             .collect();
///         if bad.is_empty() {
///             Ok(())
///         } else {
///             Err(FailedEvents::new(bad, "amount missing").into())
///         }
///     })
///     .start()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEvents {
    pub(crate) ids: Vec<EventId>,
    message: String,
}

impl FailedEvents {
    /// The events `ids` failed because of `message`.
    pub fn new(ids: impl IntoIterator<Item = EventId>, message: impl Into<String>) -> Self {
        FailedEvents {
            ids: ids.into_iter().collect(),
            message: message.into(),
        }
    }

    /// The failed events.
    pub fn ids(&self) -> &[EventId] {
        &self.ids
    }
}

impl std::fmt::Display for FailedEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} event(s) failed: {}", self.ids.len(), self.message)
    }
}

impl std::error::Error for FailedEvents {}

/// How a subscription is consumed on the worker pool.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// use std::time::Duration;
/// use pgbroker::topic::{ConsumerOptions, RetryPolicy};
/// let options = ConsumerOptions::new()
///     .batch_size(500)
///     .poll_interval(Duration::from_millis(200))
///     .retry(RetryPolicy::new([Duration::from_secs(1), Duration::from_secs(60)]));
/// let pool = broker
///     .worker_pool()
///     .subscription_with("billing", options, |batch| Ok(()))
///     .start()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub(crate) batch_size: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) lock_retry: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) reliable: bool,
    pub(crate) only_partitions: Option<Vec<u32>>,
    pub(crate) member_name: Option<String>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            lock_retry: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            reliable: true,
            only_partitions: None,
            member_name: None,
        }
    }
}

impl ConsumerOptions {
    /// Reliable delivery with the defaults below.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most events per handler call. Default: 100 (clamped to 1..=10 000).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.clamp(1, super::MAX_READ);
        self
    }

    /// How often an idle consumer re-reads without a wake-up (wake-ups can be lost, and a
    /// long transaction ending does not send one). Default: 1 s.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// How often a balanced consumer checks in with the other members of its subscription
    /// (noticing joins and leaves, taking free partitions of its share, handing back extra
    /// ones), and how often an assigned consumer tries to take over a partition another
    /// process holds. Default: 1 s.
    pub fn lock_retry(mut self, d: Duration) -> Self {
        self.lock_retry = d;
        self
    }

    /// The retry schedule of failed events. Default: [`RetryPolicy::default`].
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Fire-and-forget: a failed batch is logged and skipped, never retried. Default: false.
    pub fn fire_and_forget(mut self, yes: bool) -> Self {
        self.reliable = !yes;
        self
    }

    /// Consumes only these partitions (numbers past the subscription's count are ignored):
    /// an assignment instead of balancing. Each listed partition gets a consumer that waits
    /// for the partition's lock while another process holds it and takes over when that one
    /// stops. Such a consumer is no member: balanced consumers of the same subscription share
    /// the partitions it leaves. Default: balanced (see
    /// [`WorkerPoolBuilder::subscription`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// # let worker_number = 0;
    /// use pgbroker::topic::ConsumerOptions;
    /// // worker 0 of 2 takes partitions 0 and 2 of 4
    /// let mine = (0..4).filter(|p| p % 2 == worker_number);
    /// let pool = broker
    ///     .worker_pool()
    ///     .subscription_with("billing", ConsumerOptions::new().only_partitions(mine), |_| Ok(()))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn only_partitions(mut self, partitions: impl IntoIterator<Item = u32>) -> Self {
        let mut v: Vec<u32> = partitions.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        self.only_partitions = Some(v);
        self
    }

    /// The name this consumer shows as a member of its subscription
    /// ([`Broker::subscription_members`](crate::Broker::subscription_members)). Only shown:
    /// members are told apart by their connection, so names need not be unique. Default:
    /// `host:process-id`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use pgbroker::topic::ConsumerOptions;
    /// let pool = broker
    ///     .worker_pool()
    ///     .subscription_with("billing", ConsumerOptions::new().member_name("billing-7"), |_| Ok(()))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn member_name(mut self, name: impl Into<String>) -> Self {
        self.member_name = Some(name.into());
        self
    }
}

impl WorkerPoolBuilder {
    /// Consumes subscription `name` (which must exist, see
    /// [`Broker::subscribe`](crate::Broker::subscribe)) reliably with default
    /// [`ConsumerOptions`]: `handler` gets batches in log order; on `Ok` the cursor moves
    /// past the batch, on `Err` (or a panic) the batch — or only the events of a
    /// [`FailedEvents`] error — goes to the retry table and the cursor moves on anyway, so a
    /// poison event never blocks the others. Retries deliver one event at a time; after the
    /// last one the event is dead ([`Broker::dead_events`](crate::Broker::dead_events)).
    ///
    /// Pools (in one process or many) consuming the same subscription share its partitions:
    /// each is a member holding its fair share, `partitions / members` (one more for the
    /// oldest members when it does not divide), and takes over the partitions of members that
    /// stop or die (their connection ends) within about a `lock_retry`. A member joining makes
    /// others hand partitions back after acknowledging their current batch. Each partition is
    /// consumed by one thread holding its advisory lock on its own connection, so never by
    /// two consumers at once. Delivery is at least once: a batch handled but not yet
    /// acknowledged when its consumer dies is delivered again. See
    /// [`ConsumerOptions::only_partitions`] to assign partitions instead.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker
    ///     .worker_pool()
    ///     .subscription("billing", |batch| {
    ///         println!("{} events", batch.len());
    ///         Ok(())
    ///     })
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn subscription<F>(self, name: &str, handler: F) -> Self
    where
        F: Fn(&Batch) -> HandlerResult + Send + Sync + 'static,
    {
        self.subscription_with(name, ConsumerOptions::default(), handler)
    }

    /// [`subscription`](Self::subscription) with options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use pgbroker::topic::ConsumerOptions;
    /// let pool = broker
    ///     .worker_pool()
    ///     .subscription_with("billing", ConsumerOptions::new().batch_size(1000), |_| Ok(()))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn subscription_with<F>(self, name: &str, options: ConsumerOptions, handler: F) -> Self
    where
        F: Fn(&Batch) -> HandlerResult + Send + Sync + 'static,
    {
        self.source(Box::new(SubscriptionSource {
            name: name.to_owned(),
            options,
            handler: Handler::Plain(Arc::new(handler)),
        }))
    }

    /// Consumes subscription `name` reliably with a handler that writes its results in the
    /// transaction that also acknowledges the batch: results and cursor commit together, so
    /// each event's effects happen exactly once even when consumers die. On `Err` (or a panic)
    /// the transaction is rolled back and the events go to retry as with
    /// [`subscription`](Self::subscription). The transaction runs on the partition consumer's
    /// own connection (the one holding its lock): keep it short.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// use pgbroker::topic::ConsumerOptions;
    /// let pool = broker
    ///     .worker_pool()
    ///     .subscription_tx("billing", ConsumerOptions::new(), |batch, tx| {
    ///         for e in batch.events() {
    ///             tx.execute(
    ///                 "INSERT INTO invoices (order_id) VALUES (($1::jsonb ->> 'id')::bigint)",
    ///                 &[e.payload()],
    ///             )?;
    ///         }
    ///         Ok(())
    ///     })
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn subscription_tx<F>(self, name: &str, options: ConsumerOptions, handler: F) -> Self
    where
        F: Fn(&Batch, &mut postgres::Transaction<'_>) -> HandlerResult + Send + Sync + 'static,
    {
        self.source(Box::new(SubscriptionSource {
            name: name.to_owned(),
            options,
            handler: Handler::Tx(Arc::new(handler)),
        }))
    }

    /// Consumes subscription `name` fire-and-forget: each batch is handled once, failures are
    /// logged and counted, never retried. Otherwise as [`subscription`](Self::subscription).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let pool = broker
    ///     .worker_pool()
    ///     .fire_and_forget("metrics", |batch| Ok(()))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    pub fn fire_and_forget<F>(self, name: &str, handler: F) -> Self
    where
        F: Fn(&Batch) -> HandlerResult + Send + Sync + 'static,
    {
        self.subscription_with(name, ConsumerOptions::new().fire_and_forget(true), handler)
    }
}

struct SubscriptionSource {
    name: String,
    options: ConsumerOptions,
    handler: Handler,
}

impl Source for SubscriptionSource {
    fn start(self: Box<Self>, ctx: SourceContext) -> Result<Vec<JoinHandle<()>>> {
        validate_subscription(&self.name)?;
        let partitions = ctx.broker.subscription_partitions(&self.name)?;
        let listener = ctx.broker.listen(WAKEUP_CHANNEL)?;
        let options = Arc::new(self.options);
        let name: Arc<str> = self.name.as_str().into();
        // One coalescing wake-up channel per partition, whoever consumes it.
        let (wakers, wake): (Vec<Sender<()>>, Vec<Receiver<()>>) = (0..partitions)
            .map(|_| crossbeam_channel::bounded(1))
            .unzip();
        let mut threads = Vec::new();
        match &options.only_partitions {
            Some(only) => {
                for partition in only.iter().copied().filter(|p| *p < partitions) {
                    let consumer = PartitionConsumer {
                        name: name.clone(),
                        partition,
                        options: options.clone(),
                        handler: self.handler.clone(),
                        wake: wake[partition as usize].clone(),
                        ctx: ctx.clone(),
                        release: crossbeam_channel::never(),
                        wait_for_lock: true,
                        holding: Arc::default(),
                    };
                    threads.push(
                        std::thread::Builder::new()
                            .name(format!("pgbroker-sub-{}-{partition}", self.name))
                            .spawn(move || consumer.run())?,
                    );
                }
            }
            None => {
                let member_name = options
                    .member_name
                    .clone()
                    .unwrap_or_else(default_member_name);
                let balancer = Balancer::join(
                    name.clone(),
                    member_name,
                    partitions,
                    options.clone(),
                    self.handler.clone(),
                    wake,
                    ctx.clone(),
                )?;
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("pgbroker-sub-{}-members", self.name))
                        .spawn(move || balancer.run())?,
                );
            }
        }
        let stop = ctx.stop_signal().clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("pgbroker-sub-{}-wake", self.name))
                .spawn(move || fan_out_wakeups(listener, wakers, stop))?,
        );
        Ok(threads)
    }
}

/// Passes wake-ups (notifications and reconnects, after which a re-scan is due) to every
/// partition's channel, coalesced: a consumer that has one pending needs no second.
fn fan_out_wakeups(listener: crate::Listener, wakers: Vec<Sender<()>>, stop: Receiver<()>) {
    loop {
        select! {
            recv(listener.receiver()) -> ev => match ev {
                Ok(Event::Notification(_)) | Ok(Event::Reconnected { .. }) => {
                    for w in &wakers {
                        let _ = w.try_send(());
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            },
            recv(stop) -> _ => return,
        }
    }
}
