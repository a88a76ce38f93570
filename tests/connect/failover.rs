//! Failover: a primary with a synchronous streaming standby, a broker on the multi-host URL
//! `host1,host2 ... target_session_attrs=read-write`; the primary crashes, the standby is
//! promoted, and publishers, enqueuers, workers and subscription consumers carry on against
//! it without a restart of the application; nothing acknowledged is lost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbroker::topic::StartAt;
use pgbroker::Broker;
use pgbroker_testing::TempPostgres;

use crate::support;

const N: i64 = 40; // jobs and events before, and again after, the failover

/// Retries a transient failure (the failover itself) until it is done: what an application
/// does with an error that `is_transient()`.
fn until_done<T>(what: &str, mut f: impl FnMut() -> pgbroker::Result<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if e.is_transient() && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[test]
fn failover_to_a_promoted_standby_loses_nothing() {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        eprintln!("skipped: needs private clusters for a primary and its standby");
        return;
    }
    let primary = TempPostgres::builder()
        .replication(true)
        .setting("synchronous_commit", "on")
        .start()
        .unwrap();
    let db = support::TestDb::create_on(&primary.url(), |n| primary.url_for(n));
    db.client()
        .batch_execute("CREATE TABLE done (job bigint NOT NULL)")
        .unwrap();
    let standby = primary.start_standby(true).unwrap();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write&connect_timeout=2",
        primary.port(),
        standby.port(),
        db.name
    );
    let broker = Broker::builder()
        .url(&url)
        .pool_size(4)
        .listener_poll(Duration::from_millis(50))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .build()
        .unwrap();
    broker.install().unwrap();
    broker
        .subscription("failover")
        .pattern("failover")
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let (worker, events) = (broker.clone(), seen.clone());
    let pool = broker
        .worker_pool()
        // A job in flight when the primary crashes stays `running` on the standby until its
        // lease ends: a short lease (and rescue) keeps that within the wait below.
        .queue_with(
            pgbroker::QueueOptions::new("failover")
                .concurrency(2)
                .lease(Duration::from_secs(3))
                .rescue_interval(Duration::from_secs(1)),
            move |job| {
                let mut conn = worker.conn()?;
                let mut tx = conn.transaction()?;
                tx.execute(
                    "INSERT INTO done (job) VALUES ($1)",
                    &[&job.payload()["i"].as_i64()],
                )?;
                tx.commit()?;
                Ok(())
            },
        )
        .subscription("failover", move |batch| {
            let mut seen = events.lock().unwrap();
            seen.extend(
                batch
                    .events()
                    .iter()
                    .filter_map(|e| e.payload()["i"].as_i64()),
            );
            Ok(())
        })
        .start()
        .unwrap();

    let send = |range: std::ops::Range<i64>| {
        for i in range {
            let payload = serde_json::json!({ "i": i });
            until_done("enqueue", || broker.enqueue("failover", &payload));
            until_done("publish", || broker.publish("failover", &payload));
        }
    };
    send(0..N);
    // The primary crashes; the synchronous standby has every acknowledged commit.
    primary.stop_immediate().unwrap();
    standby.promote().unwrap();
    send(N..2 * N);

    // Every job is done and gone: a job whose handler committed just before the crash but
    // whose completion did not reach the old primary is `running` on the standby until its
    // lease ends, then runs again (at least once) and is completed; the wait covers that.
    let standby_url = standby.url_for(&db.name);
    let count = |sql: &str| -> i64 {
        pgbroker::postgres::Client::connect(&standby_url, pgbroker::postgres::NoTls)
            .and_then(|mut c| c.query_one(sql, &[]).map(|r| r.get(0)))
            .unwrap_or(-1)
    };
    let all = support::wait_until(Duration::from_secs(30), || {
        count("SELECT count(DISTINCT job) FROM done") == 2 * N
            && count("SELECT count(*) FROM pgbroker.jobs") == 0
            && seen.lock().unwrap().len() == 2 * N as usize
    });
    let events = seen.lock().unwrap().len();
    pool.shutdown().unwrap();
    let mut c =
        pgbroker::postgres::Client::connect(&standby_url, pgbroker::postgres::NoTls).unwrap();
    let done: i64 = c
        .query_one("SELECT count(DISTINCT job) FROM done", &[])
        .unwrap()
        .get(0);
    let left: Vec<String> = c
        .query(
            "SELECT format('job %s: %s, attempt %s, lease_until %s (now %s)', \
             id, state, attempt, lease_until, now()) FROM pgbroker.jobs ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        all,
        "after the failover: jobs done {done} of {n}, events seen {events} of {n}, \
         jobs left {left:?}",
        n = 2 * N
    );
    assert_eq!(done, 2 * N);
    assert_eq!(left, Vec::<String>::new(), "no job left behind");
}
