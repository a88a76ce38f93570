//! Pub/sub on LISTEN/NOTIFY: publishing, listener threads and table-change notifications.
//!
//! Notifications are fire-and-forget exactly as PostgreSQL gives them: delivered to the
//! listeners connected at commit time, in commit order per channel, and lost for anyone not
//! listening. Use the durable [`log`](crate::Broker::publish) or the job queue when a message
//! must not be lost.

mod listener;
mod publish;
mod watch;

pub use listener::{Event, Listener, Notification};
pub use watch::TableOp;

use crate::{Error, ErrorKind, Result};

/// The largest NOTIFY payload PostgreSQL accepts, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 7999;

/// The longest channel name, in bytes (PostgreSQL's identifier limit, `NAMEDATALEN - 1`).
pub const MAX_CHANNEL_BYTES: usize = 63;

/// Checks that `channel` can be used exactly as given with LISTEN and `pg_notify`.
///
/// Any characters are allowed except NUL, including quotes, spaces and upper case (channels are
/// case-sensitive: `"Orders"` and `"orders"` differ). Empty names and names over 63 bytes are
/// rejected with [`ErrorKind::InvalidName`] because PostgreSQL would refuse or silently truncate
/// them.
///
/// # Examples
///
/// ```
/// use pgbroker::notify::validate_channel;
///
/// assert!(validate_channel("orders").is_ok());
/// assert!(validate_channel("Order \"updates\"").is_ok());
/// assert!(validate_channel(&"x".repeat(64)).is_err());
/// ```
pub fn validate_channel(channel: &str) -> Result<()> {
    if channel.is_empty() {
        return Err(Error::new(ErrorKind::InvalidName, "channel name is empty"));
    }
    if channel.len() > MAX_CHANNEL_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "channel name is {} bytes, the limit is {MAX_CHANNEL_BYTES}",
                channel.len()
            ),
        ));
    }
    if channel.contains('\0') {
        return Err(Error::new(
            ErrorKind::InvalidName,
            "channel name contains a NUL character",
        ));
    }
    Ok(())
}

/// `channel` as a quoted SQL identifier, for `LISTEN`/`UNLISTEN` (which take no parameters).
/// The caller has validated it.
pub(crate) fn quote_ident(name: &str) -> String {
    let mut q = String::with_capacity(name.len() + 2);
    q.push('"');
    for c in name.chars() {
        if c == '"' {
            q.push('"');
        }
        q.push(c);
    }
    q.push('"');
    q
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("a"), "\"a\"");
        assert_eq!(quote_ident("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(
            quote_ident("x\"; DROP TABLE t; --"),
            "\"x\"\"; DROP TABLE t; --\""
        );
    }

    #[test]
    fn channel_limits() {
        assert!(validate_channel(&"a".repeat(63)).is_ok());
        assert_eq!(
            validate_channel(&"a".repeat(64)).unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        // 63 bytes counted in bytes, not chars
        assert!(validate_channel(&"é".repeat(32)).is_err());
        assert!(validate_channel("a\0b").is_err());
        assert!(validate_channel("").is_err());
    }
}
