//! The dashboard over plain HTTP (what the server sends: counts, escaping, auth, CSRF,
//! read-only) and in a real browser (headless Chromium driven over WebDriver by
//! chromedriver: live updates, retrying a dead job, re-driving a dead event, screenshots).

mod support;

use std::net::SocketAddr;

use pgbroker_http::{BearerTokens, ServerHandle};
use support::{request, Env};

const TOKEN: &str = "operator-token";
const SCRIPT_PAYLOAD: &str = r#"{"html": "<script>window.pwned = 1</script>"}"#;

/// A database with jobs in every interesting state and a subscription with a dead letter.
struct Seeded {
    env: Env,
    dead_job: i64,
}

fn seeded() -> Seeded {
    let env = support::env();
    let mut c = env.db.client().unwrap();
    c.batch_execute(
        "SELECT pgbroker.enqueue('mail', '{\"to\": \"a\"}');
         SELECT pgbroker.enqueue('mail', '{\"to\": \"b\"}');
         SELECT pgbroker.enqueue('mail', '{\"to\": \"c\"}', delay => interval '1 hour');
         SELECT pgbroker.enqueue('sms', '{\"to\": \"d\"}', unique_key => 'sms-d');
         SELECT pgbroker.subscribe('billing', ARRAY['orders.#']);",
    )
    .unwrap();
    let dead_job: i64 = c
        .query_one(
            "SELECT pgbroker.enqueue('mail', $1::text::jsonb, priority => -1, max_attempts => 1)",
            &[&SCRIPT_PAYLOAD],
        )
        .unwrap()
        .get(0);
    let claimed: i64 = c
        .query_one(
            "SELECT id FROM pgbroker.claim('mail', 'w1', 1, '1 minute')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(claimed, dead_job);
    c.execute(
        "SELECT pgbroker.fail($1, '<b>smtp</b> said no')",
        &[&dead_job],
    )
    .unwrap();
    Seeded { env, dead_job }
}

fn server(env: &Env, read_only: bool) -> ServerHandle {
    env.server()
        .auth(
            BearerTokens::parse(&format!(
                "{TOKEN} topics=# queues=*\nreader topics=orders.# queues=mail"
            ))
            .unwrap()
            .into_hook(),
        )
        .read_only(read_only)
        .webhooks(false)
        .start()
        .unwrap()
}

fn get(addr: SocketAddr, path: &str) -> support::Reply {
    let auth = format!("Bearer {TOKEN}");
    request(addr, "GET", path, &[("Authorization", &auth)], b"")
}

fn state_of(env: &Env, id: i64) -> String {
    env.db
        .client()
        .unwrap()
        .query_one(
            "SELECT state::text FROM pgbroker.jobs WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0)
}

/// The CSRF token the pages embed in their forms.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + 32].to_owned()
}

#[test]
fn overview_counts_match_the_database_and_payloads_are_escaped() {
    let s = seeded();
    let srv = server(&s.env, false);
    let addr = srv.local_addr();
    let page = get(addr, "/ui/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.contains("script-src 'self'")));
    // mail: 2 available, 1 scheduled, 1 dead; sms: 1 available.
    let row = |q: &str| {
        let start = page.body.find(&format!("data-queue=\"{q}\"")).unwrap();
        let end = start + page.body[start..].find("</tr>").unwrap();
        page.body[start..end].to_owned()
    };
    let mail = row("mail");
    for (field, n) in [
        ("available", 2),
        ("scheduled", 1),
        ("running", 0),
        ("dead", 1),
    ] {
        assert!(
            mail.contains(&format!(
                "data-field=\"{field}\"><a href=\"/ui/queues/mail?state={field}\">{n}</a>"
            )),
            "mail {field} = {n}: {mail}"
        );
    }
    assert!(row("sms").contains("state=available\">1</a>"));
    assert!(
        mail.contains("data-field=\"dead_last_minute\">1</td>"),
        "the job that died a moment ago: {mail}"
    );
    assert!(page.body.contains("data-subscription=\"billing\""));

    let job = get(addr, &format!("/ui/jobs/{}", s.dead_job));
    assert_eq!(job.status, 200);
    assert!(job
        .body
        .contains("&lt;script&gt;window.pwned = 1&lt;/script&gt;"));
    assert!(!job.body.contains("<script>window.pwned"));
    assert!(job.body.contains("&lt;b&gt;smtp&lt;/b&gt; said no"));

    let listing = get(addr, "/ui/queues/mail?state=dead");
    assert!(listing
        .body
        .contains(&format!("data-job=\"{}\"", s.dead_job)));
    assert_eq!(listing.body.matches("data-job=").count(), 1);
    let by_id = get(addr, &format!("/ui/queues/mail?q={}", s.dead_job));
    assert_eq!(by_id.body.matches("data-job=").count(), 1);
    assert!(by_id.body.contains(&format!("data-job=\"{}\"", s.dead_job)));
    let by_text = get(addr, "/ui/queues/mail?q=%22to%22%3A%20%22b%22");
    assert_eq!(
        by_text.body.matches("data-job=").count(),
        1,
        "{}",
        by_text.body
    );
    let found = get(addr, "/ui/queues/sms?q=sms-d");
    assert_eq!(found.body.matches("data-job=").count(), 1);
    let none = get(addr, "/ui/queues/sms?q=nothing-like-this");
    assert_eq!(none.body.matches("data-job=").count(), 0);

    let json = get(addr, "/ui/api/overview").json();
    assert_eq!(json["queues"][0]["queue"], "mail");
    assert_eq!(json["queues"][0]["dead"], 1);
    srv.shutdown();
}

#[test]
fn sign_in_auth_and_csrf() {
    let s = seeded();
    let srv = server(&s.env, false);
    let addr = srv.local_addr();
    // No token: a sign-in page, not data.
    let anon = request(addr, "GET", "/ui/", &[], b"");
    assert_eq!(anon.status, 401);
    assert!(anon.body.contains("name=\"access_token\""));
    assert!(!anon.body.contains("data-queue"));
    // A token limited to some topics and queues is not an operator's.
    let reader = request(
        addr,
        "GET",
        "/ui/",
        &[("Authorization", "Bearer reader")],
        b"",
    );
    assert_eq!(reader.status, 403);
    // Signing in moves the token into a cookie; the cookie then opens the pages.
    let signed = request(addr, "GET", &format!("/ui/?access_token={TOKEN}"), &[], b"");
    assert_eq!(signed.status, 303);
    let cookie = signed.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = request(addr, "GET", "/ui/", &[("Cookie", &pair)], b"");
    assert_eq!(page.status, 200);

    // An action without the CSRF token, or from another origin, is refused; with both it runs.
    let path = format!("/ui/jobs/{}/retry", s.dead_job);
    let form = [
        ("Cookie", pair.as_str()),
        ("Origin", "http://test"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let refused = request(addr, "POST", &path, &form, b"csrf=0000");
    assert_eq!(refused.status, 403);
    let csrf = csrf_of(&get(addr, &format!("/ui/jobs/{}", s.dead_job)).body);
    let cross = request(
        addr,
        "POST",
        &path,
        &[
            ("Cookie", pair.as_str()),
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("csrf={csrf}").as_bytes(),
    );
    assert_eq!(cross.status, 403);
    assert_eq!(state_of(&s.env, s.dead_job), "dead");
    let done = request(
        addr,
        "POST",
        &path,
        &form,
        format!("csrf={csrf}").as_bytes(),
    );
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(done
        .header("location")
        .unwrap()
        .starts_with(&format!("/ui/jobs/{}?done=", s.dead_job)));
    assert_eq!(state_of(&s.env, s.dead_job), "available");
    srv.shutdown();
}

#[test]
fn job_actions_and_bulk_retry() {
    let s = seeded();
    let srv = server(&s.env, false);
    let addr = srv.local_addr();
    let auth = format!("Bearer {TOKEN}");
    let csrf = csrf_of(&get(addr, &format!("/ui/jobs/{}", s.dead_job)).body);
    let post = |path: &str| {
        request(
            addr,
            "POST",
            path,
            &[("Authorization", auth.as_str()), ("Origin", "http://test")],
            format!("csrf={csrf}").as_bytes(),
        )
    };
    let scheduled: i64 = s
        .env
        .db
        .client()
        .unwrap()
        .query_one("SELECT id FROM pgbroker.jobs WHERE run_at > now()", &[])
        .unwrap()
        .get(0);
    assert_eq!(post(&format!("/ui/jobs/{scheduled}/run-now")).status, 303);
    let due: bool = s
        .env
        .db
        .client()
        .unwrap()
        .query_one(
            "SELECT run_at <= now() FROM pgbroker.jobs WHERE id = $1",
            &[&scheduled],
        )
        .unwrap()
        .get(0);
    assert!(due);
    assert_eq!(post(&format!("/ui/jobs/{scheduled}/cancel")).status, 303);
    assert_eq!(state_of(&s.env, scheduled), "cancelled");
    assert_eq!(post(&format!("/ui/jobs/{scheduled}/delete")).status, 303);
    let left: i64 = s
        .env
        .db
        .client()
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pgbroker.jobs WHERE id = $1",
            &[&scheduled],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let bulk = post("/ui/queues/mail/retry-dead");
    assert_eq!(bulk.status, 303);
    assert!(
        bulk.header("location").unwrap().contains("1%20dead%20jobs"),
        "{:?}",
        bulk.header("location")
    );
    assert_eq!(state_of(&s.env, s.dead_job), "available");
    // Bad input is a clear 4xx, never a 500.
    assert_eq!(post("/ui/jobs/not-a-number/retry").status, 400);
    assert_eq!(get(addr, "/ui/jobs/abc").status, 400);
    assert_eq!(get(addr, "/ui/jobs/999999").status, 404);
    assert_eq!(get(addr, "/ui/events?topic=bad..pattern").status, 400);
    assert_eq!(get(addr, "/ui/events?before_time=yesterday").status, 400);
    srv.shutdown();
}

#[test]
fn read_only_hides_and_refuses_actions() {
    let s = seeded();
    let srv = server(&s.env, true);
    let addr = srv.local_addr();
    let page = get(addr, &format!("/ui/jobs/{}", s.dead_job));
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<form method=\"post\""));
    let auth = format!("Bearer {TOKEN}");
    let refused = request(
        addr,
        "POST",
        &format!("/ui/jobs/{}/retry", s.dead_job),
        &[("Authorization", auth.as_str()), ("Origin", "http://test")],
        b"csrf=x",
    );
    assert_eq!(refused.status, 403);
    assert_eq!(state_of(&s.env, s.dead_job), "dead");
    srv.shutdown();
}

#[test]
fn subscription_page_redrives_and_seeks() {
    let s = seeded();
    let broker = &s.env.broker;
    broker
        .publish("orders.created", &serde_json::json!({"id": 1}))
        .unwrap();
    // A dead letter: an event failed for good by the subscription's consumer.
    let mut c = s.env.db.client().unwrap();
    c.batch_execute(
        "INSERT INTO pgbroker.event_retries (subscription, partition, id, tx, topic, payload,
                                             created_at, attempt, run_at, dead, last_error)
         SELECT 'billing', 0, id, tx, topic, payload, created_at, 3, now(), true, 'handler <i>failed</i>'
           FROM pgbroker.events LIMIT 1",
    )
    .unwrap();
    let srv = server(&s.env, false);
    let addr = srv.local_addr();
    let page = get(addr, "/ui/subscriptions/billing");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("1 dead, 0 retrying"));
    assert!(page.body.contains("handler &lt;i&gt;failed&lt;/i&gt;"));
    let csrf = csrf_of(&page.body);
    let auth = format!("Bearer {TOKEN}");
    let post = |path: &str, body: String| {
        request(
            addr,
            "POST",
            path,
            &[("Authorization", auth.as_str()), ("Origin", "http://test")],
            body.as_bytes(),
        )
    };
    let r = post("/ui/subscriptions/billing/redrive", format!("csrf={csrf}"));
    assert_eq!(r.status, 303);
    let dead: i64 = c
        .query_one(
            "SELECT count(*) FROM pgbroker.event_retries WHERE dead",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dead, 0);
    let r = post(
        "/ui/subscriptions/billing/seek",
        format!("csrf={csrf}&position=0-0&time="),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let (tx, id): (String, i64) = {
        let row = c
            .query_one("SELECT tx::text, id FROM pgbroker.subscription_cursors WHERE subscription = 'billing'", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((tx.as_str(), id), ("0", 0));
    let r = post(
        "/ui/subscriptions/billing/seek",
        format!("csrf={csrf}&position=nonsense"),
    );
    assert_eq!(r.status, 400);
    let events = get(addr, "/ui/events?topic=orders.%23");
    assert!(events.body.contains("orders.created"));
    srv.shutdown();
}

#[test]
fn webhooks_page_shows_endpoints_and_redrives_dead_deliveries() {
    let s = seeded();
    let mut c = s.env.db.client().unwrap();
    let endpoint: i64 = c
        .query_one(
            "SELECT endpoint_id FROM pgbroker.webhook_add('http://127.0.0.1:9/hook?a=<b>',
                 ARRAY['orders.#'], headers => '{\"Authorization\": \"Bearer secret-value\"}')",
            &[],
        )
        .unwrap()
        .get(0);
    c.execute(
        "INSERT INTO pgbroker.webhook_dead_deliveries
             (endpoint_id, event_id, tx, topic, payload, created_at, attempts, last_status, last_error)
         VALUES ($1, 42, '7', 'orders.created', '{\"id\": 42}', now(), 6, 500, 'server <error>')",
        &[&endpoint],
    )
    .unwrap();
    let srv = server(&s.env, false);
    let addr = srv.local_addr();
    let page = get(addr, "/ui/webhooks");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("data-endpoint=\"{endpoint}\"")));
    assert!(page.body.contains("hook?a=&lt;b&gt;"));
    assert!(page.body.contains("headers: Authorization"));
    assert!(
        !page.body.contains("secret-value"),
        "header values are not shown"
    );
    assert!(page.body.contains("500: server &lt;error&gt;"));
    let csrf = csrf_of(&page.body);
    let auth = format!("Bearer {TOKEN}");
    let post = |path: &str, body: String| {
        request(
            addr,
            "POST",
            path,
            &[("Authorization", auth.as_str()), ("Origin", "http://test")],
            body.as_bytes(),
        )
    };
    let r = post(
        &format!("/ui/webhooks/{endpoint}/redrive"),
        format!("csrf={csrf}&event=42"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let marked: bool = c
        .query_one(
            "SELECT redrive FROM pgbroker.webhook_dead_deliveries WHERE event_id = 42",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(marked);
    let r = post(
        &format!("/ui/webhooks/{endpoint}/disable"),
        format!("csrf={csrf}"),
    );
    assert_eq!(r.status, 303);
    let enabled: bool = c
        .query_one(
            "SELECT enabled FROM pgbroker.webhook_endpoints WHERE id = $1",
            &[&endpoint],
        )
        .unwrap()
        .get(0);
    assert!(!enabled);
    assert_eq!(
        post("/ui/webhooks/999999/enable", format!("csrf={csrf}")).status,
        400
    );
    assert_eq!(
        post("/ui/webhooks/x/enable", format!("csrf={csrf}")).status,
        400
    );
    srv.shutdown();
}
