//! Reading the event log from a real streaming standby: reads go there, acks to the primary;
//! gap-free by the standby's own horizon; a stale, stopped or promoted standby is passed over.

use std::time::{Duration, Instant};

use pgbroker::postgres::{Client, NoTls};
use pgbroker::topic::StartAt;
use pgbroker::Broker;
use pgbroker_testing::{wait_until, TempPostgres};
use serde_json::json;

struct Pair {
    primary: TempPostgres,
    standby: TempPostgres,
}

fn pair() -> Pair {
    let primary = TempPostgres::builder().replication(true).start().unwrap();
    Broker::connect(&primary.url()).unwrap().install().unwrap();
    let standby = primary.start_standby(false).unwrap();
    Pair { primary, standby }
}

fn broker(p: &Pair, max_lag: Duration) -> Broker {
    Broker::builder()
        .url(&p.primary.url())
        .read_replica(&p.standby.url())
        .replica_max_lag(max_lag)
        .build()
        .unwrap()
}

/// Waits until the broker uses the replica: once it has replayed a transaction or been found
/// caught up, its staleness is known (and small).
fn wait_used(broker: &Broker) {
    assert!(wait_until(Duration::from_secs(10), || {
        broker.replica_lag().unwrap()[0].used
    }));
}

/// Subscription `s` to `pattern`, from the beginning of the log.
fn subscribe_from_start(broker: &Broker, pattern: &str) {
    broker
        .subscription("s")
        .pattern(pattern)
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
}

fn ns(batch: &pgbroker::Batch) -> Vec<i64> {
    batch
        .events()
        .iter()
        .map(|e| e.payload()["n"].as_i64().unwrap())
        .collect()
}

/// Reads until `n` events came (the standby replays asynchronously), acking each batch.
fn read_n(broker: &Broker, sub: &str, n: usize) -> Vec<i64> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < n && Instant::now() < deadline {
        let b = broker.read(sub, 100).unwrap();
        got.extend(ns(&b));
        if let Some(p) = b.ack_position() {
            broker.ack(sub, p).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    got
}

/// Pauses (or resumes) replay on the standby; a pause is waited for: PostgreSQL takes it at
/// the next WAL record, so records are written on the primary until it has.
fn pause_replay(p: &Pair, pause: bool) {
    let mut c = Client::connect(&p.standby.url(), NoTls).unwrap();
    if !pause {
        c.batch_execute("SELECT pg_wal_replay_resume()").unwrap();
        return;
    }
    // Everything written so far is replayed first (the test's premise).
    let probe = Broker::builder()
        .url(&p.primary.url())
        .read_replica(&p.standby.url())
        .build()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        probe.replica_lag().unwrap()[0].bytes_behind == 0
    }));
    c.batch_execute("SELECT pg_wal_replay_pause()").unwrap();
    let mut primary = Client::connect(&p.primary.url(), NoTls).unwrap();
    primary
        .batch_execute("CREATE TABLE IF NOT EXISTS nudge (n int)")
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        primary
            .batch_execute("INSERT INTO nudge VALUES (1)")
            .unwrap();
        let state: String = c
            .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
            .unwrap()
            .get(0);
        state == "paused"
    }));
}

#[test]
fn reads_go_to_the_replica_and_acks_to_the_primary() {
    let p = pair();
    let broker = broker(&p, Duration::from_secs(3600));
    subscribe_from_start(&broker, "orders.#");
    for n in 1..=3 {
        broker.publish("orders.created", &json!({"n": n})).unwrap();
    }
    assert_eq!(read_n(&broker, "s", 3), [1, 2, 3]);
    // The ack went to the primary (the standby cannot take writes anyway).
    let mut primary = Client::connect(&p.primary.url(), NoTls).unwrap();
    let past_third: bool = primary
        .query_one(
            "SELECT (c.tx, c.id) >= (e.tx, e.id)
               FROM pgbroker.subscription_cursors c, pgbroker.events e
              WHERE c.subscription = 's' AND e.payload->>'n' = '3'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(past_third);

    // With replay paused, the primary has events the replica does not show: reads come from
    // the replica, and nothing is skipped when it resumes.
    pause_replay(&p, true);
    for n in 4..=6 {
        broker.publish("orders.created", &json!({"n": n})).unwrap();
    }
    wait_used(&broker);
    let b = broker.read("s", 100).unwrap();
    assert!(b.is_empty(), "read on the primary? {:?}", ns(&b));
    if let Some(pos) = b.ack_position() {
        broker.ack("s", pos).unwrap(); // acknowledging the replica's horizon skips nothing
    }
    let lag = broker.replica_lag().unwrap();
    assert_eq!(lag.len(), 1);
    assert!(lag[0].bytes_behind > 0, "{lag:?}");
    assert!(lag[0].used);
    let staleness = broker.lag("s").unwrap()[0].replica_staleness;
    assert!(
        staleness.is_some_and(|s| s > Duration::ZERO),
        "{staleness:?}"
    );
    pause_replay(&p, false);
    assert_eq!(read_n(&broker, "s", 3), [4, 5, 6]);
    assert!(wait_until(Duration::from_secs(10), || {
        broker.replica_lag().unwrap()[0].bytes_behind == 0
    }));
}

#[test]
fn a_stale_or_stopped_replica_is_passed_over_for_the_primary() {
    let p = pair();
    let broker = broker(&p, Duration::from_millis(200));
    subscribe_from_start(&broker, "#");
    broker.publish("t", &json!({"n": 1})).unwrap();
    assert_eq!(read_n(&broker, "s", 1), [1]);

    // Paused replay: once the replica is staler than allowed, reads go to the primary.
    pause_replay(&p, true);
    broker.publish("t", &json!({"n": 2})).unwrap();
    // Its data ages while replay stands still: past 200 ms it is not used.
    assert!(wait_until(Duration::from_secs(10), || {
        !broker.replica_lag().unwrap()[0].used
    }));
    assert_eq!(read_n(&broker, "s", 1), [2]);
    let lag = broker.replica_lag().unwrap();
    assert!(!lag[0].used, "{lag:?}");
    assert!(lag[0]
        .staleness
        .is_some_and(|s| s > Duration::from_millis(200)));
    assert!(
        lag[0].problem.as_deref().unwrap_or("").contains("behind"),
        "{lag:?}"
    );
    pause_replay(&p, false);

    // A stopped replica: reads go on, on the primary.
    p.standby.stop().unwrap();
    broker.publish("t", &json!({"n": 3})).unwrap();
    assert_eq!(read_n(&broker, "s", 1), [3]);
    assert!(broker.replica_lag().unwrap()[0].staleness.is_none());

    // A promoted one has its own history: not used either.
    p.standby.resume().unwrap();
    p.standby.promote().unwrap();
    broker.publish("t", &json!({"n": 4})).unwrap();
    assert_eq!(read_n(&broker, "s", 1), [4]);
    let lag = broker.replica_lag().unwrap();
    assert!(
        lag[0]
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("not a standby"),
        "{lag:?}"
    );
}

#[test]
fn replica_reads_are_gap_free_and_wait_for_open_transactions() {
    let p = pair();
    let broker = broker(&p, Duration::from_secs(3600));
    subscribe_from_start(&broker, "#");
    wait_used(&broker);
    // An event inserted first but committed last must not be skipped by a reader that saw
    // the later one: the standby's horizon stays below the open transaction.
    let mut slow = Client::connect(&p.primary.url(), NoTls).unwrap();
    let mut tx = slow.transaction().unwrap();
    tx.execute("SELECT pgbroker.publish('t', '{\"n\": 1}')", &[])
        .unwrap();
    broker.publish("t", &json!({"n": 2})).unwrap();
    std::thread::sleep(Duration::from_millis(500)); // replicated by now
    for _ in 0..5 {
        let b = broker.read("s", 100).unwrap();
        assert!(b.is_empty(), "{:?}", ns(&b));
        if let Some(pos) = b.ack_position() {
            broker.ack("s", pos).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tx.commit().unwrap();
    // In (tx, id) order: the transaction that took its id first comes first.
    assert_eq!(read_n(&broker, "s", 2), [1, 2]);
}
