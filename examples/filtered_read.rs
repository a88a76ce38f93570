//! Reading a filtered subscription: how fast a read scans the log when a subscription's
//! filter or condition matches 1 % of 1 000 000 events, with and without an index that serves
//! the condition, against an unfiltered read of the same log and a raw SQL scan.
//!
//! Run with `cargo run --release --example filtered_read` (a durable throwaway cluster: fsync
//! on; set `FILTERED_READ_EVENTS` for another size). Not a test: figures vary run to run.

use std::time::{Duration, Instant};

use pgbroker::topic::StartAt;
use pgbroker::Broker;
use pgbroker_testing::TempPostgres;
use serde_json::json;

const BATCH: usize = 1_000;

/// Reads the whole subscription, acknowledging as it goes: (events delivered, time).
fn drain(broker: &Broker, sub: &str) -> Result<(usize, Duration), pgbroker::Error> {
    let t = Instant::now();
    let mut n = 0;
    loop {
        let b = broker.read(sub, BATCH)?;
        n += b.len();
        if let Some(p) = b.ack_position() {
            broker.ack(sub, p)?;
        }
        if b.len() < BATCH {
            return Ok((n, t.elapsed()));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: i64 = std::env::var("FILTERED_READ_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let pg = TempPostgres::builder().durable(true).start()?;
    let broker = Broker::connect(&pg.url())?;
    broker.install()?;
    let mut c = broker.conn()?;
    // 100 customers: customer 7 is 1 % of the events.
    c.execute(
        "INSERT INTO pgbroker.events (topic, payload)
         SELECT 'orders.created', jsonb_build_object('customer', g % 100, 'n', g, 'total', g % 997)
           FROM generate_series(1, $1::int8) g",
        &[&total],
    )?;
    c.batch_execute("VACUUM ANALYZE pgbroker.events")?;
    println!("{total} events, 1 % of them for customer 7 (durable cluster, fsync on)\n");

    let rate = |n: i64, d: Duration| n as f64 / d.as_secs_f64();
    let report = |what: &str, delivered: usize, d: Duration| {
        println!(
            "{what:<58} {delivered:>8} delivered  {:>7.2} s  {:>11.0} events scanned/s",
            d.as_secs_f64(),
            rate(total, d)
        );
    };

    // Raw: the whole log in (tx, id) order, in pages, walking the (tx, id) index as the read
    // query does (the same planner settings).
    c.batch_execute("SET enable_sort = off; SET enable_bitmapscan = off; SET jit = off")?;
    let t = Instant::now();
    let (mut tx, mut id, mut rows) = ("0".to_owned(), 0i64, 0usize);
    loop {
        let page = c.query(
            "SELECT e.tx::text AS cursor_tx, e.id, e.payload FROM pgbroker.events e
              WHERE (e.tx, e.id) > ($1::text::xid8, $2) ORDER BY e.tx, e.id LIMIT 1000",
            &[&tx, &id],
        )?;
        rows += page.len();
        match page.last() {
            Some(r) => (tx, id) = (r.get(0), r.get(1)),
            None => break,
        }
    }
    report("raw SQL: every event, pages of 1000", rows, t.elapsed());

    let subscribe = |name: &str| {
        broker
            .subscription(name)
            .pattern("orders.#")
            .start_at(StartAt::Beginning)
    };
    subscribe("all").save()?;
    let (n, d) = drain(&broker, "all")?;
    report("unfiltered subscription", n, d);

    subscribe("filter").filter(json!({"customer": 7})).save()?;
    let (n, d) = drain(&broker, "filter")?;
    report("filter {\"customer\": 7}", n, d);

    let cond = "(payload->>'customer')::int = (params->>'customer')::int";
    subscribe("cond")
        .condition(cond, json!({"customer": 7}))
        .save()?;
    let (n, d) = drain(&broker, "cond")?;
    report("condition, no index", n, d);

    c.batch_execute(
        "CREATE INDEX events_customer ON pgbroker.events (((payload->>'customer')::int), tx, id);
         ANALYZE pgbroker.events",
    )?;
    subscribe("cond-indexed")
        .condition(cond, json!({"customer": 7}))
        .save()?;
    let (n, d) = drain(&broker, "cond-indexed")?;
    report("condition, expression index (customer, tx, id)", n, d);
    subscribe("filter-indexed")
        .filter(json!({"customer": 7}))
        .save()?;
    let (n, d) = drain(&broker, "filter-indexed")?;
    report("filter, same index (not usable by @>)", n, d);
    Ok(())
}
