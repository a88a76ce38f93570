//! Live events in a browser: serves `sse.html` and the SSE stream, and publishes a greeting
//! every second. Uses `DATABASE_URL`, or starts a private throwaway PostgreSQL.
//!
//!     cargo run -p pgbroker-http --example sse_server
//!
//! then open http://127.0.0.1:8080/ (or `-- --seconds 5` to stop by itself).

use std::time::Duration;

use pgbroker::Broker;
use pgbroker_http::Server;
use pgbroker_testing::DevDatabase;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: Option<u64> = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .map(|s| s.parse())
        .transpose()?;
    let db = DevDatabase::from_env_or_temp()?;
    let broker = Broker::connect(db.url())?;
    broker.install()?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let server = Server::builder(broker.clone())
        .listen(listen)
        .page("/", include_str!("sse.html"))
        .start()?;
    println!(
        "open http://{}/ to watch events arrive",
        server.local_addr()
    );
    let mut n = 0u64;
    loop {
        n += 1;
        broker.publish("demo.greeting", &json!({"n": n, "hello": "world"}))?;
        std::thread::sleep(Duration::from_secs(1));
        if seconds.is_some_and(|s| n >= s) {
            break;
        }
    }
    server.shutdown();
    Ok(())
}
