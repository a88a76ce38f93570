//! Webhooks against a local receiver: retries with the same webhook-id, signatures checked by
//! PyPI `standardwebhooks`, dead deliveries and re-drive, 410 disables, a slow endpoint does
//! not delay another, and a server killed mid-delivery delivers after restart.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use pgbroker_http::webhooks::{NewEndpoint, Webhooks};
use pgbroker_testing::wait_until;
use serde_json::{json, Value};
use support::*;

const VERIFY: &str = r#"
import json, sys
from standardwebhooks import Webhook

secret = sys.argv[1]
for line in sys.stdin:
    r = json.loads(line)
    try:
        Webhook(secret).verify(r["body"], r["headers"])
        print("ok", flush=True)
    except Exception as e:
        print("bad: %r" % e, flush=True)
"#;

/// Verifies each request with the reference implementation; returns its verdicts.
fn verify(secret: &str, got: &[Received]) -> Vec<String> {
    let python = venv_python().expect("no target/http-venv: run .ci/run");
    let script = std::env::temp_dir().join(format!("pgbroker-verify-{}.py", std::process::id()));
    std::fs::write(&script, VERIFY).unwrap();
    let mut child = Command::new(python)
        .arg(&script)
        .arg(secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for r in got {
        let headers: serde_json::Map<String, Value> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        input.push_str(&json!({"body": r.body, "headers": headers}).to_string());
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(script);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn retries_keep_the_webhook_id_and_signatures_verify() {
    let env = env();
    // The first two attempts of every event fail.
    let rx = Receiver::start(|_, before| (if before < 2 { 500 } else { 204 }, Duration::ZERO));
    let hooks = Webhooks::new(&env.broker);
    let added = hooks
        .add(
            &NewEndpoint::new(rx.url(), ["orders.*"])
                .header("X-Team", "billing")
                .retries(vec![ms(100), ms(100), ms(100)]),
        )
        .unwrap();
    assert!(added.secret.starts_with("whsec_"));
    let server = env.server().start().unwrap();
    let ids: Vec<i64> = (0..3)
        .map(|i| {
            env.broker.publish("users.x", &json!({"skip": i})).unwrap();
            env.broker
                .publish("orders.created", &json!({ "n": i }))
                .unwrap()
                .get()
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || rx.received().len() == 9));
    std::thread::sleep(ms(300));
    let got = rx.received();
    assert_eq!(got.len(), 9, "no more requests than needed");
    // In log order, each event three times with one webhook-id, before the next event.
    for (i, id) in ids.iter().enumerate() {
        let msg = format!("msg_{}_{id}", added.id);
        for r in &got[i * 3..i * 3 + 3] {
            assert_eq!(r.header("webhook-id"), msg);
            assert_eq!(r.header("idempotency-key"), msg);
            assert_eq!(r.header("x-team"), "billing");
            assert_eq!(r.header("content-type"), "application/json");
            let body: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(body["type"], "orders.created");
            assert_eq!(body["event_id"], *id);
            assert_eq!(body["data"], json!({ "n": i }));
        }
    }
    assert_eq!(verify(&added.secret, &got), vec!["ok"; 9]);
    // A wrong secret does not verify.
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert!(verify(other, &got[..1])[0].starts_with("bad"));
    let e = &hooks.list().unwrap()[0];
    assert_eq!((e.delivered, e.failed, e.dead, e.attempt), (3, 6, 0, 0));
    assert!(server.metrics().webhook_deliveries() == 3 && server.metrics().webhook_failures() == 6);
    server.shutdown();
}

#[test]
fn dead_redrive_gone_and_a_slow_endpoint_does_not_delay_another() {
    let env = env();
    let hooks = Webhooks::new(&env.broker);
    // Fails everything until told otherwise.
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok2 = ok.clone();
    let failing = Receiver::start(move |_, _| {
        let good = ok2.load(std::sync::atomic::Ordering::SeqCst);
        (if good { 200 } else { 503 }, Duration::ZERO)
    });
    let slow = Receiver::start(|_, _| (200, Duration::from_secs(3)));
    let fast = Receiver::start(|_, _| (200, Duration::ZERO));
    let gone = Receiver::start(|_, _| (410, Duration::ZERO));
    let f = hooks
        .add(&NewEndpoint::new(failing.url(), ["a"]).retries(vec![ms(50)]))
        .unwrap();
    hooks.add(&NewEndpoint::new(slow.url(), ["a"])).unwrap();
    hooks.add(&NewEndpoint::new(fast.url(), ["a"])).unwrap();
    let g = hooks.add(&NewEndpoint::new(gone.url(), ["a"])).unwrap();
    let server = env.server().start().unwrap();
    let first = env.broker.publish("a", &json!(1)).unwrap().get();
    env.broker.publish("a", &json!(2)).unwrap();
    // The fast endpoint has both while the slow one still answers the first.
    assert!(wait_until(Duration::from_secs(10), || fast
        .received()
        .len()
        == 2));
    assert!(slow.received().len() <= 1);
    // 410 disables.
    assert!(wait_until(Duration::from_secs(10), || {
        hooks
            .list()
            .unwrap()
            .iter()
            .any(|e| e.id == g.id && !e.enabled)
    }));
    assert_eq!(gone.received().len(), 1);
    let e = hooks
        .list()
        .unwrap()
        .into_iter()
        .find(|e| e.id == g.id)
        .unwrap();
    assert!(e.disabled_reason.unwrap().starts_with("410 Gone"));
    // Two attempts each (one retry), then dead; the endpoint moved on.
    assert!(wait_until(Duration::from_secs(10), || hooks
        .dead(f.id)
        .unwrap()
        .len()
        == 2));
    assert_eq!(failing.received().len(), 4);
    let dead = hooks.dead(f.id).unwrap();
    assert_eq!(dead[0].event_id, first);
    assert_eq!((dead[0].attempts, dead[0].last_status), (2, Some(503)));
    // Re-drive one: delivered once more, with the same webhook-id.
    ok.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(hooks.redrive(f.id, Some(first)).unwrap(), 1);
    assert!(wait_until(Duration::from_secs(10), || hooks
        .dead(f.id)
        .unwrap()
        .len()
        == 1));
    let got = failing.received();
    assert_eq!(got.len(), 5);
    assert_eq!(got[4].header("webhook-id"), format!("msg_{}_{first}", f.id));
    assert!(wait_until(Duration::from_secs(10), || slow
        .received()
        .len()
        == 2));
    assert_eq!(
        hooks.redrive(999, None).unwrap_err().kind(),
        pgbroker_http::ErrorKind::NotFound
    );
    server.shutdown();
}

#[test]
fn bad_endpoints_are_refused() {
    let env = env();
    let hooks = Webhooks::new(&env.broker);
    let bad = [
        NewEndpoint::new("ftp://x/y", ["a"]),
        NewEndpoint::new("http://x/y", ["a..b"]),
        NewEndpoint::new("http://x/y", Vec::<String>::new()),
        NewEndpoint::new("http://x/y", ["a"]).secret("nope"),
        NewEndpoint::new("http://x/y", ["a"]).header("Bad Name", "v"),
    ];
    for e in bad {
        let err = hooks.add(&e).unwrap_err();
        assert_eq!(
            err.kind(),
            pgbroker_http::ErrorKind::InvalidInput,
            "{e:?}: {err}"
        );
    }
    assert!(hooks.list().unwrap().is_empty());
    // No retries: dead at the first failure.
    hooks
        .add(&NewEndpoint::new("http://x/y", ["a"]).retries(vec![]))
        .unwrap();
    assert!(pgbroker_http::webhooks::parse_schedule("1m,0s").is_err());
}

/// The child of `a_server_killed_mid_delivery_delivers_after_restart`: serves until killed.
#[test]
#[ignore]
fn child_server() {
    let Ok(url) = std::env::var("PGBROKER_HTTP_CHILD_URL") else {
        return;
    };
    let broker = pgbroker::Broker::connect(&url).unwrap();
    let _server = pgbroker_http::Server::builder(broker)
        .listen("127.0.0.1:0")
        .webhook_poll(ms(50))
        .start()
        .unwrap();
    println!("serving");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn a_server_killed_mid_delivery_delivers_after_restart() {
    let env = env();
    // The first request hangs (the server is killed meanwhile); later ones succeed.
    let rx = Receiver::start(|_, before| {
        if before == 0 {
            (200, Duration::from_secs(30))
        } else {
            (200, Duration::ZERO)
        }
    });
    let hooks = Webhooks::new(&env.broker);
    let added = hooks.add(&NewEndpoint::new(rx.url(), ["k"])).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_server", "--exact", "--ignored", "--nocapture"])
        .env("PGBROKER_HTTP_CHILD_URL", env.db.url())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let id = env.broker.publish("k", &json!("x")).unwrap().get();
    assert!(wait_until(Duration::from_secs(20), || rx.received().len() == 1));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(hooks.list().unwrap()[0].delivered, 0);
    let server = env.server().start().unwrap();
    assert!(wait_until(Duration::from_secs(20), || hooks
        .list()
        .unwrap()[0]
        .delivered
        == 1));
    let got = rx.received();
    assert_eq!(got.len(), 2);
    let msg = format!("msg_{}_{id}", added.id);
    assert_eq!(
        (got[0].header("webhook-id"), got[1].header("webhook-id")),
        (msg.as_str(), msg.as_str())
    );
    server.shutdown();
}
