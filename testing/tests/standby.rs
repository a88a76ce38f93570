//! A streaming standby: it shows what the primary committed, refuses writes, and accepts
//! them once promoted.

use std::time::Duration;

use pgbroker_testing::{wait_until, ErrorKind, TempPostgres};
use postgres::{Client, NoTls};

fn count(client: &mut Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0)
}

#[test]
fn a_standby_follows_its_primary_and_takes_over_when_promoted() {
    let primary = TempPostgres::builder().replication(true).start().unwrap();
    let mut on_primary = Client::connect(&primary.url(), NoTls).unwrap();
    on_primary
        .batch_execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
        .unwrap();

    let standby = primary.start_standby(false).unwrap();
    assert_ne!(standby.port(), primary.port());
    let mut on_standby = Client::connect(&standby.url(), NoTls).unwrap();
    let in_recovery: bool = on_standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery);
    assert_eq!(
        count(&mut on_standby),
        1,
        "the base backup holds the first row"
    );

    on_primary
        .batch_execute("INSERT INTO t VALUES (2)")
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || count(
        &mut on_standby
    ) == 2));
    let err = on_standby
        .batch_execute("INSERT INTO t VALUES (3)")
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25006")); // read_only_sql_transaction

    primary.stop().unwrap();
    standby.promote().unwrap();
    let mut on_promoted = Client::connect(&standby.url(), NoTls).unwrap();
    on_promoted
        .batch_execute("INSERT INTO t VALUES (3)")
        .unwrap();
    assert_eq!(count(&mut on_promoted), 3);
}

#[test]
fn a_synchronous_standby_has_every_commit_before_the_primary_acknowledges_it() {
    let primary = TempPostgres::builder().replication(true).start().unwrap();
    let standby = primary.start_standby(true).unwrap();
    let mut on_primary = Client::connect(&primary.url(), NoTls).unwrap();
    let names: String = on_primary
        .query_one("SHOW synchronous_standby_names", &[])
        .unwrap()
        .get(0);
    assert!(names.contains("pgbroker_standby_"), "{names}");
    // remote_apply: the commit returns once the standby has applied it, so it is visible
    // there at once, with no waiting.
    on_primary
        .batch_execute(
            "SET synchronous_commit = remote_apply;
             CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 5)",
        )
        .unwrap();
    let mut on_standby = Client::connect(&standby.url(), NoTls).unwrap();
    assert_eq!(count(&mut on_standby), 5);

    // A second standby copies the primary's configuration but not its synchronous-standby
    // setting: promoted, it accepts writes without waiting for a standby it does not have.
    let second = primary.start_standby(false).unwrap();
    drop(standby);
    primary.stop().unwrap();
    second.promote().unwrap();
    let mut on_second = Client::connect(&second.url(), NoTls).unwrap();
    on_second.batch_execute("INSERT INTO t VALUES (6)").unwrap();
    assert_eq!(count(&mut on_second), 6);
}

#[test]
fn a_standby_needs_a_primary_built_for_replication() {
    let plain = TempPostgres::start().unwrap();
    let err = plain.start_standby(false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("replication(true)"), "{err}");
}
