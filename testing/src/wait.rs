//! Waiting for something a background thread or another process does.

use std::time::{Duration, Instant};

/// Polls `condition` every 20 ms until it returns true (then returns true) or `timeout`
/// passes (then returns false). For assertions on work done by worker pools, listeners and
/// other processes: `assert!(wait_until(..))` fails with your message instead of hanging.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let start = std::time::Instant::now();
/// assert!(pgbroker_testing::wait_until(Duration::from_secs(1), || start.elapsed().as_millis() > 30));
/// assert!(!pgbroker_testing::wait_until(Duration::from_millis(50), || false));
/// ```
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
