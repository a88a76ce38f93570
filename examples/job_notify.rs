//! A `job` table whose every change is notified as JSON by a trigger, and a listener
//! that logs them. With `--load N` it inserts N rows from several writer threads (one row per
//! transaction, like an application saving jobs one by one) and reports writes/s and notifications/s once all N arrived.
//!
//!     cargo run --example job_notify
//!     cargo run --release --example job_notify -- --load 100000 --writers 4

use std::time::{Duration, Instant};

use pgbroker::{Broker, Event, TableOp};
use pgbroker_testing::DevDatabase;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let load = flag(&args, "--load")?;
    let writers = flag(&args, "--writers")?.unwrap_or(4).max(1);

    let db = DevDatabase::from_env_or_temp()?;
    let broker = Broker::builder()
        .url(db.url())
        .pool_size(writers as u32 + 1)
        .build()?;
    broker.install()?;
    let mut conn = broker.conn()?;
    conn.batch_execute(
        "DROP TABLE IF EXISTS job;
         CREATE TABLE job (
             job_id          bigserial PRIMARY KEY,
             notification_id uuid NOT NULL DEFAULT gen_random_uuid(),
             status          text NOT NULL DEFAULT 'created',
             created_at      timestamptz NOT NULL DEFAULT now()
         );",
    )?;
    broker.watch_table("job", "job_channel", &TableOp::ALL)?;
    let listener = broker.listen("job_channel")?;

    match load {
        None => demo(&mut conn, &listener),
        Some(n) => run_load(&broker, &listener, n, writers),
    }
}

/// A few changes, each logged as it arrives.
fn demo(conn: &mut pgbroker::PooledConn, listener: &pgbroker::Listener) -> DynResult {
    conn.batch_execute(
        "INSERT INTO job (status) VALUES ('created'), ('created');
         UPDATE job SET status = 'running' WHERE job_id = 1;
         DELETE FROM job WHERE job_id = 2;",
    )?;
    while let Some(event) = listener.recv_timeout(Duration::from_millis(500))? {
        if let Event::Notification(n) = event {
            let change = n.json()?;
            let row = change.get("row").or_else(|| change.get("old"));
            let row = row.cloned().unwrap_or_default();
            println!(
                "{:<6} job_id={} status={} notification_id={}",
                change["op"].as_str().unwrap_or("?"),
                row["job_id"],
                row["status"],
                row["notification_id"]
            );
        }
    }
    Ok(())
}

type DynResult = Result<(), Box<dyn std::error::Error>>;

/// Inserts `n` rows from `writers` threads and waits for all `n` notifications.
fn run_load(broker: &Broker, listener: &pgbroker::Listener, n: u64, writers: u64) -> DynResult {
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let broker = broker.clone();
            let rows = n / writers + u64::from(w < n % writers);
            std::thread::spawn(move || -> pgbroker::Result<Instant> {
                let mut conn = broker.conn()?;
                let insert = conn.prepare("INSERT INTO job (status) VALUES ('created')")?;
                for _ in 0..rows {
                    conn.execute(&insert, &[])?;
                }
                Ok(Instant::now())
            })
        })
        .collect();
    let mut received = 0u64;
    while received < n {
        match listener.recv_timeout(Duration::from_secs(30))? {
            Some(Event::Notification(_)) => received += 1,
            Some(_) => {}
            None => return Err(format!("only {received} of {n} notifications arrived").into()),
        }
    }
    let notify_time = start.elapsed();
    let mut write_time = Duration::ZERO;
    for h in handles {
        let finished = h.join().map_err(|_| "writer thread panicked")??;
        write_time = write_time.max(finished - start);
    }
    println!("| rows | writers | time (write/notify) | writes/s | notifications/s |");
    println!("|-----:|--------:|--------------------:|---------:|----------------:|");
    println!(
        "| {n} | {writers} | {:.1} ms / {:.1} ms | {:.0} | {:.0} |",
        write_time.as_secs_f64() * 1e3,
        notify_time.as_secs_f64() * 1e3,
        n as f64 / write_time.as_secs_f64(),
        n as f64 / notify_time.as_secs_f64()
    );
    Ok(())
}

fn flag(args: &[String], name: &str) -> Result<Option<u64>, Box<dyn std::error::Error>> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => {
            let v = args.get(i + 1).ok_or(format!("{name} needs a number"))?;
            Ok(Some(
                v.parse()
                    .map_err(|_| format!("{name}: {v:?} is not a number"))?,
            ))
        }
    }
}
