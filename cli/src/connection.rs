//! Which database a command talks to: `--url`, else `$DATABASE_URL`.

use pgbroker::Broker;

use crate::failure::Failure;

/// The database given on the command line or in the environment, if any.
#[derive(Debug, Clone)]
pub struct Target {
    url: Option<String>,
}

impl Target {
    /// `--url` wins over `$DATABASE_URL`; an empty value counts as absent.
    pub fn from_args(url: Option<&str>) -> Target {
        let url = url
            .map(str::to_owned)
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .filter(|u| !u.trim().is_empty());
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

/// A small broker for one command: a command needs a connection or two, not a pool of ten.
pub fn broker(url: &str) -> Result<Broker, Failure> {
    broker_with_replicas(url, &[])
}

/// [`broker`], reading the event log from these streaming replicas when they are usable.
pub fn broker_with_replicas(url: &str, replicas: &[String]) -> Result<Broker, Failure> {
    let builder = Broker::builder()
        .url(url)
        .pool_size(2)
        .application_name("pgbroker-cli");
    let builder = replicas.iter().fold(builder, |b, r| b.read_replica(r));
    Ok(builder.build()?)
}
