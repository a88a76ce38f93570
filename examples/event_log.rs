//! The durable event log: publish, two subscriptions that each see every event, and replay.
//!
//! Run with `cargo run --example event_log` (uses `DATABASE_URL`, or starts a throwaway
//! PostgreSQL when it is unset).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbroker::topic::{NewEvent, Position, StartAt};
use pgbroker::Broker;
use pgbroker_testing::DevDatabase;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the temporary server (if any) alive until the end of main.
    let db = DevDatabase::from_env_or_temp()?;
    let url = db.url().to_owned();
    let broker = Broker::connect(&url)?;
    broker.install()?;

    // Two subscriptions: billing sees orders, audit sees everything.
    broker
        .subscription("example-billing")
        .pattern("orders.*")
        .start_at(StartAt::Beginning)
        .save()?;
    broker
        .subscription("example-audit")
        .pattern("#")
        .start_at(StartAt::Beginning)
        .save()?;

    // Publish: one at a time, with a key and headers, and a batch.
    broker.publish("orders.created", &json!({"order": 1, "amount": 30}))?;
    broker.publish_event(
        &NewEvent::new("orders.paid", json!({"order": 1}))
            .key("customer-7")
            .headers(json!({"trace-id": "abc123"})),
    )?;
    broker.publish_batch((2..=5).map(|i| NewEvent::new("users.signed_up", json!({"user": i}))))?;

    // Consume both subscriptions on a worker pool.
    let billing = Arc::new(AtomicUsize::new(0));
    let audit = Arc::new(AtomicUsize::new(0));
    let (b, a) = (billing.clone(), audit.clone());
    let pool = broker
        .worker_pool()
        .threads(2)
        .subscription("example-billing", move |batch| {
            for e in batch.events() {
                println!("billing  {} {} {}", e.position(), e.topic(), e.payload());
            }
            b.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        })
        .subscription("example-audit", move |batch| {
            for e in batch.events() {
                println!("audit    {} {} {}", e.position(), e.topic(), e.payload());
            }
            a.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        })
        .start()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (billing.load(Ordering::SeqCst) < 2 || audit.load(Ordering::SeqCst) < 6)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.shutdown()?;
    println!(
        "billing handled {}, audit handled {}",
        billing.load(Ordering::SeqCst),
        audit.load(Ordering::SeqCst)
    );

    // Replay: move audit's cursor back to the beginning and read again with the pull API.
    broker.seek("example-audit", 0, Position::BEGINNING)?;
    let batch = broker.read("example-audit", 100)?;
    println!("replayed {} events:", batch.len());
    for e in batch.events() {
        // A position prints as "<tx>-<id>" and parses back: an SSE Last-Event-ID.
        let pos: Position = e.position().to_string().parse()?;
        println!("  {pos} {}", e.topic());
    }
    if let Some(last) = batch.last_position() {
        broker.ack("example-audit", last)?;
    }

    broker.unsubscribe("example-billing")?;
    broker.unsubscribe("example-audit")?;
    Ok(())
}
