//! The chaos suite: messages flow through worker processes that are SIGKILLed at random, while
//! the server is crash-restarted (`pg_ctl stop -m immediate`) twice and random pgbroker backends
//! are terminated; a listener rides through the restarts; one scenario keeps the server down
//! for twice the lease. Each scenario prints sent / delivered / lost / duplicates and asserts
//! that nothing is lost, that the transactional modes (jobs taken in the handler's transaction,
//! events acknowledged in the consumer's transaction) deliver nothing twice, and that lease-mode
//! duplicates stay within the jobs in flight at a kill.
//!
//! Small by default (a few thousand messages per scenario, seconds); large with
//! `PGBROKER_CHAOS_MESSAGES=200000`. Needs the test binary's private cluster (it restarts it):
//! skipped when `DATABASE_URL` is set.

mod support;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgbroker::postgres::{Client, NoTls};
use pgbroker::queue::{Job, QueueOptions};
use pgbroker::topic::{ConsumerOptions, NewEvent, StartAt};
use pgbroker::{Broker, Event};
use pgbroker_testing::TempPostgres;
use serde_json::json;

/// The child worker process's mode and database (set by the parent).
const CHILD_MODE: &str = "PGBROKER_CHAOS_CHILD_MODE";
const CHILD_URL: &str = "PGBROKER_CHAOS_CHILD_URL";

const QUEUE: &str = "chaos";
const SUBSCRIPTION: &str = "chaos";
const PARTITIONS: u32 = 4;
/// Worker processes alive at any time.
const WORKERS: usize = 3;
/// Handler threads (queue concurrency) per worker process.
const CONCURRENCY: usize = 4;
/// Jobs or events per producer transaction.
const BATCH: u64 = 250;

/// Production is spread over at least this long.
const PRODUCE_FOR: Duration = Duration::from_secs(5);

/// The scenarios restart the one cluster of this test binary: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn messages() -> u64 {
    std::env::var("PGBROKER_CHAOS_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Jobs with a lease; the handler's write and the completion are separate commits.
    JobsLease,
    /// Jobs taken in the handler's transaction: the write commits with the completion.
    JobsTransactional,
    /// Events of a partitioned subscription, acknowledged in the consumer's transaction.
    Events,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::JobsLease => "jobs-lease",
            Mode::JobsTransactional => "jobs-transactional",
            Mode::Events => "events",
        }
    }

    fn parse(s: &str) -> Mode {
        match s {
            "jobs-lease" => Mode::JobsLease,
            "jobs-transactional" => Mode::JobsTransactional,
            _ => Mode::Events,
        }
    }
}

// The child worker process ------------------------------------------------------------------

/// Not a test of its own: the body of a worker process, which the scenarios start by running
/// this test binary again with `CHILD_MODE` set. Without it, it does nothing. It works until it
/// is killed.
#[test]
fn chaos_child_worker() {
    let (Ok(mode), Ok(url)) = (std::env::var(CHILD_MODE), std::env::var(CHILD_URL)) else {
        return;
    };
    let mode = Mode::parse(&mode);
    let pid = std::process::id() as i32;
    // The server may be down right now (a restart): keep trying.
    let _pool = loop {
        match start_child_pool(mode, &url, pid) {
            Ok(pool) => break pool,
            Err(e) => {
                eprintln!("chaos child {pid}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn start_child_pool(mode: Mode, url: &str, pid: i32) -> pgbroker::Result<pgbroker::WorkerPool> {
    let broker = Broker::builder()
        .url(url)
        .pool_size(CONCURRENCY as u32 + 4)
        .listener_poll(Duration::from_millis(50))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .application_name("pgbroker-chaos-child")
        .build()?;
    let pool = broker.worker_pool().threads(CONCURRENCY + 2);
    let pool = match mode {
        Mode::JobsLease => pool.queue_with(
            QueueOptions::new(QUEUE)
                .concurrency(CONCURRENCY)
                .lease(Duration::from_secs(2))
                .poll_interval(Duration::from_millis(100))
                .rescue_interval(Duration::from_millis(250))
                .worker_name(format!("chaos-{pid}")),
            move |job| {
                let seq = job.payload()["seq"].as_i64().unwrap_or(-1);
                let mut conn = job.broker().conn()?;
                conn.execute(
                    "INSERT INTO done (seq, item, pid, attempt) VALUES ($1, $2, $3, $4)",
                    &[&seq, &job.id(), &pid, &(job.attempt() as i32)],
                )?;
                Ok(())
            },
        ),
        Mode::JobsTransactional => pool.queue_with(
            QueueOptions::new(QUEUE)
                .transactional(true)
                .concurrency(CONCURRENCY)
                .jobs_per_transaction(10)
                .poll_interval(Duration::from_millis(100))
                .worker_name(format!("chaos-{pid}")),
            move |job| {
                let seq = job.payload()["seq"].as_i64().unwrap_or(-1);
                let (id, attempt) = (job.id(), job.attempt() as i32);
                job.with_transaction(|tx| {
                    tx.execute(
                        "INSERT INTO done (seq, item, pid, attempt) VALUES ($1, $2, $3, $4)",
                        &[&seq, &id, &pid, &attempt],
                    )?;
                    Ok(())
                })?;
                Ok(())
            },
        ),
        Mode::Events => pool.subscription_tx(
            SUBSCRIPTION,
            ConsumerOptions::new()
                .batch_size(100)
                .poll_interval(Duration::from_millis(100))
                .member_name(format!("chaos-{pid}")),
            move |batch, tx| {
                for e in batch.events() {
                    let seq = e.payload()["seq"].as_i64().unwrap_or(-1);
                    tx.execute(
                        "INSERT INTO done (seq, item, pid, attempt) VALUES ($1, $2, $3, 0)",
                        &[&seq, &e.id().get(), &pid],
                    )?;
                }
                Ok(())
            },
        ),
    };
    pool.start()
}

// The parent: producer, chaos, accounting ------------------------------------------------------

/// The worker processes of a scenario; killed (SIGKILL) at random and replaced.
struct Workers {
    mode: Mode,
    url: String,
    alive: Vec<Child>,
    killed: Vec<u32>,
}

impl Workers {
    fn start(mode: Mode, url: &str) -> Workers {
        let mut w = Workers {
            mode,
            url: url.to_owned(),
            alive: Vec::new(),
            killed: Vec::new(),
        };
        for _ in 0..WORKERS {
            w.spawn();
        }
        w
    }

    fn spawn(&mut self) {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "chaos_child_worker",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_MODE, self.mode.name())
            .env(CHILD_URL, &self.url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a worker process");
        self.alive.push(child);
    }

    /// SIGKILLs the worker at `index` (no shutdown, no release) and starts another.
    fn kill_one(&mut self, index: usize) {
        let mut child = self.alive.remove(index % self.alive.len());
        let _ = child.kill();
        let _ = child.wait();
        self.killed.push(child.id());
        self.spawn();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.alive {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A small xorshift generator: the scenario's choices, repeatable from the printed seed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("PGBROKER_CHAOS_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("chaos seed {seed} (PGBROKER_CHAOS_SEED repeats it)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Runs `f` on a fresh connection until it succeeds (the server may be restarting).
fn with_retry<T>(
    url: &str,
    mut f: impl FnMut(&mut Client) -> Result<T, pgbroker::postgres::Error>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = Client::connect(url, NoTls).and_then(|mut c| f(&mut c));
        match r {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("the database stayed unreachable: {e}"),
        }
    }
}

/// Writes `total` jobs or events, `BATCH` per transaction together with their rows in `sent`;
/// after a failure, looks whether the batch committed before writing it again, so each is
/// written exactly once whatever the chaos.
fn produce(mode: Mode, broker: &Broker, url: &str, total: u64, produced: &AtomicU64) {
    // A small run is spread over a few seconds, so that the chaos meets it in flight.
    let pause = PRODUCE_FOR / (total.div_ceil(BATCH) as u32).max(1);
    let mut next = 0u64;
    while next < total {
        std::thread::sleep(pause);
        let end = (next + BATCH).min(total);
        let attempt = (|| -> pgbroker::Result<()> {
            let mut conn = broker.conn()?;
            let mut tx = conn.transaction()?;
            match mode {
                Mode::JobsLease | Mode::JobsTransactional => {
                    let jobs: Vec<Job> = (next..end)
                        .map(|seq| {
                            Job::new(QUEUE, &json!({ "seq": seq }))
                                .max_attempts(1_000)
                                .backoff(Duration::from_millis(50), Duration::from_millis(500))
                        })
                        .collect();
                    broker.enqueue_batch_in(&mut tx, &jobs)?;
                }
                Mode::Events => {
                    let events = (next..end).map(|seq| {
                        NewEvent::new("chaos.event", json!({ "seq": seq }))
                            .key((seq % 64).to_string())
                    });
                    broker.publish_batch_in(&mut tx, events)?;
                }
            }
            tx.execute(
                "INSERT INTO sent SELECT generate_series($1::bigint, $2::bigint)",
                &[&(next as i64), &(end as i64 - 1)],
            )?;
            tx.commit()?;
            Ok(())
        })();
        let written = attempt.is_ok()
            || with_retry(url, |c| {
                c.query_one(
                    "SELECT EXISTS (SELECT 1 FROM sent WHERE seq = $1)",
                    &[&(next as i64)],
                )
                .map(|r| r.get::<_, bool>(0))
            });
        if written {
            next = end;
            produced.store(next, Ordering::SeqCst);
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What a scenario counted.
#[derive(Debug, Default)]
struct Tally {
    sent: i64,
    delivered: i64,
    lost: i64,
    duplicates: i64,
    /// Duplicates whose first run was in a worker process that was killed.
    duplicates_after_kill: i64,
    kills: usize,
    restarts: usize,
    terminated: i64,
    seconds: f64,
}

/// The chaos applied during a scenario.
#[derive(Debug, Clone, Copy)]
struct Plan {
    kill_workers: bool,
    crash_restarts: usize,
    terminate_backends: bool,
    /// Keep the server down this long once, mid-run.
    outage: Option<Duration>,
}

fn setup(db: &support::TestDb, mode: Mode) {
    let mut c = db.client();
    // The test cluster runs with synchronous_commit off (fast, not durable): an immediate stop
    // would lose commits already acknowledged. Here every commit must survive a crash.
    c.batch_execute(&format!(
        "ALTER DATABASE \"{}\" SET synchronous_commit = on",
        db.name
    ))
    .unwrap();
    c.batch_execute(
        "CREATE TABLE sent (seq bigint PRIMARY KEY);
         CREATE TABLE done (seq bigint NOT NULL, item bigint NOT NULL, pid int NOT NULL,
                            attempt int NOT NULL);",
    )
    .unwrap();
    if mode == Mode::Events {
        db.broker()
            .subscription(SUBSCRIPTION)
            .pattern("chaos.#")
            .partitions(PARTITIONS)
            .start_at(StartAt::Beginning)
            .save()
            .unwrap();
    }
}

fn temp_server() -> Option<&'static TempPostgres> {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        eprintln!("skipped: DATABASE_URL is set and that server cannot be restarted here");
        return None;
    }
    support::server().temp()
}

fn run_scenario(mode: Mode, plan: Plan) -> Option<Tally> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pg = temp_server()?;
    let total = messages();
    let started = Instant::now();
    let db = support::db();
    setup(&db, mode);
    let url = db.url.clone();
    let broker = db.broker();
    let listener = broker.listen("chaos_probe").unwrap();
    let mut workers = Workers::start(mode, &url);
    let mut rng = Rng::new();

    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let (broker, url, produced) = (broker.clone(), url.clone(), produced.clone());
        std::thread::spawn(move || produce(mode, &broker, &url, total, &produced))
    };
    let delivered = |c: &mut Client| {
        c.query_one("SELECT count(DISTINCT seq) FROM done", &[])
            .map(|r| r.get::<_, i64>(0))
    };

    let mut tally = Tally {
        sent: total as i64,
        ..Tally::default()
    };
    // Chaos until everything is delivered: restarts at about 1/3 and 2/3 of the deliveries,
    // the outage at 1/2, kills and terminations every few hundred milliseconds.
    let mut next_restart = 1;
    let mut outage_done = plan.outage.is_none();
    let deadline = Instant::now() + Duration::from_secs(120 + total / 200);
    loop {
        let done = with_retry(&url, delivered);
        let p = produced.load(Ordering::SeqCst);
        if done >= total as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {done} of {total} delivered after {:.0} s (produced {p})",
            mode.name(),
            started.elapsed().as_secs_f64()
        );
        {
            let done = done as u64;
            if next_restart <= plan.crash_restarts
                && done * (plan.crash_restarts as u64 + 1) >= total * next_restart as u64
            {
                pg.crash_restart().expect("pg_ctl restart -m immediate");
                tally.restarts += 1;
                next_restart += 1;
            }
            if !outage_done && done * 2 >= total {
                pg.stop_immediate().unwrap();
                std::thread::sleep(plan.outage.unwrap());
                pg.resume().unwrap();
                outage_done = true;
                tally.restarts += 1;
            }
            if plan.kill_workers && rng.below(2) == 0 {
                let i = rng.below(WORKERS as u64) as usize;
                workers.kill_one(i);
                tally.kills += 1;
            }
            if plan.terminate_backends && rng.below(3) == 0 {
                tally.terminated += with_retry(&url, |c| {
                    c.query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM (
                             SELECT pid FROM pg_stat_activity
                              WHERE datname = current_database() AND pid <> pg_backend_pid()
                                AND backend_type = 'client backend'
                              ORDER BY random() LIMIT 2) t",
                        &[],
                    )
                    .map(|r| r.get::<_, i64>(0))
                });
            }
        }
        std::thread::sleep(Duration::from_millis(200 + rng.below(300)));
    }
    producer.join().expect("the producer finished");
    // Late duplicates (a rescued lease whose first run was only slow) show up a little after.
    std::thread::sleep(Duration::from_millis(500));
    let killed: HashSet<i32> = workers.killed.iter().map(|&p| p as i32).collect();
    drop(workers);

    let rows: Vec<(i64, i32)> = with_retry(&url, |c| {
        c.query("SELECT seq, pid FROM done ORDER BY seq, attempt, pid", &[])
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    });
    let sent: i64 = with_retry(&url, |c| {
        c.query_one("SELECT count(*) FROM sent", &[])
            .map(|r| r.get(0))
    });
    assert_eq!(sent, total as i64, "every batch was written exactly once");
    let mut seen = HashSet::new();
    let mut first_pid = std::collections::HashMap::new();
    for (seq, pid) in &rows {
        if seen.insert(*seq) {
            first_pid.insert(*seq, *pid);
        } else {
            tally.duplicates += 1;
            if first_pid.get(seq).is_some_and(|p| killed.contains(p)) {
                tally.duplicates_after_kill += 1;
            }
        }
    }
    tally.delivered = seen.len() as i64;
    tally.lost = (0..total as i64).filter(|s| !seen.contains(s)).count() as i64;
    tally.seconds = started.elapsed().as_secs_f64();

    // The listener rode through every restart: a notification sent now arrives.
    let mut reconnects = 0;
    let mut heard = false;
    let sent_at = Instant::now();
    let _ = with_retry(&url, |c| c.execute("NOTIFY chaos_probe, 'after'", &[]));
    while sent_at.elapsed() < Duration::from_secs(30) && !heard {
        match listener.recv_timeout(Duration::from_secs(1)) {
            Ok(Some(Event::Reconnected { .. })) => reconnects += 1,
            Ok(Some(Event::Notification(n))) if n.payload() == "after" => heard = true,
            Ok(_) => {}
            Err(e) => panic!("listener: {e}"),
        }
        if !heard && sent_at.elapsed() > Duration::from_secs(2) {
            let _ = with_retry(&url, |c| c.execute("NOTIFY chaos_probe, 'after'", &[]));
        }
    }
    assert!(
        heard,
        "{}: the listener heard nothing after the restarts",
        mode.name()
    );
    if tally.restarts > 0 {
        assert!(reconnects >= 1, "{}: no Reconnected event", mode.name());
    }
    eprintln!(
        "chaos {:<19} sent {} delivered {} lost {} duplicates {} ({} after a worker kill) | \
         {} worker kills, {} server restarts, {} backends terminated, listener reconnects {}, \
         {:.1} s",
        mode.name(),
        tally.sent,
        tally.delivered,
        tally.lost,
        tally.duplicates,
        tally.duplicates_after_kill,
        tally.kills,
        tally.restarts,
        tally.terminated,
        reconnects,
        tally.seconds
    );
    Some(tally)
}

// The scenarios ---------------------------------------------------------------------------------

/// The most jobs one lease-mode worker process can have run without their completion recorded:
/// those its handlers hold, plus completions buffered for one batch (src/queue/completions.rs).
const LEASE_IN_FLIGHT: i64 = CONCURRENCY as i64 + 1_000;

const FULL_CHAOS: Plan = Plan {
    kill_workers: true,
    crash_restarts: 2,
    terminate_backends: true,
    outage: None,
};

#[test]
fn jobs_with_leases_survive_worker_kills_with_duplicates_only_from_killed_workers() {
    let plan = Plan {
        kill_workers: true,
        crash_restarts: 0,
        terminate_backends: false,
        outage: None,
    };
    let Some(t) = run_scenario(Mode::JobsLease, plan) else {
        return;
    };
    assert_eq!(t.lost, 0);
    assert_eq!(
        t.duplicates, t.duplicates_after_kill,
        "every duplicate was in flight in a killed worker"
    );
    assert!(t.duplicates <= t.kills as i64 * LEASE_IN_FLIGHT, "{t:?}");
}

#[test]
fn jobs_with_leases_lose_nothing_under_full_chaos() {
    let Some(t) = run_scenario(Mode::JobsLease, FULL_CHAOS) else {
        return;
    };
    assert_eq!(t.lost, 0);
    // Kills, restarts and terminations each cut some workers' in-flight jobs at most.
    let cuts = t.kills as i64 + t.restarts as i64 * WORKERS as i64 + t.terminated;
    assert!(t.duplicates <= cuts * LEASE_IN_FLIGHT, "{t:?}");
}

#[test]
fn transactional_jobs_lose_nothing_and_run_once_under_full_chaos() {
    let Some(t) = run_scenario(Mode::JobsTransactional, FULL_CHAOS) else {
        return;
    };
    assert_eq!((t.lost, t.duplicates), (0, 0), "{t:?}");
}

#[test]
fn partitioned_events_acked_in_the_consumer_transaction_arrive_once_under_full_chaos() {
    let Some(t) = run_scenario(Mode::Events, FULL_CHAOS) else {
        return;
    };
    assert_eq!((t.lost, t.duplicates), (0, 0), "{t:?}");
}

#[test]
fn jobs_with_leases_survive_an_outage_longer_than_the_lease() {
    // The child workers' lease is 2 s: the server stays down for 4 s.
    let plan = Plan {
        kill_workers: false,
        crash_restarts: 0,
        terminate_backends: false,
        outage: Some(Duration::from_secs(4)),
    };
    let Some(t) = run_scenario(Mode::JobsLease, plan) else {
        return;
    };
    assert_eq!(t.lost, 0);
    assert_eq!(t.duplicates_after_kill, 0);
    assert!(
        t.duplicates <= WORKERS as i64 * LEASE_IN_FLIGHT,
        "only jobs in flight at the outage run twice: {t:?}"
    );
}
