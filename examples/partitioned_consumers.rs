//! A partitioned subscription shared by three consumer *processes*: they balance its six
//! partitions between them (two each), every event is handled exactly once, and events of one
//! key always go to the same partition and process, in order.
//!
//!     cargo run --example partitioned_consumers
//!
//! Uses `DATABASE_URL`, or starts a throwaway PostgreSQL when it is unset. The example re-runs
//! its own binary as `partitioned_consumers consumer NAME` for the consumers, which record what
//! they handle in a table (in the transaction that acknowledges it); it exits non-zero when an
//! event was lost or handled twice.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use pgbroker::topic::{ConsumerOptions, NewEvent, StartAt};
use pgbroker::Broker;
use pgbroker_testing::DevDatabase;
use serde_json::json;

const SUBSCRIPTION: &str = "example-shipping";
const PARTITIONS: u32 = 6;
const CONSUMERS: [&str; 3] = ["consumer-1", "consumer-2", "consumer-3"];
const EVENTS: usize = 3000;
const KEYS: usize = 60;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("consumer") {
        return consumer(&args[2]);
    }

    let db = DevDatabase::from_env_or_temp()?;
    let broker = Broker::connect(db.url())?;
    broker.install()?;
    let mut conn = broker.conn()?;
    conn.batch_execute(
        "DROP TABLE IF EXISTS example_handled;
         CREATE TABLE example_handled (
             n        bigserial PRIMARY KEY,
             event_id bigint NOT NULL,
             key      text NOT NULL,
             seq      integer NOT NULL,
             consumer text NOT NULL,
             part     integer NOT NULL);",
    )?;
    broker.unsubscribe(SUBSCRIPTION)?; // a clean start when DATABASE_URL is reused
    broker
        .subscription(SUBSCRIPTION)
        .pattern("orders.#")
        .partitions(PARTITIONS)
        .start_at(StartAt::End)
        .save()?;

    let mut consumers = Vec::new();
    for name in CONSUMERS {
        consumers.push(Consumer::spawn(name, db.url())?);
    }
    // Consumers started in any order, at any time, settle on two partitions each.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let members = broker.subscription_members(SUBSCRIPTION)?;
        let shares: Vec<usize> = members.iter().map(|m| m.partitions.len()).collect();
        if shares == [2, 2, 2] {
            for m in &members {
                println!("{} holds partitions {:?}", m.name, m.partitions);
            }
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("partitions never balanced: {shares:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let events = (0..EVENTS).map(|i| {
        NewEvent::new("orders.created", json!({"order": i, "seq": i / KEYS}))
            .key(format!("customer-{}", i % KEYS))
    });
    let published: Vec<i64> = broker
        .publish_batch(events)?
        .iter()
        .map(|id| id.get())
        .collect();
    println!("published {EVENTS} events with {KEYS} keys");

    let count = |conn: &mut pgbroker::PooledConn| -> Result<i64, Error> {
        Ok(conn
            .query_one("SELECT count(*) FROM example_handled", &[])?
            .get(0))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&mut conn)? < EVENTS as i64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500)); // a duplicate would show up now

    // Closing their stdin stops the consumers.
    let mut all_ok = true;
    for c in consumers {
        all_ok &= c.stop()?;
    }

    let rows = conn.query(
        "SELECT consumer, array_agg(DISTINCT part ORDER BY part), count(*)
           FROM example_handled GROUP BY consumer ORDER BY consumer",
        &[],
    )?;
    for r in &rows {
        let parts: Vec<i32> = r.get(1);
        println!(
            "{} handled partitions {parts:?}: {} events",
            r.get::<_, String>(0),
            r.get::<_, i64>(2)
        );
    }
    let mut handled: Vec<i64> = conn
        .query("SELECT event_id FROM example_handled", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    handled.sort_unstable();
    let mut want = published.clone();
    want.sort_unstable();
    let shared: i64 = conn
        .query_one(
            "SELECT count(*) FROM (SELECT part FROM example_handled GROUP BY part
                                    HAVING count(DISTINCT consumer) > 1) x",
            &[],
        )?
        .get(0);
    let out_of_order: i64 = conn
        .query_one(
            "SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY key ORDER BY n) AS prev
                                     FROM example_handled) x WHERE seq <= prev",
            &[],
        )?
        .get(0);

    broker.unsubscribe(SUBSCRIPTION)?;
    conn.batch_execute("DROP TABLE example_handled")?;

    if handled != want {
        let distinct: std::collections::BTreeSet<_> = handled.iter().collect();
        return Err(format!(
            "{} events handled ({} distinct) for {} published",
            handled.len(),
            distinct.len(),
            want.len()
        )
        .into());
    }
    if rows.len() != CONSUMERS.len() || shared != 0 || out_of_order != 0 || !all_ok {
        return Err(format!(
            "{} consumers did work, {shared} partitions went to several, {out_of_order} events \
             out of key order, consumers exited ok: {all_ok}",
            rows.len()
        )
        .into());
    }
    println!("every one of the {EVENTS} events was handled exactly once, each key in order");
    Ok(())
}

/// A consumer process, seen from the parent.
struct Consumer {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Consumer {
    fn spawn(name: &'static str, url: &str) -> Result<Consumer, Error> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["consumer", name])
            .env("DATABASE_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        match lines.next() {
            Some(Ok(line)) if line == "ready" => {}
            other => return Err(format!("{name} did not start: {other:?}").into()),
        }
        println!("{name} started (process {})", child.id());
        Ok(Consumer {
            name,
            child,
            stdin,
            lines,
        })
    }

    /// Closes its stdin, prints what it says, and tells whether it exited successfully.
    fn stop(mut self) -> Result<bool, Error> {
        drop(self.stdin);
        for line in self.lines {
            println!("{}: {}", self.name, line?);
        }
        Ok(self.child.wait()?.success())
    }
}

/// A consumer process: joins the subscription's members, records every event it handles in
/// the transaction that acknowledges it, and stops when its stdin closes.
fn consumer(name: &str) -> Result<(), Error> {
    let broker = Broker::connect(&std::env::var("DATABASE_URL")?)?;
    let member = name.to_owned();
    let pool = broker
        .worker_pool()
        .threads(2)
        .subscription_tx(
            SUBSCRIPTION,
            ConsumerOptions::new()
                .member_name(name)
                .batch_size(100)
                .lock_retry(Duration::from_millis(200))
                .poll_interval(Duration::from_millis(200)),
            move |batch, tx| {
                for e in batch.events() {
                    tx.execute(
                        "INSERT INTO example_handled (event_id, key, seq, consumer, part)
                         VALUES ($1, $2, ($3::jsonb ->> 'seq')::integer, $4, $5)",
                        &[
                            &e.id().get(),
                            &e.key(),
                            e.payload(),
                            &member,
                            &(batch.partition() as i32),
                        ],
                    )?;
                }
                Ok(())
            },
        )
        .start()?;
    println!("ready");
    std::io::stdout().flush()?;
    std::io::stdin().lines().for_each(drop); // until the parent closes it
    let stats = pool.shutdown()?;
    println!("stopped after {} batches", stats.handled);
    Ok(())
}
