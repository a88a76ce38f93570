//! The workloads of the side-by-side comparison with PGMQ, pg-boss, graphile-worker, PgQ and
//! RabbitMQ (issue #14), under the same names, each against its raw PostgreSQL baseline in
//! the same run: lease-mode jobs on the worker pool (batched with 1 and 4 threads, one at a
//! time), a subscription consumer with `batch_size(1)` on 1 and 4 partitions, and the
//! end-to-end latency of events and jobs at 200 per second. Meant for a durable cluster
//! (`--durable`), where each commit is an fsync; every report names its mode. The lease-mode
//! workloads and the one-at-a-time ones also run a peer's SQL as a third side
//! (`peer_models.rs`): PGMQ's batched, graphile-worker's one at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbroker::queue::QueueOptions;
use pgbroker::topic::{ConsumerOptions, StartAt};

use super::harness::{arrivals, parallel, until_handled, Ctx, Ratio, Runner, Seed, Workload};
use super::notify::{paced, raw_latency_of};
use super::queue::{job, seed_jobs, seed_pgbroker_jobs};
use super::{log, Options, Result};
use super::{peer_models, raw};

/// The bench's queue (`tables::BENCH_QUEUE`).
const QUEUE: &str = super::tables::BENCH_QUEUE;
const TOPIC: &str = "pgbroker_bench.one";
const SUBSCRIPTION: &str = "pgbroker_bench-one";
const LATENCY_TOPIC: &str = "pgbroker_bench.latency";
const LATENCY_SUBSCRIPTION: &str = "pgbroker_bench-latency";

/// The raw side of the latency workloads: a row written and a NOTIFY sent in one transaction
/// (what a durable message with a wake-up costs at least: on a durable cluster, a commit that
/// waits for the WAL flush), received by a LISTENing connection. `notify_latency` measures
/// NOTIFY alone.
const RAW_DURABLE_NOTIFY: &str = "WITH m AS (
        INSERT INTO pgbroker_bench.jobs (queue, payload) VALUES ('pgbroker_bench', '{}')
        RETURNING id)
    SELECT pg_notify($1, $2) FROM m";

/// The rate of the latency workloads, as in the comparison.
const LATENCY_RATE: u32 = 200;

/// How long the latency runs wait for the last message after the last send.
const DRAIN: Duration = Duration::from_secs(10);

pub fn workloads(o: &Options) -> Vec<Workload> {
    let lease = |name, about, threads: usize, batch: u64, concurrency: usize, peer| Workload {
        name,
        about,
        threads,
        messages: o.messages,
        bounded: true,
        seed: Some(seed_jobs as Seed),
        seed_pgbroker: Some(seed_pgbroker_jobs as Seed),
        ratio: Ratio::Throughput,
        peer: Some(peer),
        raw: raw::claim_delete(QUEUE, batch, threads),
        pgbroker: lease_pool(threads, concurrency),
    };
    let one = |name, partitions: u32| Workload {
        name,
        about: "a subscription consumer with batch_size(1) on the worker pool, one consumer \
                per partition (raw: per partition, read one event after a cursor, then store \
                the cursor, each its own transaction; peer: graphile-worker running one job \
                at a time per worker, as many workers as partitions)",
        threads: partitions as usize,
        messages: o.messages,
        bounded: true,
        seed: Some(seed_raw_one),
        seed_pgbroker: Some(if partitions == 1 {
            seed_pgbroker_one_p1 as Seed
        } else {
            seed_pgbroker_one_p4 as Seed
        }),
        ratio: Ratio::Throughput,
        peer: Some(peer_models::graphile(partitions as usize)),
        raw: raw_read_one(partitions),
        pgbroker: subscription_one(partitions),
    };
    // The latency runs are fixed-rate (a second per 200 messages): a fifth of --messages,
    // 10 s at most.
    let latency_messages = (o.messages / 5).clamp(1, u64::from(LATENCY_RATE) * 10);
    let latency = |name, about, pgbroker| Workload {
        name,
        about,
        threads: 1,
        messages: latency_messages,
        bounded: true,
        seed: None,
        seed_pgbroker: None,
        ratio: Ratio::Latency,
        peer: None,
        raw: raw_latency_of(LATENCY_RATE, RAW_DURABLE_NOTIFY),
        pgbroker,
    };
    vec![
        lease(
            "lease_batched_t1",
            "lease-mode jobs on a worker pool of 1 thread, 100 claimed ahead (raw: claim-and-\
             delete 100 per statement, 1 client; peer: PGMQ's read 100 + delete, 1 client)",
            1,
            100,
            100,
            peer_models::pgmq(100, 1),
        ),
        lease(
            "lease_batched_t4",
            "lease-mode jobs on a worker pool of 4 threads, 100 claimed ahead per thread (raw: \
             claim-and-delete 100 per statement, 4 clients; peer: PGMQ's read 100 + delete, 4 \
             clients)",
            o.threads,
            100,
            100 * o.threads,
            peer_models::pgmq(100, o.threads),
        ),
        lease(
            "lease_one_t1",
            "lease-mode jobs on a worker pool of 1 thread, one at a time (raw: claim-and-delete \
             1 per statement, 1 client; peer: graphile-worker's getJob + completeJob, 1 worker)",
            1,
            1,
            1,
            peer_models::graphile(1),
        ),
        one("subscription_one_p1", 1),
        one("subscription_one_p4", 4),
        latency(
            "event_latency_200",
            "publish -> subscription handler at 200/s with one idle consumer; p50/p99/max \
             (raw: INSERT + NOTIFY in one transaction -> LISTEN)",
            event_latency(),
        ),
        latency(
            "job_latency_200",
            "enqueue -> lease-mode job handler at 200/s with one idle worker; p50/p99/max \
             (raw: INSERT + NOTIFY in one transaction -> LISTEN)",
            job_latency(),
        ),
    ]
}

/// Lease-mode jobs: a worker pool of `threads` threads runs the queue with `concurrency`
/// jobs claimed ahead and running at once.
fn lease_pool(threads: usize, concurrency: usize) -> Runner {
    Box::new(move |ctx, budget| {
        until_handled(budget, "lease-mode pool", |handled| {
            ctx.broker
                .worker_pool()
                .threads(threads)
                .queue_with(
                    QueueOptions::new(QUEUE)
                        .concurrency(concurrency)
                        .lease(Duration::from_secs(600)),
                    move |_job| {
                        handled.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    },
                )
                .start()
        })
    })
}

fn seed_raw_one(ctx: &Ctx, n: u64) -> Result<()> {
    log::seed_raw_topic(ctx, TOPIC, n)
}

fn seed_pgbroker_one(ctx: &Ctx, n: u64, partitions: u32) -> Result<()> {
    log::seed_pgbroker_topic(ctx, TOPIC, n)?;
    ctx.broker
        .subscription(SUBSCRIPTION)
        .pattern(TOPIC)
        .partitions(partitions)
        .start_at(StartAt::Beginning)
        .save()?;
    Ok(())
}

fn seed_pgbroker_one_p1(ctx: &Ctx, n: u64) -> Result<()> {
    seed_pgbroker_one(ctx, n, 1)
}

fn seed_pgbroker_one_p4(ctx: &Ctx, n: u64) -> Result<()> {
    seed_pgbroker_one(ctx, n, 4)
}

/// One consumer per partition, `batch_size(1)`, on a pool of one thread per partition.
fn subscription_one(partitions: u32) -> Runner {
    Box::new(move |ctx, budget| {
        until_handled(budget, "batch_size(1) consumer", |handled| {
            ctx.broker
                .worker_pool()
                .threads(partitions as usize)
                .subscription_with(
                    SUBSCRIPTION,
                    ConsumerOptions::new().batch_size(1),
                    move |batch| {
                        handled.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        Ok(())
                    },
                )
                .start()
        })
    })
}

/// The raw one-at-a-time consumer: per partition (`id % partitions`), a client reads the next
/// event after its cursor below the horizon, then stores the cursor; each statement commits.
fn raw_read_one(partitions: u32) -> Runner {
    Box::new(move |ctx, budget| {
        let mut c = ctx.client()?;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS pgbroker_bench.cursors (
                 partition integer PRIMARY KEY, tx xid8 NOT NULL, id bigint NOT NULL);
             TRUNCATE pgbroker_bench.cursors",
        )?;
        for p in 0..partitions as i32 {
            c.execute(
                "INSERT INTO pgbroker_bench.cursors VALUES ($1, '0', 0)",
                &[&p],
            )?;
        }
        let target = budget.take(u64::MAX);
        let parts = i64::from(partitions);
        let next = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(0));
        let sample = parallel(ctx, partitions as usize, budget, |c, budget| {
            let me = next.fetch_add(1, Ordering::Relaxed) as i64;
            // The planner settings pgbroker's consumers use (src/topic/read.rs).
            c.batch_execute("SET enable_sort = off; SET enable_bitmapscan = off; SET jit = off")?;
            let filter = if parts == 1 {
                String::new()
            } else {
                format!("AND id % {parts} = {me}")
            };
            let read = c.prepare(&format!(
                "SELECT tx::text AS cursor_tx, id FROM pgbroker_bench.events
                  WHERE (tx, id) > ($1::text::xid8, $2)
                    AND tx < pg_snapshot_xmin(pg_current_snapshot()) {filter}
                  ORDER BY tx, id LIMIT 1"
            ))?;
            let ack = c.prepare(
                "UPDATE pgbroker_bench.cursors SET tx = $2::text::xid8, id = $3
                  WHERE partition = $1",
            )?;
            let (mut tx, mut id) = ("0".to_string(), 0i64);
            let mut done = 0;
            loop {
                if total.load(Ordering::Relaxed) >= target || budget.expired() {
                    return Ok(done);
                }
                let rows = c.query(&read, &[&tx, &id])?;
                let Some(row) = rows.first() else {
                    return Ok(done);
                };
                tx = row.get(0);
                id = row.get(1);
                c.execute(&ack, &[&(me as i32), &tx, &id])?;
                total.fetch_add(1, Ordering::Relaxed);
                budget.done(1);
                done += 1;
            }
        })?;
        Ok(sample)
    })
}

/// `Broker::publish` at 200/s to a topic whose one reliable consumer idles between events.
fn event_latency() -> Runner {
    Box::new(move |ctx, budget| {
        ctx.broker
            .subscription(LATENCY_SUBSCRIPTION)
            .pattern(LATENCY_TOPIC)
            .start_at(StartAt::End)
            .save()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let pool = ctx
            .broker
            .worker_pool()
            .threads(2)
            .subscription(LATENCY_SUBSCRIPTION, move |batch| {
                let at = Instant::now();
                for e in batch.events() {
                    if let Some(seq) = e.payload()["seq"].as_u64() {
                        let _ = tx.send((seq, at));
                    }
                }
                Ok(())
            })
            .start()?;
        // Let the consumer go idle (registered as waiting) first.
        std::thread::sleep(Duration::from_millis(300));
        let result = paced(
            budget,
            LATENCY_RATE,
            |seq| {
                ctx.broker
                    .publish(LATENCY_TOPIC, &serde_json::json!({ "seq": seq }))?;
                Ok(())
            },
            |n| arrivals(&rx, n, DRAIN),
        );
        pool.shutdown()?;
        ctx.broker.unsubscribe(LATENCY_SUBSCRIPTION)?;
        result
    })
}

/// `Broker::enqueue` at 200/s to a queue whose one lease-mode worker idles between jobs.
fn job_latency() -> Runner {
    Box::new(move |ctx, budget| {
        let (tx, rx) = crossbeam_channel::unbounded();
        let pool = ctx
            .broker
            .worker_pool()
            .threads(2)
            .queue(QUEUE, 1, move |j| {
                let at = Instant::now();
                if let Some(seq) = j.payload()["seq"].as_u64() {
                    let _ = tx.send((seq, at));
                }
                Ok(())
            })
            .start()?;
        std::thread::sleep(Duration::from_millis(300));
        let payload = job();
        let result = paced(
            budget,
            LATENCY_RATE,
            |seq| {
                let mut p = payload.clone();
                p["seq"] = seq.into();
                ctx.broker.enqueue(QUEUE, &p)?;
                Ok(())
            },
            |n| arrivals(&rx, n, DRAIN),
        );
        pool.shutdown()?;
        result
    })
}
