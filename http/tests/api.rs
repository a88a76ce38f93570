//! The HTTP API: health, metrics, ingest and its bad inputs, authentication.

mod support;

use pgbroker_http::{BearerTokens, ErrorKind, Grant, Server};
use serde_json::json;
use support::*;

fn count(env: &Env, sql: &str) -> i64 {
    env.broker
        .conn()
        .unwrap()
        .query_one(sql, &[])
        .unwrap()
        .get(0)
}

#[test]
fn health_and_metrics() {
    let env = env();
    let server = env.server().start().unwrap();
    let addr = server.local_addr();
    let r = get(addr, "/healthz");
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    env.broker.enqueue("mail", &json!({})).unwrap();
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("pgbroker_schema_version"), "{}", r.body);
    assert!(
        r.body
            .contains("pgbroker_queue_jobs{queue=\"mail\",state=\"available\"} 1"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("pgbroker_http_requests_total 2"),
        "{}",
        r.body
    );
    assert_eq!(get(addr, "/nope").status, 404);
    assert_eq!(post_json(addr, "/metrics", "{}").status, 405);
    server.shutdown();
}

#[test]
fn publish_and_enqueue_answer_ids() {
    let env = env();
    let server = env.server().start().unwrap();
    let addr = server.local_addr();
    let r = post_json(
        addr,
        "/topics/orders.created",
        r#"{"payload": {"id": 1}, "key": "c-1", "headers": {"trace": "t"}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["ids"][0].as_i64().unwrap();
    let row = env
        .broker
        .conn()
        .unwrap()
        .query_one(
            "SELECT topic, payload, key, headers FROM pgbroker.events WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "orders.created");
    assert_eq!(row.get::<_, serde_json::Value>(1), json!({"id": 1}));
    assert_eq!(row.get::<_, String>(2), "c-1");
    assert_eq!(row.get::<_, serde_json::Value>(3), json!({"trace": "t"}));

    let r = post_json(
        addr,
        "/topics/orders.created",
        r#"[{"payload": 1}, {"payload": 2}]"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["ids"].as_array().unwrap().len(), 2);
    assert_eq!(count(&env, "SELECT count(*) FROM pgbroker.events"), 3);

    let r = post_json(
        addr,
        "/queues/mail/jobs",
        r#"{"payload": {"to": "a"}, "priority": -1, "delay": 60, "max_attempts": 3, "unique_key": "u"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["ids"][0].as_i64().unwrap();
    let row = env
        .broker
        .conn()
        .unwrap()
        .query_one(
            "SELECT priority, max_attempts, run_at > now() + interval '50 seconds'
               FROM pgbroker.jobs WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i32>(0),
            row.get::<_, i32>(1),
            row.get::<_, bool>(2)
        ),
        (-1, 3, true)
    );
    let r = post_json(
        addr,
        "/queues/mail/jobs",
        r#"[{"payload": 1}, {"payload": 2}]"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(count(&env, "SELECT count(*) FROM pgbroker.jobs"), 3);
    server.shutdown();
}

#[test]
fn bad_input_is_400_or_413_and_writes_nothing() {
    let env = env();
    let server = env.server().body_limit(1000).start().unwrap();
    let addr = server.local_addr();
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/topics/orders.created", "{not json", 400, "invalid_json"),
        (
            "/topics/orders..created",
            r#"{"payload": 1}"#,
            400,
            "invalid_name",
        ),
        ("/topics/orders.*", r#"{"payload": 1}"#, 400, "invalid_name"),
        (
            "/topics/orders",
            r#"{"payload": 1, "colour": "red"}"#,
            400,
            "invalid_event",
        ),
        ("/topics/orders", r#"{"key": "k"}"#, 400, "invalid_event"),
        (
            "/topics/orders",
            r#"{"payload": 1, "headers": [1]}"#,
            400,
            "invalid_event",
        ),
        (
            "/topics/orders",
            r#"{"payload": 1, "key": 7}"#,
            400,
            "invalid_event",
        ),
        (
            "/topics/orders",
            r#"[{"payload": 1}, {"payload": 2, "x": 1}]"#,
            400,
            "invalid_event",
        ),
        (
            "/topics/orders",
            r#"[{"payload": 1}, 5]"#,
            400,
            "invalid_body",
        ),
        ("/topics/orders", "[]", 400, "invalid_body"),
        ("/topics/orders", "42", 400, "invalid_body"),
        (
            "/queues/bad%20name/jobs",
            r#"{"payload": 1}"#,
            400,
            "invalid_name",
        ),
        (
            "/queues/mail/jobs",
            r#"{"payload": 1, "priority": "high"}"#,
            400,
            "invalid_job",
        ),
        (
            "/queues/mail/jobs",
            r#"{"payload": 1, "delay": -1}"#,
            400,
            "invalid_job",
        ),
        (
            "/queues/mail/jobs",
            r#"{"payload": 1, "max_attempts": 0}"#,
            400,
            "invalid_job",
        ),
        (
            "/queues/mail/jobs",
            r#"{"payload": 1, "retries": 3}"#,
            400,
            "invalid_job",
        ),
        (
            "/queues/mail/jobs",
            r#"[{"payload": 1}, {"payload": 2, "unique_key": 5}]"#,
            400,
            "invalid_job",
        ),
    ];
    for (path, body, status, code) in cases {
        let r = post_json(addr, path, body);
        assert_eq!(r.status, *status, "{path} {body}: {}", r.body);
        assert_eq!(
            r.json()["error"]["code"],
            *code,
            "{path} {body}: {}",
            r.body
        );
        assert!(r.json()["error"]["message"].as_str().unwrap().len() > 5);
    }
    let big = format!(r#"{{"payload": "{}"}}"#, "x".repeat(2000));
    let r = post_json(addr, "/topics/orders", &big);
    assert_eq!(r.status, 413, "{}", r.body);
    // Also when the client sends a large body without waiting for an answer.
    let huge = format!(r#"{{"payload": "{}"}}"#, "x".repeat(3_000_000));
    let r = post_json(addr, "/topics/orders", &huge);
    assert_eq!(r.status, 413, "{}", r.body);
    let r = request(
        addr,
        "POST",
        "/topics/orders",
        &[("Content-Type", "text/plain")],
        b"{}",
    );
    assert_eq!(r.status, 400);
    assert_eq!(count(&env, "SELECT count(*) FROM pgbroker.events"), 0);
    assert_eq!(count(&env, "SELECT count(*) FROM pgbroker.jobs"), 0);
    assert_eq!(get(addr, "/events").status, 400);
    assert_eq!(get(addr, "/events?topic=a..b").status, 400);
    server.shutdown();
}

#[test]
fn auth_401_403_and_grants() {
    let env = env();
    let tokens = BearerTokens::parse("admin\nshop topics=orders.# queues=mail\n").unwrap();
    let server = env.server().auth(tokens.into_hook()).start().unwrap();
    let addr = server.local_addr();
    let body = br#"{"payload": 1}"#;
    let json = ("Content-Type", "application/json");
    let r = request(addr, "POST", "/topics/orders", &[json], body);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = request(
        addr,
        "POST",
        "/topics/orders",
        &[json, ("Authorization", "Bearer nope")],
        body,
    );
    assert_eq!(r.status, 403);
    let shop = ("Authorization", "Bearer shop");
    assert_eq!(
        request(addr, "POST", "/topics/orders.x", &[json, shop], body).status,
        201
    );
    assert_eq!(
        request(addr, "POST", "/topics/users.x", &[json, shop], body).status,
        403
    );
    assert_eq!(
        request(addr, "POST", "/queues/mail/jobs", &[json, shop], body).status,
        201
    );
    assert_eq!(
        request(addr, "POST", "/queues/other/jobs", &[json, shop], body).status,
        403
    );
    assert_eq!(
        request(addr, "GET", "/events?topic=%23", &[shop], b"").status,
        403
    );
    assert_eq!(get(addr, "/metrics").status, 401);
    assert_eq!(get(addr, "/healthz").status, 200);
    let admin = ("Authorization", "Bearer admin");
    assert_eq!(
        request(addr, "POST", "/topics/users.x", &[json, admin], body).status,
        201
    );
    assert_eq!(
        request(addr, "GET", "/metrics?access_token=admin", &[], b"").status,
        200
    );
    assert_eq!(count(&env, "SELECT count(*) FROM pgbroker.events"), 2);
    server.shutdown();

    // Nothing open by default on a public address.
    let err = Server::builder(env.broker.clone())
        .listen("0.0.0.0:0")
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let g = Grant::none().topic("orders.#");
    assert!(g.may_stream("orders.*") && !g.may_stream("#"));
}
