//! Connection failures say which server and what happened; lost connections are transient.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use pgbroker::{Broker, ErrorKind};

use crate::support;

#[test]
fn a_refused_connection_names_host_and_port() {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The listener is closed again: nothing listens on the port.
    let err = Broker::connect(&format!("postgres://app@127.0.0.1:{port}/app")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        format!(
            "connection failed: connection refused by 127.0.0.1:{port}: no PostgreSQL is listening there \
             (is it running? check listen_addresses and port)"
        )
    );
}

#[test]
fn an_unknown_host_is_named() {
    let err = Broker::connect("postgres://app@no-such-host.invalid:5432/app").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert_eq!(
        err.to_string(),
        "connection failed: unknown host no-such-host.invalid: the name does not resolve to an address"
    );
}

#[test]
fn a_server_that_never_answers_times_out() {
    // Accepts TCP connections (the kernel completes them) but never says a word.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let err = Broker::builder()
        .url(&format!("postgres://app@127.0.0.1:{port}/app"))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        format!(
            "timed out: 127.0.0.1:{port} accepted the connection but did not complete the PostgreSQL \
             startup within 500ms (connect_timeout): is it a PostgreSQL server or pooler, and is it overloaded?"
        )
    );
    // The libpq setting in the URL works the same way.
    let err = Broker::connect(&format!(
        "postgres://app@127.0.0.1:{port}/app?connect_timeout=1"
    ))
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    drop(silent);
}

#[test]
fn a_database_without_the_schema_says_how_to_install_it() {
    let db = support::empty_db();
    let broker = db.broker();
    let err = broker.enqueue("jobs", "{}").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "configuration error: pgbroker is not installed in database {}: run `pgbroker setup` or `Broker::install`",
            db.name
        )),
        "{err}"
    );
}

#[test]
fn a_terminated_connection_is_closed_and_transient() {
    let db = support::db();
    let broker = db.broker();
    let mut conn = broker.conn().unwrap();
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    db.client()
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let err = pgbroker::Error::from(conn.query_one("SELECT 1", &[]).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(err.is_transient());
    drop(conn);
    // The pool hands out a live connection next.
    broker.enqueue("jobs", "{}").unwrap();
}
