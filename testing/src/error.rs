//! The one error type of `pgbroker-testing`.

use std::fmt;

/// What kind of thing went wrong while setting up a test server or database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Running a PostgreSQL program or touching the file system failed.
    Io,
    /// The machine lacks what is needed (no PostgreSQL binaries, no unprivileged user).
    Config,
    /// The server refused a statement (creating or dropping a database, installing pgbroker).
    Database,
}

/// An error of the test support: what failed, and why.
///
/// # Examples
///
/// ```no_run
/// match pgbroker_testing::TempPostgres::start() {
///     Ok(pg) => println!("{}", pg.url()),
///     Err(e) => eprintln!("{:?}: {e}", e.kind()),
/// }
/// ```
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            cause: None,
        }
    }

    pub(crate) fn with_cause(
        kind: ErrorKind,
        context: Option<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error {
            kind,
            message: context.unwrap_or_default(),
            cause: Some(Box::new(cause)),
        }
    }

    /// What kind of failure this is.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pgbroker_testing::{ErrorKind, TempPostgres};
    /// if let Err(e) = TempPostgres::start() {
    ///     assert_eq!(e.kind(), ErrorKind::Config, "no PostgreSQL binaries here");
    /// }
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.message[..], &self.cause) {
            ("", Some(c)) => write!(f, "{c}"),
            (m, Some(c)) => write!(f, "{m}: {c}"),
            (m, None) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::with_cause(ErrorKind::Io, None, e)
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Error {
        Error::with_cause(ErrorKind::Database, None, e)
    }
}

impl From<pgbroker::Error> for Error {
    fn from(e: pgbroker::Error) -> Error {
        Error::with_cause(ErrorKind::Database, None, e)
    }
}
