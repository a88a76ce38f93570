//! What a subscription consumer is given: its [`ConsumerOptions`], its handler (plain, or
//! given the acknowledging transaction), and [`FailedEvents`] for failing part of a batch.

use std::sync::Arc;
use std::time::Duration;

use crate::topic::{Batch, EventId, RetryPolicy};
use crate::HandlerResult;

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
        self.batch_size = n.clamp(1, crate::topic::MAX_READ);
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
