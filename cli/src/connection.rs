//! Which database a command talks to: `--url`, else `$DATABASE_URL`, else libpq's `PG*`
//! variables (as `psql` reads them) when any of them names a server.

use pgbroker::Broker;

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

/// A small broker for one command: a command needs a connection or two, not a pool of ten.
pub fn broker(url: &str) -> Result<Broker, Failure> {
    Ok(Broker::builder()
        .url(url)
        .pool_size(2)
        .application_name("pgbroker-cli")
        .build()?)
}
