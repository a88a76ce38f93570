//! One producer, two consumer *processes*; both receive every notification, because
//! NOTIFY delivers to every listening session. A producer transaction that rolls back delivers
//! nothing.
//!
//!     cargo run --example fanout
//!
//! The example re-runs its own binary as `fanout consumer NAME COUNT` for the consumers.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use pgbroker::{Broker, Event, TableOp};
use pgbroker_testing::DevDatabase;

const MESSAGES: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("consumer") {
        return consumer(&args[2], args[3].parse()?);
    }

    let db = DevDatabase::from_env_or_temp()?;
    let broker = Broker::connect(db.url())?;
    broker.install()?;
    let mut conn = broker.conn()?;
    conn.batch_execute(
        "DROP TABLE IF EXISTS message;
         CREATE TABLE message (id serial PRIMARY KEY, body text NOT NULL);",
    )?;
    broker.watch_table("message", "messages", &[TableOp::Insert])?;

    // Start two consumer processes and wait until both listen.
    let mut consumers = Vec::new();
    for name in ["consumer-a", "consumer-b"] {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["consumer", name, &MESSAGES.to_string()])
            .env("DATABASE_URL", db.url())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        match lines.next() {
            Some(Ok(line)) if line == "ready" => {}
            other => return Err(format!("{name} did not start: {other:?}").into()),
        }
        consumers.push((name, child, lines));
    }

    // The producer: a rolled-back transaction first (delivers nothing), then MESSAGES rows.
    let mut tx = conn.transaction()?;
    tx.execute("INSERT INTO message (body) VALUES ('rolled back')", &[])?;
    tx.rollback()?;
    let insert = conn.prepare("INSERT INTO message (body) VALUES ($1)")?;
    for i in 0..MESSAGES {
        conn.execute(&insert, &[&format!("message {i}")])?;
    }
    println!("producer inserted {MESSAGES} rows (and rolled back 1)");

    let mut all_ok = true;
    for (name, mut child, lines) in consumers {
        for line in lines {
            println!("{name}: {}", line?);
        }
        all_ok &= child.wait()?.success();
    }
    if !all_ok {
        return Err("a consumer did not receive every message exactly once".into());
    }
    println!("both consumers received all {MESSAGES} messages, in order, and nothing else");
    Ok(())
}

/// A consumer process: listens, says "ready", receives `count` messages in order, then checks
/// that nothing else arrives.
fn consumer(name: &str, count: usize) -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let broker = Broker::connect(&url)?;
    let listener = broker.listen("messages")?;
    println!("ready");
    let mut received = 0;
    while received < count {
        match listener.recv_timeout(Duration::from_secs(30))? {
            Some(Event::Notification(n)) => {
                let change = n.json()?;
                let body = change["row"]["body"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if body != format!("message {received}") {
                    return Err(format!("{name}: expected message {received}, got {body:?}").into());
                }
                received += 1;
            }
            Some(_) => {}
            None => return Err(format!("{name}: timed out after {received}").into()),
        }
    }
    let extra = std::iter::from_fn(|| listener.recv_timeout(Duration::from_millis(500)).ok()?)
        .filter(|e| matches!(e, Event::Notification(_)))
        .count();
    println!("received {received} messages in order, {extra} extra");
    if extra != 0 {
        return Err("unexpected extra messages".into());
    }
    Ok(())
}
