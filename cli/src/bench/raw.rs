//! The raw PostgreSQL side: the same work as pgbroker, as plain SQL on plain connections.
//! These numbers are the limit pgbroker is measured against.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgbroker::postgres::Client;
use serde_json::Value;

use super::harness::{join_all, parallel, per_s, Runner, Sample};
use super::tables::{copy_rows, Target};
use super::Result;

/// Rows per budget claim for one-row-per-transaction loops (keeps the counter cold).
pub const CHUNK: u64 = 64;

/// Rows per read, as a consumer fetching a batch would.
pub const READ_BATCH: i64 = 100;

/// One INSERT per transaction, on `threads` connections.
pub fn insert_single(target: Target, key: &'static str, payload: Value, threads: usize) -> Runner {
    Box::new(move |ctx, budget| {
        let sql = format!(
            "INSERT INTO {} ({}, payload) VALUES ($1, $2)",
            target.table(),
            target.key_column()
        );
        parallel(ctx, threads, budget, |c, budget| {
            let stmt = c.prepare(&sql)?;
            let mut done = 0;
            loop {
                let k = budget.take(CHUNK);
                if k == 0 {
                    return Ok(done);
                }
                for _ in 0..k {
                    c.execute(&stmt, &[&key, &payload])?;
                }
                budget.done(k);
                done += k;
            }
        })
    })
}

/// `batch` rows per call, one thread, alternating multi-row INSERT and binary COPY call by
/// call (so both see the same table size and cache). The side's rate is the faster of the
/// two (the limit); both are reported (`insert_per_s`, `copy_per_s`) when both ran.
pub fn insert_batch(target: Target, key: &'static str, payload: Value, batch: u64) -> Runner {
    Box::new(move |ctx, budget| {
        let mut c = ctx.client()?;
        let mut statements = HashMap::new();
        let (mut ins_units, mut ins_time) = (0, Duration::ZERO);
        let (mut copy_units, mut copy_time) = (0, Duration::ZERO);
        for call in 0u64.. {
            let k = budget.take(batch);
            if k == 0 {
                break;
            }
            let t = Instant::now();
            if call % 2 == 1 {
                copy_rows(&mut c, target, key, &payload, k)?;
                copy_time += t.elapsed();
                copy_units += k;
            } else {
                multirow_insert(&mut c, &mut statements, target, key, &payload, k)?;
                ins_time += t.elapsed();
                ins_units += k;
            }
            budget.done(k);
        }
        let (ins, copy) = (per_s(ins_units, ins_time), per_s(copy_units, copy_time));
        let rate = if copy_units > 0 { ins.max(copy) } else { ins };
        // Every row written counts; the time is what the faster way would have taken.
        let units = ins_units + copy_units;
        let mut best = Sample::new(
            units,
            Duration::from_secs_f64(units as f64 / rate.max(1e-9)),
        );
        if ins_units > 0 {
            best = best.with("insert_per_s", ins);
        }
        if copy_units > 0 {
            best = best.with("copy_per_s", copy);
        }
        Ok(best)
    })
}

fn multirow_insert(
    c: &mut Client,
    statements: &mut HashMap<u64, pgbroker::postgres::Statement>,
    target: Target,
    key: &str,
    payload: &Value,
    n: u64,
) -> Result<()> {
    let stmt = match statements.get(&n) {
        Some(s) => s.clone(),
        None => {
            let values: Vec<String> = (0..n)
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "INSERT INTO {} ({}, payload) VALUES {}",
                target.table(),
                target.key_column(),
                values.join(", ")
            );
            let s = c.prepare(&sql)?;
            statements.insert(n, s.clone());
            s
        }
    };
    let mut params: Vec<&(dyn pgbroker::postgres::types::ToSql + Sync)> =
        Vec::with_capacity(2 * n as usize);
    for _ in 0..n {
        params.push(&key);
        params.push(payload);
    }
    c.execute(&stmt, &params)?;
    Ok(())
}

/// Claim-and-complete in one statement: DELETE the next `batch` available jobs with
/// `FOR UPDATE SKIP LOCKED`, on `workers` connections, until the seeded jobs run out.
///
/// `id = ANY(ARRAY(subquery))` rather than `id IN (subquery)`: a prepared statement's generic
/// plan guesses `LIMIT $2` at 10% of the table and hash-joins against a sequential scan of
/// it (16 ms instead of 0.2 ms per claim at 20 000 jobs); the array form always probes the
/// primary key.
pub fn claim_delete(queue: &'static str, batch: u64, workers: usize) -> Runner {
    Box::new(move |ctx, budget| {
        parallel(ctx, workers, budget, |c, budget| {
            let stmt = c.prepare(
                "DELETE FROM pgbroker_bench.jobs WHERE id = ANY (ARRAY(
                     SELECT id FROM pgbroker_bench.jobs
                      WHERE queue = $1 AND state = 'available' AND run_at <= now()
                      ORDER BY priority DESC, run_at, id
                      FOR UPDATE SKIP LOCKED LIMIT $2))
                 RETURNING id, payload",
            )?;
            let mut done = 0;
            loop {
                let k = budget.take(batch);
                if k == 0 {
                    return Ok(done);
                }
                let rows = c.query(&stmt, &[&queue, &(k as i64)])?;
                if rows.is_empty() {
                    return Ok(done);
                }
                budget.done(rows.len() as u64);
                done += rows.len() as u64;
            }
        })
    })
}

/// A log cursor: the last `(tx, id)` delivered.
// The selected `tx` is aliased: named `tx`, the bigint output column would win over the
// table's column in ORDER BY, and the read would sort the whole range instead of walking
// the (tx, id) index.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    tx: i64,
    id: i64,
}

const READ_SQL: &str = "SELECT tx::text::bigint AS cursor_tx, id, topic, payload
     FROM pgbroker_bench.events
     WHERE (tx, id) > ($1::bigint::text::xid8, $2)
       AND tx < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY tx, id LIMIT $3";

/// Reads one page after `cursor`; returns how many rows and moves the cursor.
fn read_page(
    c: &mut Client,
    stmt: &pgbroker::postgres::Statement,
    cursor: &mut Cursor,
) -> Result<u64> {
    let rows = c.query(stmt, &[&cursor.tx, &cursor.id, &READ_BATCH])?;
    if let Some(last) = rows.last() {
        cursor.tx = last.get(0);
        cursor.id = last.get(1);
    }
    Ok(rows.len() as u64)
}

/// `subscriptions` readers, each with its own cursor, read the whole seeded log by index
/// range scans in (tx, id) order below the horizon. Units are rows delivered (all readers).
pub fn log_read(subscriptions: usize) -> Runner {
    Box::new(move |ctx, budget| {
        parallel(ctx, subscriptions, budget, |c, budget| {
            let stmt = c.prepare(READ_SQL)?;
            let mut cursor = Cursor::default();
            let mut done = 0;
            while !budget.expired() {
                let n = read_page(c, &stmt, &mut cursor)?;
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

/// PGMB's benchmark shape: `publishers` threads write batches of `batch` messages of
/// `payload` while `consumers` readers, each with its own cursor, read everything. Units are
/// messages published; the clock stops when every consumer has read every message.
pub fn publish_consume(
    topic: &'static str,
    payload: Value,
    batch: u64,
    publishers: usize,
    consumers: usize,
) -> Runner {
    Box::new(move |ctx, budget| {
        let published = AtomicU64::new(0);
        let publishing = AtomicBool::new(true);
        let delivered = AtomicU64::new(0);
        let mut pubs = (0..publishers)
            .map(|_| ctx.client())
            .collect::<Result<Vec<_>>>()?;
        let mut cons = (0..consumers)
            .map(|_| ctx.client())
            .collect::<Result<Vec<_>>>()?;
        let start = Instant::now();
        let result: Result<()> = std::thread::scope(|s| {
            let cons_handles: Vec<_> = cons
                .iter_mut()
                .map(|c| {
                    let (published, publishing, delivered) = (&published, &publishing, &delivered);
                    s.spawn(move || -> Result<()> {
                        let stmt = c.prepare(READ_SQL)?;
                        let mut cursor = Cursor::default();
                        let mut read = 0;
                        loop {
                            // Read `published` only before the page: never stop short.
                            let done_publishing = !publishing.load(Ordering::SeqCst);
                            let target = published.load(Ordering::SeqCst);
                            let n = read_page(c, &stmt, &mut cursor)?;
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
            let pub_handles: Vec<_> = pubs
                .iter_mut()
                .map(|c| {
                    let (published, payload) = (&published, &payload);
                    s.spawn(move || -> Result<()> {
                        let mut statements = HashMap::new();
                        loop {
                            let k = budget.take(batch);
                            if k == 0 {
                                return Ok(());
                            }
                            multirow_insert(c, &mut statements, Target::Events, topic, payload, k)?;
                            published.fetch_add(k, Ordering::SeqCst);
                            budget.done(k);
                        }
                    })
                })
                .collect();
            let published = join_all(pub_handles, "publisher");
            publishing.store(false, Ordering::SeqCst);
            published.and(join_all(cons_handles, "consumer"))
        });
        result?;
        let elapsed = start.elapsed();
        let deliveries = delivered.load(Ordering::Relaxed);
        Ok(Sample::new(published.load(Ordering::SeqCst), elapsed)
            .with("deliveries_per_s", per_s(deliveries, elapsed)))
    })
}

/// A JSON payload of about `bytes` bytes.
pub fn payload_of(bytes: usize) -> Value {
    serde_json::json!({ "id": 1, "data": "x".repeat(bytes.saturating_sub(20)) })
}

/// The table watch's writes: one INSERT of a job row per transaction, on `threads` connections.
pub fn insert_single_job(threads: usize) -> Runner {
    Box::new(move |ctx, budget| {
        parallel(ctx, threads, budget, |c, budget| {
            let stmt =
                c.prepare("INSERT INTO pgbroker_bench.job (name, status) VALUES ($1, 'new')")?;
            let mut done = 0;
            loop {
                let k = budget.take(CHUNK);
                if k == 0 {
                    return Ok(done);
                }
                for i in 0..k {
                    c.execute(&stmt, &[&format!("job {}", done + i)])?;
                }
                budget.done(k);
                done += k;
            }
        })
    })
}
