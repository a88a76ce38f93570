//! Filtered subscriptions against a real PostgreSQL: JSON containment filters, compiled SQL
//! conditions with params (pull API, SQL and worker-pool consumers), and the conditions that
//! are refused at subscribe.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbroker::topic::{NewEvent, StartAt};
use pgbroker::{Broker, ErrorKind};
use serde_json::{json, Value};

/// The payloads of the next `n` events (acking as it goes, waiting while other tests'
/// transactions hold the horizon back), in log order; then checks that nothing more comes.
fn drain(broker: &Broker, sub: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        let batch = broker.read(sub, 3).unwrap();
        out.extend(batch.events().iter().map(|e| e.payload().clone()));
        if let Some(p) = batch.ack_position() {
            broker.ack(sub, p).unwrap();
        }
        if out.len() >= n {
            assert!(
                broker.read(sub, 3).unwrap().is_empty(),
                "more than {n} events"
            );
            return out;
        }
        if batch.len() < 3 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("{sub}: {} events, expected {n}: {out:?}", out.len());
}

fn publish_orders(broker: &Broker, n: i64) {
    for i in 1..=n {
        let topic = if i % 2 == 0 {
            "orders.paid"
        } else {
            "orders.created"
        };
        let event = NewEvent::new(topic, json!({"n": i, "customer": i % 3, "tags": ["t", i]}))
            .key(format!("k{i}"));
        broker.publish_event(&event).unwrap();
    }
}

fn conditions(db: &support::TestDb) -> i64 {
    db.client()
        .query_one("SELECT count(*) FROM pgbroker.event_conditions", &[])
        .unwrap()
        .get(0)
}

#[test]
fn a_filter_reads_only_payloads_that_contain_it_and_moves_past_the_rest() {
    let db = support::db();
    let broker = db.broker();
    broker
        .subscription("c1")
        .pattern("orders.#")
        .filter(json!({"customer": 1}))
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
    publish_orders(&broker, 12);
    let got: Vec<i64> = drain(&broker, "c1", 4)
        .iter()
        .map(|p| p["n"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [1, 4, 7, 10]);
    // The cursor went past the events filtered out: nothing is left to scan.
    let lag = broker.lag("c1").unwrap();
    assert_eq!(lag[0].events_behind, 0, "{lag:?}");

    // Arrays: containment of an element. The filter may change; it applies from the cursor.
    broker
        .subscription("c1")
        .pattern("orders.#")
        .filter(json!({"tags": [13]}))
        .save()
        .unwrap();
    publish_orders(&broker, 14);
    let got: Vec<Value> = drain(&broker, "c1", 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["n"], 13);

    // From SQL, with the named argument.
    let mut c = db.client();
    c.batch_execute(
        r#"SELECT pgbroker.subscribe('c2', ARRAY['orders.paid'], start_at => 'beginning',
                                    filter => '{"customer": 0}')"#,
    )
    .unwrap();
    let rows = c
        .query("SELECT payload->>'n' FROM pgbroker.read('c2', 100)", &[])
        .unwrap();
    let ns: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ns, ["6", "12", "6", "12"]);
}

#[test]
fn conditions_with_params_are_compiled_once_and_shared() {
    let db = support::db();
    let broker = db.broker();
    let cond = "topic = 'orders.created' AND (payload->>'customer')::int = (params->>'c')::int \
                AND key <> params->>'skip' AND headers IS NULL";
    for (name, c) in [("u0", 0), ("u1", 1), ("u2", 2)] {
        broker
            .subscription(name)
            .pattern("orders.#")
            .condition(cond, json!({"c": c, "skip": "k7"}))
            .start_at(StartAt::Beginning)
            .save()
            .unwrap();
    }
    assert_eq!(conditions(&db), 1, "one compiled function for the three");
    publish_orders(&broker, 12);
    let ns = |sub, n| -> Vec<i64> {
        drain(&broker, sub, n)
            .iter()
            .map(|p| p["n"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ns("u0", 2), [3, 9]);
    assert_eq!(ns("u1", 1), [1]); // 7 is skipped by its key
    assert_eq!(ns("u2", 2), [5, 11]);

    // Saving again with the same condition is fine; another one (or other params) is refused.
    broker
        .subscription("u0")
        .pattern("orders.#")
        .condition(cond, json!({"c": 0, "skip": "k7"}))
        .save()
        .unwrap();
    let err = broker
        .subscription("u0")
        .pattern("orders.#")
        .condition(cond, json!({"c": 2}))
        .save()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("unsubscribe and subscribe again"),
        "{err}"
    );

    // The listing shows them; maintenance drops a condition once nobody uses it.
    let infos = broker.subscriptions().unwrap();
    assert_eq!(
        infos[0].condition.as_ref().map(|c| c.1.clone()),
        Some(json!({"c": 0, "skip": "k7"}))
    );
    for name in ["u0", "u1"] {
        broker.unsubscribe(name).unwrap();
    }
    broker.log_maintain(Duration::from_secs(86400), 1).unwrap();
    assert_eq!(conditions(&db), 1, "u2 still uses it");
    broker.unsubscribe("u2").unwrap();
    broker.log_maintain(Duration::from_secs(86400), 1).unwrap();
    assert_eq!(conditions(&db), 0);
    let functions: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'cond\\_%'
                AND pronamespace = 'pgbroker'::regnamespace",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(functions, 0);
}

#[test]
fn worker_pool_consumers_apply_filters_and_conditions() {
    let db = support::db();
    let broker = db.broker();
    broker
        .subscription("pool")
        .pattern("orders.#")
        .partitions(2)
        .filter(json!({"customer": 2}))
        .condition(
            "(payload->>'n')::int > (params->>'min')::int",
            json!({"min": 3}),
        )
        .start_at(StartAt::Beginning)
        .save()
        .unwrap();
    publish_orders(&broker, 30);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let pool = broker
        .worker_pool()
        .subscription("pool", move |batch| {
            let mut s = sink.lock().unwrap();
            s.extend(
                batch
                    .events()
                    .iter()
                    .map(|e| e.payload()["n"].as_i64().unwrap()),
            );
            Ok(())
        })
        .start()
        .unwrap();
    assert!(support::wait_until(Duration::from_secs(20), || seen
        .lock()
        .unwrap()
        .len()
        >= 9));
    pool.shutdown().unwrap();
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, [5, 8, 11, 14, 17, 20, 23, 26, 29]);
}

#[test]
fn conditions_that_are_not_a_confined_expression_are_refused_at_subscribe() {
    let db = support::db();
    let broker = db.broker();
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE secrets (s text);
         CREATE SEQUENCE seq;
         CREATE FUNCTION public.reads_table(t text) RETURNS boolean STABLE LANGUAGE sql
             AS 'SELECT EXISTS (SELECT 1 FROM public.secrets)';
         CREATE FUNCTION public.pure(t text) RETURNS boolean IMMUTABLE LANGUAGE sql
             AS 'SELECT t <> ''''';",
    )
    .unwrap();
    let refused = [
        ("payload->>'a' = ", "syntax error"),
        ("true; DROP TABLE secrets", "syntax error"),
        (
            "true)::boolean; DROP TABLE secrets; SELECT (true",
            "multi-query",
        ),
        ("true /* unterminated", "unterminated /* comment"),
        ("'unterminated", "unterminated quoted string"),
        ("EXISTS (SELECT 1 FROM secrets)", "does not exist"), // not on the search path
        (
            "EXISTS (SELECT 1 FROM public.secrets)",
            "relation public.secrets",
        ),
        (
            "EXISTS (SELECT 1 FROM pgbroker.subscriptions)",
            "relation pgbroker.subscriptions",
        ),
        ("random() > 0.5", "random() (volatile)"),
        ("nextval('public.seq') > 0", "nextval(regclass) (volatile)"),
        ("pg_notify('x', topic) IS NULL", "(volatile)"),
        (
            "pg_current_xact_id() IS NOT NULL",
            "assigns a transaction id",
        ),
        ("public.reads_table(topic)", "stable, outside pg_catalog"),
        ("no_such_column = 1", "does not exist"),
        ("pure(topic)", "does not exist"), // not on the search path: qualify it
        ("'not a boolean'", "boolean"),
        ("", "must be a SQL boolean expression"),
    ];
    for (cond, why) in refused {
        let err = broker
            .subscription("bad")
            .pattern("#")
            .condition(cond, json!({}))
            .save()
            .map(|_| panic!("accepted: {cond}"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{cond}: {err}");
        assert!(err.to_string().contains(why), "{cond}: {err}");
    }
    let err = broker
        .subscription("bad")
        .pattern("#")
        .filter(json!([1]))
        .save()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = c
        .batch_execute("SELECT pgbroker.subscribe('bad', ARRAY['#'], params => '{}')")
        .unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message
            .unwrap_or_default()
            .contains("params without a condition"),
        "{err}"
    );

    // Nothing was created or harmed.
    assert!(broker.subscriptions().unwrap().is_empty());
    assert_eq!(conditions(&db), 0);
    c.batch_execute("SELECT * FROM secrets").unwrap();
    let functions: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'cond\\_%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(functions, 0);

    // A trailing comment ends with its line: the wrappers go on. A qualified immutable
    // function of your own is fine.
    broker
        .subscription("comment")
        .pattern("#")
        .condition("true -- always", json!({}))
        .save()
        .unwrap();
    broker
        .subscription("good")
        .pattern("#")
        .condition("public.pure(topic) AND payload ? 'n'", json!({}))
        .save()
        .unwrap();
}
