//! `pgbroker notify` and `pgbroker listen`.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use crossbeam_channel::Select;
use pgbroker::{Event, Listener, Notification};

use crate::failure::Failure;

/// How often `listen` looks for Ctrl-C while no notification comes.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// The channel (case-sensitive, sent exactly as given).
    pub channel: String,
    /// The payload text (at most 7999 bytes); `-` sends one notification per line of stdin.
    pub payload: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The channels to listen on (case-sensitive, exactly as given).
    #[arg(required = true)]
    pub channels: Vec<String>,
    /// Stop after this many notifications.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this many seconds; fails when --count was not reached by then.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
}

pub fn notify(url: &str, args: &NotifyArgs) -> Result<(), Failure> {
    pgbroker::notify::validate_channel(&args.channel)?;
    let broker = crate::connection::broker(url)?;
    match args.payload.as_deref() {
        Some("-") => {
            for (n, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line?;
                broker
                    .notify(&args.channel, &line)
                    .map_err(|e| Failure::from(e).context(format!("stdin line {}", n + 1)))?;
            }
            Ok(())
        }
        payload => Ok(broker.notify(&args.channel, payload.unwrap_or(""))?),
    }
}

pub fn listen(url: &str, args: &ListenArgs) -> Result<(), Failure> {
    if args.count == Some(0) {
        return Ok(());
    }
    let timeout = match args.timeout {
        Some(s) if !(s.is_finite() && s >= 0.0) => {
            return Err(Failure::usage(format!(
                "--timeout must be a number of seconds, got {s}"
            )))
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    for c in &args.channels {
        pgbroker::notify::validate_channel(c)?;
    }
    // Ctrl-C and SIGTERM stop it with exit 130, as they stop `tail`
    // (installed before "listening on" is printed).
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .map_err(|e| Failure::failed(format!("cannot handle Ctrl-C: {e}")))?;
    }
    let broker = crate::connection::builder(url)
        .pool_size(1)
        .listener_poll(Duration::from_millis(100))
        .build()?;
    let listeners = args
        .channels
        .iter()
        .map(|c| broker.listen(c))
        .collect::<pgbroker::Result<Vec<Listener>>>()?;
    let names: Vec<String> = args.channels.iter().map(|c| format!("{c:?}")).collect();
    crate::output::note(format!("listening on {}", names.join(", ")));

    let deadline = timeout.map(|t| Instant::now() + t);
    let mut select = Select::new();
    for l in &listeners {
        select.recv(l.receiver());
    }
    let stdout = std::io::stdout();
    let mut received: u64 = 0;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(Failure::interrupted());
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        // Wake at least every 100 ms to look at the stop flag.
        let wait = deadline.map_or(SIGNAL_POLL, |d| (d - now).min(SIGNAL_POLL));
        let Ok(ready) = select.ready_timeout(wait) else {
            continue;
        };
        let Some(event) = listeners[ready].try_recv() else {
            continue; // another select arm took it, or a spurious wake-up
        };
        match event {
            Event::Notification(n) => {
                let mut out = stdout.lock();
                let written = writeln!(out, "{}", json_line(&n)).and_then(|_| out.flush());
                if let Err(e) = written {
                    // Whoever read our output is gone (`| head`): a normal way to stop.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e.into());
                }
                received += 1;
                if args.count.is_some_and(|c| received >= c) {
                    return Ok(());
                }
            }
            Event::Disconnected { channel, error } => crate::output::note(format!(
                "connection of listener {channel:?} lost, reconnecting: {error}"
            )),
            Event::Reconnected {
                channel,
                attempts,
                downtime,
            } => crate::output::note(format!(
                "listener {channel:?} reconnected after {attempts} attempt(s), \
                 {:.1} s down; notifications sent meanwhile are lost",
                downtime.as_secs_f64()
            )),
            _ => {}
        }
    }
    match args.count {
        Some(c) => Err(Failure::failed(format!(
            "timed out after {} s with {received} of {c} notifications",
            args.timeout.unwrap_or_default()
        ))),
        None => Ok(()),
    }
}

/// One notification as a JSON line, keys in a fixed order.
fn json_line(n: &Notification) -> String {
    format!(
        "{{\"channel\":{},\"payload\":{},\"pid\":{}}}",
        serde_json::Value::from(n.channel()),
        serde_json::Value::from(n.payload()),
        n.process_id()
    )
}
