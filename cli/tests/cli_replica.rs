//! `pgbroker tail --read-replica` against a real streaming standby.

use std::process::{Command, Output};
use std::time::Duration;

use pgbroker::topic::StartAt;
use pgbroker::Broker;
use pgbroker_testing::{wait_until, TempPostgres};
use postgres::{Client, NoTls};
use serde_json::json;

fn tail(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgbroker"))
        .env_remove("DATABASE_URL")
        .arg("tail")
        .args(args)
        .output()
        .expect("run pgbroker")
}

#[test]
fn tail_reads_from_the_replica_and_acks_on_the_primary() {
    let primary = TempPostgres::builder().replication(true).start().unwrap();
    let broker = Broker::connect(&primary.url()).unwrap();
    broker.install().unwrap();
    broker
        .subscription("audit")
        .pattern("#")
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
    let standby = primary.start_standby(false).unwrap();
    let (p, r) = (primary.url(), standby.url());
    let mut on_standby = Client::connect(&r, NoTls).unwrap();
    // The standby has the subscription, and has replayed a transaction before replay stops
    // (else it cannot tell how old its data is, and is not used).
    broker.publish("a", &json!(0)).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        let sql = "SELECT 1 FROM pgbroker.events WHERE payload = '0'";
        on_standby.query_opt(sql, &[]).unwrap().is_some()
    }));
    let first = broker.read("audit", 10).unwrap();
    broker.ack("audit", first.ack_position().unwrap()).unwrap();
    on_standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .unwrap();
    // The pause takes effect at the next WAL record: write some until it has.
    let mut on_primary = Client::connect(&p, NoTls).unwrap();
    on_primary
        .batch_execute("CREATE TABLE nudge (n int)")
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        on_primary
            .batch_execute("INSERT INTO nudge VALUES (1)")
            .unwrap();
        let sql = "SELECT pg_get_wal_replay_pause_state()";
        on_standby.query_one(sql, &[]).unwrap().get::<_, String>(0) == "paused"
    }));
    broker.publish("a", &json!(1)).unwrap();
    let args = ["audit", "--count", "1", "--url", &p, "--read-replica", &r];
    let mut waiting = args.to_vec();
    waiting.extend(["--timeout", "1"]);
    let o = tail(&waiting);
    assert!(!o.status.success(), "read on the primary: {o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("0 of 1"),
        "{o:?}"
    );

    on_standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .unwrap();
    let mut done = args.to_vec();
    done.extend(["--timeout", "20"]);
    let o = tail(&done);
    assert!(o.status.success(), "{o:?}");
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["payload"], json!(1));
    // Acknowledged on the primary: nothing left for a tail there.
    let o = tail(&["audit", "--count", "1", "--timeout", "0.5", "--url", &p]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("0 of 1"),
        "{o:?}"
    );
}
