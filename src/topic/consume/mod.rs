//! Consuming subscriptions on the worker pool: registration (`WorkerPoolBuilder::subscription`
//! and friends) and the source that starts the consumers: one thread per assigned partition,
//! or a balancer (`balancer.rs`) that starts one for each partition of the pool's share
//! (`partition_consumer.rs`). What they are given is in `options.rs`.

mod balancer;
mod options;
mod partition_consumer;

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{select, Receiver, Sender};

pub use options::{ConsumerOptions, FailedEvents};

use self::balancer::{default_member_name, Balancer};
use self::options::Handler;
use self::partition_consumer::PartitionConsumer;
use super::{validate_subscription, Batch, WAKEUP_CHANNEL};
use crate::notify::Event;
use crate::worker::{Source, SourceContext};
use crate::{HandlerResult, Result, WorkerPoolBuilder};

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
