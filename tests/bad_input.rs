//! Issue 13, "nothing lost, nothing silent": bad input to the Rust API and the SQL functions is
//! refused with a clear, typed error that names what was wrong, before anything is written.

mod support;

use pgbroker::postgres::Client;
use pgbroker::topic::{NewEvent, Position};
use pgbroker::{Broker, ErrorKind};
use serde_json::json;

/// The SQLSTATE and message of a failed SQL statement.
fn sql_err(c: &mut Client, sql: &str) -> (String, String) {
    let e = c.batch_execute(sql).expect_err(sql);
    let db = e.as_db_error().expect("a server error");
    (db.code().code().to_owned(), db.message().to_owned())
}

fn assert_invalid(r: pgbroker::Result<impl std::fmt::Debug>, words: &[&str]) {
    let e = r.expect_err("must be refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    for w in words {
        assert!(e.to_string().contains(w), "{w:?} not in {e}");
    }
}

fn read_all(broker: &Broker, sub: &str, n: usize) -> Vec<i64> {
    let mut got = Vec::new();
    let done = support::wait_until(std::time::Duration::from_secs(10), || {
        let b = broker.read(sub, 100).unwrap();
        got = b.events().iter().map(|e| e.id().get()).collect();
        got.len() >= n
    });
    assert!(done, "{sub}: {got:?}, expected {n} events");
    got
}

// 1. Acks and seeks beyond the end of the log --------------------------------------------------

#[test]
fn ack_beyond_the_end_of_the_log_is_refused_and_loses_nothing() {
    let db = support::db();
    let broker = db.broker();
    broker.subscribe("s", &["ahead.#"]).unwrap();
    let first = broker.publish("ahead.a", &json!(1)).unwrap();
    let far = Position::new(1 << 40, 0);
    assert_invalid(
        broker.ack("s", far),
        &["1099511627776-0", "beyond the end of the log"],
    );
    assert_invalid(
        broker.ack_partition("s", 0, Position::new(1 << 40, 7)),
        &["1099511627776-7"],
    );
    let mut conn = broker.conn().unwrap();
    let mut tx = conn.transaction().unwrap();
    assert_invalid(broker.ack_in(&mut tx, "s", 0, far), &["1099511627776-0"]);
    drop(tx);
    drop(conn);
    // The newest event is a valid position, and so is the horizon of a read.
    assert_eq!(read_all(&broker, "s", 1), vec![first.get()]);
    let batch = broker.read("s", 100).unwrap();
    broker.ack("s", batch.last_position().unwrap()).unwrap();
    broker.ack("s", batch.ack_position().unwrap()).unwrap();
    // Nothing was skipped: the next event arrives.
    let second = broker.publish("ahead.b", &json!(2)).unwrap();
    assert_eq!(read_all(&broker, "s", 1), vec![second.get()]);
    // Unknown subscriptions are still NotFound.
    assert_eq!(
        broker.ack("nope", Position::BEGINNING).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn seek_beyond_the_end_of_the_log_is_refused() {
    let db = support::db();
    let broker = db.broker();
    broker.subscribe("s", &["#"]).unwrap();
    let id = broker.publish("a", &json!(1)).unwrap();
    assert_invalid(
        broker.seek("s", 0, Position::new(1 << 40, 0)),
        &["1099511627776-0", "beyond the end of the log"],
    );
    broker.seek("s", 0, Position::BEGINNING).unwrap();
    assert_eq!(read_all(&broker, "s", 1), vec![id.get()]);
    let last = broker.read("s", 10).unwrap().last_position().unwrap();
    broker.seek("s", 0, last).unwrap();
    assert!(broker.read("s", 10).unwrap().is_empty());
}

#[test]
fn sql_ack_and_seek_beyond_the_end_raise_22023() {
    let db = support::db();
    let mut c = db.client();
    c.batch_execute(
        "SELECT pgbroker.subscribe('s', ARRAY['ahead.#']);
         SELECT pgbroker.publish('ahead.a', '1');",
    )
    .unwrap();
    let (code, msg) = sql_err(&mut c, "SELECT pgbroker.ack('s', '1099511627776', 0)");
    assert_eq!(code, "22023");
    assert!(
        msg.contains("position 1099511627776-0 is beyond the end of the log"),
        "{msg}"
    );
    let (code, msg) = sql_err(&mut c, "SELECT pgbroker.seek('s', '1099511627776', 5)");
    assert_eq!(code, "22023");
    assert!(msg.contains("1099511627776-5"), "{msg}");
    // The cursor did not move: the event is still there to read, and acking it works.
    let mut rows = Vec::new();
    assert!(support::wait_until(
        std::time::Duration::from_secs(10),
        || {
            rows = c
                .query("SELECT tx::text, id FROM pgbroker.read('s', 10)", &[])
                .unwrap();
            !rows.is_empty()
        }
    ));
    let (tx, id): (String, i64) = (rows[0].get(0), rows[0].get(1));
    let acked: bool = c
        .query_one("SELECT pgbroker.ack('s', $1::text::xid8, $2)", &[&tx, &id])
        .unwrap()
        .get(0);
    assert!(acked);
    let seeked: bool = c
        .query_one("SELECT pgbroker.seek('s', '0', 0)", &[])
        .unwrap()
        .get(0);
    assert!(seeked);
}

// 5. SQL functions accepting bad arguments -----------------------------------------------------

#[test]
fn sql_read_of_an_unknown_subscription_raises_like_rust() {
    let db = support::db();
    let mut c = db.client();
    let (code, msg) = sql_err(&mut c, "SELECT * FROM pgbroker.read('no-such-sub', 10)");
    assert_eq!(code, "P0002");
    assert!(msg.contains("no-such-sub"), "{msg}");
    c.batch_execute("SELECT pgbroker.subscribe('s', ARRAY['a'], 2)")
        .unwrap();
    let (code, _) = sql_err(&mut c, "SELECT * FROM pgbroker.read('s', 10, 2)");
    assert_eq!(code, "P0002");
    let n = c
        .query("SELECT * FROM pgbroker.read('s', 10, 1)", &[])
        .unwrap()
        .len();
    assert_eq!(n, 0);
    let broker = db.broker();
    assert_eq!(
        broker.read("no-such-sub", 10).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        broker.read_partition("s", 2, 10).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(broker.read_partition("s", 1, 10).unwrap().is_empty());
    let _ = NewEvent::new("a", json!(1));
}

// 4. NUL characters in event payloads ----------------------------------------------------------

fn event_count(c: &mut Client) -> i64 {
    c.query_one("SELECT count(*) FROM pgbroker.events", &[])
        .unwrap()
        .get(0)
}

#[test]
fn nul_in_an_event_payload_is_refused_with_the_index_in_a_batch() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    let nul = json!({"text": "a\u{0}b"});
    let words = ["event payload contains a NUL character"];
    assert_invalid(broker.publish("t", &nul), &words);
    assert_invalid(
        broker.publish_event(&NewEvent::new("t", nul.clone())),
        &words,
    );
    assert_invalid(
        broker.publish_event(&NewEvent::new("t", json!(1)).headers(json!({"h": "\u{0}"}))),
        &["event headers contain a NUL character"],
    );
    {
        let mut conn = broker.conn().unwrap();
        let mut tx = conn.transaction().unwrap();
        assert_invalid(
            broker.publish_in(&mut tx, &NewEvent::new("t", nul.clone())),
            &words,
        );
    }
    // A small batch (one INSERT) and a large one (COPY) name the event.
    let batch = |n: usize, bad: usize| {
        (0..n).map(move |i| NewEvent::new("t", if i == bad { json!(["\u{0}"]) } else { json!(i) }))
    };
    assert_invalid(
        broker.publish_batch(batch(10, 7)),
        &["event 7 of the batch", words[0]],
    );
    assert_invalid(
        broker.publish_batch(batch(2500, 1999)),
        &["event 1999 of the batch", words[0]],
    );
    {
        let mut conn = broker.conn().unwrap();
        let mut tx = conn.transaction().unwrap();
        assert_invalid(
            broker.publish_batch_in(&mut tx, batch(1500, 1200)),
            &["event 1200 of the batch", words[0]],
        );
    }
    let publisher = broker.publisher().start().unwrap();
    assert_invalid(publisher.publish(NewEvent::new("t", nul)), &words);
    publisher.close().unwrap();
    assert_eq!(event_count(&mut c), 0);
    // Without the NUL, the same batches are written.
    assert_eq!(
        broker.publish_batch(batch(2500, usize::MAX)).unwrap().len(),
        2500
    );
    assert_eq!(event_count(&mut c), 2500);
}

// 2 and 3. Backoffs and times out of range -----------------------------------------------------

fn job_count(c: &mut Client) -> i64 {
    c.query_one("SELECT count(*) FROM pgbroker.jobs", &[])
        .unwrap()
        .get(0)
}

#[test]
fn huge_backoffs_are_refused_at_enqueue_and_the_largest_allowed_can_fail() {
    use pgbroker::queue::{Job, MAX_BACKOFF};
    use std::time::Duration;
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    let huge = Job::new("q", "{}").backoff(Duration::MAX, Duration::MAX);
    let words = ["backoff base must be at most 31536000 s (365 days)"];
    assert_invalid(broker.enqueue_job(&huge), &words);
    assert_invalid(
        broker.enqueue_job(&Job::new("q", "{}").backoff(Duration::from_secs(1), MAX_BACKOFF * 2)),
        &["backoff max must be at most 31536000 s"],
    );
    let mut batch: Vec<Job> = (0..5).map(|_| Job::new("q", "{}")).collect();
    batch[3] = huge.clone();
    assert_invalid(
        broker.enqueue_batch(&batch),
        &["job 3 of the batch", words[0]],
    );
    let mut big: Vec<Job> = (0..1500).map(|_| Job::new("q", "{}")).collect();
    big[1234] = huge.clone();
    assert_invalid(
        broker.enqueue_batch(&big),
        &["job 1234 of the batch", words[0]],
    );
    {
        let mut conn = broker.conn().unwrap();
        let mut tx = conn.transaction().unwrap();
        assert_invalid(broker.enqueue_in(&mut tx, &huge), &words);
    }
    let (code, msg) = sql_err(
        &mut c,
        "SELECT pgbroker.enqueue('q', '{}', backoff_base => interval '1000 years')",
    );
    assert_eq!(code, "22023");
    assert!(msg.contains("at most 365 days"), "{msg}");
    assert_eq!(job_count(&mut c), 0);

    // The largest backoff allowed: every failure can be recorded, up to attempt 30 and beyond.
    let id = broker
        .enqueue_job(
            &Job::new("q", "{}")
                .max_attempts(100)
                .backoff(MAX_BACKOFF, MAX_BACKOFF),
        )
        .unwrap();
    c.batch_execute(&format!(
        "UPDATE pgbroker.jobs SET attempt = 40 WHERE id = {}",
        id
    ))
    .unwrap();
    let job = broker
        .claim_jobs("q", "w", 1, Duration::from_secs(60))
        .unwrap()
        .pop()
        .unwrap();
    let state = broker.fail_job(&job, "boom", None).unwrap();
    assert_eq!(state, Some(pgbroker::queue::JobState::Available));
    let secs: f64 = c
        .query_one(
            "SELECT extract(epoch FROM run_at - now())::float8 FROM pgbroker.jobs WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(
        secs > 364.0 * 86_400.0 && secs <= 365.0 * 86_400.0,
        "{secs}"
    );
    // From SQL, the largest backoff is accepted too.
    c.batch_execute("SELECT pgbroker.enqueue('q', '{}', backoff_base => interval '365 days')")
        .unwrap();
}

#[test]
fn times_out_of_range_are_refused_naming_the_option_and_the_job() {
    use pgbroker::queue::{Job, MAX_DELAY, RUN_AT_END};
    use std::time::{Duration, UNIX_EPOCH};
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    let delay_words = ["delay must be at most 3153600000 s (100 years)"];
    for d in [
        Duration::from_secs(10u64.pow(13)),
        Duration::MAX,
        MAX_DELAY * 2,
    ] {
        assert_invalid(
            broker.enqueue_job(&Job::new("q", "{}").delay(d)),
            &delay_words,
        );
    }
    let year_300000 = UNIX_EPOCH + Duration::from_secs(300_000 * 31_556_952);
    let run_at_words = ["run_at must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"];
    assert_invalid(
        broker.enqueue_job(&Job::new("q", "{}").run_at(year_300000)),
        &run_at_words,
    );
    assert_invalid(
        broker.enqueue_job(&Job::new("q", "{}").run_at(UNIX_EPOCH + RUN_AT_END)),
        &["got 10000-01-01T00:00:00Z"],
    );
    let mut batch: Vec<Job> = (0..4).map(|_| Job::new("q", "{}")).collect();
    batch[2] = Job::new("q", "{}").run_at(year_300000);
    assert_invalid(
        broker.enqueue_batch(&batch),
        &["job 2 of the batch", run_at_words[0]],
    );
    batch[2] = Job::new("q", "{}").delay(Duration::MAX);
    assert_invalid(
        broker.enqueue_batch(&batch),
        &["job 2 of the batch", delay_words[0]],
    );
    {
        let mut conn = broker.conn().unwrap();
        let mut tx = conn.transaction().unwrap();
        assert_invalid(
            broker.enqueue_batch_in(&mut tx, &batch),
            &["job 2 of the batch"],
        );
    }
    for (sql, word) in [
        (
            "delay => interval '1000000 years'",
            "delay must be from 0 to 36500 days",
        ),
        ("run_at => 'infinity'", "run_at must be from 1970-01-01"),
        ("run_at => '-infinity'", "run_at must be from 1970-01-01"),
        ("run_at => '10000-01-01 00:00:00+00'", "run_at must be from"),
    ] {
        let (code, msg) = sql_err(
            &mut c,
            &format!("SELECT pgbroker.enqueue('q', '{{}}', {sql})"),
        );
        assert_eq!(code, "22023", "{sql}: {msg}");
        assert!(msg.contains(word), "{sql}: {msg}");
    }
    assert_eq!(job_count(&mut c), 0);
    // The edges of the ranges are accepted.
    broker
        .enqueue_job(&Job::new("q", "{}").delay(MAX_DELAY))
        .unwrap();
    broker
        .enqueue_job(&Job::new("q", "{}").run_at(UNIX_EPOCH + RUN_AT_END - Duration::from_secs(1)))
        .unwrap();
    c.batch_execute(
        "SELECT pgbroker.enqueue('q', '{}', delay => interval '100 years');
         SELECT pgbroker.enqueue('q', '{}', run_at => '9999-12-31 23:59:59+00')",
    )
    .unwrap();
    assert_eq!(job_count(&mut c), 4);
}

#[test]
fn sql_claim_refuses_a_lease_of_zero_or_less() {
    let db = support::db();
    let mut c = db.client();
    c.batch_execute("SELECT pgbroker.enqueue('q', '{}')")
        .unwrap();
    for lease in [
        "interval '-1 minute'",
        "interval '0'",
        "NULL",
        "interval '1000 years'",
    ] {
        let (code, msg) = sql_err(
            &mut c,
            &format!("SELECT * FROM pgbroker.claim('q', 'w', 1, {lease})"),
        );
        assert_eq!(code, "22023", "{lease}: {msg}");
        assert!(
            msg.contains("lease must be from 10 milliseconds to 36500 days"),
            "{msg}"
        );
    }
    let running: i64 = c
        .query_one(
            "SELECT count(*) FROM pgbroker.jobs WHERE state = 'running'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(running, 0);
    let n = c
        .query(
            "SELECT * FROM pgbroker.claim('q', 'w', 1, interval '1 minute')",
            &[],
        )
        .unwrap()
        .len();
    assert_eq!(n, 1);
}

#[test]
fn sql_take_outside_a_transaction_block_takes_nothing() {
    let db = support::db();
    let mut c = db.client();
    c.batch_execute("SELECT pgbroker.enqueue('q', '{}') FROM generate_series(1, 3)")
        .unwrap();
    let refused = |e: pgbroker::postgres::Error| {
        let db = e.as_db_error().expect("a server error").clone();
        assert_eq!(db.code().code(), "25P01", "{db:?}");
        assert!(
            db.message().contains("inside a transaction block"),
            "{db:?}"
        );
    };
    // Autocommit, extended protocol (as drivers send it) and simple protocol (as psql does).
    refused(
        c.query("SELECT * FROM pgbroker.take('q', 1)", &[])
            .unwrap_err(),
    );
    refused(
        c.simple_query("SELECT * FROM pgbroker.take('q', 1)")
            .unwrap_err(),
    );
    refused(
        c.batch_execute("SELECT * FROM pgbroker.take('q', 1); SELECT 1")
            .unwrap_err(),
    );
    assert_eq!(job_count(&mut c), 3, "nothing was taken");
    // In a transaction block it takes, as the first statement or later, and COMMIT completes.
    let mut tx = c.transaction().unwrap();
    assert_eq!(
        tx.query("SELECT * FROM pgbroker.take('q', 1)", &[])
            .unwrap()
            .len(),
        1
    );
    tx.commit().unwrap();
    c.batch_execute("BEGIN").unwrap();
    c.batch_execute("SELECT 1").unwrap();
    c.batch_execute("SELECT * FROM pgbroker.take('q', 1)")
        .unwrap();
    c.batch_execute("COMMIT").unwrap();
    assert_eq!(job_count(&mut c), 1);
    let guards: i64 = c
        .query_one("SELECT count(*) FROM pgbroker.take_guards", &[])
        .unwrap()
        .get(0);
    assert_eq!(guards, 0, "the guard rows go with their transaction");
}

// 6. A written batch is never reported as a failure ----------------------------------------------

#[test]
fn publish_batch_over_copy_succeeds_when_only_the_wake_up_fails() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    // The wake-up after the COPY fails; the events are written by then.
    c.batch_execute(
        "CREATE OR REPLACE FUNCTION pgbroker.log_wake() RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'wake-up broken'; END $$",
    )
    .unwrap();
    let events = (0..1500).map(|i| NewEvent::new("t", json!(i)));
    let ids = broker
        .publish_batch(events)
        .expect("the events were written");
    assert_eq!(ids.len(), 1500);
    assert_eq!(event_count(&mut c), 1500);
    // A failure before anything is written is still a failure, with nothing written.
    let bad = (0..1500).map(|i| NewEvent::new(if i == 9 { "bad topic" } else { "t" }, json!(i)));
    assert!(broker.publish_batch(bad).is_err());
    assert_eq!(event_count(&mut c), 1500);
}
