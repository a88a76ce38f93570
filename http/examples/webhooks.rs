//! Webhooks: a local receiver that checks Standard Webhooks signatures, an endpoint for
//! `orders.*`, and a server delivering to it (the first attempt fails and is retried with the
//! same `webhook-id`). Uses `DATABASE_URL`, or starts a private throwaway PostgreSQL.
//!
//!     cargo run -p pgbroker-http --example webhooks

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use pgbroker::Broker;
use pgbroker_http::webhooks::{sign, NewEndpoint, Webhooks};
use pgbroker_http::Server;
use pgbroker_testing::DevDatabase;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = DevDatabase::from_env_or_temp()?;
    let broker = Broker::connect(db.url())?;
    broker.install()?;

    // The receiver: fails the first request, then accepts requests whose signature checks.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hooks/orders", listener.local_addr()?);
    let added = Webhooks::new(&broker)
        .add(&NewEndpoint::new(&url, ["orders.*"]).retries(vec![Duration::from_millis(500)]))?;
    println!("endpoint {} at {url}, secret {}", added.id, added.secret);
    let (done_tx, done_rx) = mpsc::channel();
    let secret = added.secret.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut headers = Vec::new();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
                line.clear();
            }
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let mut body = vec![0; header("content-length").parse().unwrap_or(0)];
            reader.read_exact(&mut body).expect("body");
            let id = header("webhook-id");
            let ts: i64 = header("webhook-timestamp").parse().unwrap_or(0);
            let expected = sign(&secret, &id, ts, &body).expect("sign");
            let valid = header("webhook-signature")
                .split(' ')
                .any(|s| s == expected);
            let status = if n == 0 {
                500
            } else if valid {
                204
            } else {
                400
            };
            println!(
                "receiver: {id} valid={valid} -> {status}: {}",
                String::from_utf8_lossy(&body)
            );
            let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            if status == 204 {
                let _ = done_tx.send(());
            }
        }
    });

    let server = Server::builder(broker.clone()).start()?;
    broker.publish("orders.created", &json!({"id": 42, "total": 9.5}))?;
    done_rx.recv_timeout(Duration::from_secs(30))?;
    // The server records the delivery right after the receiver answered.
    let hooks = Webhooks::new(&broker);
    for _ in 0..100 {
        if hooks.list()?.iter().all(|e| e.delivered == 1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for e in hooks.list()? {
        println!(
            "endpoint {}: delivered {}, failed {}, dead {}",
            e.id, e.delivered, e.failed, e.dead
        );
    }
    server.shutdown();
    Ok(())
}
