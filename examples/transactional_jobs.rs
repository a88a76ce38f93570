//! Exactly-once database effects: jobs credit accounts inside the job's own transaction.
//!
//! The queue is transactional (`QueueOptions::transactional`): a batch of jobs is taken in a
//! transaction, each handler writes its credit in it, and COMMIT completes the jobs and keeps
//! the credits together. One job fails once *after* writing its credit: that write is rolled
//! back with its attempt, the job is retried, and the credit is applied exactly once. The
//! balances printed at the end match the credits enqueued, to the cent.
//!
//! Run with `cargo run --example transactional_jobs` (uses `DATABASE_URL`, or starts a
//! throwaway PostgreSQL).

use std::time::Duration;

use pgbroker::queue::{Job, JobContext, QueueOptions};
use pgbroker::Broker;
use pgbroker_testing::DevDatabase;

const ACCOUNTS: i64 = 10;
const CREDITS: i64 = 300;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = DevDatabase::from_env_or_temp()?;
    let broker = Broker::connect(db.url())?;
    broker.install()?;
    broker.conn()?.batch_execute(
        "DROP TABLE IF EXISTS example_accounts;
         CREATE TABLE example_accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO example_accounts SELECT g, 0 FROM generate_series(1, 10) g;",
    )?;

    // Credit i goes to account i % 10 + 1 and is worth i cents; credit 7 fails once. A batch
    // keeps the rows its jobs updated locked until it commits, so two batches crediting the
    // same accounts wait for each other (or deadlock: pgbroker then gives the job back and
    // commits that batch early). Consecutive credits go to different accounts here, and
    // concurrent batches take consecutive jobs, so they rarely meet.
    let mut expected = vec![0i64; ACCOUNTS as usize];
    let jobs: Vec<Job> = (1..=CREDITS)
        .map(|i| {
            let account = i % ACCOUNTS + 1;
            expected[account as usize - 1] += i;
            Job::new(
                "credits",
                &serde_json::json!({ "account": account, "cents": i, "flaky": i == 7 }),
            )
            .backoff(Duration::from_millis(50), Duration::from_millis(50))
        })
        .collect();
    broker.enqueue_batch(&jobs)?;

    let pool = broker
        .worker_pool()
        .threads(2)
        .queue_with(
            QueueOptions::new("credits")
                .transactional(true)
                .concurrency(2)
                .jobs_per_transaction(5)
                .poll_interval(Duration::from_millis(100)),
            |job: &JobContext| {
                let account = job.payload()["account"].as_i64();
                let cents = job.payload()["cents"].as_i64();
                job.with_transaction(|tx| {
                    tx.execute(
                        "UPDATE example_accounts SET balance = balance + $2 WHERE id = $1",
                        &[&account, &cents],
                    )?;
                    Ok(())
                })?;
                if job.payload()["flaky"] == true && job.attempt() == 1 {
                    println!(
                        "job {} failed after crediting: its credit is rolled back",
                        job.id()
                    );
                    return Err("the ledger service timed out".into());
                }
                Ok(())
            },
        )
        .start()?;

    // Every job is done once none is left in the queue.
    loop {
        let stats = broker.queue_stats()?;
        if !stats.iter().any(|q| q.queue == "credits") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    pool.shutdown()?;

    let mut conn = broker.conn()?;
    let mut all_match = true;
    for row in conn.query("SELECT id, balance FROM example_accounts ORDER BY id", &[])? {
        let (id, balance): (i64, i64) = (row.get(0), row.get(1));
        let want = expected[id as usize - 1];
        println!("account {id}: {balance} cents (expected {want})");
        all_match &= balance == want;
    }
    conn.batch_execute("DROP TABLE example_accounts")?;
    if !all_match {
        eprintln!("balances do not match the credits");
        std::process::exit(1);
    }
    println!("every credit applied exactly once");
    Ok(())
}
