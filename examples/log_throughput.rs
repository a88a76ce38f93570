//! Rough throughput of the event log on this machine: single publishes against raw single-row
//! INSERTs into a table of the same shape, publish_batch against raw binary COPY, and one
//! subscription consuming on the worker pool. Raw and pgbroker runs alternate in rounds so
//! that a noisy machine affects both alike.
//!
//! Run with `cargo run --release --example log_throughput` (uses `DATABASE_URL`, or starts a
//! throwaway PostgreSQL when it is unset). Not a benchmark suite: numbers vary run to run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbroker::postgres::binary_copy::BinaryCopyInWriter;
use pgbroker::postgres::types::Type;
use pgbroker::topic::{ConsumerOptions, NewEvent, StartAt};
use pgbroker::Broker;
use pgbroker_testing::DevDatabase;
use serde_json::json;

const ROUNDS: usize = 5;
const SINGLE: usize = 1_000;
const BATCH: usize = 20_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = DevDatabase::from_env_or_temp()?;
    let url = db.url().to_owned();
    let broker = Broker::connect(&url)?;
    broker.install()?;
    let mut conn = broker.conn()?;
    conn.batch_execute(
        "DROP TABLE IF EXISTS throughput_raw;
         CREATE TABLE throughput_raw (id bigserial, topic text NOT NULL, payload jsonb NOT NULL,
             headers jsonb, key text, tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
             created_at timestamptz NOT NULL DEFAULT now());
         CREATE INDEX ON throughput_raw (tx, id);",
    )?;
    broker
        .subscription("throughput")
        .pattern("orders.*")
        .start_at(StartAt::End)
        .save()?;
    let payload = json!({"order": 42, "amount": 1999, "currency": "EUR"});
    let none: Option<&str> = None;
    let nojson: Option<&serde_json::Value> = None;
    let raw = conn.prepare(
        "INSERT INTO throughput_raw (topic, payload, headers, key) VALUES ($1, $2, $3, $4) \
         RETURNING id",
    )?;

    let (mut raw_t, mut pub_t, mut copy_t, mut batch_t) = Default::default();
    for _ in 0..ROUNDS {
        // Interleaved one by one, so load spikes hit both alike.
        for _ in 0..SINGLE {
            let t = Instant::now();
            conn.query_one(&raw, &[&"orders.created", &payload, &nojson, &none])?;
            raw_t += t.elapsed();
            let t = Instant::now();
            broker.publish("orders.created", &payload)?;
            pub_t += t.elapsed();
        }

        let t = Instant::now();
        let mut tx = conn.transaction()?;
        let writer = tx.copy_in(
            "COPY throughput_raw (topic, payload, headers, key) FROM STDIN (FORMAT binary)",
        )?;
        let types = [Type::TEXT, Type::JSONB, Type::JSONB, Type::TEXT];
        let mut w = BinaryCopyInWriter::new(writer, &types);
        for _ in 0..BATCH {
            w.write(&[&"orders.created", &payload, &nojson, &none])?;
        }
        w.finish()?;
        tx.commit()?;
        copy_t += t.elapsed();
        let t = Instant::now();
        broker
            .publish_batch((0..BATCH).map(|_| NewEvent::new("orders.created", payload.clone())))?;
        batch_t += t.elapsed();
    }
    let rate = |n: usize, d: Duration| (ROUNDS * n) as f64 / d.as_secs_f64();
    println!(
        "single: raw INSERT {:.0}/s, publish {:.0}/s ({:.0}%)",
        rate(SINGLE, raw_t),
        rate(SINGLE, pub_t),
        100.0 * raw_t.as_secs_f64() / pub_t.as_secs_f64()
    );
    println!(
        "batch: raw COPY {:.0}/s, publish_batch {:.0}/s ({:.0}%)",
        rate(BATCH, copy_t),
        rate(BATCH, batch_t),
        100.0 * copy_t.as_secs_f64() / batch_t.as_secs_f64()
    );

    let total = ROUNDS * (SINGLE + BATCH);
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    let t = Instant::now();
    let pool = broker
        .worker_pool()
        .threads(2)
        .subscription_with(
            "throughput",
            ConsumerOptions::new().batch_size(1000),
            move |batch| {
                counter.fetch_add(batch.len(), Ordering::Relaxed);
                Ok(())
            },
        )
        .start()?;
    while n.load(Ordering::Relaxed) < total && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let read_rate = n.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    pool.shutdown()?;
    println!("consume: one subscription {read_rate:.0} events/s ({total} events)");
    broker.unsubscribe("throughput")?;
    conn.batch_execute("DROP TABLE throughput_raw")?;
    Ok(())
}
