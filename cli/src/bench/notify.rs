//! Pub/sub workloads, a table whose every row change is notified, and notify end-to-end latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fallible_iterator::FallibleIterator;
use pgbroker::{Event, TableOp};

use super::harness::{arrivals, per_s, percentiles, Budget, Ratio, Runner, Sample, Workload};
use super::raw::insert_single_job;
use super::tables::JOB;
use super::{BoxError, Options, Result};

const WATCH_CHANNEL: &str = "pgbroker_bench_job";
const LATENCY_CHANNEL: &str = "pgbroker_bench_latency";

/// How long to wait for the last notifications before calling a run failed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

pub fn workloads(o: &Options) -> Vec<Workload> {
    let mut sizes: Vec<(&'static str, u64)> =
        vec![("watch_table_1k", 1_000), ("watch_table_100k", 100_000)];
    if o.full {
        sizes.push(("watch_table_10m", 10_000_000));
    }
    let mut out: Vec<Workload> = sizes
        .into_iter()
        .map(|(name, size)| Workload {
            name,
            about: "table watch: INSERTs on 4 writers, a row trigger notifies each row as JSON, \
                    one listener receives all (raw: the same INSERTs, no trigger)",
            threads: o.threads,
            // The fixed sizes, capped by --messages unless --full asks for them all.
            messages: if o.full { size } else { size.min(o.messages) },
            bounded: true,
            seed: None,
            seed_pgbroker: None,
            ratio: Ratio::Throughput,
            peer: None,
            raw: raw_writes(o.threads),
            pgbroker: watched_inserts(o.threads),
        })
        .collect();
    let rate = o.rate.max(1);
    out.push(Workload {
        name: "notify_latency",
        about: "notify -> handler at a fixed rate with idle consumers; p50/p99/max latency \
                (raw: pg_notify on one connection, LISTEN on another)",
        threads: 1,
        // At most 5 s of sending; exactly --seconds of it when given.
        messages: match o.seconds {
            Some(secs) => ((f64::from(rate) * secs) as u64).max(1),
            None => o.messages.min(u64::from(rate) * 5),
        },
        bounded: true,
        seed: None,
        seed_pgbroker: None,
        ratio: Ratio::Latency,
        peer: None,
        raw: raw_latency(rate),
        pgbroker: pgbroker_latency(rate),
    });
    out
}

/// The table watch without pgbroker: the same INSERTs, no trigger, no listener.
fn raw_writes(threads: usize) -> Runner {
    let insert = insert_single_job(threads);
    Box::new(move |ctx, budget| {
        let s = insert(ctx, budget)?;
        let rate = s.per_s();
        Ok(s.with("writes_per_s", rate))
    })
}

/// The table watch with pgbroker: `watch_table` on the job table, a listener, `threads` writers.
/// The rate is end to end: until the last notification arrived.
fn watched_inserts(threads: usize) -> Runner {
    let insert = insert_single_job(threads);
    Box::new(move |ctx, budget| {
        ctx.broker.watch_table(JOB, WATCH_CHANNEL, &TableOp::ALL)?;
        let listener = ctx.broker.listen(WATCH_CHANNEL)?;
        let start = Instant::now();
        let writes = insert(ctx, budget)?;
        let written = writes.units;
        let mut received = 0;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while received < written {
            let left = deadline.saturating_duration_since(Instant::now());
            match listener.recv_timeout(left)? {
                Some(Event::Notification(_)) => received += 1,
                Some(_) => {}
                None => {
                    return Err(format!(
                        "{received} of {written} notifications arrived within {DRAIN_TIMEOUT:?}"
                    )
                    .into())
                }
            }
        }
        let elapsed = start.elapsed();
        Ok(Sample::new(written, elapsed)
            .with("writes_per_s", writes.per_s())
            .with("notifies_per_s", per_s(received, elapsed)))
    })
}

/// Sends `budget` notifications at `rate` per second with `send(seq)`, then waits for the
/// receive instants; returns the latency sample.
pub(super) fn paced(
    budget: &Budget,
    rate: u32,
    mut send: impl FnMut(u64) -> Result<()>,
    received: impl FnOnce(u64) -> Result<Vec<(u64, Instant)>>,
) -> Result<Sample> {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now();
    let mut sent_at = Vec::new();
    loop {
        if budget.take(1) == 0 {
            break;
        }
        let seq = sent_at.len() as u64;
        let due = start + interval * seq as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent_at.push(Instant::now());
        send(seq)?;
    }
    let arrivals = received(sent_at.len() as u64)?;
    let elapsed = start.elapsed();
    let mut lat: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(seq, at)| {
            sent_at
                .get(*seq as usize)
                .map(|s| at.saturating_duration_since(*s))
        })
        .collect();
    for _ in &lat {
        budget.done(1);
    }
    let (p50, p99, max) = percentiles(&mut lat);
    Ok(Sample::new(arrivals.len() as u64, elapsed)
        .with("p50_ms", p50)
        .with("p99_ms", p99)
        .with("max_ms", max))
}

/// Raw latency: `SELECT pg_notify` on one connection, a LISTENing connection drained by a
/// thread on another.
fn raw_latency(rate: u32) -> Runner {
    raw_latency_of(rate, "SELECT pg_notify($1, $2)")
}

/// Raw latency of `send`, a statement sending notification `$2` on channel `$1` (and perhaps
/// writing more), on one connection; a LISTENing connection drained by a thread on another.
pub(super) fn raw_latency_of(rate: u32, send: &'static str) -> Runner {
    Box::new(move |ctx, budget| {
        let mut sender = ctx.client()?;
        let mut receiver = ctx.client()?;
        receiver.batch_execute(&format!("LISTEN {LATENCY_CHANNEL}"))?;
        let expected = Arc::new(AtomicU64::new(u64::MAX));
        let ready = Arc::new(Barrier::new(2));
        let thread = {
            let (expected, ready) = (expected.clone(), ready.clone());
            std::thread::spawn(move || -> Result<Vec<(u64, Instant)>> {
                ready.wait();
                let mut got = Vec::new();
                let deadline = Instant::now() + DRAIN_TIMEOUT * 10;
                while (got.len() as u64) < expected.load(Ordering::SeqCst) {
                    if Instant::now() > deadline {
                        return Err("raw listener timed out".into());
                    }
                    let mut n = receiver.notifications();
                    let mut it = n.timeout_iter(Duration::from_millis(50));
                    while let Some(note) = it.next()? {
                        got.push((note.payload().parse::<u64>()?, Instant::now()));
                    }
                }
                Ok(got)
            })
        };
        ready.wait();
        let result = sender
            .prepare(send)
            .map_err(BoxError::from)
            .and_then(|stmt| {
                paced(
                    budget,
                    rate,
                    |seq| {
                        sender.execute(&stmt, &[&LATENCY_CHANNEL, &seq.to_string()])?;
                        Ok(())
                    },
                    |n| {
                        expected.store(n, Ordering::SeqCst);
                        thread
                            .join()
                            .unwrap_or_else(|_| Err("raw listener thread panicked".into()))
                    },
                )
            });
        // After a failed send the receiver was never joined: let it end (within 50 ms).
        expected.store(0, Ordering::SeqCst);
        result
    })
}

/// pgbroker latency: `Broker::notify` on the pool, a worker pool handler on a listener.
fn pgbroker_latency(rate: u32) -> Runner {
    Box::new(move |ctx, budget| {
        let (tx, rx) = crossbeam_channel::unbounded();
        let pool = ctx
            .broker
            .worker_pool()
            .threads(2)
            .handler(LATENCY_CHANNEL, move |n| {
                let at = Instant::now();
                let seq: u64 = n.payload().parse()?;
                let _ = tx.send((seq, at));
                Ok(())
            })
            .start()?;
        let result = paced(
            budget,
            rate,
            |seq| Ok(ctx.broker.notify(LATENCY_CHANNEL, &seq.to_string())?),
            |n| arrivals(&rx, n, DRAIN_TIMEOUT),
        );
        pool.shutdown()?;
        result
    })
}
