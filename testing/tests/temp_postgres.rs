//! Throwaway clusters never outlive the process that started them.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgbroker_testing::TempPostgres;

const CHILD: &str = "PGBROKER_TEST_TEMP_PG_CHILD";

/// Run by the child process only: starts a cluster, says where, and waits to be killed.
#[test]
fn child_holds_a_cluster() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let pg = TempPostgres::start().unwrap();
    println!("TEMP_PG_READY {} {}", pg.port(), pg.data_dir().display());
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_killed_process_leaves_no_cluster_behind() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holds_a_cluster",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    // The test harness prints "test child_holds_a_cluster ... " on the same line first.
    let line = stdout
        .lines()
        .map(|l| l.unwrap())
        .find_map(|l| l.find("TEMP_PG_READY ").map(|i| l[i..].to_owned()))
        .expect("the child reports its cluster");
    let mut parts = line.split(' ').skip(1);
    let port: u16 = parts.next().unwrap().parse().unwrap();
    let data_dir = PathBuf::from(parts.next().unwrap());
    assert!(data_dir.exists());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while (data_dir.exists() || TcpStream::connect(("127.0.0.1", port)).is_ok())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still up"
    );
}

#[test]
fn dropping_stops_and_removes_the_cluster() {
    let pg = TempPostgres::start().unwrap();
    let (port, dir) = (pg.port(), pg.data_dir().to_owned());
    drop(pg);
    assert!(!dir.exists());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
