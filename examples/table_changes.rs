//! Table mutation events: every insert, update and delete of a table becomes an event in the
//! same transaction.
//!
//! Run with `cargo run --example table_changes` (uses `DATABASE_URL`, or starts a throwaway
//! PostgreSQL when it is unset).

use std::time::{Duration, Instant};

use pgbroker::topic::StartAt;
use pgbroker::{Broker, TableOp};
use pgbroker_testing::DevDatabase;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = DevDatabase::from_env_or_temp()?;
    let url = db.url().to_owned();
    let broker = Broker::connect(&url)?;
    broker.install()?;

    let mut conn = broker.conn()?;
    conn.batch_execute(
        "DROP TABLE IF EXISTS example_users;
         CREATE TABLE example_users (id int PRIMARY KEY, email text NOT NULL);",
    )?;
    broker.publish_table_changes("example_users", &TableOp::ALL)?;
    broker
        .subscription("example-user-sync")
        .pattern("public.example_users.*")
        .start_at(StartAt::Beginning)
        .save()?;

    conn.batch_execute(
        "INSERT INTO example_users VALUES (1, 'a@example.com'), (2, 'b@example.com')",
    )?;
    conn.batch_execute("UPDATE example_users SET email = 'new@example.com' WHERE id = 1")?;
    conn.batch_execute("DELETE FROM example_users WHERE id = 2")?;
    // Rolled back: no events.
    conn.batch_execute("BEGIN; INSERT INTO example_users VALUES (3, 'c@example.com'); ROLLBACK")?;

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = 0;
    while seen < 4 && Instant::now() < deadline {
        let batch = broker.read("example-user-sync", 100)?;
        for e in batch.events() {
            println!("{:<30} {}", e.topic(), e.payload());
        }
        seen += batch.len();
        match batch.last_position() {
            Some(last) => broker.ack("example-user-sync", last)?,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    println!("{seen} change events");

    broker.unpublish_table_changes("example_users")?;
    broker.unsubscribe("example-user-sync")?;
    conn.batch_execute("DROP TABLE example_users")?;
    Ok(())
}
