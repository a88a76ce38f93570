//! Balanced partition assignment: worker pools (standing for processes) consuming one
//! partitioned subscription share its partitions fairly, hand them over when members join,
//! leave or die, and every event is handled exactly once, in order per key.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbroker::topic::{ConsumerOptions, NewEvent, StartAt};
use pgbroker::{Broker, WorkerPool};
use serde_json::json;

const PARTITIONS: u32 = 6;
const KEYS: usize = 60;
/// Events per round: 50 per key.
const ROUND: usize = 3000;
const WAIT: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(100);

/// One handled event.
#[derive(Debug, Clone)]
struct Handled {
    member: &'static str,
    partition: u32,
    id: i64,
    key: String,
    seq: u64,
}

type Log = Arc<Mutex<Vec<Handled>>>;

fn subscribe(broker: &Broker) {
    broker
        .subscription("s")
        .pattern("t")
        .partitions(PARTITIONS)
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
}

fn start_member(broker: &Broker, member: &'static str, log: &Log) -> WorkerPool {
    let log = log.clone();
    broker
        .worker_pool()
        .threads(2)
        .subscription_with(
            "s",
            ConsumerOptions::new()
                .member_name(member)
                .batch_size(50)
                .poll_interval(TICK)
                .lock_retry(TICK),
            move |batch| {
                let mut log = log.lock().unwrap();
                for e in batch.events() {
                    log.push(Handled {
                        member,
                        partition: batch.partition(),
                        id: e.id().get(),
                        key: e.key().unwrap().to_owned(),
                        seq: e.payload()["seq"].as_u64().unwrap(),
                    });
                }
                Ok(())
            },
        )
        .start()
        .unwrap()
}

/// Starts a member and waits until it is listed, so that members join in a known order.
fn join(broker: &Broker, member: &'static str, log: &Log) -> WorkerPool {
    let pool = start_member(broker, member, log);
    assert!(support::wait_until(WAIT, || broker
        .subscription_members("s")
        .unwrap()
        .iter()
        .any(|m| m.name == member)));
    pool
}

/// Publishes round `round`: 50 events for each of the 60 keys, sequence numbers increasing
/// per key across rounds. Returns the event ids.
fn publish_round(broker: &Broker, round: u64) -> Vec<i64> {
    let per_key = (ROUND / KEYS) as u64;
    let events = (0..per_key).flat_map(|i| {
        (0..KEYS).map(move |k| {
            NewEvent::new("t", json!({"seq": round * 1000 + i})).key(format!("key-{k}"))
        })
    });
    let ids: Vec<i64> = events
        .collect::<Vec<_>>()
        .chunks(500)
        .flat_map(|chunk| broker.publish_batch(chunk.to_vec()).unwrap())
        .map(|id| id.get())
        .collect();
    assert_eq!(ids.len(), ROUND);
    ids
}

/// Waits until the live members are exactly `want` (name and number of partitions, oldest
/// first) and hold every partition once between them; returns partition -> member name.
fn settle(broker: &Broker, want: &[(&str, usize)]) -> BTreeMap<u32, String> {
    let mut last = Vec::new();
    let settled = support::wait_until(WAIT, || {
        let members = broker.subscription_members("s").unwrap();
        last = members
            .iter()
            .map(|m| (m.name.clone(), m.partitions.clone()))
            .collect::<Vec<_>>();
        let shape: Vec<(&str, usize)> = members
            .iter()
            .map(|m| (m.name.as_str(), m.partitions.len()))
            .collect();
        let all: BTreeSet<u32> = members.iter().flat_map(|m| m.partitions.clone()).collect();
        shape == want && all.len() == PARTITIONS as usize
    });
    assert!(settled, "members never became {want:?}; last seen {last:?}");
    // Settled means stable: several check-ins later nothing moved.
    std::thread::sleep(TICK * 5);
    let now: Vec<(String, Vec<u32>)> = broker
        .subscription_members("s")
        .unwrap()
        .iter()
        .map(|m| (m.name.clone(), m.partitions.clone()))
        .collect();
    assert_eq!(now, last, "the assignment moved after settling");
    last.into_iter()
        .flat_map(|(name, parts)| parts.into_iter().map(move |p| (p, name.clone())))
        .collect()
}

/// Waits until `n` events were handled, and a little more for any extra one to show up.
fn wait_handled(log: &Log, n: usize) {
    assert!(
        support::wait_until(WAIT, || log.lock().unwrap().len() >= n),
        "only {} of {n} events handled",
        log.lock().unwrap().len()
    );
    std::thread::sleep(TICK * 3);
}

/// Every published event handled exactly once, each key in order.
fn check_exactly_once(log: &[Handled], published: &[i64]) {
    assert_eq!(log.len(), published.len(), "events handled");
    let handled: HashSet<i64> = log.iter().map(|h| h.id).collect();
    assert_eq!(handled.len(), log.len(), "duplicates");
    assert_eq!(
        handled,
        published.iter().copied().collect(),
        "handled != published"
    );
    let mut last: HashMap<&str, u64> = HashMap::new();
    for h in log {
        if let Some(prev) = last.insert(&h.key, h.seq) {
            assert!(
                h.seq > prev,
                "key {} out of order: {prev} then {}",
                h.key,
                h.seq
            );
        }
    }
}

/// The events of `ids` were each handled by the member holding their partition.
fn check_holders(log: &[Handled], ids: &[i64], holders: &BTreeMap<u32, String>) {
    let ids: HashSet<i64> = ids.iter().copied().collect();
    let mut per_member: BTreeMap<&str, usize> = BTreeMap::new();
    for h in log.iter().filter(|h| ids.contains(&h.id)) {
        assert_eq!(
            holders[&h.partition], h.member,
            "partition {} handled by {}",
            h.partition, h.member
        );
        *per_member.entry(h.member).or_default() += 1;
    }
    // Every holder got work (60 keys spread over every partition).
    let expected: BTreeSet<&str> = holders.values().map(String::as_str).collect();
    assert_eq!(
        per_member.keys().copied().collect::<BTreeSet<_>>(),
        expected
    );
}

#[test]
fn members_share_partitions_fairly_as_they_join_and_leave() {
    let db = support::db();
    let broker = db.broker();
    subscribe(&broker);
    let log = Log::default();
    let mut published = Vec::new();

    // Three members: two partitions each.
    let a = join(&broker, "a", &log);
    let b = join(&broker, "b", &log);
    let c = join(&broker, "c", &log);
    let holders = settle(&broker, &[("a", 2), ("b", 2), ("c", 2)]);
    let round = publish_round(&broker, 0);
    published.extend(&round);
    wait_handled(&log, published.len());
    check_exactly_once(&log.lock().unwrap(), &published);
    check_holders(&log.lock().unwrap(), &round, &holders);

    // A fourth joins while events flow: the two oldest keep two, c hands one to d.
    let d = std::thread::scope(|s| {
        let publisher = s.spawn(|| publish_round(&broker, 1));
        let d = join(&broker, "d", &log);
        published.extend(publisher.join().unwrap());
        d
    });
    let holders = settle(&broker, &[("a", 2), ("b", 2), ("c", 1), ("d", 1)]);
    let round = publish_round(&broker, 2);
    published.extend(&round);
    wait_handled(&log, published.len());
    check_exactly_once(&log.lock().unwrap(), &published);
    check_holders(&log.lock().unwrap(), &round, &holders);

    // The oldest stops while events flow: c and d take over its two partitions.
    std::thread::scope(|s| {
        let publisher = s.spawn(|| publish_round(&broker, 3));
        a.shutdown().unwrap();
        published.extend(publisher.join().unwrap());
    });
    let holders = settle(&broker, &[("b", 2), ("c", 2), ("d", 2)]);
    let round = publish_round(&broker, 4);
    published.extend(&round);
    wait_handled(&log, published.len());
    check_exactly_once(&log.lock().unwrap(), &published);
    check_holders(&log.lock().unwrap(), &round, &holders);

    for pool in [b, c, d] {
        pool.shutdown().unwrap();
    }
    assert!(broker.subscription_members("s").unwrap().is_empty());
    assert!(broker
        .lag("s")
        .unwrap()
        .iter()
        .all(|p| p.events_behind == 0));
}

#[test]
fn a_member_whose_connections_are_terminated_drops_out_and_its_partitions_move() {
    let db = support::db();
    let broker = db.broker();
    subscribe(&broker);
    let log = Log::default();
    let mut published = Vec::new();

    // Member c connects as its own role, so that it can be kept out after being cut off.
    let role = format!("{}_c", db.name);
    let c_url = db.url.replacen("://postgres@", &format!("://{role}@"), 1);
    if support::server().temp().is_none() || c_url == db.url {
        eprintln!("skipped: needs the private test cluster (creates a role)");
        return;
    }
    let mut admin = db.client();
    admin
        .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN SUPERUSER"))
        .unwrap();
    let c_broker = Broker::builder()
        .url(&c_url)
        .pool_size(2)
        .listener_poll(Duration::from_millis(50))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .shutdown_grace(Duration::from_secs(10))
        .build()
        .unwrap();

    let a = join(&broker, "a", &log);
    let b = join(&broker, "b", &log);
    let c = join(&c_broker, "c", &log);
    settle(&broker, &[("a", 2), ("b", 2), ("c", 2)]);
    published.extend(publish_round(&broker, 0));
    wait_handled(&log, published.len());

    // Cut every connection of c (as if its host vanished) and keep it from coming back.
    admin
        .batch_execute(&format!("ALTER ROLE \"{role}\" NOLOGIN"))
        .unwrap();
    let cut: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .unwrap()
        .get(0);
    // Its membership, its two partitions and its listener, at least.
    assert!(cut >= 4, "terminated {cut} connections");
    let holders = settle(&broker, &[("a", 3), ("b", 3)]);
    let round = publish_round(&broker, 1);
    published.extend(&round);
    wait_handled(&log, published.len());
    check_exactly_once(&log.lock().unwrap(), &published);
    check_holders(&log.lock().unwrap(), &round, &holders);

    // Let it back in: it rejoins as the youngest member and gets its share again.
    admin
        .batch_execute(&format!("ALTER ROLE \"{role}\" LOGIN"))
        .unwrap();
    let holders = settle(&broker, &[("a", 2), ("b", 2), ("c", 2)]);
    let round = publish_round(&broker, 2);
    published.extend(&round);
    wait_handled(&log, published.len());
    check_exactly_once(&log.lock().unwrap(), &published);
    check_holders(&log.lock().unwrap(), &round, &holders);

    for pool in [a, b, c] {
        pool.shutdown().unwrap();
    }
    drop(c_broker);
    // The role can go once its connections are closed.
    assert!(support::wait_until(WAIT, || admin
        .batch_execute(&format!("DROP ROLE \"{role}\""))
        .is_ok()));
}

#[test]
fn assigned_consumers_and_members_share_a_subscription() {
    // One member takes every partition; an assigned consumer of the same subscription takes
    // nothing from it until it leaves, then only its own partition, which the next member
    // leaves to it.
    let db = support::db();
    let broker = db.broker();
    subscribe(&broker);
    let log = Log::default();
    let a = join(&broker, "a", &log);
    settle(&broker, &[("a", 6)]);
    let assigned = broker
        .worker_pool()
        .threads(1)
        .subscription_with(
            "s",
            ConsumerOptions::new()
                .only_partitions([0])
                .lock_retry(TICK)
                .poll_interval(TICK),
            |_| Ok(()),
        )
        .start()
        .unwrap();
    std::thread::sleep(TICK * 5);
    assert_eq!(
        broker.subscription_members("s").unwrap()[0].partitions,
        [0, 1, 2, 3, 4, 5]
    );
    a.shutdown().unwrap();
    let mut c = db.client();
    assert!(support::wait_until(WAIT, || c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pgbroker.advisory_locks_held()
                             WHERE key = pgbroker.partition_lock_key('s', 0))",
            &[],
        )
        .unwrap()
        .get::<_, bool>(0)));
    let b = join(&broker, "b", &log);
    // The assigned consumer took partition 0 when a left; b shares the rest alone.
    assert!(support::wait_until(WAIT, || broker
        .subscription_members("s")
        .unwrap()
        .first()
        .is_some_and(|m| m.partitions == [1, 2, 3, 4, 5])));
    b.shutdown().unwrap();
    assigned.shutdown().unwrap();
}

const CHILD_ENV: &str = "PGBROKER_PARTITION_CHILD_URL";

/// Records each event in table `handled`, in the transaction that acknowledges it.
fn start_tx_member(broker: &Broker, member: &'static str, pause: Duration) -> WorkerPool {
    broker
        .worker_pool()
        .threads(2)
        .subscription_tx(
            "s",
            ConsumerOptions::new()
                .member_name(member)
                .batch_size(50)
                .poll_interval(TICK)
                .lock_retry(TICK),
            move |batch, tx| {
                for e in batch.events() {
                    tx.execute(
                        "INSERT INTO handled (event_id, key, seq, member)
                         VALUES ($1, $2, ($3::jsonb ->> 'seq')::bigint, $4)",
                        &[&e.id().get(), &e.key(), e.payload(), &member],
                    )?;
                }
                std::thread::sleep(pause);
                Ok(())
            },
        )
        .start()
        .unwrap()
}

/// Not a test of its own: the body of the member process that the test below starts by
/// re-running this test binary with `CHILD_ENV` set, and kills. Without it, it does nothing.
#[test]
fn child_member_process() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let broker = Broker::connect(&url).unwrap();
    let _pool = start_tx_member(&broker, "child", Duration::from_millis(50));
    std::thread::sleep(Duration::from_secs(120)); // killed long before
}

#[test]
fn a_killed_member_process_drops_out_and_its_partitions_move() {
    let db = support::db();
    let broker = db.broker();
    subscribe(&broker);
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE handled (n bigserial, event_id bigint, key text, seq bigint, member text)",
    )
    .unwrap();
    let a = start_tx_member(&broker, "a", Duration::ZERO);
    let b = start_tx_member(&broker, "b", Duration::ZERO);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "partitions::child_member_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db.url)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let joined = support::wait_until(WAIT, || {
        let shares: Vec<usize> = broker
            .subscription_members("s")
            .unwrap()
            .iter()
            .map(|m| m.partitions.len())
            .collect();
        shares == [2, 2, 2]
    });
    if !joined {
        let _ = child.kill();
        panic!("the child never got its share");
    }

    // Kill it (SIGKILL: no shutdown, no unlock) while it works through its partitions.
    let published = publish_round(&broker, 0);
    let by_child = |c: &mut pgbroker::postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM handled WHERE member = 'child'", &[])
            .unwrap()
            .get(0)
    };
    let working = support::wait_until(WAIT, || by_child(&mut c) > 0);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(working, "the child handled nothing");
    let done_by_child = by_child(&mut c);
    assert!(
        done_by_child < (ROUND / 3) as i64,
        "killed too late to tell: the child had finished its {done_by_child} events"
    );

    // Its connections closed with it: a and b take its partitions, and each event's effects
    // happen exactly once (the child's batch in hand rolled back with its transaction).
    settle(&broker, &[("a", 3), ("b", 3)]);
    assert!(support::wait_until(WAIT, || {
        c.query_one("SELECT count(*) FROM handled", &[])
            .unwrap()
            .get::<_, i64>(0)
            >= ROUND as i64
    }));
    std::thread::sleep(TICK * 3);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
    let rows = c
        .query("SELECT event_id, key, seq FROM handled ORDER BY n", &[])
        .unwrap();
    let log: Vec<Handled> = rows
        .iter()
        .map(|r| Handled {
            member: "",
            partition: 0,
            id: r.get(0),
            key: r.get(1),
            seq: r.get::<_, i64>(2) as u64,
        })
        .collect();
    check_exactly_once(&log, &published);
}

#[test]
fn the_membership_protocol_works_from_plain_sql() {
    let db = support::db();
    let broker = db.broker();
    subscribe(&broker);
    let checkin = |c: &mut pgbroker::postgres::Client, name: &str, held: &[i32]| {
        let r = c
            .query_one(
                "SELECT members, rank, share, taken, pg_current_xact_id_if_assigned() IS NULL
                   FROM pgbroker.member_checkin('s', $1, $2)",
                &[&name, &held],
            )
            .unwrap();
        (
            r.get::<_, i32>(0),
            r.get::<_, i32>(1),
            r.get::<_, i32>(2),
            r.get::<_, Vec<i32>>(3),
            r.get::<_, bool>(4),
        )
    };
    let mut x = db.client();
    let mut y = db.client();
    assert_eq!(checkin(&mut x, "x", &[]), (1, 0, 6, vec![], false));
    assert_eq!(checkin(&mut y, "y", &[]), (2, 1, 3, vec![], false));
    // x takes partitions 0 and 4 on its consumer connection, and reports them.
    let mut x_consumer = db.client();
    x_consumer
        .batch_execute(
            "SELECT pg_advisory_lock(pgbroker.partition_lock_key('s', 0)),
                    pg_advisory_lock(pgbroker.partition_lock_key('s', 4))",
        )
        .unwrap();
    assert_eq!(checkin(&mut x, "x", &[0, 4]), (2, 0, 3, vec![0, 4], false));
    // Nothing changed: read-only, so it never holds back the readers' horizon.
    assert_eq!(checkin(&mut x, "x", &[0, 4]), (2, 0, 3, vec![0, 4], true));
    let names: Vec<(String, Vec<u32>)> = broker
        .subscription_members("s")
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.partitions))
        .collect();
    assert_eq!(names, [("x".into(), vec![0, 4]), ("y".into(), vec![])]);
    // x's sessions end: it is gone at once, and so are its partition locks.
    drop(x);
    drop(x_consumer);
    assert!(support::wait_until(WAIT, || checkin(&mut y, "y", &[])
        == (1, 0, 6, vec![], true)));
    assert_eq!(broker.subscription_members("s").unwrap().len(), 1);
    // A deleted subscription ends the membership with SQLSTATE P0002.
    broker.unsubscribe("s").unwrap();
    let err = y
        .query_one("SELECT * FROM pgbroker.member_checkin('s', 'y')", &[])
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "P0002");
}
