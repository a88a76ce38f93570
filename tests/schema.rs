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
    let versions: i64 = c
        .query_one("SELECT count(*) FROM pgbroker.schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(versions, 2);
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
