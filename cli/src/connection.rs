//! Which database a command talks to: `--url`, else `$DATABASE_URL`, else libpq's `PG*`
//! variables (as `psql` reads them) when any of them names a server.

use std::sync::OnceLock;

use pgbroker::{Broker, BrokerBuilder};

use crate::failure::Failure;

/// libpq variables that name a server; with none of them (and no URL) a command asks for one
/// rather than trying the local socket.
const PG_TARGET_VARIABLES: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGSERVICE",
];

/// The database given on the command line or in the environment, if any.
#[derive(Debug, Clone)]
pub struct Target {
    url: Option<String>,
}

impl Target {
    /// `--url` wins over `$DATABASE_URL`, which wins over the `PG*` variables (given to the
    /// library as the empty connection string, which libpq reads from the environment); an
    /// empty value counts as absent.
    pub fn from_args(url: Option<&str>) -> Target {
        let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let url = url
            .map(str::to_owned)
            .filter(|u| !u.trim().is_empty())
            .or_else(|| set("DATABASE_URL"))
            .or_else(|| {
                PG_TARGET_VARIABLES
                    .iter()
                    .any(|v| set(v).is_some())
                    .then(String::new)
            });
        Target { url }
    }

    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The URL, or the usage error every database command gives without one.
    pub fn require(&self) -> Result<&str, Failure> {
        self.url().ok_or_else(|| {
            Failure::usage("no database given: pass --url postgres://... or set DATABASE_URL")
        })
    }
}

/// How pooled connections reach the server: through a transaction-mode pooler
/// (`--transaction-pooling`, `PGBROKER_TRANSACTION_POOLING=1`), with a session URL
/// (`--session-url`, `PGBROKER_SESSION_URL`) for listening.
#[derive(Debug, Clone, Default)]
pub struct Pooling {
    pub transaction_pooling: bool,
    pub session_url: Option<String>,
}

static POOLING: OnceLock<Pooling> = OnceLock::new();

impl Pooling {
    /// The flags, else the environment; set once for every broker this process builds.
    pub fn init(transaction_pooling: bool, session_url: Option<String>) {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let pooling = Pooling {
            transaction_pooling: transaction_pooling
                || env("PGBROKER_TRANSACTION_POOLING").is_some_and(|v| v == "1" || v == "true"),
            session_url: session_url.or_else(|| env("PGBROKER_SESSION_URL")),
        };
        let _ = POOLING.set(pooling);
    }
}

/// A broker builder for `url` with the process's pooling settings applied.
pub fn builder(url: &str) -> BrokerBuilder {
    let pooling = POOLING.get().cloned().unwrap_or_default();
    let mut b = Broker::builder()
        .url(url)
        .application_name("pgbroker-cli")
        .transaction_pooling(pooling.transaction_pooling);
    if let Some(session) = &pooling.session_url {
        b = b.session_url(session);
    }
    b
}

/// A small broker for one command: a command needs a connection or two, not a pool of ten.
pub fn broker(url: &str) -> Result<Broker, Failure> {
    broker_with_replicas(url, &[])
}

/// [`broker`], reading the event log from these streaming replicas when they are usable.
pub fn broker_with_replicas(url: &str, replicas: &[String]) -> Result<Broker, Failure> {
    let builder = builder(url).pool_size(2);
    let builder = replicas.iter().fold(builder, |b, r| b.read_replica(r));
    Ok(builder.build()?)
}
