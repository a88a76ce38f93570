//! Server-Sent Events: a real SSE client (PyPI `requests-sse`, in the venv .ci/run makes)
//! resumes with Last-Event-ID across a server restart and receives every event exactly once,
//! in log order; bad or out-of-bounds IDs get 204; a slow client is disconnected.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use pgbroker::topic::NewEvent;
use pgbroker_testing::wait_until;
use serde_json::json;
use support::*;

const CLIENT: &str = r#"
import json, sys
from datetime import timedelta
import requests
from requests_sse import EventSource

# requests' iter_lines reads 512-byte chunks and urllib3 blocks until a chunk is full: read
# byte by byte so each event is seen when it arrives (the client's parsing is unchanged).
_iter_lines = requests.models.Response.iter_lines
requests.models.Response.iter_lines = lambda self, *a, **k: _iter_lines(self, chunk_size=1)

url, want = sys.argv[1], int(sys.argv[2])
got = 0
with EventSource(url, reconnection_time=timedelta(milliseconds=100), max_connect_retry=30,
                 timeout=30) as source:
    for e in source:
        print(json.dumps({"id": e.last_event_id, "type": e.type, "data": e.data}), flush=True)
        got += 1
        if got == want:
            break
"#;

fn publish(env: &Env, from: i64, to: i64) {
    let events = (from..to).map(|i| NewEvent::new("orders.created", json!({ "n": i })));
    env.broker.publish_batch(events).unwrap();
    // Other topics are not streamed.
    env.broker
        .publish("users.created", &json!({"n": from}))
        .unwrap();
}

#[test]
fn a_real_client_resumes_across_a_restart_exactly_once() {
    let Some(python) = venv_python() else {
        panic!("no target/http-venv: run .ci/run (python3 -m venv target/http-venv; pip install requests-sse standardwebhooks)");
    };
    let env = env();
    let server = env.server().start().unwrap();
    let addr = server.local_addr();
    let script = std::env::temp_dir().join(format!("pgbroker-sse-{}.py", std::process::id()));
    std::fs::write(&script, CLIENT).unwrap();
    let url = format!("http://{addr}/events?topic=orders.%2A");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(&url)
        .arg("151")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || server
        .metrics()
        .sse_clients()
        == 1));

    // A transaction that commits late: its event comes first in log order, once it commits.
    let mut late_conn = env.broker.conn().unwrap();
    let mut late = late_conn.transaction().unwrap();
    env.broker
        .publish_in(&mut late, &NewEvent::new("orders.late", json!({"n": -1})))
        .unwrap();
    publish(&env, 0, 50);
    late.commit().unwrap();
    drop(late_conn);
    assert!(wait_until(Duration::from_secs(10), || server
        .metrics()
        .sse_events_sent()
        == 51));

    server.shutdown();
    publish(&env, 50, 100); // while the server is down
    let server = env.server().listen(addr.to_string()).start().unwrap();
    publish(&env, 100, 150);

    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    for _ in 0..151 {
        let line = lines.next().expect("client output").unwrap();
        got.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert!(child.wait().unwrap().success());
    let expected: Vec<(String, String, String)> = env
        .broker
        .conn()
        .unwrap()
        .query(
            "SELECT tx::text || '-' || id, topic, payload::text FROM pgbroker.events
              WHERE topic LIKE 'orders.%' ORDER BY tx, id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let got: Vec<(String, String, String)> = got
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_owned(),
                v["type"].as_str().unwrap().to_owned(),
                v["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(expected.len(), 151);
    assert_eq!(got, expected);
    assert_eq!(got[0].1, "orders.late");
    server.shutdown();
    let _ = std::fs::remove_file(script);
}

/// Opens a stream and returns the head and what arrives within `wait`.
fn open_stream(
    addr: std::net::SocketAddr,
    path: &str,
    last_id: Option<&str>,
    wait: Duration,
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n");
    if let Some(id) = last_id {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let deadline = std::time::Instant::now() + wait;
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        let Ok(n) = s.read(&mut buf) else { break };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse(&raw)
}

fn ids(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn last_event_id_bounds_and_replay() {
    let env = env();
    let server = env
        .server()
        .replay_limits(5, Duration::from_secs(300))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let ids_published: Vec<i64> = env
        .broker
        .publish_batch((0..8).map(|i| NewEvent::new("a.b", json!(i))))
        .unwrap()
        .into_iter()
        .map(|i| i.get())
        .collect();
    let positions: Vec<String> = env
        .broker
        .conn()
        .unwrap()
        .query(
            "SELECT tx::text || '-' || id FROM pgbroker.events ORDER BY tx, id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(positions.len(), ids_published.len());
    let short = Duration::from_millis(400);
    // Resume after the third: the five after it, exactly.
    let r = open_stream(addr, "/events?topic=a.%23", Some(&positions[2]), short);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.body.starts_with("retry: 2000\n\n"), "{}", r.body);
    assert_eq!(ids(&r.body), positions[3..].to_vec());
    assert!(r.body.contains("event: a.b\ndata: 3\n\n"), "{}", r.body);
    // The query form for clients that cannot set headers.
    let path = format!("/events?topic=a.b&lastEventId={}", positions[4]);
    assert_eq!(
        ids(&open_stream(addr, &path, None, short).body),
        positions[5..].to_vec()
    );
    // Six events back is over the limit of five; malformed and unknown IDs: 204.
    for bad in [positions[1].as_str(), "nope", "1-2-3", "99999999-1", ""] {
        let r = open_stream(addr, "/events?topic=a.b", Some(bad), short);
        let want = if bad.is_empty() { 200 } else { 204 };
        assert_eq!(r.status, want, "{bad:?}");
    }
    // Fresh clients start now.
    let r = open_stream(addr, "/events?topic=a.b", None, short);
    assert_eq!(ids(&r.body), Vec::<String>::new());
    server.shutdown();

    // Too old: every event is older than a zero age limit.
    let server = env
        .server()
        .replay_limits(1000, Duration::ZERO)
        .start()
        .unwrap();
    let r = open_stream(
        server.local_addr(),
        "/events?topic=a.b",
        Some(&positions[6]),
        short,
    );
    assert_eq!(r.status, 204);
    server.shutdown();
}

#[test]
fn live_events_fan_out_and_a_slow_client_is_disconnected() {
    let env = env();
    let server = env
        .server()
        .client_buffer(4)
        .heartbeat(Duration::from_millis(200))
        .start()
        .unwrap();
    let addr = server.local_addr();
    // A client that never reads.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(b"GET /events?topic=big HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || server
        .metrics()
        .sse_clients()
        == 1));
    let big = "x".repeat(200_000);
    for _ in 0..10 {
        env.broker
            .publish_batch((0..20).map(|_| NewEvent::new("big", json!(big))))
            .unwrap();
        if server.metrics().sse_slow_disconnects() > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(wait_until(Duration::from_secs(20), || server
        .metrics()
        .sse_slow_disconnects()
        == 1));
    assert!(wait_until(Duration::from_secs(20), || server
        .metrics()
        .sse_clients()
        == 0));
    drop(stalled);

    // Two clients with the same patterns and one with others: each gets its own events, and
    // idle streams get heartbeats.
    let handles: Vec<_> = [
        "/events?topic=t.a",
        "/events?topic=t.a",
        "/events?topic=t.%2A",
    ]
    .into_iter()
    .map(|p| std::thread::spawn(move || open_stream(addr, p, None, Duration::from_millis(1500))))
    .collect();
    assert!(wait_until(Duration::from_secs(10), || server
        .metrics()
        .sse_clients()
        == 3));
    env.broker.publish("t.a", &json!(1)).unwrap();
    env.broker.publish("t.b", &json!(2)).unwrap();
    let bodies: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().unwrap().body)
        .collect();
    for b in &bodies[..2] {
        assert_eq!(b.matches("data: ").count(), 1, "{b}");
        assert!(b.contains("event: t.a\ndata: 1\n"), "{b}");
        assert!(b.contains(": ping\n"), "{b}");
    }
    assert_eq!(bodies[2].matches("data: ").count(), 2, "{}", bodies[2]);
    server.shutdown();
}

/// Reads the SSE stream at `path` until `want` events came or `wait` passed; the body so far.
fn read_events(addr: std::net::SocketAddr, path: &str, want: usize, wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let deadline = std::time::Instant::now() + wait;
    let mut reader = BufReader::new(s);
    let mut body = String::new();
    while body.matches("\ndata: ").count() < want {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        reader.get_ref().set_read_timeout(Some(left)).unwrap();
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => body.push_str(&line),
        }
    }
    body
}

#[test]
fn the_reader_is_woken_by_publishes_and_polls_only_for_plain_sql() {
    let env = env();
    // A poll interval no test waits for: an event published through pgbroker arrives by its
    // wake-up or not at all.
    let server = env
        .server()
        .poll_interval(Duration::from_secs(600))
        .heartbeat(Duration::from_millis(100))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let waiters = || -> i64 {
        env.db
            .client()
            .unwrap()
            .query_one("SELECT count(*) FROM pgbroker.log_waiters", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(waiters(), 0, "nobody is registered without SSE clients");
    let stream = std::thread::spawn(move || {
        read_events(addr, "/events?topic=w.%2A", 2, Duration::from_secs(60))
    });
    assert!(wait_until(Duration::from_secs(10), || server
        .metrics()
        .sse_clients()
        == 1));
    // Idle, the reader registers as a waiting reader of the log.
    assert!(wait_until(Duration::from_secs(10), || waiters() == 1));
    env.broker.publish("w.a", &json!(1)).unwrap();
    // Past the re-reads that follow a registration and a delivery (1 s apart at most), only
    // a wake-up delivers the next event.
    std::thread::sleep(Duration::from_secs(3));
    env.broker.publish("w.b", &json!(2)).unwrap();
    let body = stream.join().unwrap();
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data, ["1", "2"], "{body}");
    // The last client gone, the reader ends its registration: publishers notify nobody.
    assert!(wait_until(Duration::from_secs(10), || server
        .metrics()
        .sse_clients()
        == 0));
    assert!(wait_until(Duration::from_secs(10), || waiters() == 0));

    // An event held back by an older open transaction: its wake-up finds nothing readable,
    // and the reader re-reads until the horizon passed it (the older transaction's end
    // sends no wake-up).
    let stream = std::thread::spawn(move || {
        read_events(addr, "/events?topic=h.a", 1, Duration::from_secs(60))
    });
    assert!(wait_until(Duration::from_secs(10), || waiters() == 1));
    std::thread::sleep(Duration::from_millis(200)); // the registration's re-reads are done
    let mut older = env.db.client().unwrap();
    let mut tx = older.transaction().unwrap();
    tx.query_one("SELECT pg_current_xact_id()", &[]).unwrap();
    env.broker.publish("h.a", &json!("held")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    tx.commit().unwrap();
    let body = stream.join().unwrap();
    assert!(body.contains("event: h.a\ndata: \"held\"\n"), "{body}");
    server.shutdown();

    // Events written with plain SQL send no wake-up: the poll interval finds them.
    let server = env
        .server()
        .poll_interval(Duration::from_millis(200))
        .start()
        .unwrap();
    let addr = server.local_addr();
    let stream = std::thread::spawn(move || {
        read_events(addr, "/events?topic=p.a", 1, Duration::from_secs(60))
    });
    assert!(wait_until(Duration::from_secs(10), || server
        .metrics()
        .sse_clients()
        == 1));
    env.db
        .client()
        .unwrap()
        .execute(
            "INSERT INTO pgbroker.events (topic, payload) VALUES ('p.a', '{\"sql\": true}')",
            &[],
        )
        .unwrap();
    let body = stream.join().unwrap();
    assert!(
        body.contains("event: p.a\ndata: {\"sql\": true}\n"),
        "{body}"
    );
}
