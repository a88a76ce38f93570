//! Durable topics consumed on the worker pool: fan-out under load, partitions, failover,
//! redelivery after a lost connection, retries, dead letters and re-drive.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgbroker::topic::{ConsumerOptions, FailedEvents, NewEvent, Position, RetryPolicy, StartAt};
use pgbroker::{Batch, Broker};
use serde_json::json;

/// Events published by the load test. The issue asks for 100K; 20K keeps CI fast.
const LOAD_EVENTS: usize = 20_000;
const PUBLISHERS: usize = 4;
const WAIT: Duration = Duration::from_secs(60);

fn options() -> ConsumerOptions {
    ConsumerOptions::new()
        .poll_interval(Duration::from_millis(100))
        .lock_retry(Duration::from_millis(100))
}

fn from_beginning(broker: &Broker, name: &str, pattern: &str, partitions: u32) {
    broker
        .subscription(name)
        .pattern(pattern)
        .partitions(partitions)
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
}

/// (event id, key, per-key sequence number) in delivery order.
type Seen = Arc<Mutex<Vec<(i64, String, u64)>>>;

fn recorder(seen: &Seen) -> impl Fn(&Batch) -> pgbroker::HandlerResult + Send + Sync + 'static {
    let seen = seen.clone();
    move |batch: &Batch| {
        let mut s = seen.lock().unwrap();
        for e in batch.events() {
            s.push((
                e.id().get(),
                e.key().unwrap_or("").to_owned(),
                e.payload()["seq"].as_u64().unwrap(),
            ));
        }
        Ok(())
    }
}

fn check_exactly_once(name: &str, seen: &[(i64, String, u64)], published: &[i64]) {
    assert_eq!(seen.len(), published.len(), "{name}: count");
    let sum: i64 = seen.iter().map(|s| s.0).sum();
    assert_eq!(sum, published.iter().sum::<i64>(), "{name}: checksum");
    let distinct: HashSet<i64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(distinct.len(), published.len(), "{name}: duplicates");
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (_, key, seq) in seen {
        if let Some(prev) = last.insert(key, *seq) {
            assert!(
                *seq > prev,
                "{name}: key {key} out of order ({prev} then {seq})"
            );
        }
    }
}

#[test]
fn every_subscription_gets_every_event_once_in_key_order() {
    let db = support::db();
    let broker = db.broker();
    let subs = ["fan-a", "fan-b", "fan-c"];
    for s in subs {
        from_beginning(&broker, s, "load.#", 1);
    }
    from_beginning(&broker, "group", "load.*", 3);
    let seen: HashMap<&str, Seen> = subs
        .iter()
        .chain(&["group"])
        .map(|s| (*s, Seen::default()))
        .collect();

    // Two pools stand for two processes sharing the partitions of "group".
    let mut builder = broker.worker_pool().threads(6);
    for s in subs {
        builder = builder.subscription_with(s, options().batch_size(500), recorder(&seen[s]));
    }
    let pool1 = builder
        .subscription_with("group", options().batch_size(200), recorder(&seen["group"]))
        .start()
        .unwrap();
    let pool2 = broker
        .worker_pool()
        .threads(2)
        .subscription_with("group", options().batch_size(200), recorder(&seen["group"]))
        .start()
        .unwrap();

    // 4 publishers, each with its own keys and increasing per-key sequence numbers; half the
    // events in batches (COPY and INSERT), half one by one.
    let per = LOAD_EVENTS / PUBLISHERS;
    let published: Vec<i64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..PUBLISHERS)
            .map(|t| {
                let broker = broker.clone();
                scope.spawn(move || {
                    let event = |i: usize| {
                        NewEvent::new(format!("load.t{t}"), json!({"seq": i, "t": t}))
                            .key(format!("k{t}-{}", i % 7))
                    };
                    let mut ids = Vec::with_capacity(per);
                    let mut i = 0;
                    while i < per {
                        if (i / 100) % 2 == 0 {
                            let n = if (i / 200) % 2 == 0 { 100 } else { 30 };
                            let n = n.min(per - i);
                            let batch: Vec<_> = (i..i + n).map(event).collect();
                            ids.extend(
                                broker.publish_batch(batch).unwrap().iter().map(|e| e.get()),
                            );
                            i += n;
                        } else {
                            ids.push(broker.publish_event(&event(i)).unwrap().get());
                            i += 1;
                        }
                    }
                    ids
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(published.len(), LOAD_EVENTS);

    let done = support::wait_until(WAIT, || {
        seen.values()
            .all(|s| s.lock().unwrap().len() >= LOAD_EVENTS)
    });
    let counts: Vec<usize> = seen.values().map(|s| s.lock().unwrap().len()).collect();
    assert!(done, "not everything delivered in time: {counts:?}");
    std::thread::sleep(Duration::from_millis(300)); // anything extra would show up now
    pool1.shutdown().unwrap();
    pool2.shutdown().unwrap();
    for (name, s) in &seen {
        check_exactly_once(name, &s.lock().unwrap(), &published);
    }
    for s in subs.iter().chain(&["group"]) {
        assert!(broker.lag(s).unwrap().iter().all(|p| p.events_behind == 0));
    }
}

#[test]
fn a_standby_takes_over_when_the_active_consumer_stops() {
    let db = support::db();
    let broker = db.broker();
    from_beginning(&broker, "s", "t", 1);
    let first = Seen::default();
    let second = Seen::default();
    let pool1 = broker
        .worker_pool()
        .threads(1)
        .subscription_with("s", options(), recorder(&first))
        .start()
        .unwrap();
    // Give pool1 the lock before the standby starts.
    std::thread::sleep(Duration::from_millis(300));
    let pool2 = broker
        .worker_pool()
        .threads(1)
        .subscription_with("s", options(), recorder(&second))
        .start()
        .unwrap();
    let ev = |i: u64| NewEvent::new("t", json!({"seq": i})).key("k");
    let mut ids: Vec<i64> = broker
        .publish_batch((0..10).map(ev))
        .unwrap()
        .iter()
        .map(|i| i.get())
        .collect();
    assert!(support::wait_until(WAIT, || first.lock().unwrap().len() == 10));
    assert!(second.lock().unwrap().is_empty());
    pool1.shutdown().unwrap();
    ids.extend(
        broker
            .publish_batch((10..20).map(ev))
            .unwrap()
            .iter()
            .map(|i| i.get()),
    );
    assert!(support::wait_until(WAIT, || second.lock().unwrap().len() == 10));
    pool2.shutdown().unwrap();
    let mut all = first.lock().unwrap().clone();
    all.extend(second.lock().unwrap().iter().cloned());
    check_exactly_once("s", &all, &ids);
}

#[test]
fn a_batch_in_flight_when_the_connection_dies_is_delivered_again() {
    let db = support::db();
    let broker = db.broker();
    from_beginning(&broker, "s", "t", 1);
    let published: Vec<i64> = broker
        .publish_batch((0..10).map(|i| NewEvent::new("t", json!({"seq": i}))))
        .unwrap()
        .iter()
        .map(|i| i.get())
        .collect();
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let seen = Seen::default();
    let (c, r, s) = (calls.clone(), release.clone(), seen.clone());
    let pool = broker
        .worker_pool()
        .threads(1)
        .subscription_with("s", options().batch_size(4), move |batch| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                while !r.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let mut s = s.lock().unwrap();
            s.extend(
                batch
                    .events()
                    .iter()
                    .map(|e| (e.id().get(), String::new(), 0)),
            );
            Ok(())
        })
        .start()
        .unwrap();
    let called = support::wait_until(WAIT, || calls.load(Ordering::SeqCst) == 1);
    // The consumer's connection last ran a read (of the batch now in the handler, or of the
    // next one, read ahead), or, when it waited for events first (another test's transaction
    // held the horizon) and read nothing ahead, the removal of its waiter row.
    let killed: i64 = db
        .client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND (query LIKE '%FROM pgbroker.events e%'
                     OR query = 'DELETE FROM pgbroker.log_waiters WHERE pid = pg_backend_pid()')",
            &[],
        )
        .unwrap()
        .get(0);
    // Released before asserting: a failed test must not leave the handler blocking shutdown.
    release.store(true, Ordering::SeqCst);
    assert!(called);
    assert_eq!(killed, 1);
    assert!(support::wait_until(WAIT, || seen.lock().unwrap().len() == 14));
    std::thread::sleep(Duration::from_millis(300));
    pool.shutdown().unwrap();
    let seen = seen.lock().unwrap();
    // The first batch (4 events) twice, then the rest once: nothing lost.
    let ids: Vec<i64> = seen.iter().map(|s| s.0).collect();
    let mut want = published[..4].to_vec();
    want.extend_from_slice(&published);
    assert_eq!(ids, want);
    assert!(broker.read("s", 10).unwrap().is_empty());
}

/// A one-thread pool consuming six events in batches of two, its handler (plain or
/// transactional) blocked in its second call until `release` (or drop).
struct Blocked {
    broker: Broker,
    pool: Option<pgbroker::WorkerPool>,
    published: Vec<i64>,
    seen: Arc<Mutex<Vec<i64>>>,
    release: Arc<AtomicBool>,
}

impl Blocked {
    fn start(db: &support::TestDb, tx: bool) -> Blocked {
        let broker = db.broker();
        from_beginning(&broker, "s", "t", 1);
        let published: Vec<i64> = broker
            .publish_batch((0..6).map(|i| NewEvent::new("t", json!({"seq": i}))))
            .unwrap()
            .iter()
            .map(|i| i.get())
            .collect();
        let calls = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, r, s) = (calls.clone(), release.clone(), seen.clone());
        let handle = move |batch: &Batch| {
            if c.fetch_add(1, Ordering::SeqCst) == 1 {
                while !r.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let mut s = s.lock().unwrap();
            s.extend(batch.events().iter().map(|e| e.id().get()));
        };
        let builder = broker.worker_pool().threads(1);
        let opts = options().batch_size(2);
        let builder = if tx {
            builder.subscription_tx("s", opts, move |batch, _tx| {
                handle(batch);
                Ok(())
            })
        } else {
            builder.subscription_with("s", opts, move |batch| {
                handle(batch);
                Ok(())
            })
        };
        let blocked = Blocked {
            pool: Some(builder.start().unwrap()),
            broker,
            published,
            seen,
            release,
        };
        assert!(support::wait_until(WAIT, || calls.load(Ordering::SeqCst) == 2));
        // Time for a plain handler's consumer to read the next batch ahead.
        std::thread::sleep(Duration::from_millis(300));
        blocked
    }

    fn handled(&self) -> Vec<i64> {
        self.seen.lock().unwrap().clone()
    }

    /// Releases the handler (after `delay`, from another thread) and stops the pool.
    fn release_and_stop(&mut self, delay: Duration) {
        let release = self.release.clone();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(delay);
            release.store(true, Ordering::SeqCst);
        });
        if let Some(pool) = self.pool.take() {
            pool.shutdown().unwrap();
        }
        releaser.join().unwrap();
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        self.release.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_seek_while_consumers_run_is_followed() {
    for tx in [false, true] {
        let db = support::db();
        let mut b = Blocked::start(&db, tx);
        b.broker.seek("s", 0, Position::BEGINNING).unwrap();
        b.release.store(true, Ordering::SeqCst);
        assert!(support::wait_until(WAIT, || b.handled().len() >= 10));
        std::thread::sleep(Duration::from_millis(300));
        b.release_and_stop(Duration::ZERO);
        // The batch in the handler when the seek came is not acknowledged over it: the
        // consumer drops what it read ahead and reads again from the beginning.
        let mut want = b.published[..4].to_vec();
        want.extend_from_slice(&b.published);
        assert_eq!(b.handled(), want, "transactional: {tx}");
        assert!(b.broker.read("s", 10).unwrap().is_empty());
    }
}

#[test]
fn a_batch_read_ahead_is_left_unacknowledged_when_the_pool_stops() {
    let db = support::db();
    let mut b = Blocked::start(&db, false);
    // Shutdown waits for the handler in progress and acknowledges its batch; the batch read
    // ahead was never handled and stays for the next consumer.
    b.release_and_stop(Duration::from_millis(300));
    assert_eq!(b.handled(), b.published[..4]);
    let rest: Vec<i64> = b
        .broker
        .read("s", 10)
        .unwrap()
        .events()
        .iter()
        .map(|e| e.id().get())
        .collect();
    assert_eq!(rest, b.published[4..]);
}

#[test]
fn poison_event_is_retried_then_dead_then_redriven_while_others_flow() {
    let db = support::db();
    let broker = db.broker();
    from_beginning(&broker, "s", "t", 1);
    let schedule = [Duration::from_millis(200), Duration::from_millis(400)];
    let poison_calls = Arc::new(Mutex::new(Vec::<(Instant, u32)>::new()));
    let healed = Arc::new(AtomicBool::new(false));
    let good = Arc::new(Mutex::new(Vec::<i64>::new()));
    let (pc, h, g) = (poison_calls.clone(), healed.clone(), good.clone());
    let pool = broker
        .worker_pool()
        .threads(2)
        .subscription_with(
            "s",
            options().batch_size(5).retry(RetryPolicy::new(schedule)),
            move |batch| {
                let mut bad = Vec::new();
                for e in batch.events() {
                    if e.payload()["poison"] == json!(true) && !h.load(Ordering::SeqCst) {
                        pc.lock().unwrap().push((Instant::now(), batch.attempt()));
                        bad.push(e.id());
                    } else {
                        g.lock().unwrap().push(e.id().get());
                    }
                }
                if bad.is_empty() {
                    Ok(())
                } else {
                    Err(FailedEvents::new(bad, "poison").into())
                }
            },
        )
        .start()
        .unwrap();
    let events = (0..20).map(|i| NewEvent::new("t", json!({"i": i, "poison": i == 7})));
    let ids: Vec<i64> = broker
        .publish_batch(events)
        .unwrap()
        .iter()
        .map(|i| i.get())
        .collect();
    let poison = ids[7];
    // The other 19 flow past the poison event, each handled once (the split kept them out of
    // the retries).
    assert!(support::wait_until(WAIT, || good.lock().unwrap().len() == 19));
    assert!(support::wait_until(WAIT, || broker
        .dead_events("s", 10)
        .unwrap()
        .len()
        == 1));
    {
        let calls = poison_calls.lock().unwrap();
        assert_eq!(calls.iter().map(|c| c.1).collect::<Vec<_>>(), [0, 1, 2]);
        // Each retry waited at least its delay (minus a little for clock granularity).
        assert!(calls[1].0 - calls[0].0 >= schedule[0] - Duration::from_millis(20));
        assert!(calls[2].0 - calls[1].0 >= schedule[1] - Duration::from_millis(20));
    }
    let dead = broker.dead_events("s", 10).unwrap();
    assert_eq!(dead[0].event.id().get(), poison);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].event.payload(), &json!({"i": 7, "poison": true}));
    assert!(dead[0].last_error.as_deref().unwrap().contains("poison"));
    assert_eq!(broker.pending_retries("s").unwrap(), 0);
    let mut others: Vec<i64> = good.lock().unwrap().clone();
    others.sort();
    let mut want = ids.clone();
    want.remove(7);
    assert_eq!(others, want);

    // Fixed: re-drive it.
    healed.store(true, Ordering::SeqCst);
    assert_eq!(broker.redrive_events("s", None).unwrap(), 1);
    assert!(support::wait_until(WAIT, || good.lock().unwrap().len() == 20));
    assert!(support::wait_until(WAIT, || broker
        .pending_retries("s")
        .unwrap()
        == 0));
    assert!(broker.dead_events("s", 10).unwrap().is_empty());
    assert_eq!(broker.redrive_events("s", None).unwrap(), 0);
    pool.shutdown().unwrap();
    assert_eq!(poison_calls.lock().unwrap().len(), 3);
}

#[test]
fn fire_and_forget_failures_are_not_retried() {
    let db = support::db();
    let broker = db.broker();
    from_beginning(&broker, "s", "t", 1);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let pool = broker
        .worker_pool()
        .threads(1)
        .subscription_with("s", options().fire_and_forget(true), move |batch| {
            c.fetch_add(batch.len(), Ordering::SeqCst);
            if batch.events()[0].payload() == &json!(0) {
                panic!("boom");
            }
            Ok(())
        })
        .start()
        .unwrap();
    broker.publish("t", &json!(0)).unwrap();
    assert!(support::wait_until(WAIT, || calls.load(Ordering::SeqCst) == 1));
    broker.publish("t", &json!(1)).unwrap();
    assert!(support::wait_until(WAIT, || calls.load(Ordering::SeqCst) == 2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pool.stats().panicked, 1);
    pool.shutdown().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(broker.pending_retries("s").unwrap(), 0);
    assert!(broker.dead_events("s", 10).unwrap().is_empty());
    assert!(broker.read("s", 10).unwrap().is_empty());
}

/// A one-thread pool consuming subscription "s" (topic "t") from the beginning, returned once
/// it is idle, registered as waiting for wake-ups and past its read 5 ms after registering:
/// later deliveries within much less than `poll` can only come from a wake-up.
fn idle_consumer(
    db: &support::TestDb,
    broker: &Broker,
    poll: Duration,
) -> (pgbroker::WorkerPool, Seen) {
    from_beginning(broker, "s", "t", 1);
    let seen = Seen::default();
    let pool = broker
        .worker_pool()
        .threads(1)
        .subscription_with(
            "s",
            ConsumerOptions::new().poll_interval(poll),
            recorder(&seen),
        )
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || {
        let mut c = db.client();
        c.query_one("SELECT count(*) FROM pgbroker.log_waiters", &[])
            .unwrap()
            .get::<_, i64>(0)
            == 1
    }));
    std::thread::sleep(Duration::from_millis(300));
    (pool, seen)
}

/// Starts a one-thread pool consuming "s" (topic "t", 30 s poll) and commits a plain INSERT of
/// one event (no wake-up) 40 to 70 ms after the consumer registered as waiting: after its first
/// read as a waiter (its rechecks after registering then read until the horizon passes it).
/// Tries again when the machine was too slow for that window. Returns the pool, what it saw
/// and when the event committed.
fn plain_insert_just_after_registering(
    db: &support::TestDb,
    broker: &Broker,
) -> (pgbroker::WorkerPool, Seen, Instant) {
    from_beginning(broker, "s", "t", 1);
    let mut writer = db.client();
    for _ in 0..10 {
        writer
            .batch_execute("DELETE FROM pgbroker.log_waiters")
            .unwrap();
        let mut tx = writer.transaction().unwrap();
        tx.execute(
            "INSERT INTO pgbroker.events (topic, payload) VALUES ('t', '{\"seq\": 0}')",
            &[],
        )
        .unwrap();
        let seen = Seen::default();
        let pool = broker
            .worker_pool()
            .threads(1)
            .subscription_with(
                "s",
                ConsumerOptions::new().poll_interval(Duration::from_secs(30)),
                recorder(&seen),
            )
            .start()
            .unwrap();
        assert!(support::wait_until(WAIT, || {
            tx.query_one("SELECT count(*) FROM pgbroker.log_waiters", &[])
                .unwrap()
                .get::<_, i64>(0)
                == 1
        }));
        tx.execute(
            "SELECT pg_sleep(extract(epoch FROM since + interval '40 ms' - clock_timestamp())) \
               FROM pgbroker.log_waiters",
            &[],
        )
        .unwrap();
        let in_time: bool = tx
            .query_one(
                "SELECT clock_timestamp() - since < interval '70 ms' FROM pgbroker.log_waiters",
                &[],
            )
            .unwrap()
            .get(0);
        if in_time {
            tx.commit().unwrap();
            return (pool, seen, Instant::now());
        }
        tx.rollback().unwrap();
        pool.shutdown().unwrap();
    }
    panic!("never committed within 70 ms of the registration");
}

/// A publisher whose look found no waiting consumer skips looking for 2 ms, so an event it
/// publishes then sends no wake-up to a consumer that registered meanwhile. That consumer reads
/// again from 5 ms after registering until its horizon passes the event, not at its (30 s)
/// poll.
#[test]
fn a_consumer_reads_again_100_ms_after_registering_as_waiting() {
    let db = support::db();
    let broker = db.broker();
    let (pool, seen, committed) = plain_insert_just_after_registering(&db, &broker);
    assert!(support::wait_until(WAIT, || seen.lock().unwrap().len() == 1));
    assert!(
        committed.elapsed() < Duration::from_secs(10),
        "delivered {:?} after the commit: by the 30 s poll, not the read 100 ms after \
         registering",
        committed.elapsed()
    );
    pool.shutdown().unwrap();
}

/// When a transaction begun before that read still holds the horizon, the consumer reads again
/// (backing off up to 1 s) until the horizon passed it, so the event comes soon after that
/// transaction ends (which sends no wake-up), not at the poll.
#[test]
fn a_consumer_reads_again_until_the_horizon_passed_its_registration() {
    let db = support::db();
    let broker = db.broker();
    let mut holder = db.client();
    holder
        .batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .unwrap();
    let (pool, seen, _) = plain_insert_just_after_registering(&db, &broker);
    delivered_soon_after_the_horizon_moves(&mut holder, &seen, Duration::from_millis(1500));
    pool.shutdown().unwrap();
}

/// Waits `hold`, checks that nothing was delivered meanwhile (`held` says why it must not
/// be), runs `release` and checks that the one event comes within 10 s (the consumer polls
/// every 30 s or more, so only a wake-up or its re-reads can deliver it that soon).
fn delivered_soon_after(seen: &Seen, hold: Duration, held: &str, release: impl FnOnce()) {
    std::thread::sleep(hold);
    assert!(seen.lock().unwrap().is_empty(), "{held}");
    release();
    let released = Instant::now();
    assert!(support::wait_until(WAIT, || seen.lock().unwrap().len() == 1));
    assert!(
        released.elapsed() < Duration::from_secs(10),
        "delivered {:?} after the release: by the 30 s poll",
        released.elapsed()
    );
}

/// [`delivered_soon_after`] `holder`'s transaction, which holds the horizon, commits.
fn delivered_soon_after_the_horizon_moves(
    holder: &mut pgbroker::postgres::Client,
    seen: &Seen,
    hold: Duration,
) {
    delivered_soon_after(seen, hold, "delivered past the horizon", || {
        holder.batch_execute("COMMIT").unwrap()
    });
}

#[test]
fn woken_consumer_delivers_soon_after_a_long_held_horizon_is_released() {
    let db = support::db();
    let broker = db.broker();
    let (pool, seen) = idle_consumer(&db, &broker, Duration::from_secs(60));
    // An older writing transaction holds the horizon: the wake-up finds nothing readable, and
    // the end of that transaction sends no wake-up of its own.
    let mut holder = db.client();
    holder
        .batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .unwrap();
    broker
        .publish_event(&NewEvent::new("t", json!({"seq": 0})))
        .unwrap();
    delivered_soon_after_the_horizon_moves(&mut holder, &seen, Duration::from_secs(4));
    pool.shutdown().unwrap();
}

#[test]
fn consumers_wake_up_on_publish_without_waiting_for_the_poll() {
    let db = support::db();
    let broker = db.broker();
    let (pool, seen) = idle_consumer(&db, &broker, Duration::from_secs(30));
    let started = Instant::now();
    for i in 0..3u64 {
        broker
            .publish_event(&NewEvent::new("t", json!({"seq": i})))
            .unwrap();
        let n = i as usize + 1;
        assert!(support::wait_until(Duration::from_secs(10), || seen
            .lock()
            .unwrap()
            .len()
            == n));
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by NOTIFY, not the 30 s poll"
    );
    pool.shutdown().unwrap();
}

/// Events written with plain SQL wake nobody: an idle consumer sees them at its next poll (or
/// re-read), not at once, unless the writer calls `pgbroker.log_wake()`.
#[test]
fn plain_sql_inserts_wait_for_the_poll_unless_the_writer_wakes_consumers() {
    let db = support::db();
    let broker = db.broker();
    let (pool, seen) = idle_consumer(&db, &broker, Duration::from_secs(30));
    let mut c = db.client();
    c.execute(
        "INSERT INTO pgbroker.events (topic, payload) VALUES ('t', '{\"seq\": 0}')",
        &[],
    )
    .unwrap();
    delivered_soon_after(
        &seen,
        Duration::from_millis(1500),
        "woken by a plain INSERT",
        || {
            c.query("SELECT pgbroker.log_wake()", &[]).unwrap();
        },
    );
    pool.shutdown().unwrap();
}

#[test]
fn starting_a_consumer_of_a_missing_subscription_fails() {
    let db = support::db();
    let broker = db.broker();
    let err = broker
        .worker_pool()
        .threads(1)
        .subscription("missing", |_| Ok(()))
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), pgbroker::ErrorKind::NotFound);
}

#[test]
fn stopped_consumers_leave_no_waiter_and_maintenance_runs_on_a_timer() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    from_beginning(&broker, "s", "t", 1);
    // A partition three days ahead, dropped: the maintenance timer must create it again.
    let name: String = c
        .query_one(
            "SELECT 'pgbroker.events_p' || to_char((now() AT TIME ZONE 'UTC')::date + 3, 'YYYYMMDD')",
            &[],
        )
        .unwrap()
        .get(0);
    c.batch_execute(&format!("DROP TABLE {name}")).unwrap();
    let waiters = |c: &mut pgbroker::postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM pgbroker.log_waiters", &[])
            .unwrap()
            .get(0)
    };
    let pool = broker
        .worker_pool()
        .threads(1)
        .subscription_with("s", options(), |_| Ok(()))
        .log_maintenance(Duration::from_millis(100), Duration::from_secs(7 * 86400))
        .start()
        .unwrap();
    assert!(support::wait_until(WAIT, || waiters(&mut c) == 1));
    assert!(support::wait_until(WAIT, || {
        c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .unwrap()
            .get::<_, bool>(0)
    }));
    pool.shutdown().unwrap();
    assert_eq!(waiters(&mut c), 0);
}

#[test]
fn consumers_of_a_deleted_subscription_stop() {
    let db = support::db();
    let broker = db.broker();
    from_beginning(&broker, "s", "t", 2);
    let pool = broker
        .worker_pool()
        .threads(1)
        .subscription_with("s", options(), |_| Ok(()))
        .start()
        .unwrap();
    let mut c = db.client();
    let locks = |c: &mut pgbroker::postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
              WHERE l.locktype = 'advisory' AND d.datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0)
    };
    // Two partition locks and the pool's membership lock.
    assert!(support::wait_until(WAIT, || locks(&mut c) == 3));
    assert!(broker.unsubscribe("s").unwrap());
    // The member and both partition consumers notice, stop, and close their connections (and
    // locks).
    assert!(support::wait_until(WAIT, || locks(&mut c) == 0));
    pool.shutdown().unwrap();
}

#[test]
fn transactional_handlers_commit_results_and_cursor_together() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    c.batch_execute("CREATE TABLE results (event_id bigint NOT NULL)")
        .unwrap();
    from_beginning(&broker, "s", "t", 2);
    let pool = broker
        .worker_pool()
        .threads(2)
        .subscription_tx(
            "s",
            options()
                .batch_size(10)
                .retry(RetryPolicy::new([Duration::from_millis(50)])),
            |batch, tx| {
                for e in batch.events() {
                    tx.execute(
                        "INSERT INTO results (event_id) VALUES ($1)",
                        &[&e.id().get()],
                    )?;
                }
                // Fails after writing: the writes must be rolled back with the batch.
                if batch.attempt() == 0
                    && batch.events().iter().any(|e| e.payload()["fail"] == true)
                {
                    return Err("first delivery of a failing event".into());
                }
                Ok(())
            },
        )
        .start()
        .unwrap();
    let ids: Vec<i64> = broker
        .publish_batch((0..50).map(|i| {
            NewEvent::new("t", json!({"seq": i, "fail": i % 17 == 3})).key(format!("k{}", i % 5))
        }))
        .unwrap()
        .iter()
        .map(|i| i.get())
        .collect();
    let count = |c: &mut pgbroker::postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM results", &[])
            .unwrap()
            .get(0)
    };
    assert!(support::wait_until(WAIT, || count(&mut c) == 50
        && broker.pending_retries("s").unwrap() == 0));
    std::thread::sleep(Duration::from_millis(300));
    pool.shutdown().unwrap();
    let mut got: Vec<i64> = c
        .query("SELECT event_id FROM results ORDER BY event_id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    got.sort();
    assert_eq!(got, ids, "every event's effects exactly once");
    assert!(broker.dead_events("s", 10).unwrap().is_empty());
    assert!(broker
        .lag("s")
        .unwrap()
        .iter()
        .all(|p| p.events_behind == 0));
}

#[test]
fn assigned_partitions_are_consumed_only_by_their_pool() {
    let db = support::db();
    let broker = db.broker();
    from_beginning(&broker, "s", "t", 4);
    let seen: Vec<Arc<Mutex<Vec<u32>>>> = (0..2).map(|_| Arc::default()).collect();
    let pools: Vec<_> = (0..2u32)
        .map(|w| {
            let sink = seen[w as usize].clone();
            broker
                .worker_pool()
                .threads(1)
                .subscription_with(
                    "s",
                    options().only_partitions((0..4).filter(move |p| p % 2 == w)),
                    move |batch| {
                        sink.lock()
                            .unwrap()
                            .extend(batch.events().iter().map(|_| batch.partition()));
                        Ok(())
                    },
                )
                .start()
                .unwrap()
        })
        .collect();
    broker
        .publish_batch((0..200).map(|i| NewEvent::new("t", json!(i)).key(format!("k{i}"))))
        .unwrap();
    assert!(support::wait_until(WAIT, || {
        seen.iter().map(|s| s.lock().unwrap().len()).sum::<usize>() == 200
    }));
    for pool in pools {
        pool.shutdown().unwrap();
    }
    for (w, s) in seen.iter().enumerate() {
        let s = s.lock().unwrap();
        assert!(!s.is_empty());
        assert!(
            s.iter().all(|p| *p as usize % 2 == w),
            "worker {w} got {s:?}"
        );
    }
}

#[test]
fn a_transactional_handler_that_swallows_an_sql_error_counts_as_failed() {
    let db = support::db();
    let broker = db.broker();
    from_beginning(&broker, "s", "t", 1);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let pool = broker
        .worker_pool()
        .threads(1)
        .subscription_tx("s", options().retry(RetryPolicy::none()), move |_, tx| {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = tx.execute("SELECT 1 / 0", &[]); // error ignored: tx is now aborted
            Ok(())
        })
        .start()
        .unwrap();
    let id = broker.publish("t", &json!(1)).unwrap();
    assert!(support::wait_until(WAIT, || broker
        .dead_events("s", 10)
        .unwrap()
        .len()
        == 1));
    pool.shutdown().unwrap();
    let dead = broker.dead_events("s", 10).unwrap();
    assert_eq!(dead[0].event.id(), id);
    assert!(dead[0].last_error.as_deref().unwrap().contains("aborted"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(broker.read("s", 10).unwrap().is_empty());
}
