//! `DevDatabase`: `DATABASE_URL` when it is set, else a private throwaway cluster.

use crate::{Result, TempPostgres};

/// A database for examples, demos and benchmarks: the one named by `DATABASE_URL` when that is
/// set, otherwise a private throwaway PostgreSQL started from the local binaries (see
/// [`TempPostgres`]) that lives as long as this value.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker_testing::Result<()> {
/// let db = pgbroker_testing::DevDatabase::from_env_or_temp()?;
/// let broker = pgbroker::Broker::connect(db.url())?;
/// println!("using {}", if db.is_temporary() { "a throwaway cluster" } else { "DATABASE_URL" });
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DevDatabase {
    url: String,
    temp: Option<TempPostgres>,
}

impl DevDatabase {
    /// Uses `DATABASE_URL` if set and non-empty, else starts a throwaway cluster. The
    /// throwaway cluster runs with `fsync` off unless `PGBROKER_TEMP_DURABLE=1` is set (for
    /// measurements comparable with a real server).
    pub fn from_env_or_temp() -> Result<DevDatabase> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Ok(DevDatabase { url, temp: None }),
            _ => {
                let durable = std::env::var("PGBROKER_TEMP_DURABLE").is_ok_and(|v| v == "1");
                let temp = TempPostgres::builder().durable(durable).start()?;
                Ok(DevDatabase {
                    url: temp.url(),
                    temp: Some(temp),
                })
            }
        }
    }

    /// The connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True when this is a throwaway cluster (removed when the value is dropped).
    pub fn is_temporary(&self) -> bool {
        self.temp.is_some()
    }

    /// The throwaway cluster, if this is one.
    pub fn temp(&self) -> Option<&TempPostgres> {
        self.temp.as_ref()
    }
}
