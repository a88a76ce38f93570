//! SSE benchmark (not a test): many concurrent clients on one server, events published at a
//! steady rate; reports events/s delivered, p50/p99/max latency from publish to client, and
//! the process's RSS. Uses `DATABASE_URL`, or a private *durable* (fsync on) PostgreSQL.
//!
//!     cargo run --release -p pgbroker-http --example sse_bench -- --clients 1000 --rate 200 --seconds 10
//!
//! The clients run in this process (threads with 64 KiB stacks reading raw sockets), so the
//! RSS reported includes them; the figure before they connect is the server alone.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgbroker::Broker;
use pgbroker_http::Server;
use pgbroker_testing::TempPostgres;
use serde_json::json;

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clients = arg("--clients", 1000) as usize;
    let rate = arg("--rate", 200);
    let seconds = arg("--seconds", 10);
    let _pg;
    let url = match std::env::var("DATABASE_URL") {
        Ok(u) => u,
        Err(_) => {
            _pg = TempPostgres::builder().durable(true).start()?;
            _pg.url()
        }
    };
    let broker = Broker::builder().url(&url).pool_size(8).build()?;
    broker.install()?;
    let server = Server::builder(broker.clone())
        .listen("127.0.0.1:0")
        .max_connections(clients + 100)
        .webhooks(false)
        .start()?;
    let addr = server.local_addr();
    let rss_server = rss_mib();

    let handles: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || -> Vec<u64> {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.write_all(b"GET /events?topic=bench.* HTTP/1.1\r\nHost: b\r\n\r\n")
                        .expect("request");
                    let mut lat = Vec::with_capacity(4096);
                    for line in BufReader::new(s).lines() {
                        let Ok(line) = line else { break };
                        if let Some(data) = line.strip_prefix("data: ") {
                            let t = serde_json::from_str::<serde_json::Value>(data)
                                .ok()
                                .and_then(|v| v["t"].as_u64())
                                .unwrap_or(0);
                            lat.push(now_micros().saturating_sub(t));
                        }
                    }
                    lat
                })
                .expect("client thread")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.metrics().sse_clients() < clients as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("{} clients connected", server.metrics().sse_clients());

    let total = rate * seconds;
    let start = Instant::now();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        broker.publish("bench.tick", &json!({"t": now_micros(), "i": i}))?;
    }
    let published = start.elapsed();
    let expected = total * clients as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metrics().sse_events_sent() < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let delivered_in = start.elapsed();
    let rss_peak = rss_mib();
    let slow = server.metrics().sse_slow_disconnects();
    server.shutdown();
    let mut lat: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "published {total} events in {:.1} s ({:.0}/s); delivered {} of {expected} client events in {:.1} s ({:.0}/s); {slow} slow disconnects",
        published.as_secs_f64(),
        total as f64 / published.as_secs_f64(),
        lat.len(),
        delivered_in.as_secs_f64(),
        lat.len() as f64 / delivered_in.as_secs_f64(),
    );
    println!(
        "latency publish -> client: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    println!("RSS: {rss_server:.1} MiB before clients, {rss_peak:.1} MiB with {clients} clients (clients' threads included)");
    Ok(())
}
