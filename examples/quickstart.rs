//! Quick start: publish and receive notifications, in and out of transactions, with a listener
//! and with a worker pool. Uses `DATABASE_URL`, or starts a private throwaway PostgreSQL.
//!
//!     cargo run --example quickstart

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgbroker::{Broker, Event, TableOp};
use pgbroker_testing::DevDatabase;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = DevDatabase::from_env_or_temp()?;
    if db.is_temporary() {
        println!("started a private PostgreSQL at {}", db.url());
    }
    let broker = Broker::connect(db.url())?;
    println!("installed pgbroker schema v{}", broker.install()?);

    // 1. A listener: one thread with its own connection, consumed like a channel.
    let listener = broker.listen("greetings")?;
    broker.notify("greetings", "hello")?;
    broker.notify("greetings", &json!({"from": "quickstart", "n": 2}))?;

    // 2. Notifications inside a transaction are sent only if it commits.
    let mut conn = broker.conn()?;
    let mut tx = conn.transaction()?;
    broker.notify_in(&mut tx, "greetings", "never sent")?;
    tx.rollback()?;
    let mut tx = conn.transaction()?;
    broker.notify_in(&mut tx, "greetings", "sent on commit")?;
    tx.commit()?;

    while let Some(event) = listener.recv_timeout(Duration::from_millis(500))? {
        if let Event::Notification(n) = event {
            println!("listener got on {:?}: {}", n.channel(), n.payload());
        }
    }

    // 3. Table changes as JSON notifications, handled by a pool of worker threads.
    conn.batch_execute("CREATE TABLE IF NOT EXISTS job (id serial PRIMARY KEY, status text)")?;
    broker.watch_table("job", "job_channel", &TableOp::ALL)?;
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let pool = broker
        .worker_pool()
        .threads(2)
        .handler("job_channel", move |n| {
            let change = n.json()?;
            println!("worker got {} of job {}", change["op"], change["row"]["id"]);
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .start()?;
    conn.batch_execute("INSERT INTO job (status) VALUES ('new'), ('new'), ('new')")?;
    for _ in 0..100 {
        if handled.load(Ordering::SeqCst) == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.shutdown()?;
    println!(
        "worker pool handled {} table changes; shut down cleanly",
        handled.load(Ordering::SeqCst)
    );
    broker.unwatch_table("job", "job_channel")?;
    Ok(())
}
