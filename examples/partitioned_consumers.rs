//! A partitioned subscription spread over two consumers (standing for two processes), each
//! assigned two of the four partitions; events of one key always go to the same partition, in
//! order.
//!
//! Run with `cargo run --example partitioned_consumers` (uses `DATABASE_URL`, or starts a
//! throwaway PostgreSQL when it is unset).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgbroker::topic::{ConsumerOptions, NewEvent, StartAt};
use pgbroker::{Broker, TempPostgres};
use serde_json::json;

fn main() -> pgbroker::Result<()> {
    let (url, _server) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let pg = TempPostgres::start()?;
            (pg.url(), Some(pg))
        }
    };
    let broker = Broker::connect(&url)?;
    broker.install()?;
    broker
        .subscription("example-shipping")
        .pattern("orders.#")
        .partitions(4)
        .start_at(StartAt::Beginning)
        .save()?;

    // (consumer, partition) -> events handled
    let handled: Arc<Mutex<HashMap<(usize, u32), usize>>> = Arc::default();
    let pools = (0..2)
        .map(|consumer| {
            let h = handled.clone();
            broker
                .worker_pool()
                .threads(2)
                .subscription_with(
                    "example-shipping",
                    // Each consumer is assigned half the partitions. Without an assignment
                    // the first to start takes all and the other stands by to take over.
                    ConsumerOptions::new()
                        .only_partitions((0..4).filter(move |p| *p as usize % 2 == consumer))
                        .lock_retry(Duration::from_millis(200)),
                    move |batch| {
                        *h.lock()
                            .unwrap()
                            .entry((consumer, batch.partition()))
                            .or_default() += batch.len();
                        Ok(())
                    },
                )
                .start()
        })
        .collect::<pgbroker::Result<Vec<_>>>()?;

    let events = (0..1000).map(|i| {
        NewEvent::new("orders.created", json!({"order": i})).key(format!("customer-{}", i % 50))
    });
    broker.publish_batch(events)?;

    let deadline = Instant::now() + Duration::from_secs(20);
    while handled.lock().unwrap().values().sum::<usize>() < 1000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pool in pools {
        pool.shutdown()?;
    }
    let mut rows: Vec<_> = handled.lock().unwrap().clone().into_iter().collect();
    rows.sort();
    for ((consumer, partition), n) in rows {
        println!("consumer {consumer} partition {partition}: {n} events");
    }
    broker.unsubscribe("example-shipping")?;
    Ok(())
}
