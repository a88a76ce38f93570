//! The dashboard in a real browser: headless Chromium driven by chromedriver over the W3C
//! WebDriver protocol (plain HTTP + JSON). It checks what an operator sees and does: the
//! overview's counts, the overview updating without a reload when jobs are enqueued, a
//! `<script>` payload shown as text, retrying a dead job and re-driving a dead event from the
//! pages. Screenshots of every page land in `target/dashboard-screenshots/` (look at them).
//!
//! Needs Debian's `chromium` and `chromium-driver` (installed by .ci/run); without them the
//! test says so and passes, except under CI (`CI` set), where it fails.

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use pgbroker_http::BearerTokens;
use pgbroker_testing::wait_until;
use serde_json::{json, Value};

const TOKEN: &str = "operator-token";

struct Driver {
    base: String,
    session: String,
    child: Child,
    _profile: PathBuf,
}

impl Driver {
    fn start() -> Option<Driver> {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let driver = ["/usr/bin/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install chromium and chromium-driver"
            );
            eprintln!("skipping the browser test: no chromium/chromedriver on this machine");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        assert!(
            wait_until(Duration::from_secs(20), || ureq::get(&format!(
                "{base}/status"
            ))
            .call()
            .is_ok()),
            "chromedriver did not start"
        );
        let profile =
            std::env::temp_dir().join(format!("pgbroker-chromium-{}", std::process::id()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--disable-quic", "--no-first-run",
                         "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let mut d = Driver {
            base,
            session: String::new(),
            child,
            _profile: profile,
        };
        let v = d.call("POST", "/session", Some(caps));
        d.session = v["sessionId"].as_str().expect("a session id").to_owned();
        Some(d)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let resp = match (method, body) {
            ("GET", _) => agent.get(&url).call(),
            ("DELETE", _) => agent.delete(&url).call(),
            (_, b) => agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or_else(|| json!({})).to_string()),
        }
        .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(status < 300, "webdriver {method} {path}: {status} {v}");
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn click(&self, css: &str) {
        let el = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        let id = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned();
        self.call("POST", &format!("/element/{id}/click"), None);
    }

    fn accept_confirm(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let url = format!("{}/session/{}/alert/accept", self.base, self.session);
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let status = agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send("{}")
                .unwrap()
                .status()
                .as_u16();
            if status < 300 {
                return;
            }
            assert!(Instant::now() < deadline, "no confirmation dialog opened");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&self, name: &str) {
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    fn text(&self, css: &str) -> String {
        self.js(&format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            json!(css)
        ))
        .as_str()
        .unwrap_or("")
        .to_owned()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._profile);
    }
}

#[test]
fn an_operator_watches_retries_and_redrives_in_a_browser() {
    let Some(browser) = Driver::start() else {
        return;
    };
    let env = support::env();
    let mut c = env.db.client().unwrap();
    c.batch_execute(
        "SELECT pgbroker.enqueue('mail', '{\"to\": \"a\"}');
         SELECT pgbroker.subscribe('billing', ARRAY['orders.#']);
         SELECT pgbroker.publish('orders.created', '{\"id\": 7}');",
    )
    .unwrap();
    let dead: i64 = c
        .query_one(
            "SELECT pgbroker.enqueue('mail', '{\"html\": \"<script>window.pwned = 1</script>\"}',
                                     priority => -1, max_attempts => 1)",
            &[],
        )
        .unwrap()
        .get(0);
    c.execute(
        "SELECT id FROM pgbroker.claim('mail', 'w1', 1, '1 minute')",
        &[],
    )
    .unwrap();
    c.execute("SELECT pgbroker.fail($1, 'smtp said no')", &[&dead])
        .unwrap();
    c.batch_execute(
        "INSERT INTO pgbroker.event_retries (subscription, partition, id, tx, topic, payload,
                                             created_at, attempt, run_at, dead, last_error)
         SELECT 'billing', 0, id, tx, topic, payload, created_at, 3, now(), true, 'handler failed'
           FROM pgbroker.events LIMIT 1",
    )
    .unwrap();
    let server = env
        .server()
        .auth(BearerTokens::parse(TOKEN).unwrap().into_hook())
        .start()
        .unwrap();
    let base = format!("http://{}", server.local_addr());

    // Sign in once; the overview shows the database's counts.
    browser.go(&format!("{base}/ui/?access_token={TOKEN}"));
    assert_eq!(
        browser.js("return location.pathname + location.search"),
        "/ui/"
    );
    assert_eq!(
        browser.text("tr[data-queue=mail] [data-field=available]"),
        "1"
    );
    assert_eq!(browser.text("tr[data-queue=mail] [data-field=dead]"), "1");
    browser.screenshot("overview");

    // Jobs enqueued elsewhere show up without a reload.
    browser.js("window.notReloaded = true; return null");
    c.batch_execute(
        "SELECT pgbroker.enqueue('mail', '{}') FROM generate_series(1, 5);
         SELECT pgbroker.enqueue('reports', '{}');",
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || browser
            .text("tr[data-queue=mail] [data-field=available]")
            == "6"
            && browser.text("tr[data-queue=reports] [data-field=available]")
                == "1"),
        "the overview did not update: mail available = {:?}",
        browser.text("tr[data-queue=mail] [data-field=available]")
    );
    assert_eq!(browser.js("return window.notReloaded === true"), true);
    browser.screenshot("overview-live");

    // The dead job's page shows the payload as text, and its Retry button works.
    browser.go(&format!("{base}/ui/jobs/{dead}"));
    assert!(browser
        .text("pre.payload")
        .contains("<script>window.pwned = 1</script>"));
    assert_eq!(browser.js("return window.pwned === undefined"), true);
    browser.screenshot("job");
    browser.click("form[action$='/retry'] button");
    browser.accept_confirm();
    assert!(wait_until(Duration::from_secs(10), || browser
        .text(".flash")
        .contains("will run again")));
    let state: String = c
        .query_one(
            "SELECT state::text FROM pgbroker.jobs WHERE id = $1",
            &[&dead],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "available");
    browser.screenshot("job-retried");

    // The queue page lists jobs; the subscription page re-drives its dead event.
    browser.go(&format!("{base}/ui/queues/mail"));
    assert_eq!(
        browser.js("return document.querySelectorAll('tr[data-job]').length"),
        7
    );
    browser.screenshot("queue");
    browser.go(&format!("{base}/ui/subscriptions/billing"));
    assert!(browser.text("main").contains("1 dead, 0 retrying"));
    browser.screenshot("subscription");
    browser.click("#dead form[action$='/redrive'] button");
    browser.accept_confirm();
    assert!(wait_until(Duration::from_secs(10), || browser
        .text(".flash")
        .contains("re-driven")));
    let dead_letters: i64 = c
        .query_one(
            "SELECT count(*) FROM pgbroker.event_retries WHERE dead",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dead_letters, 0);

    browser.go(&format!("{base}/ui/events"));
    assert!(browser.text("#events").contains("orders.created"));
    browser.screenshot("events");
    browser.go(&format!("{base}/ui/webhooks"));
    browser.screenshot("webhooks");

    // A phone-sized window: the overview still fits (tables scroll inside their box).
    browser.call(
        "POST",
        "/window/rect",
        Some(json!({"width": 390, "height": 844})),
    );
    browser.go(&format!("{base}/ui/"));
    assert_eq!(
        browser.js("return document.documentElement.scrollWidth <= window.innerWidth + 1"),
        true,
        "the page is wider than a phone's screen"
    );
    browser.screenshot("overview-phone");
    server.shutdown();
}
