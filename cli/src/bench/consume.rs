//! A reliable log consumer on the worker pool (module `topic`): what a subscriber really
//! runs (dedicated connection, advisory lock, handler on a pool thread, ack after success),
//! reading the seeded log in batches of 100 (raw: a plain cursor read loop, no acks).

use std::sync::atomic::Ordering;

use pgbroker::topic::{ConsumerOptions, StartAt};

use super::harness::{until_handled, Ctx, Ratio, Runner, Workload};
use super::log;
use super::raw::{self, READ_BATCH};
use super::{Options, Result};

const TOPIC: &str = "pgbroker_bench.consume";
const SUBSCRIPTION: &str = "pgbroker_bench-consume";

fn seed_raw(ctx: &Ctx, n: u64) -> Result<()> {
    log::seed_raw_topic(ctx, TOPIC, n)
}

/// The same rows through pgbroker, and the subscription, starting at the beginning.
fn seed_pgbroker(ctx: &Ctx, n: u64) -> Result<()> {
    log::seed_pgbroker_topic(ctx, TOPIC, n)?;
    ctx.broker
        .subscription(SUBSCRIPTION)
        .pattern(TOPIC)
        .start_at(StartAt::Beginning)
        .save()?;
    Ok(())
}

pub fn workloads(o: &Options) -> Vec<Workload> {
    vec![Workload {
        name: "log_consume_sub1",
        about: "a reliable consumer on the worker pool reads the log in batches of 100 and acks \
                each (raw: a cursor read loop of pages of 100)",
        threads: 1,
        messages: o.messages,
        bounded: true,
        seed: Some(seed_raw),
        seed_pgbroker: Some(seed_pgbroker),
        ratio: Ratio::Throughput,
        peer: None,
        raw: raw::log_read(1),
        pgbroker: consume(),
    }]
}

/// A worker pool with one reliable subscription handler counting events; stopped once the
/// budget's events are handled.
fn consume() -> Runner {
    Box::new(move |ctx, budget| {
        until_handled(budget, "log_consume_sub1", |handled| {
            ctx.broker
                .worker_pool()
                .threads(2)
                .subscription_with(
                    SUBSCRIPTION,
                    ConsumerOptions::new().batch_size(READ_BATCH as usize),
                    move |batch| {
                        handled.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        Ok(())
                    },
                )
                .start()
        })
    })
}
