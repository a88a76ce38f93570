//! Job queue workloads (module `queue`). The raw side is measured now; the pgbroker side of
//! each is a hook below that returns `Side::Pending` until the queue module lands.
//!
//! HOOK (queue): when `Broker::enqueue` / `enqueue_batch` and SQL `pgbroker.claim(queue,
//! worker, max, lease)` / `pgbroker.complete(..)` exist, replace each `pending()` with
//! `Side::Run(..)` doing the same work through pgbroker:
//! - `enqueue_single_t1/t4`: `ctx.broker.enqueue(QUEUE, &payload)` per job on N threads;
//! - `enqueue_batch_100/10000`: `ctx.broker.enqueue_batch(QUEUE, &batch)`;
//! - `claim_complete_bK_tN`: a `seed` that enqueues through pgbroker, then N workers loop
//!   `claim(QUEUE, worker, K, lease)` + `complete(..)` until the queue is empty;
//!
//! and truncate `pgbroker.jobs` in `tables::truncate` for them.

use serde_json::Value;

use super::harness::{Ctx, Ratio, Seed, Side, Workload};
use super::raw;
use super::tables::{self, Target};
use super::{Options, Result};

const QUEUE: &str = "bench";

fn pending() -> Side {
    Side::Pending { module: "queue" }
}

fn job() -> Value {
    serde_json::json!({"email": "user@example.com", "template": "welcome"})
}

fn seed_jobs(ctx: &Ctx, n: u64) -> Result<()> {
    tables::seed(ctx, Target::Jobs, QUEUE, &job(), n)
}

pub fn workloads(o: &Options) -> Vec<Workload> {
    let single = |name, threads| Workload {
        name,
        about: "enqueue one job per transaction (raw: INSERT into a jobs table)",
        threads,
        messages: o.messages,
        bounded: false,
        seed: None,
        ratio: Ratio::Throughput,
        raw: raw::insert_single(Target::Jobs, QUEUE, job(), threads),
        pgbroker: pending(),
    };
    let batch = |name, size| Workload {
        name,
        about: "enqueue a batch per call (raw: the faster of multi-row INSERT and binary COPY)",
        threads: 1,
        messages: o.messages,
        bounded: false,
        seed: None,
        ratio: Ratio::Throughput,
        raw: raw::insert_batch(Target::Jobs, QUEUE, job(), size),
        pgbroker: pending(),
    };
    let claim = |name, size, workers| Workload {
        name,
        about: "claim and complete jobs until the queue is empty (raw: DELETE ... WHERE id IN \
                (SELECT ... FOR UPDATE SKIP LOCKED LIMIT k) RETURNING)",
        threads: workers,
        messages: o.messages,
        bounded: true,
        seed: Some(seed_jobs as Seed),
        ratio: Ratio::Throughput,
        raw: raw::claim_delete(QUEUE, size, workers),
        pgbroker: pending(),
    };
    vec![
        single("enqueue_single_t1", 1),
        single("enqueue_single_t4", o.threads),
        batch("enqueue_batch_100", 100),
        batch("enqueue_batch_10000", 10_000),
        claim("claim_complete_b1_t1", 1, 1),
        claim("claim_complete_b1_t4", 1, o.threads),
        claim("claim_complete_b100_t1", 100, 1),
        claim("claim_complete_b100_t4", 100, o.threads),
    ]
}
