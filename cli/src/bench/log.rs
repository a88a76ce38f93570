//! Durable log workloads (module `topic`): each done with plain SQL on the bench's own events
//! table, and through pgbroker on `pgbroker.events` (same rows, same threads, same rows per
//! transaction).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgbroker::topic::{NewEvent, StartAt};
use serde_json::Value;

use super::harness::{
    join_all, on_threads, one_per_unit, per_s, Ctx, Ratio, Runner, Sample, Seed, Workload,
};
use super::raw::{self, payload_of, READ_BATCH};
use super::tables::{self, Target};
use super::{Options, Result};

/// The benchmark's topics and subscriptions are named `pgbroker_bench.*` and
/// `pgbroker_bench-*`: what `tables` may delete from pgbroker's tables.
const TOPIC: &str = "pgbroker_bench.orders";
const PGMB_TOPIC: &str = "pgbroker_bench.pgmb";

fn order() -> Value {
    serde_json::json!({"order": 1, "status": "paid", "amount": 42.5})
}

fn seed_events(ctx: &Ctx, n: u64) -> Result<()> {
    seed_raw_topic(ctx, TOPIC, n)
}

fn seed_pgbroker_events(ctx: &Ctx, n: u64) -> Result<()> {
    seed_pgbroker_topic(ctx, TOPIC, n)
}

/// `n` orders on `topic` in the bench's events table.
pub(super) fn seed_raw_topic(ctx: &Ctx, topic: &str, n: u64) -> Result<()> {
    tables::seed(ctx, Target::Events, topic, &order(), n)
}

/// The same rows as `seed_raw_topic`, through `publish_batch`: 10 000 per transaction.
pub(super) fn seed_pgbroker_topic(ctx: &Ctx, topic: &str, n: u64) -> Result<()> {
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        ctx.broker
            .publish_batch((0..k).map(|_| NewEvent::new(topic, order())))?;
        left -= k;
    }
    ctx.client()?.batch_execute("ANALYZE pgbroker.events")?;
    Ok(())
}

pub fn workloads(o: &Options) -> Vec<Workload> {
    let single = |name, threads, subs| Workload {
        name,
        about: if subs == 0 {
            "publish one event per transaction (raw: INSERT into an events table)"
        } else {
            "publish one event per transaction while 10 subscriptions match the topic, no \
             consumer running (raw: INSERT into an events table)"
        },
        threads,
        messages: o.messages,
        bounded: false,
        seed: None,
        seed_pgbroker: None,
        ratio: Ratio::Throughput,
        peer: None,
        raw: raw::insert_single(Target::Events, TOPIC, order(), threads),
        pgbroker: publish_single(order(), threads, subs),
    };
    let batch = |name, size| Workload {
        name,
        about: "publish a batch per call (raw: the faster of multi-row INSERT and binary COPY)",
        threads: 1,
        messages: o.messages,
        bounded: false,
        seed: None,
        seed_pgbroker: None,
        ratio: Ratio::Throughput,
        peer: None,
        raw: raw::insert_batch(Target::Events, TOPIC, order(), size),
        pgbroker: publish_batch(order(), size),
    };
    let read = |name, subs| Workload {
        name,
        about: "each subscription reads the whole log in (tx, id) order below the horizon \
                (raw: index range scans of 100 rows); units are rows delivered",
        threads: subs,
        messages: o.messages,
        bounded: true,
        seed: Some(seed_events as Seed),
        seed_pgbroker: Some(seed_pgbroker_events as Seed),
        ratio: Ratio::Throughput,
        peer: None,
        raw: raw::log_read(subs),
        pgbroker: read_all(subs),
    };
    vec![
        single("publish_single_t1", 1, 0),
        single("publish_single_t4", o.threads, 0),
        single("publish_single_t4_sub10", o.threads, 10),
        batch("publish_batch_100", 100),
        batch("publish_batch_10000", 10_000),
        read("log_read_sub1", 1),
        read("log_read_sub10", 10),
        Workload {
            name: "pgmb_1kb_b100_p5_c10",
            about: "PGMB's shape: 1 KB messages in batches of 100, 5 publishers, 10 consumers \
                    reading everything; units are messages published and fully consumed",
            threads: 15,
            messages: o.messages,
            bounded: false,
            seed: None,
            seed_pgbroker: None,
            ratio: Ratio::Throughput,
            peer: None,
            raw: raw::publish_consume(PGMB_TOPIC, payload_of(1024), 100, 5, 10),
            pgbroker: publish_consume(payload_of(1024), 100, 5, 10),
        },
    ]
}

/// `Broker::publish` per event on `threads` threads sharing the broker's pool, with `subs`
/// subscriptions matching the topic made first (none consuming: issue #3 asks whether
/// subscriptions cost publishers anything; publishing never looks at them).
///
/// Measured with callgrind on PostgreSQL 15, per event between the 1 000th and 5 000th of one
/// connection (instructions; the raw INSERT in brackets): server 84 000 (81 000), client 17 500
/// (14 700). Routing into the day's partition costs ~13 000 and the id reservation ~4 300, the
/// raw table's second index ~7 000 and its `nextval` ~4 500. Before the broker reserved ids
/// and looked for waiters at most every 50 ms: server 110 000 (RETURNING 11 000, the look
/// 13 000–16 000).
fn publish_single(payload: Value, threads: usize, subs: usize) -> Runner {
    Box::new(move |ctx, budget| {
        let patterns = [TOPIC, "pgbroker_bench.*", "pgbroker_bench.#"];
        for i in 0..subs {
            ctx.broker
                .subscription(&format!("pgbroker_bench-pub-{i}"))
                .pattern(patterns[i % patterns.len()])
                .save()?;
        }
        one_per_unit(vec![(); threads], budget, |_| {
            ctx.broker.publish(TOPIC, &payload)?;
            Ok(())
        })
    })
}

/// `Broker::publish_batch` of `batch` events per call, one thread.
fn publish_batch(payload: Value, batch: u64) -> Runner {
    Box::new(move |ctx, budget| {
        let start = Instant::now();
        let mut done = 0;
        loop {
            let k = budget.take(batch);
            if k == 0 {
                break;
            }
            ctx.broker
                .publish_batch((0..k).map(|_| NewEvent::new(TOPIC, payload.clone())))?;
            budget.done(k);
            done += k;
        }
        Ok(Sample::new(done, start.elapsed()))
    })
}

/// Creates `n` subscriptions to `topic` reading from the beginning: `pgbroker_bench-<n>-<i>`.
fn subscriptions(ctx: &Ctx, topic: &str, n: usize) -> Result<Vec<String>> {
    (0..n)
        .map(|i| {
            let name = format!("pgbroker_bench-{n}-{i}");
            ctx.broker
                .subscription(&name)
                .pattern(topic)
                .start_at(StartAt::Beginning)
                .save()?;
            Ok(name)
        })
        .collect()
}

/// Reads a page of `sub` and acknowledges it; returns how many events it held.
fn read_and_ack(ctx: &Ctx, sub: &str) -> Result<u64> {
    let batch = ctx.broker.read(sub, READ_BATCH as usize)?;
    if let Some(last) = batch.last_position() {
        ctx.broker.ack(sub, last)?;
    }
    Ok(batch.len() as u64)
}

/// `subs` subscriptions, one thread each, `read` + `ack` pages of 100 until the log is read.
fn read_all(subs: usize) -> Runner {
    Box::new(move |ctx, budget| {
        let names = subscriptions(ctx, TOPIC, subs)?;
        on_threads(names, budget, |sub, budget| {
            let mut done = 0;
            while !budget.expired() {
                let n = read_and_ack(ctx, sub)?;
                if n == 0 {
                    break;
                }
                budget.done(n);
                done += n;
            }
            Ok(done)
        })
    })
}

/// PGMB through pgbroker: `publishers` threads `publish_batch` while `consumers`
/// subscriptions each `read` + `ack` everything; the clock stops when all have read it all.
fn publish_consume(payload: Value, batch: u64, publishers: usize, consumers: usize) -> Runner {
    Box::new(move |ctx, budget| {
        let names = subscriptions(ctx, PGMB_TOPIC, consumers)?;
        let published = AtomicU64::new(0);
        let publishing = AtomicBool::new(true);
        let delivered = AtomicU64::new(0);
        let start = Instant::now();
        let result: Result<()> = std::thread::scope(|s| {
            let cons: Vec<_> = names
                .iter()
                .map(|sub| {
                    let (published, publishing, delivered) = (&published, &publishing, &delivered);
                    s.spawn(move || -> Result<()> {
                        let mut read = 0;
                        loop {
                            // Read `published` only before the page: never stop short.
                            let done_publishing = !publishing.load(Ordering::SeqCst);
                            let target = published.load(Ordering::SeqCst);
                            let n = read_and_ack(ctx, sub)?;
                            read += n;
                            delivered.fetch_add(n, Ordering::Relaxed);
                            if n == 0 {
                                if done_publishing && read >= target {
                                    return Ok(());
                                }
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    })
                })
                .collect();
            let pubs: Vec<_> = (0..publishers)
                .map(|_| {
                    let (published, payload) = (&published, &payload);
                    s.spawn(move || -> Result<()> {
                        loop {
                            let k = budget.take(batch);
                            if k == 0 {
                                return Ok(());
                            }
                            ctx.broker.publish_batch(
                                (0..k).map(|_| NewEvent::new(PGMB_TOPIC, payload.clone())),
                            )?;
                            published.fetch_add(k, Ordering::SeqCst);
                            budget.done(k);
                        }
                    })
                })
                .collect();
            let published = join_all(pubs, "publisher");
            publishing.store(false, Ordering::SeqCst);
            published.and(join_all(cons, "consumer"))
        });
        result?;
        let elapsed = start.elapsed();
        let deliveries = delivered.load(Ordering::Relaxed);
        Ok(Sample::new(published.load(Ordering::SeqCst), elapsed)
            .with("deliveries_per_s", per_s(deliveries, elapsed)))
    })
}
