//! Topic names, topic patterns and subscription names: validation and matching.

use crate::{Error, ErrorKind, Result};

/// The longest topic name or pattern, in bytes.
pub const MAX_TOPIC_BYTES: usize = 255;

/// The longest subscription name, in bytes.
pub const MAX_SUBSCRIPTION_BYTES: usize = 200;

fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The bytes of a topic segment: ASCII letters, digits, `_` and `-`.
const SEGMENT_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    t
};

/// The rule of [`validate_topic`] in one pass over the bytes with a table (every publish checks
/// it; splitting into segments cost 650 instructions for a 21-byte topic).
fn topic_ok(topic: &[u8]) -> bool {
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        return false;
    }
    let mut prev = b'.';
    for &b in topic {
        if !(SEGMENT_BYTE[b as usize] || (b == b'.' && prev != b'.')) {
            return false;
        }
        prev = b;
    }
    prev != b'.'
}

/// Checks a topic name: 1 to 255 bytes of dot-separated segments made of ASCII letters, digits,
/// `_` and `-` (`orders`, `orders.created`, `public.users.update`). The same rule as the SQL
/// function `pgbroker.valid_topic`. Fails with [`ErrorKind::InvalidName`].
///
/// # Examples
///
/// ```
/// use pgbroker::topic::validate_topic;
/// assert!(validate_topic("orders.created").is_ok());
/// assert!(validate_topic("orders..created").is_err());
/// assert!(validate_topic("orders.*").is_err()); // a pattern, not a topic
/// ```
pub fn validate_topic(topic: &str) -> Result<()> {
    if !topic_ok(topic.as_bytes()) {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "invalid topic name {topic:?}: use 1 to {MAX_TOPIC_BYTES} bytes of dot-separated \
                 segments of letters, digits, '_' and '-'"
            ),
        ));
    }
    Ok(())
}

/// Checks a topic pattern: a topic name whose segments may be `*` (exactly one segment), and
/// whose last segment may be `#` (any number of segments, none included: `orders.#` matches
/// `orders`, `orders.created` and `orders.eu.created`; `#` alone matches every topic). Fails
/// with [`ErrorKind::InvalidName`].
///
/// # Examples
///
/// ```
/// use pgbroker::topic::validate_pattern;
/// assert!(validate_pattern("orders.*").is_ok());
/// assert!(validate_pattern("orders.#").is_ok());
/// assert!(validate_pattern("orders.#.created").is_err()); // '#' only at the end
/// ```
pub fn validate_pattern(pattern: &str) -> Result<()> {
    let segs: Vec<&str> = pattern.split('.').collect();
    let ok = !pattern.is_empty()
        && pattern.len() <= MAX_TOPIC_BYTES
        && segs
            .iter()
            .enumerate()
            .all(|(i, s)| *s == "*" || (*s == "#" && i == segs.len() - 1) || segment_ok(s));
    if !ok {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!("invalid topic pattern {pattern:?}: segments are names, '*', or a final '#'"),
        ));
    }
    Ok(())
}

/// Whether `topic` matches `pattern` (see [`validate_pattern`]); an invalid pattern matches
/// nothing. The database applies the same rule when reading a subscription.
///
/// # Examples
///
/// ```
/// use pgbroker::topic::pattern_matches;
/// assert!(pattern_matches("orders.*", "orders.created"));
/// assert!(!pattern_matches("orders.*", "orders.eu.created"));
/// assert!(pattern_matches("orders.#", "orders"));
/// assert!(pattern_matches("orders.#", "orders.eu.created"));
/// ```
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    if validate_pattern(pattern).is_err() || validate_topic(topic).is_err() {
        return false;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    if p.last() == Some(&"#") {
        let fixed = &p[..p.len() - 1];
        return t.len() >= fixed.len() && fixed.iter().zip(&t).all(|(p, t)| *p == "*" || p == t);
    }
    p.len() == t.len() && p.iter().zip(&t).all(|(p, t)| *p == "*" || p == t)
}

/// Checks a subscription name: 1 to 200 bytes of ASCII letters, digits, `_`, `-`, `.` and
/// `:`. Fails with [`ErrorKind::InvalidName`].
///
/// # Examples
///
/// ```
/// use pgbroker::topic::validate_subscription;
/// assert!(validate_subscription("billing:eu-1").is_ok());
/// assert!(validate_subscription("billing eu").is_err());
/// ```
pub fn validate_subscription(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SUBSCRIPTION_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if !ok {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "invalid subscription name {name:?}: use 1 to {MAX_SUBSCRIPTION_BYTES} bytes of \
                 letters, digits, '_', '-', '.' and ':'"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn topics() {
        for ok in ["a", "orders.created", "A-b_c.9", &"x".repeat(255)] {
            assert!(validate_topic(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a b",
            "a.*",
            "é",
            &"x".repeat(256),
        ] {
            assert_eq!(
                validate_topic(bad).unwrap_err().kind(),
                ErrorKind::InvalidName
            );
        }
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("#", "anything.at.all"));
        assert!(pattern_matches("*.created", "orders.created"));
        assert!(!pattern_matches("*.created", "created"));
        assert!(pattern_matches("orders", "orders"));
        assert!(!pattern_matches("orders", "orders.created"));
        assert!(pattern_matches("orders.*.x.#", "orders.eu.x"));
        assert!(!pattern_matches("orders.*.x.#", "orders.x"));
        for bad in ["", "a.#.b", "#.a", "a..b", "a.**"] {
            assert!(validate_pattern(bad).is_err(), "{bad}");
        }
    }
}
