//! Durable log workloads (module `topic`). The raw side is measured now; the pgbroker side
//! of each is a hook below that returns `Side::Pending` until the log module lands.
//!
//! HOOK (log): when `Broker::publish` / `publish_batch` / `subscribe` / `read` / `ack` exist,
//! replace each `pending()` with `Side::Run(..)` doing the same work through pgbroker:
//! - `publish_single_t1/t4`: `ctx.broker.publish(TOPIC, &payload)` per message on N threads
//!   (`harness::parallel`-like loop over `budget.take`);
//! - `publish_batch_100/10000`: `ctx.broker.publish_batch(TOPIC, &batch)`;
//! - `log_read_sub1/10`: a `seed` that publishes through pgbroker, then N subscriptions each
//!   `read(sub, READ_BATCH)` + `ack` until empty;
//! - `pgmb_1kb_b100_p5_c10`: 5 publishers `publish_batch` of 100 × 1 KB, 10 subscriptions.
//!
//! and truncate `pgbroker.events` in `tables::truncate` for them.

use serde_json::Value;

use super::harness::{Ratio, Side, Workload};
use super::raw::{self, payload_of};
use super::tables::{self, Target};
use super::{Options, Result};

const TOPIC: &str = "bench.orders";

fn pending() -> Side {
    Side::Pending { module: "log" }
}

fn order() -> Value {
    serde_json::json!({"order": 1, "status": "paid", "amount": 42.5})
}

fn seed_events(ctx: &super::harness::Ctx, n: u64) -> Result<()> {
    tables::seed(ctx, Target::Events, TOPIC, &order(), n)
}

pub fn workloads(o: &Options) -> Vec<Workload> {
    let single = |name, threads| Workload {
        name,
        about: "publish one event per transaction (raw: INSERT into an events table)",
        threads,
        messages: o.messages,
        bounded: false,
        seed: None,
        ratio: Ratio::Throughput,
        raw: raw::insert_single(Target::Events, TOPIC, order(), threads),
        pgbroker: pending(),
    };
    let batch = |name, size| Workload {
        name,
        about: "publish a batch per call (raw: the faster of multi-row INSERT and binary COPY)",
        threads: 1,
        messages: o.messages,
        bounded: false,
        seed: None,
        ratio: Ratio::Throughput,
        raw: raw::insert_batch(Target::Events, TOPIC, order(), size),
        pgbroker: pending(),
    };
    let read = |name, subs| Workload {
        name,
        about: "each subscription reads the whole log in (tx, id) order below the horizon \
                (raw: index range scans of 100 rows); units are rows delivered",
        threads: subs,
        messages: o.messages,
        bounded: true,
        seed: Some(seed_events as super::harness::Seed),
        ratio: Ratio::Throughput,
        raw: raw::log_read(subs),
        pgbroker: pending(),
    };
    vec![
        single("publish_single_t1", 1),
        single("publish_single_t4", o.threads),
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
            ratio: Ratio::Throughput,
            raw: raw::publish_consume(payload_of(1024), 100, 5, 10),
            pgbroker: pending(),
        },
    ]
}
