//! `JobId`: a job's id, a type of its own (as [`EventId`](crate::topic::EventId) is for events).

use std::error::Error as StdError;
use std::fmt;

use postgres::types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

type BoxError = Box<dyn StdError + Sync + Send>;

/// A job's id (`pgbroker.jobs.id`): unique, and across producers not in the order of
/// enqueueing (single enqueues take ids their broker reserved in blocks). It binds as a SQL
/// `bigint` parameter and reads from one, so it can be used in your own queries, and it is a
/// JSON number in payloads (`Serialize`, `Deserialize`).
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let id = broker.enqueue("emails", &serde_json::json!({"to": "a@example.com"}))?;
/// println!("job {id} ({})", id.get());
/// let mut conn = broker.conn()?;
/// let queue: String = conn
///     .query_one("SELECT queue FROM pgbroker.jobs WHERE id = $1", &[&id])?
///     .get(0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub i64);

impl JobId {
    /// The id as a number.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(pgbroker::JobId(7).get(), 7);
    /// ```
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<JobId> for i64 {
    fn from(id: JobId) -> i64 {
        id.0
    }
}

impl serde::Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<JobId, D::Error> {
        i64::deserialize(d).map(JobId)
    }
}

impl<'a> FromSql<'a> for JobId {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        i64::from_sql(ty, raw).map(JobId)
    }

    accepts!(INT8);
}

impl ToSql for JobId {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        self.0.to_sql(ty, out)
    }

    accepts!(INT8);
    to_sql_checked!();
}
