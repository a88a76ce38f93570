//! Installing and upgrading the schema; connecting.

mod support;

use pgbroker::{Broker, ErrorKind, SCHEMA_VERSION};

#[test]
fn install_is_idempotent_and_keeps_data() {
    let db = support::empty_db();
    let broker = db.broker();
    assert_eq!(broker.schema_version().unwrap(), None);
    assert_eq!(broker.install().unwrap(), SCHEMA_VERSION);
    assert_eq!(broker.schema_version().unwrap(), Some(SCHEMA_VERSION));
    let mut c = db.client();
    c.batch_execute("CREATE TABLE job (id int PRIMARY KEY)")
        .unwrap();
    broker
        .watch_table("job", "jobs", &pgbroker::TableOp::ALL)
        .unwrap();
    c.batch_execute("INSERT INTO pgbroker.schema_version (version) VALUES (0)")
        .unwrap();
    // Re-applying (an upgrade) keeps what is there.
    assert_eq!(broker.install().unwrap(), SCHEMA_VERSION);
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'job'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let (kept, newest): (i64, i32) = c
        .query_one(
            "SELECT count(*) FILTER (WHERE version = 0), max(version) FROM pgbroker.schema_version",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((kept, newest), (1, SCHEMA_VERSION));
}

#[test]
fn concurrent_installs_succeed() {
    let db = support::empty_db();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let broker = db.broker();
            std::thread::spawn(move || broker.install())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), SCHEMA_VERSION);
    }
}

#[test]
fn newer_database_schema_is_refused() {
    let db = support::db();
    let mut c = db.client();
    c.batch_execute("INSERT INTO pgbroker.schema_version (version) VALUES (9999)")
        .unwrap();
    let err = db.broker().install().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("9999"), "{err}");
}

#[test]
fn schema_sql_applies_with_psql_too() {
    let Ok(psql) = which("psql") else { return };
    let db = support::empty_db();
    let out = std::process::Command::new(psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.sql"))
        .arg(&db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(db.broker().schema_version().unwrap(), Some(SCHEMA_VERSION));
}

fn which(bin: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(bin))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

#[test]
fn connection_errors_are_typed() {
    let err = Broker::connect("not a url at all ===").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    // A port where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Broker::builder()
        .url(&format!("postgres://postgres@127.0.0.1:{port}/x"))
        .connect_timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.is_transient());
    let err = Broker::builder().build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn readme_sql_block_runs() {
    let readme = include_str!("../README.md");
    let start = readme.find("```sql\n").expect("README has a sql block") + 7;
    let end = start + readme[start..].find("```").unwrap();
    let db = support::db();
    let mut c = db.client();
    c.batch_execute(&readme[start..end])
        .unwrap_or_else(|e| panic!("README sql block failed: {e:?}"));
    let events: i64 = c
        .query_one("SELECT count(*) FROM pgbroker.events", &[])
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
}

/// The schema of every released version, oldest first: add one when a release changes it.
const RELEASED_SCHEMAS: &[(i32, &str)] = &[(1, include_str!("fixtures/schema_v1.sql"))];

/// Every released schema (kept in tests/fixtures/schema_vN.sql), installed and filled with
/// data, upgrades to this version with `install()`, and the data keeps working.
#[test]
fn upgrades_every_released_version_with_data() {
    use pgbroker::queue::Job;
    for &(version, sql) in RELEASED_SCHEMAS {
        let db = support::empty_db();
        let mut c = db.client();
        c.batch_execute(&format!("BEGIN; {sql}; COMMIT;"))
            .unwrap_or_else(|e| panic!("installing released schema v{version}: {e:?}"));
        c.batch_execute(
            "SELECT pgbroker.enqueue('mail', '{\"to\": \"a\"}');
             SELECT pgbroker.enqueue('mail', '{\"to\": \"b\"}', priority => 1);
             SELECT pgbroker.subscribe('billing', ARRAY['orders.*'], 1, 'beginning');
             SELECT pgbroker.publish('orders.created', '{\"id\": 1}');",
        )
        .unwrap();
        let broker = db.broker();
        assert_eq!(broker.schema_version().unwrap(), Some(version));
        assert_eq!(
            broker.install().unwrap(),
            SCHEMA_VERSION,
            "upgrade from v{version}"
        );
        assert_eq!(broker.schema_version().unwrap(), Some(SCHEMA_VERSION));
        // Old data is still served, and new data works beside it.
        broker
            .enqueue_job(&Job::new("mail", r#"{"to": "c"}"#))
            .unwrap();
        let jobs = broker
            .claim_jobs("mail", "w", 10, std::time::Duration::from_secs(60))
            .unwrap();
        let mut to: Vec<String> = jobs
            .iter()
            .map(|j| j.payload["to"].as_str().unwrap().to_owned())
            .collect();
        to.sort();
        assert_eq!(to, ["a", "b", "c"]);
        broker
            .publish("orders.paid", &serde_json::json!({"id": 2}))
            .unwrap();
        // Other tests' open transactions on this cluster may hold the horizon back a moment.
        let mut topics: Vec<String> = Vec::new();
        support::wait_until(std::time::Duration::from_secs(10), || {
            let batch = broker.read("billing", 10).unwrap();
            topics.extend(batch.events().iter().map(|e| e.topic().to_owned()));
            if let Some(last) = batch.events().last() {
                broker.ack("billing", last.position()).unwrap();
            }
            topics.len() >= 2
        });
        assert_eq!(topics, ["orders.created", "orders.paid"]);
    }
}
