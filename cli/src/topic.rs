//! `pgbroker publish` and `pgbroker tail`: the durable event log from the shell.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use pgbroker::topic::{EventStream, NewEvent, Position, StartAt};
use pgbroker::{Broker, LogEvent};
use serde_json::Value;

use crate::failure::Failure;
use crate::input::{json_arg, StdinBatches};

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic (dot-separated segments of letters, digits, `_` and `-`).
    pub topic: String,
    /// The payload, a JSON document (default `{}`); `-` publishes one event per line of stdin,
    /// in batches (a line that is not JSON stops it with exit 2: the lines before it are
    /// published and their ids printed, none after it).
    pub payload: Option<String>,
    /// The event key: events of one key stay in order in one partition of a subscription.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Headers, a JSON object.
    #[arg(long, value_name = "JSON")]
    pub headers: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["subscription", "topic"])))]
pub struct TailArgs {
    /// The subscription to read (and acknowledge) from; a partitioned one is read partition by
    /// partition, each in log order.
    pub subscription: Option<String>,
    /// Read the topics matching PATTERN (`orders.*`, `orders.#`; repeatable) through a
    /// throwaway subscription, removed at exit (or by maintenance a minute after a crash).
    #[arg(long, value_name = "PATTERN", conflicts_with = "subscription")]
    pub topic: Vec<String>,
    /// Start after POSITION (`<tx>-<id>`, as printed), or at `beginning`: moves a
    /// subscription's cursor there (replay, or skip ahead). With --topic also `end`, the
    /// default: only events published from now on.
    #[arg(long, value_name = "POSITION")]
    pub from: Option<String>,
    /// With --topic: only events whose payload contains this JSON object
    /// (`--filter '{"customer": 42}'`).
    #[arg(long, value_name = "JSON", requires = "topic")]
    pub filter: Option<String>,
    /// With --topic: only events for which this SQL boolean expression over topic, key,
    /// payload, headers and params is true (`--condition "payload->>'total' > '100'"`).
    #[arg(long, value_name = "SQL", requires = "topic")]
    pub condition: Option<String>,
    /// The JSON object the --condition reads as `params` (default `{}`).
    #[arg(long, value_name = "JSON", requires = "condition")]
    pub params: Option<String>,
    /// Read the log from this streaming replica of the database (repeatable; acks still go to
    /// --url, the primary; a replica more than 10 s behind is passed over).
    #[arg(long, value_name = "URL")]
    pub read_replica: Vec<String>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this many seconds; fails when --count was not reached by then.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
}

/// Events read per round trip.
const READ_BATCH: usize = 500;

/// The longest wait between reads of an idle log.
const MAX_POLL: Duration = Duration::from_millis(500);

pub fn publish(url: &str, args: &PublishArgs) -> Result<(), Failure> {
    pgbroker::topic::validate_topic(&args.topic)?;
    let headers = match &args.headers {
        Some(h) => {
            let v = json_arg(h, "--headers")?;
            if !v.is_object() {
                return Err(Failure::usage(format!(
                    "--headers must be a JSON object, got {v}"
                )));
            }
            Some(v)
        }
        None => None,
    };
    let event = |payload: Value| {
        let mut e = NewEvent::new(args.topic.as_str(), payload);
        if let Some(k) = &args.key {
            e = e.key(k.as_str());
        }
        if let Some(h) = &headers {
            e = e.headers(h.clone());
        }
        e
    };
    match args.payload.as_deref() {
        Some("-") => {
            let broker = crate::connection::broker(url)?;
            let mut input = StdinBatches::start();
            let mut published = 0u64;
            loop {
                let before =
                    |f: Failure| f.and(format!("{published} event(s) published before it"));
                let batch = input.next_batch().map_err(before)?;
                let Some(batch) = batch else { return Ok(()) };
                if batch.is_empty() {
                    continue;
                }
                let ids = broker
                    .publish_batch(batch.into_iter().map(|(_, v)| event(v)))
                    .map_err(|e| before(Failure::from(e)))?;
                published += ids.len() as u64;
                crate::output::print_lines(ids.iter().map(|id| id.to_string()))?;
            }
        }
        payload => {
            let payload = json_arg(payload.unwrap_or("{}"), "the payload")?;
            let e = event(payload);
            e.validate()?;
            let id = crate::connection::broker(url)?.publish_event(&e)?;
            Ok(crate::output::print_lines([id.to_string()])?)
        }
    }
}

/// Where `tail` starts.
enum From {
    Beginning,
    End,
    After(Position),
}

fn parse_from(text: &str) -> Result<From, Failure> {
    match text {
        "beginning" => Ok(From::Beginning),
        "end" => Ok(From::End),
        p => p.parse().map(From::After).map_err(|_| {
            Failure::usage(format!(
                "--from must be a position <tx>-<id> (as tail prints it), beginning or end; \
                 got {p:?}"
            ))
        }),
    }
}

/// The throwaway subscription of `tail --topic` ([`Broker::stream`]'s kind): removed when
/// dropped, and by `log_maintain` a minute after this process dies without running its drop.
fn topic_stream(broker: &Broker, args: &TailArgs, from: From) -> Result<EventStream, Failure> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("pgbroker-tail-{}-{nanos}", std::process::id());
    let start = match from {
        From::Beginning => StartAt::Beginning,
        From::End => StartAt::End,
        From::After(p) => StartAt::Position(p),
    };
    let mut builder = args
        .topic
        .iter()
        .fold(broker.subscription(&name), |b, p| b.pattern(p))
        .start_at(start);
    if let Some(f) = &args.filter {
        builder = builder.filter(json_arg(f, "--filter")?);
    }
    if let Some(c) = &args.condition {
        let params = json_arg(args.params.as_deref().unwrap_or("{}"), "--params")?;
        builder = builder.condition(c, params);
    }
    Ok(builder.into_stream()?)
}

pub fn tail(url: &str, args: &TailArgs) -> Result<(), Failure> {
    let deadline = match args.timeout {
        Some(s) if !(s.is_finite() && s >= 0.0) => {
            return Err(Failure::usage(format!(
                "--timeout must be a number of seconds, got {s}"
            )))
        }
        Some(s) => Some(Instant::now() + Duration::from_secs_f64(s)),
        None => None,
    };
    let from = args.from.as_deref().map(parse_from).transpose()?;
    for p in &args.topic {
        pgbroker::topic::validate_pattern(p)?;
    }
    if let Some(s) = &args.subscription {
        pgbroker::topic::validate_subscription(s)?;
        if matches!(from, Some(From::End)) {
            return Err(Failure::usage(
                "--from end applies to --topic; a subscription goes on from its cursor",
            ));
        }
    }
    if args.count == Some(0) {
        return Ok(());
    }
    let broker = crate::connection::broker_with_replicas(url, &args.read_replica)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .map_err(|e| Failure::failed(format!("cannot handle Ctrl-C: {e}")))?;
    }
    let printed = match &args.subscription {
        Some(name) => {
            let partitions = broker.subscription_partitions(name)?;
            if let Some(from) = &from {
                let to = match from {
                    From::After(p) => *p,
                    _ => Position::BEGINNING,
                };
                for part in 0..partitions {
                    broker.seek(name, part, to)?;
                }
            }
            follow(&broker, name, partitions, args.count, deadline, &stop)?
        }
        None => {
            let stream = topic_stream(&broker, args, from.unwrap_or(From::End))?;
            follow_stream(stream, args.count, deadline, &stop)?
        }
    };
    if stop.load(Ordering::SeqCst) {
        // Ctrl-C or SIGTERM: exit 130, as `listen` does (a stream's temporary subscription
        // is removed on the way out).
        return Err(Failure::interrupted());
    }
    match (args.count, deadline) {
        (Some(c), Some(_)) if printed < c && !stop.load(Ordering::SeqCst) => {
            Err(Failure::failed(format!(
                "timed out after {} s with {printed} of {c} events",
                args.timeout.unwrap_or_default()
            )))
        }
        _ => Ok(()),
    }
}

/// Prints the events of a stream as JSON lines until `count` events, the deadline, a signal,
/// or a closed stdout. Returns how many events were printed.
fn follow_stream(
    mut stream: EventStream,
    count: Option<u64>,
    deadline: Option<Instant>,
    stop: &AtomicBool,
) -> Result<u64, Failure> {
    let stdout = std::io::stdout();
    let mut printed = 0u64;
    loop {
        if stop.load(Ordering::SeqCst) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(printed);
        }
        let Some(e) = stream.next_timeout(Duration::from_millis(50))? else {
            continue;
        };
        let mut out = stdout.lock();
        match writeln!(out, "{}", json_line(&e)).and_then(|_| out.flush()) {
            Ok(()) => printed += 1,
            // Whoever read our output is gone (`| head`): a normal way to stop.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(printed),
            Err(e) => return Err(e.into()),
        }
        if count.is_some_and(|c| printed >= c) {
            return Ok(printed);
        }
    }
}

/// Reads every partition in turn, prints each event as a JSON line and acknowledges what was
/// printed, until `count` events, the deadline, a signal, or a closed stdout. Returns how many
/// events were printed.
fn follow(
    broker: &Broker,
    name: &str,
    partitions: u32,
    count: Option<u64>,
    deadline: Option<Instant>,
    stop: &AtomicBool,
) -> Result<u64, Failure> {
    let stdout = std::io::stdout();
    let mut printed = 0u64;
    let mut idle = Duration::from_millis(20);
    let stopped = || stop.load(Ordering::SeqCst) || deadline.is_some_and(|d| Instant::now() >= d);
    loop {
        if stopped() {
            return Ok(printed);
        }
        let mut any = false;
        for part in 0..partitions {
            let want = count.map_or(READ_BATCH as u64, |c| (c - printed).min(READ_BATCH as u64));
            let batch = broker.read_partition(name, part, want as usize)?;
            let mut last = None;
            let mut closed = false;
            {
                let mut out = stdout.lock();
                for e in batch.events() {
                    let written = writeln!(out, "{}", json_line(e)).and_then(|_| out.flush());
                    match written {
                        Ok(()) => {
                            last = Some(e.position());
                            printed += 1;
                        }
                        // Whoever read our output is gone (`| head`): a normal way to stop.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                            closed = true;
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if let Some(p) = last {
                broker.ack_partition(name, part, p)?;
                any = true;
            }
            if closed || count.is_some_and(|c| printed >= c) {
                return Ok(printed);
            }
        }
        if any {
            idle = Duration::from_millis(20);
            continue;
        }
        // Nothing new: wait a little longer each time, watching for a signal and the deadline.
        let until = Instant::now() + idle;
        idle = (idle * 2).min(MAX_POLL);
        loop {
            if stopped() {
                return Ok(printed);
            }
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }
}

/// One event as a JSON line, keys in a fixed order.
fn json_line(e: &LogEvent) -> String {
    format!(
        "{{\"position\":{},\"topic\":{},\"payload\":{},\"headers\":{},\"key\":{},\"created_at\":{}}}",
        Value::from(e.position().to_string()),
        Value::from(e.topic()),
        e.payload(),
        e.headers().cloned().unwrap_or(Value::Null),
        e.key().map_or(Value::Null, Value::from),
        Value::from(crate::output::rfc3339(e.created_at())),
    )
}
