//! `Position`: a place in the log, as `(tx, id)`.

use std::fmt;
use std::str::FromStr;

use crate::{Error, ErrorKind};

/// A place in the event log: the transaction id (`xid8`) and event id of an event. Events are
/// delivered in `(tx, id)` order and a subscription's cursor is the position of the last event
/// acknowledged; reading returns the events after it.
///
/// Prints and parses as `"<tx>-<id>"`, suitable as an SSE `Last-Event-ID`.
///
/// # Examples
///
/// ```
/// use pgbroker::topic::Position;
///
/// let p: Position = "7412-90".parse()?;
/// assert_eq!((p.tx(), p.id()), (7412, 90));
/// assert_eq!(p.to_string(), "7412-90");
/// assert!(Position::BEGINNING < p);
/// # Ok::<(), pgbroker::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    tx: u64,
    id: i64,
}

impl Position {
    /// Before every event.
    pub const BEGINNING: Position = Position { tx: 0, id: 0 };

    /// The position of the event `id` written by transaction `tx`.
    pub fn new(tx: u64, id: i64) -> Position {
        Position { tx, id }
    }

    /// The transaction id (`xid8`, with epoch).
    pub fn tx(&self) -> u64 {
        self.tx
    }

    /// The event id.
    pub fn id(&self) -> i64 {
        self.id
    }

    pub(crate) fn tx_text(&self) -> String {
        self.tx.to_string()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.tx, self.id)
    }
}

impl FromStr for Position {
    type Err = Error;

    /// Parses `"<tx>-<id>"`; fails with [`ErrorKind::InvalidInput`].
    fn from_str(s: &str) -> Result<Position, Error> {
        let bad = || Error::new(ErrorKind::InvalidInput, format!("invalid position {s:?}"));
        let (tx, id) = s.split_once('-').ok_or_else(bad)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(tx) || !digits(id) {
            return Err(bad());
        }
        Ok(Position {
            tx: tx.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip() {
        let p = Position::new(u64::MAX, i64::MAX);
        assert_eq!(p.to_string().parse::<Position>().unwrap(), p);
        for bad in ["", "1", "1-", "-1", "a-1", "1-b", "1--1", "1-2-3", " 1-2"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
        assert!(Position::new(1, 9) < Position::new(2, 1));
    }
}
