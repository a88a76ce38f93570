//! The one error type of pgbroker.

use std::error::Error as StdError;
use std::fmt;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, broadly. Match on it to decide what to do; print the [`Error`] for details.
///
/// New kinds may be added in minor releases, so a `match` needs a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Could not connect to PostgreSQL (refused, unknown host, authentication failed); the
    /// message names the server and says what happened.
    Connect,
    /// TLS failed: the server refuses or requires it, or its certificate could not be verified
    /// (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`).
    Tls,
    /// The connection pool could not hand out a connection in time.
    Pool,
    /// PostgreSQL answered with an error; [`Error::db_code`] gives its SQLSTATE.
    Db,
    /// The connection was closed underneath us (server restart, terminated backend, network).
    Closed,
    /// An operation did not finish within its timeout.
    Timeout,
    /// A payload could not be serialized or deserialized as JSON.
    Serialize,
    /// A payload is larger than PostgreSQL accepts (7999 bytes for NOTIFY).
    PayloadTooLarge,
    /// A channel, table, topic, queue or subscription name is not acceptable.
    InvalidName,
    /// A value given by the caller is out of range or malformed (not a name).
    InvalidInput,
    /// The listener, worker pool or broker has been shut down.
    Shutdown,
    /// A user handler failed or panicked.
    Handler,
    /// Invalid configuration, or the environment lacks something needed (binaries, schema).
    Config,
    /// The requested item (job, subscription, dead event) does not exist.
    NotFound,
    /// Reading or writing a local file or process failed.
    Io,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Connect => "connection failed",
            ErrorKind::Tls => "TLS error",
            ErrorKind::Pool => "connection pool error",
            ErrorKind::Db => "database error",
            ErrorKind::Closed => "connection closed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Serialize => "serialization error",
            ErrorKind::PayloadTooLarge => "payload too large",
            ErrorKind::InvalidName => "invalid name",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Shutdown => "shut down",
            ErrorKind::Handler => "handler failed",
            ErrorKind::Config => "configuration error",
            ErrorKind::NotFound => "not found",
            ErrorKind::Io => "i/o error",
        };
        f.write_str(s)
    }
}

struct ErrorInner {
    kind: ErrorKind,
    message: Option<String>,
    cause: Option<Box<dyn StdError + Send + Sync>>,
    /// False when the message already says what the cause would (kept for `source()`).
    show_cause: bool,
}

/// An error from pgbroker: opaque, with a [`kind`](Error::kind), a message and the cause chain
/// ([`source`](StdError::source)).
///
/// # Examples
///
/// ```
/// use pgbroker::{notify, ErrorKind};
///
/// let err = notify::validate_channel("").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidName);
/// println!("{err}");
/// ```
pub struct Error(Box<ErrorInner>);

impl Error {
    /// A new error of `kind` with a message for the reader.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error(Box::new(ErrorInner {
            kind,
            message: Some(message.into()),
            cause: None,
            show_cause: true,
        }))
    }

    /// A new error whose message explains `cause` in words: Display shows only the message;
    /// the cause stays reachable through `source()`.
    pub(crate) fn explained(
        kind: ErrorKind,
        message: impl Into<String>,
        cause: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Error {
        Error(Box::new(ErrorInner {
            kind,
            message: Some(message.into()),
            cause: Some(cause.into()),
            show_cause: false,
        }))
    }

    /// A new error of `kind` caused by `cause`, with optional context.
    pub(crate) fn with_cause(
        kind: ErrorKind,
        message: Option<String>,
        cause: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Error {
        Error(Box::new(ErrorInner {
            kind,
            message,
            cause: Some(cause.into()),
            show_cause: true,
        }))
    }

    /// Adds context in front of the message ("while doing X: ...").
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Error {
        self.0.message = Some(match self.0.message.take() {
            Some(m) => format!("{context}: {m}"),
            None => context.to_string(),
        });
        self
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The SQLSTATE code when PostgreSQL reported the error (for example `"23505"`).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(err: pgbroker::Error) {
    /// if err.db_code() == Some("40001") { /* serialization failure: retry */ }
    /// # }
    /// ```
    pub fn db_code(&self) -> Option<&str> {
        self.db_error().map(|e| e.code().code())
    }

    /// The server's error details when PostgreSQL reported the error.
    pub fn db_error(&self) -> Option<&postgres::error::DbError> {
        self.0
            .cause
            .as_ref()?
            .downcast_ref::<postgres::Error>()?
            .as_db_error()
    }

    /// True when retrying the operation later may succeed (connection lost, pool timeout,
    /// serialization failure or deadlock).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Connect | ErrorKind::Pool | ErrorKind::Closed | ErrorKind::Timeout
        ) || matches!(self.db_code(), Some("40001" | "40P01" | "57P01" | "57P03"))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind);
        if let Some(m) = &self.0.message {
            d.field("message", m);
        }
        if let Some(c) = &self.0.cause {
            d.field("cause", c);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.kind)?;
        if let Some(m) = &self.0.message {
            write!(f, ": {m}")?;
        }
        if let Some(c) = self.0.cause.as_ref().filter(|_| self.0.show_cause) {
            // postgres::Error's Display of a DbError omits detail; show the server's message.
            match c
                .downcast_ref::<postgres::Error>()
                .and_then(|e| e.as_db_error())
            {
                Some(db) => write!(f, ": {} ({})", db.message(), db.code().code())?,
                None => write!(f, ": {c}")?,
            }
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .cause
            .as_ref()
            .map(|c| &**c as &(dyn StdError + 'static))
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Error {
        if let Some(err) = schema_missing(&e) {
            return Error::with_cause(ErrorKind::Config, Some(err), e);
        }
        let kind = if e.as_db_error().is_some() {
            match e.code().map(|c| c.code()) {
                // admin shutdown / crash shutdown / cannot connect now: the connection is gone
                Some("57P01" | "57P02" | "57P03") => ErrorKind::Closed,
                Some("57014") => ErrorKind::Timeout,
                Some("28000" | "28P01" | "3D000") => ErrorKind::Connect,
                _ => ErrorKind::Db,
            }
        } else {
            lost_connection_kind(&e).unwrap_or(ErrorKind::Db)
        };
        Error::with_cause(kind, None, e)
    }
}

/// The explanation when `e` says a pgbroker table, function or the schema itself does not
/// exist: the schema was never installed in this database.
fn schema_missing(e: &postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    let missing = matches!(db.code().code(), "3F000" | "42P01" | "42883");
    if !missing || !db.message().contains("pgbroker") {
        return None;
    }
    let database = crate::connect::noted_database()
        .map_or("this database".to_owned(), |d| format!("database {d}"));
    Some(format!(
        "pgbroker is not installed in {database}: run `pgbroker setup` or `Broker::install`"
    ))
}

/// The kind of a client-side `postgres::Error` that means the connection is unusable: any
/// I/O error, an early close, a message out of protocol order. `None` for errors of the
/// caller's own making (converting a value, a row count, a column).
fn lost_connection_kind(e: &postgres::Error) -> Option<ErrorKind> {
    if e.is_closed() {
        return Some(ErrorKind::Closed);
    }
    let mut cur: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(match io.kind() {
                std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
                _ => ErrorKind::Closed,
            });
        }
        cur = c.source();
    }
    let text = e.to_string();
    if text.starts_with("error performing TLS handshake") {
        Some(ErrorKind::Tls)
    } else if text.contains("timed out") || text.contains("timeout") {
        Some(ErrorKind::Timeout)
    } else if text.starts_with("error communicating with the server")
        || text.starts_with("unexpected message from server")
        || text.starts_with("error connecting to server")
        || text.starts_with("connection closed")
    {
        Some(ErrorKind::Closed)
    } else {
        None
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Error {
        // r2d2 folds the last connection error into its message; keep it readable.
        Error::with_cause(
            ErrorKind::Pool,
            Some("no connection available from the pool".into()),
            e.to_string(),
        )
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::with_cause(ErrorKind::Serialize, None, e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::with_cause(ErrorKind::Io, None, e)
    }
}
