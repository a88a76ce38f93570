//! `Error`: what can go wrong starting the server or managing webhooks.

use std::fmt;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A setting is wrong or unsafe (for example: listening on a public address with nobody
    /// to check who calls).
    Config,
    /// Binding or another socket operation failed.
    Io,
    /// An argument is invalid (a URL, a pattern, a header, a retry schedule).
    InvalidInput,
    /// The named thing (a webhook endpoint) does not exist.
    NotFound,
    /// The broker (database) failed: see [`Error::broker_error`].
    Broker,
}

/// An error of pgbroker-http: a kind, a message and the cause.
///
/// # Examples
///
/// ```
/// use pgbroker_http::{ErrorKind, Server};
/// # fn demo(broker: pgbroker::Broker) {
/// let err = Server::builder(broker).listen("0.0.0.0:8080").start().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Config); // a public address needs an auth hook
/// # }
/// ```
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The broker's error, when the database failed.
    pub fn broker_error(&self) -> Option<&pgbroker::Error> {
        self.source.as_ref()?.downcast_ref()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

impl From<pgbroker::Error> for Error {
    fn from(e: pgbroker::Error) -> Error {
        let kind = match e.kind() {
            pgbroker::ErrorKind::InvalidInput | pgbroker::ErrorKind::InvalidName => {
                ErrorKind::InvalidInput
            }
            pgbroker::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Broker,
        };
        Error::with_source(kind, "pgbroker", e)
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Error {
        Error::from(pgbroker::Error::from(e))
    }
}
