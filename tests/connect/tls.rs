//! A TLS-only server (hostssl lines only, scram passwords, a client-certificate user) and
//! every sslmode against it.

use std::sync::OnceLock;
use std::time::Duration;

use pgbroker::{Broker, ErrorKind};
use pgbroker_testing::TempPostgres;

use super::certs::Certs;

pub const PASSWORD: &str = "s3cret pass";

pub struct TlsServer {
    pub pg: TempPostgres,
    pub certs: Certs,
}

impl TlsServer {
    /// A URL as the superuser with a password, plus `extra` URL parameters.
    pub fn url(&self, extra: &str) -> String {
        format!(
            "postgres://postgres:s3cret%20pass@127.0.0.1:{}/postgres?connect_timeout=5&{extra}",
            self.pg.port()
        )
    }
}

pub fn server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let certs = Certs::make();
        let pg = TempPostgres::builder()
            .superuser_password(PASSWORD)
            .hba([
                "hostssl all certuser 127.0.0.1/32 cert",
                "hostssl all all 127.0.0.1/32 scram-sha-256",
            ])
            .data_file("server.crt", certs.read("server.crt"))
            .data_file("server.key", certs.read("server.key"))
            .data_file("root.crt", certs.read("ca.crt"))
            .setting("ssl", "on")
            .setting("ssl_cert_file", "server.crt")
            .setting("ssl_key_file", "server.key")
            .setting("ssl_ca_file", "root.crt")
            .start()
            .expect("start the TLS-only server");
        let s = TlsServer { pg, certs };
        let broker = Broker::connect(&s.url("sslmode=require")).expect("connect over TLS");
        let mut conn = broker.conn().unwrap();
        conn.batch_execute("CREATE ROLE certuser LOGIN").unwrap();
        conn.batch_execute("CREATE DATABASE tls_app").unwrap();
        s
    })
}

/// Whether the broker's pooled connection is encrypted, per the server.
fn encrypted(broker: &Broker) -> bool {
    broker
        .conn()
        .unwrap()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn every_sslmode_against_a_tls_only_server() {
    let s = server();
    let ca = format!("sslrootcert={}", s.certs.path("ca.crt"));
    let err = Broker::connect(&s.url("sslmode=disable")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    let port = s.pg.port();
    assert!(
        err.to_string().starts_with(&format!(
            "TLS error: 127.0.0.1:{port} requires TLS (its pg_hba.conf has no entry for unencrypted connections), but sslmode=disable"
        )),
        "{err}"
    );
    for extra in [
        String::new(),
        "sslmode=prefer".into(),
        "sslmode=require".into(),
        format!("sslmode=verify-ca&{ca}"),
        format!("sslmode=verify-full&{ca}"),
    ] {
        let broker = Broker::connect(&s.url(&extra)).unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert!(encrypted(&broker), "{extra}");
    }
    // verify-full by name, the way managed servers are reached.
    let by_name = format!(
        "postgres://postgres:s3cret%20pass@localhost:{port}/postgres?sslmode=verify-full&{ca}"
    );
    assert!(encrypted(&Broker::connect(&by_name).unwrap()));
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let s = server();
    let other = format!("sslrootcert={}", s.certs.path("other-ca.crt"));
    // require with a root certificate verifies the chain, as libpq does.
    for mode in ["verify-full", "verify-ca", "require"] {
        let err = Broker::connect(&s.url(&format!("sslmode={mode}&{other}"))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tls, "{mode}: {err}");
        assert_eq!(
            err.to_string(),
            format!(
                "TLS error: the certificate of 127.0.0.1:{} is not signed by a trusted CA (sslrootcert {})",
                s.pg.port(),
                s.certs.path("other-ca.crt")
            ),
            "{mode}"
        );
    }
    let err =
        Broker::connect(&s.url("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/ca.pem does not exist"),
        "{err}"
    );
}

#[test]
fn verify_full_checks_the_host_name() {
    let s = server();
    // Connect to 127.0.0.1 while naming a host the certificate does not list.
    let conninfo = |mode: &str| {
        format!(
            "host=db.wrong.example hostaddr=127.0.0.1 port={} user=postgres password='{PASSWORD}' \
             dbname=postgres sslmode={mode} sslrootcert='{}'",
            s.pg.port(),
            s.certs.path("ca.crt")
        )
    };
    let err = Broker::connect(&conninfo("verify-full")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "TLS error: the certificate of db.wrong.example:{} is not for host db.wrong.example",
            s.pg.port()
        )),
        "{err}"
    );
    // verify-ca checks only the chain.
    assert!(encrypted(&Broker::connect(&conninfo("verify-ca")).unwrap()));
}

#[test]
fn client_certificate_authentication() {
    let s = server();
    let port = s.pg.port();
    let base = format!(
        "postgres://certuser@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        s.certs.path("ca.crt")
    );
    let with_cert = format!(
        "{base}&sslcert={}&sslkey={}",
        s.certs.path("client.crt"),
        s.certs.path("client.key")
    );
    let broker = Broker::connect(&with_cert).unwrap();
    let user: String = broker
        .conn()
        .unwrap()
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(user, "certuser");

    let err = Broker::connect(&base).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "connection failed: localhost:{port} refused the login of user certuser: "
        )),
        "{err}"
    );
    assert_eq!(err.db_code(), Some("28000"));
}

#[test]
fn passwords_missing_and_wrong() {
    let s = server();
    let port = s.pg.port();
    let no_file = "passfile=/nonexistent/pgpass";
    let err = Broker::connect(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require&{no_file}"
    ))
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "connection failed: 127.0.0.1:{port} asks for a password for user postgres and none was given: \
             put it in the URL, PGPASSWORD or ~/.pgpass"
        )
    );
    let err = Broker::connect(&format!(
        "postgres://postgres:wrong@127.0.0.1:{port}/postgres?sslmode=require"
    ))
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "connection failed: authentication failed for user postgres at 127.0.0.1:{port}: wrong password"
        )),
        "{err}"
    );
    assert_eq!(err.db_code(), Some("28P01"));
}

#[test]
fn a_broker_over_verify_full_uses_tls_for_every_connection() {
    let s = server();
    let url = format!(
        "postgres://postgres:s3cret%20pass@localhost:{}/tls_app?sslmode=verify-full&sslrootcert={}&application_name=tls-e2e",
        s.pg.port(),
        s.certs.path("ca.crt")
    );
    let broker = Broker::builder()
        .url(&url)
        .listener_poll(Duration::from_millis(50))
        .build()
        .unwrap();
    broker.install().unwrap();
    let listener = broker.listen("tls").unwrap();
    broker.notify("tls", "hello").unwrap();
    match listener.recv_timeout(Duration::from_secs(10)).unwrap() {
        Some(pgbroker::Event::Notification(n)) => assert_eq!(n.payload(), "hello"),
        other => panic!("{other:?}"),
    }
    let id = broker.enqueue("tls_jobs", "{}").unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let pool = broker
        .worker_pool()
        .queue("tls_jobs", 1, move |job| {
            tx.send(job.id()).unwrap();
            Ok(())
        })
        .start()
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), id);
    let plain: i64 = broker
        .conn()
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity JOIN pg_stat_ssl USING (pid)
              WHERE application_name = 'tls-e2e' AND NOT ssl",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(plain, 0);
    pool.shutdown().unwrap();
    drop(listener);
}
