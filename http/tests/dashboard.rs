//! The dashboard's overview in a real browser (headless Chromium, installed by .ci/run): the
//! counts shown match the database, and user data renders as text.

mod support;

use std::process::Command;

use pgbroker_http::webhooks::{NewEndpoint, Webhooks};
use serde_json::json;
use support::*;

fn chromium(args: &[&str], url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--window-size=1000,700",
            "--virtual-time-budget=3000",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (apt-get install chromium; .ci/run does)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn overview_shows_the_database_counts_and_escapes_user_data() {
    let env = env();
    for i in 0..3 {
        env.broker.enqueue("mail", &json!({ "n": i })).unwrap();
    }
    env.broker.enqueue("reports", &json!({})).unwrap();
    let hooks = Webhooks::new(&env.broker);
    hooks
        .add(&NewEndpoint::new(
            "http://127.0.0.1:9/<script>alert(1)</script>",
            ["a"],
        ))
        .unwrap();
    let server = env
        .server()
        .dashboard(true)
        .webhooks(false)
        .start()
        .unwrap();
    let url = format!("http://{}/", server.local_addr());
    let dom = chromium(&["--dump-dom"], &url);
    assert!(dom.contains("updated "), "{dom}");
    assert!(
        dom.contains(r#"<tr data-key="mail"><td>mail</td><td class="n">3</td>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<tr data-key="reports"><td>reports</td><td class="n">1</td>"#),
        "{dom}"
    );
    assert!(
        dom.contains("<td>http://127.0.0.1:9/&lt;script&gt;alert(1)&lt;/script&gt;</td>"),
        "{dom}"
    );
    assert!(!dom.contains("<script>alert"), "{dom}");
    // A screenshot to look at (not committed).
    let shot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-overview.png");
    chromium(&[&format!("--screenshot={}", shot.display())], &url);
    assert!(shot.exists());
    // Without the dashboard, / is not served.
    server.shutdown();
    let server = env.server().start().unwrap();
    assert_eq!(get(server.local_addr(), "/").status, 404);
    assert_eq!(get(server.local_addr(), "/api/overview").status, 404);
    server.shutdown();
}
