//! Handler middleware: code around every handler run of a worker pool (a job, a notification,
//! a batch of durable events), for logging, metrics or context. Registered with
//! [`WorkerPoolBuilder::middleware`](crate::WorkerPoolBuilder::middleware).

use std::sync::Arc;

use crate::queue::JobId;
use crate::topic::Batch;
use crate::worker::HandlerResult;
use crate::Notification;

/// What a handler run is about, as middleware sees it.
///
/// # Examples
///
/// ```
/// use pgbroker::middleware::HandlerRun;
/// fn label(run: &HandlerRun<'_>) -> String {
///     match run {
///         HandlerRun::Job { queue, id, attempt } => format!("{queue} #{id} try {attempt}"),
///         HandlerRun::Notification(n) => format!("notification on {}", n.channel()),
///         HandlerRun::Batch(b) => format!("{} events of {}", b.len(), b.subscription()),
///         _ => "other".into(),
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum HandlerRun<'a> {
    /// A job of a queue.
    Job {
        /// The job's queue.
        queue: &'a str,
        /// The job's id.
        id: JobId,
        /// This attempt's number, from 1.
        attempt: u32,
    },
    /// A notification on a channel.
    Notification(&'a Notification),
    /// A batch of a durable subscription's events.
    Batch(&'a Batch),
}

impl std::fmt::Display for HandlerRun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerRun::Job { queue, id, .. } => write!(f, "queue {queue:?} job {id}"),
            HandlerRun::Notification(n) => write!(f, "channel {:?}", n.channel()),
            HandlerRun::Batch(b) => write!(f, "subscription {:?}", b.subscription()),
        }
    }
}

/// Runs the rest of the chain (further middleware, then the handler). Calling it more than
/// once runs the handler once; later calls return an error.
pub type Next<'a> = &'a mut dyn FnMut() -> HandlerResult;

pub(crate) type Middleware =
    Arc<dyn Fn(&HandlerRun<'_>, Next<'_>) -> HandlerResult + Send + Sync + 'static>;

/// A pool's middleware, outermost first.
#[derive(Clone, Default)]
pub(crate) struct Chain(pub(crate) Vec<Middleware>);

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain({} middleware)", self.0.len())
    }
}

impl Chain {
    /// Runs `handler` inside every middleware of the chain.
    pub(crate) fn run(
        &self,
        run: &HandlerRun<'_>,
        handler: impl FnOnce() -> HandlerResult,
    ) -> HandlerResult {
        #[cfg(feature = "tracing")]
        let _span = handler_span(run).entered();
        if self.0.is_empty() {
            return handler();
        }
        let mut handler = Some(handler);
        let mut inner = || match handler.take() {
            Some(h) => h(),
            None => Err("the handler already ran (middleware called next twice)".into()),
        };
        self.from(0, run, &mut inner)
    }

    fn from(&self, i: usize, run: &HandlerRun<'_>, inner: Next<'_>) -> HandlerResult {
        match self.0.get(i) {
            None => inner(),
            Some(m) => m(run, &mut || self.from(i + 1, run, inner)),
        }
    }
}

/// The span of a handler run, with the ids of what it handles.
#[cfg(feature = "tracing")]
fn handler_span(run: &HandlerRun<'_>) -> tracing::Span {
    match run {
        HandlerRun::Job { queue, id, attempt } => {
            tracing::info_span!(
                "pgbroker.handle_job",
                queue = *queue,
                job_id = id.get(),
                attempt = *attempt
            )
        }
        HandlerRun::Notification(n) => {
            tracing::info_span!("pgbroker.handle_notification", channel = n.channel())
        }
        HandlerRun::Batch(b) => tracing::info_span!(
            "pgbroker.handle_batch",
            subscription = b.subscription(),
            partition = b.partition(),
            events = b.len(),
            first_event_id = b.events().first().map(|e| e.id().0),
            last_event_id = b.events().last().map(|e| e.id().0),
        ),
    }
}
