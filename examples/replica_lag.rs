//! How far behind the primary reads from a streaming replica are: events are published at a
//! steady rate on a durable primary while one reader reads them through an asynchronous hot
//! standby (`read_replica`) and another on the primary; each reports publish-to-read latency
//! (p50, p99, max), and `replica_lag()` is sampled meanwhile.
//!
//! Run with `cargo run --release --example replica_lag` (two throwaway clusters, fsync on).
//! Not a test: figures vary run to run and with the machine's load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgbroker::topic::StartAt;
use pgbroker::Broker;
use pgbroker_testing::TempPostgres;
use serde_json::json;

const EVENTS: u64 = 2_000;
const INTERVAL: Duration = Duration::from_millis(2);

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Reads `EVENTS` events of `sub`, returning each one's publish-to-read latency.
fn read_all(broker: Broker, sub: &'static str) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut lat = Vec::with_capacity(EVENTS as usize);
        while (lat.len() as u64) < EVENTS {
            let b = broker.read(sub, 1000).expect("read");
            let now = micros_now();
            for e in b.events() {
                let sent = e.payload()["sent_us"].as_u64().unwrap_or(now);
                lat.push(Duration::from_micros(now.saturating_sub(sent)));
            }
            if let Some(p) = b.ack_position() {
                broker.ack(sub, p).expect("ack");
            }
            if b.is_empty() {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        lat
    })
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let primary = TempPostgres::builder()
        .durable(true)
        .replication(true)
        .start()?;
    let on_primary = Broker::connect(&primary.url())?;
    on_primary.install()?;
    for sub in ["via-replica", "via-primary"] {
        on_primary
            .subscription(sub)
            .pattern("#")
            .start_at(StartAt::End)
            .save()?;
    }
    let standby = primary.start_standby(false)?;
    let via_replica = Broker::builder()
        .url(&primary.url())
        .read_replica(&standby.url())
        .build()?;
    // Let the standby replay the subscriptions, then read once so it is known usable.
    std::thread::sleep(Duration::from_millis(500));
    on_primary.publish("warmup", &json!({}))?;
    std::thread::sleep(Duration::from_millis(500));
    for sub in ["via-replica", "via-primary"] {
        let b = on_primary.read(sub, 10)?;
        if let Some(p) = b.ack_position() {
            on_primary.ack(sub, p)?;
        }
    }

    let replica_reader = read_all(via_replica.clone(), "via-replica");
    let primary_reader = read_all(on_primary.clone(), "via-primary");
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (broker, done) = (via_replica.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut worst, mut bytes, mut unused) = (Duration::ZERO, 0u64, 0u32);
            while !done.load(Ordering::Relaxed) {
                for r in broker.replica_lag().expect("replica_lag") {
                    worst = worst.max(r.staleness.unwrap_or(Duration::MAX));
                    bytes = bytes.max(r.bytes_behind);
                    unused += u32::from(!r.used);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (worst, bytes, unused)
        })
    };
    let start = Instant::now();
    for n in 0..EVENTS {
        on_primary.publish("orders.created", &json!({"n": n, "sent_us": micros_now()}))?;
        let next = INTERVAL * (n as u32 + 1);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let rate = EVENTS as f64 / start.elapsed().as_secs_f64();
    let replica = replica_reader.join().expect("reader");
    let direct = primary_reader.join().expect("reader");
    done.store(true, Ordering::Relaxed);
    let (worst, bytes, unused) = sampler.join().expect("sampler");
    println!("{EVENTS} events at {rate:.0}/s on a durable primary (fsync on), async standby\n");
    println!("read on the primary           {}", summary(direct));
    println!("read through the replica      {}", summary(replica));
    println!(
        "replica_lag() every 100 ms: worst staleness {:.2} ms, most bytes behind {bytes}, \
         {unused} samples over the allowed lag",
        worst.as_secs_f64() * 1e3
    );
    Ok(())
}
