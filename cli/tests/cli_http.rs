//! `pgbroker serve` and `pgbroker webhooks`, driven as a user would.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn pgbroker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgbroker"));
    c.env_remove("DATABASE_URL");
    c
}

fn run(args: &[&str]) -> Output {
    pgbroker().args(args).output().expect("run pgbroker")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn assert_usage_error(o: &Output, contains: &str) {
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err:?}");
    assert!(err.contains(contains), "stderr: {err:?}");
}

#[test]
fn webhooks_add_list_redrive_disable_remove() {
    let db = support::db();
    let url = db.url.as_str();
    let o = run(&[
        "webhooks",
        "add",
        "http://127.0.0.1:9/in",
        "--topic",
        "orders.*",
        "--topic",
        "users.#",
        "--header",
        "X-Team: billing",
        "--retries",
        "1m,5m",
        "--url",
        url,
    ]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    let (id, secret) = out.trim().split_once(' ').unwrap();
    assert_eq!(id, "1");
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    let o = run(&[
        "webhooks",
        "add",
        "http://x/y",
        "--topic",
        "a",
        "--secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "--json",
        "--url",
        url,
    ]);
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"id": 2, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
    );
    let o = run(&["webhooks", "list", "--json", "--url", url]);
    let rows: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0]["patterns"],
        serde_json::json!(["orders.*", "users.#"])
    );
    assert_eq!(rows[0]["enabled"], true);
    let mut c = db.client();
    let (headers, schedule): (Value, String) = {
        let r = c
            .query_one(
                "SELECT headers, retry_schedule::text FROM pgbroker.webhook_endpoints WHERE id = 1",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(headers, serde_json::json!({"X-Team": "billing"}));
    assert_eq!(schedule, "{00:01:00,00:05:00}");
    assert_eq!(
        stdout(&run(&["webhooks", "redrive", "1", "--url", url])),
        "0\n"
    );
    assert!(run(&["webhooks", "disable", "1", "--url", url])
        .status
        .success());
    let o = run(&["webhooks", "list", "--json", "--url", url]);
    assert!(stdout(&o)
        .lines()
        .next()
        .unwrap()
        .contains("\"enabled\":false"));
    assert!(run(&["webhooks", "remove", "1", "--url", url])
        .status
        .success());
    assert_usage_error(
        &run(&["webhooks", "remove", "1", "--url", url]),
        "no webhook endpoint 1",
    );
    assert_usage_error(
        &run(&[
            "webhooks",
            "add",
            "http://x/y",
            "--topic",
            "a",
            "--retries",
            "5 minutes",
            "--url",
            url,
        ]),
        "invalid retry interval",
    );
    assert_usage_error(
        &run(&["webhooks", "add", "ftp://x", "--topic", "a", "--url", url]),
        "invalid webhook URL",
    );
    assert_usage_error(
        &run(&[
            "webhooks",
            "add",
            "http://x/y",
            "--topic",
            "a",
            "--header",
            "nocolon",
            "--url",
            url,
        ]),
        "Name: value",
    );
}

#[test]
fn serve_refuses_a_public_address_without_tokens_and_checks_tokens() {
    let db = support::db();
    let url = db.url.as_str();
    assert_usage_error(
        &run(&["serve", "--listen", "0.0.0.0:0", "--url", url]),
        "without authentication",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tokens = std::env::temp_dir().join(format!("pgbroker-tokens-{}", std::process::id()));
    std::fs::write(&tokens, "secret-1 topics=orders.#\n").unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut child = pgbroker()
        .args(["serve", "--listen", &listen, "--tokens-file"])
        .arg(&tokens)
        .args(["--url", url])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("serving on http://127.0.0.1"), "{line}");
    let post = |auth: &str| {
        let mut s = TcpStream::connect(&listen).unwrap();
        let body = r#"{"payload": {"id": 1}}"#;
        write!(
            s,
            "POST /topics/orders.created HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(post("").starts_with("HTTP/1.1 401"));
    assert!(post("Authorization: Bearer secret-1\r\n").starts_with("HTTP/1.1 201"));
    let n: i64 = db
        .client()
        .query_one("SELECT count(*) FROM pgbroker.events", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // SIGTERM stops it gracefully.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_file(tokens);
}
