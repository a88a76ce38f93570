//! What `publish` and `enqueue` read: a JSON payload argument, or JSON documents on stdin,
//! one per line, handed over in batches.

use std::io::BufRead;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::Value;

use crate::failure::Failure;

/// The most lines in one batch.
pub const BATCH_LINES: usize = 1000;

/// How long a partial batch waits for more lines: a slow producer still sees its lines go out
/// promptly.
const LINGER: Duration = Duration::from_millis(100);

/// Parses a payload given on the command line; `what` names it in the error (exit 2).
pub fn json_arg(text: &str, what: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| Failure::usage(format!("{what} is not valid JSON: {e}")))
}

/// Lines of stdin, read on a thread of their own so a batch can go out when input pauses.
pub struct StdinBatches {
    lines: Receiver<std::io::Result<String>>,
    /// Lines read so far (the number of the last line handed out).
    line_no: usize,
    /// A bad line met while a batch was being filled: the batch (the lines before it) goes
    /// out first, the error with the next call.
    pending: Option<Failure>,
}

impl StdinBatches {
    pub fn start() -> StdinBatches {
        let (tx, rx) = crossbeam_channel::bounded(BATCH_LINES * 4);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let failed = line.is_err();
                if tx.send(line).is_err() || failed {
                    return;
                }
            }
        });
        StdinBatches {
            lines: rx,
            line_no: 0,
            pending: None,
        }
    }

    /// The next batch: up to [`BATCH_LINES`] non-blank lines parsed as JSON, each with its line
    /// number; `None` at the end of input. A line that is not JSON ends the batch before it:
    /// the lines before it come as a batch, and the next call fails (exit 2) naming the line.
    pub fn next_batch(&mut self) -> Result<Option<Vec<(usize, Value)>>, Failure> {
        if let Some(f) = self.pending.take() {
            return Err(f);
        }
        let mut batch = Vec::new();
        loop {
            let next = if batch.is_empty() {
                self.lines
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                self.lines.recv_timeout(LINGER)
            };
            match next {
                Ok(line) => {
                    let line = line?;
                    self.line_no += 1;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let value = match json_arg(&line, &format!("stdin line {}", self.line_no)) {
                        Ok(v) => v,
                        Err(f) if batch.is_empty() => return Err(f),
                        Err(f) => {
                            self.pending = Some(f);
                            return Ok(Some(batch));
                        }
                    };
                    batch.push((self.line_no, value));
                    if batch.len() >= BATCH_LINES {
                        return Ok(Some(batch));
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Ok(Some(batch)),
                Err(RecvTimeoutError::Disconnected) if batch.is_empty() => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Ok(Some(batch)),
            }
        }
    }
}

/// Parses a duration: seconds as a number, or with a unit `ms`, `s`, `m`, `h`, `d`
/// (`1.5`, `500ms`, `30s`, `5m`, `2h`, `1d`).
pub fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "{text:?} is not a duration (like 30, 500ms, 30s, 5m, 2h, 1d)"
            ))
        }
    };
    let bad = || format!("{text:?} is not a duration (like 30, 500ms, 30s, 5m, 2h, 1d)");
    match number.parse::<f64>() {
        // try_from: a number too large for a Duration is an error, not a panic.
        Ok(n) if n.is_finite() && n >= 0.0 => {
            Duration::try_from_secs_f64(n * scale).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// Parses `--delay`: a [`duration`] of at most 100 years ([`pgbroker::queue::MAX_DELAY`]).
pub fn delay(text: &str) -> Result<Duration, String> {
    let d = duration(text)?;
    if d > pgbroker::queue::MAX_DELAY {
        return Err(format!(
            "{text:?} is longer than the longest delay, 100 years (36500d)"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "s", "-1", "1y", "1 h", "abc", "999999999999999999999"] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(delay("36500d"), Ok(pgbroker::queue::MAX_DELAY));
        for bad in ["36501d", "99999999d", "1e300", "999999999999999999999"] {
            assert!(delay(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_json_is_a_usage_error() {
        let f = json_arg("{nope", "payload").unwrap_err();
        assert_eq!(f.code(), 2);
        assert_eq!(
            json_arg("[1, 2]", "payload").unwrap(),
            serde_json::json!([1, 2])
        );
    }
}
