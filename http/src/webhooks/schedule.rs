//! Retry schedules written as `1m,5m,15m` (units `ms`, `s`, `m`, `h`, `d`).

use std::time::Duration;

use crate::{Error, ErrorKind, Result};

/// Parses a retry schedule: comma-separated positive durations with a unit.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let s = pgbroker_http::webhooks::parse_schedule("30s, 5m,1h")?;
/// assert_eq!(s, [Duration::from_secs(30), Duration::from_secs(300), Duration::from_secs(3600)]);
/// assert!(pgbroker_http::webhooks::parse_schedule("5 minutes").is_err());
/// # Ok::<(), pgbroker_http::Error>(())
/// ```
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>> {
    text.split(',')
        .map(str::trim)
        .map(|item| {
            let bad = || {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("invalid retry interval {item:?}: use a number and ms, s, m, h or d (1m,5m,15m)"),
                )
            };
            let split = item.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let (n, unit) = item.split_at(split);
            let n: u64 = n.parse().map_err(|_| bad())?;
            let ms = match unit {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            if n == 0 {
                return Err(bad());
            }
            Ok(Duration::from_millis(n.checked_mul(ms).ok_or_else(bad)?))
        })
        .collect()
}
