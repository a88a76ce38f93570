//! Through a real PgBouncer in transaction mode: several processes enqueue, publish and work
//! jobs on one server through a small pool of shared server connections; every job is done
//! exactly once and none is left behind.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgbroker::queue::{Job, QueueLimits, Schedule};
use pgbroker::topic::NewEvent;
use pgbroker::{Broker, ErrorKind};
use pgbroker_testing::TempPostgres;

use crate::support;

const CHILD: &str = "PGBROKER_TEST_BOUNCER_CHILD";
const PROCESSES: usize = 3;
const JOBS: i64 = 120; // per process
const EVENTS: i64 = 40; // per process

/// PgBouncer in front of a cluster, on a free loopback port; killed on drop.
struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

fn binary() -> PathBuf {
    [
        "/usr/sbin/pgbouncer",
        "/usr/bin/pgbouncer",
        "/usr/local/bin/pgbouncer",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("pgbouncer is not installed (apt-get install -y pgbouncer)")
}

/// The uid and gid of `postgres` (else `nobody`): PgBouncer refuses to run as root.
fn unprivileged() -> Option<(u32, u32)> {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|u| u == "0"))?;
    if !is_root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    ["postgres", "nobody"].iter().find_map(|name| {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == *name)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    })
}

impl PgBouncer {
    fn start(pg: &TempPostgres) -> PgBouncer {
        let dir = std::env::temp_dir().join(format!("pgbroker-pgbouncer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").unwrap();
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port={}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {d}/userlist.txt\n\
                 pool_mode = transaction\ndefault_pool_size = 3\nmax_client_conn = 200\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n",
                pg.port()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = unprivileged() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                std::os::unix::fs::chown(entry.unwrap().path(), Some(uid), Some(gid)).unwrap();
            }
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().expect("start pgbouncer");
        let bouncer = PgBouncer { child, dir, port };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen: {}",
                bouncer.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bouncer
    }

    fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{dbname}?sslmode=disable",
            self.port
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pooled_broker(url: &str, session: &str) -> Broker {
    Broker::builder()
        .url(url)
        .transaction_pooling(true)
        .session_url(session)
        .pool_size(4)
        .listener_poll(Duration::from_millis(50))
        .build()
        .unwrap()
}

/// One process's share: enqueue and publish through PgBouncer, then work jobs until every
/// process's jobs are done. Prints its pool's counters.
#[test]
fn child_through_pgbouncer() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let mut parts = spec.split('|');
    let (url, session, me) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let broker = pooled_broker(url, session);
    for i in 0..JOBS {
        let payload = serde_json::json!({ "from": me, "i": i });
        if i % 2 == 0 {
            broker.enqueue("bounced", &payload).unwrap();
        } else {
            broker.enqueue_job(&Job::new("bounced", &payload)).unwrap();
        }
    }
    let batch: Vec<Job> = (0..10)
        .map(|i| Job::new("bounced", &serde_json::json!({ "batch": i })))
        .collect();
    assert_eq!(broker.enqueue_batch(&batch).unwrap(), 10);
    for i in 0..EVENTS - 10 {
        broker
            .publish("bounced", &serde_json::json!({ "from": me, "i": i }))
            .unwrap();
    }
    let events: Vec<NewEvent> = (0..10)
        .map(|i| NewEvent::new("bounced", serde_json::json!({ "batch": i })))
        .collect();
    assert_eq!(broker.publish_batch(events).unwrap().len(), 10);
    let worker = broker.clone();
    let pool = broker
        .worker_pool()
        .queue("bounced", 2, move |job| {
            let mut conn = worker.conn()?;
            let mut tx = conn.transaction()?;
            tx.execute("INSERT INTO done (job) VALUES ($1)", &[&job.id()])?;
            tx.commit()?;
            Ok(())
        })
        .start()
        .unwrap();
    let total = PROCESSES as i64 * (JOBS + 10);
    let all_done = support::wait_until(Duration::from_secs(60), || {
        let mut conn = broker.conn().unwrap();
        let mut tx = conn.transaction().unwrap();
        let n: i64 = tx
            .query_one("SELECT count(*) FROM done", &[])
            .unwrap()
            .get(0);
        n >= total
    });
    let s = pool.shutdown().unwrap();
    println!(
        "CHILD done={all_done} handled={} failed={}",
        s.handled, s.failed
    );
}

/// The job features of issue 19 (pause, limits, dependencies, timeouts, schedules) keep no
/// session state, so they work through a transaction-mode pooler.
fn job_features_through(broker: &Broker) {
    let lease = Duration::from_secs(30);
    assert!(broker.pause_queue("gated").unwrap());
    let parent = broker.enqueue("gated", "{}").unwrap();
    let child = broker
        .enqueue_job(
            &Job::new("gated", "{}")
                .after(&[parent])
                .timeout(Duration::from_secs(20))
                .group("g"),
        )
        .unwrap();
    assert!(broker
        .claim_jobs("gated", "w", 10, lease)
        .unwrap()
        .is_empty());
    assert!(broker.resume_queue("gated").unwrap());
    broker
        .limit_queue("gated", &QueueLimits::new().group_concurrency(1))
        .unwrap();
    let first = broker.claim_jobs("gated", "w", 10, lease).unwrap();
    assert_eq!(first.iter().map(|j| j.id).collect::<Vec<_>>(), vec![parent]);
    assert_eq!(broker.complete_jobs(&first).unwrap(), 1);
    let second = broker.claim_jobs("gated", "w", 10, lease).unwrap();
    assert_eq!(second.iter().map(|j| j.id).collect::<Vec<_>>(), vec![child]);
    assert_eq!(broker.complete_jobs(&second).unwrap(), 1);
    broker
        .schedule(&Schedule::new("tick", "* * * * * *", "ticks", "{}"))
        .unwrap();
    assert_eq!(broker.schedules().unwrap().len(), 1);
    assert!(support::wait_until(Duration::from_secs(5), || broker
        .run_schedules()
        .unwrap()
        == 1));
    assert!(broker.unschedule("tick").unwrap());
    let ticks = broker.claim_jobs("ticks", "w", 10, lease).unwrap();
    assert_eq!(ticks.len(), 1);
    assert_eq!(broker.complete_jobs(&ticks).unwrap(), 1);
}

#[test]
fn processes_through_pgbouncer_in_transaction_mode() {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        eprintln!("skipped: needs a private cluster to put PgBouncer in front of");
        return;
    }
    let pg = TempPostgres::start().unwrap();
    let db = support::TestDb::create_on(&pg.url(), |n| pg.url_for(n));
    db.client()
        .batch_execute("CREATE TABLE done (job bigint NOT NULL)")
        .unwrap();
    let bouncer = PgBouncer::start(&pg);
    let url = bouncer.url(&db.name);

    // Installing through the pooler works (one transaction).
    let broker = pooled_broker(&url, &db.url);
    broker.install().unwrap();
    assert_eq!(
        broker.schema_version().unwrap(),
        Some(pgbroker::SCHEMA_VERSION)
    );

    // Without a session URL, what needs a session says so.
    let no_session = Broker::builder()
        .url(&url)
        .transaction_pooling(true)
        .build()
        .unwrap();
    let err = no_session.listen("x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("session_url"), "{err}");
    job_features_through(&broker);

    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "pgbouncer::child_through_pgbouncer",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD, format!("{url}|{}|{i}", db.url))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut handled = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("CHILD ").map(|(_, r)| r.to_owned()))
            .unwrap_or_else(|| {
                panic!(
                    "a child failed:\n{stdout}\n{}\npgbouncer log:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    bouncer.log()
                )
            });
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], "done=true", "{line}");
        assert_eq!(fields[2], "failed=0", "{line}");
        handled += fields[1]
            .trim_start_matches("handled=")
            .parse::<i64>()
            .unwrap();
    }
    let total = PROCESSES as i64 * (JOBS + 10);
    assert_eq!(handled, total);
    let mut c = db.client();
    let row = c
        .query_one("SELECT count(*), count(DISTINCT job) FROM done", &[])
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (total, total),
        "every job exactly once"
    );
    let left: i64 = c
        .query_one("SELECT count(*) FROM pgbroker.jobs", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "no job left running or available");
    let events: i64 = c
        .query_one(
            "SELECT count(*) FROM pgbroker.events WHERE topic = 'bounced'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(events, PROCESSES as i64 * EVENTS);
    drop(broker);
}
