//! How a command fails: one readable line on stderr and an exit code.

use std::fmt;

use pgbroker::ErrorKind;

/// A failed command: what to tell the user, and whether it was their input (exit 2) or the
/// operation (exit 1).
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// The operation failed (exit 1).
    pub fn failed(message: impl fmt::Display) -> Failure {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }

    /// The command line or the configuration is wrong (exit 2).
    pub fn usage(message: impl fmt::Display) -> Failure {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }

    /// Stopped by Ctrl-C or SIGTERM (exit 130, as a shell reports a process killed by
    /// SIGINT), after cleaning up; nothing more to say.
    pub fn interrupted() -> Failure {
        Failure {
            code: 130,
            message: String::new(),
        }
    }

    /// Puts `context` in front of the message.
    pub fn context(mut self, context: impl fmt::Display) -> Failure {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Puts `more` after the message.
    pub fn and(mut self, more: impl fmt::Display) -> Failure {
        self.message = format!("{}; {more}", self.message);
        self
    }

    pub fn code(&self) -> u8 {
        self.code
    }

    /// Prints `pgbroker: error: ...` as one line, whatever the message holds.
    pub fn print(&self) {
        if self.message.is_empty() {
            return;
        }
        let line: Vec<&str> = self.message.split_whitespace().collect();
        crate::output::note(format!("error: {}", line.join(" ")));
    }
}

impl From<pgbroker::Error> for Failure {
    fn from(e: pgbroker::Error) -> Failure {
        match e.kind() {
            ErrorKind::InvalidName
            | ErrorKind::InvalidInput
            | ErrorKind::PayloadTooLarge
            | ErrorKind::Config => Failure::usage(e),
            _ => Failure::failed(e),
        }
    }
}

impl From<pgbroker::postgres::Error> for Failure {
    fn from(e: pgbroker::postgres::Error) -> Failure {
        Failure::from(pgbroker::Error::from(e))
    }
}

impl From<pgbroker_testing::Error> for Failure {
    fn from(e: pgbroker_testing::Error) -> Failure {
        match e.kind() {
            pgbroker_testing::ErrorKind::Config => Failure::usage(e),
            _ => Failure::failed(e),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::failed(format!("i/o error: {e}"))
    }
}

impl From<Box<dyn std::error::Error + Send + Sync>> for Failure {
    fn from(e: Box<dyn std::error::Error + Send + Sync>) -> Failure {
        match e.downcast::<pgbroker::Error>() {
            Ok(e) => Failure::from(*e),
            Err(e) => match e.downcast::<pgbroker::postgres::Error>() {
                Ok(e) => Failure::from(*e),
                Err(e) => Failure::failed(e),
            },
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Failure::failed("x").code(), 1);
        assert_eq!(Failure::usage("x").code(), 2);
        assert_eq!(Failure::interrupted().code(), 130);
        let e = pgbroker::notify::validate_channel("").unwrap_err();
        assert_eq!(Failure::from(e).code(), 2);
    }
}
