//! How fast the dashboard's pages answer against a big database: seeds JOBS jobs over five
//! queues (in every state) and EVENTS events, then times each page (median and worst of
//! several requests, server-side work plus loopback HTTP).
//!
//! ```text
//! cargo run --release -p pgbroker-http --example dashboard_bench -- [JOBS] [EVENTS]
//! ```
//!
//! Defaults: 1,000,000 jobs and 1,000,000 events, on a private throwaway cluster (or
//! `DATABASE_URL`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pgbroker_testing::DevDatabase;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let jobs: i64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let events: i64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let db = DevDatabase::from_env_or_temp()?;
    let broker = pgbroker::Broker::connect(db.url())?;
    broker.install()?;
    let mut c = broker.conn()?;
    let t = Instant::now();
    c.batch_execute("TRUNCATE pgbroker.jobs; TRUNCATE pgbroker.events CASCADE;")?;
    c.execute(
        "INSERT INTO pgbroker.jobs (queue, state, payload, run_at, attempt, finished_at, last_error)
         SELECT 'queue' || (g % 5),
                (ARRAY['available','available','available','running','dead','cancelled'])[1 + g % 6]::pgbroker.job_state,
                jsonb_build_object('n', g, 'email', 'user' || g || '@example.com'),
                now() - interval '1 hour', g % 3,
                CASE WHEN g % 6 >= 4 THEN now() END,
                CASE WHEN g % 6 = 4 THEN 'boom ' || g END
           FROM generate_series(1, $1::bigint) g",
        &[&jobs],
    )?;
    c.execute(
        "INSERT INTO pgbroker.events (topic, payload, key)
         SELECT 'orders.' || (ARRAY['created','paid','shipped'])[1 + g % 3],
                jsonb_build_object('id', g), (g % 100)::text
           FROM generate_series(1, $1::bigint) g",
        &[&events],
    )?;
    c.batch_execute(
        "SELECT pgbroker.subscribe('billing', ARRAY['orders.*'], 4, 'beginning');
         SELECT pgbroker.subscribe('audit', ARRAY['orders.paid'], 1, 'end');",
    )?;
    // VACUUM runs outside a transaction block: one statement per call.
    c.batch_execute("VACUUM ANALYZE pgbroker.jobs")?;
    c.batch_execute("VACUUM ANALYZE pgbroker.events")?;
    println!(
        "seeded {jobs} jobs and {events} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let job_id: i64 = c
        .query_one("SELECT max(id) FROM pgbroker.jobs", &[])?
        .get(0);
    let pos: String = c
        .query_one(
            "SELECT tx::text || '-' || id FROM pgbroker.events ORDER BY tx DESC, id DESC LIMIT 1",
            &[],
        )?
        .get(0);
    let server = pgbroker_http::Server::builder(broker.clone())
        .listen("127.0.0.1:0")
        .webhooks(false)
        .start()?;
    let addr = server.local_addr();
    let pages = [
        ("overview", "/ui/".to_owned()),
        ("overview JSON (live update)", "/ui/api/overview".to_owned()),
        ("queue, newest jobs", "/ui/queues/queue1".to_owned()),
        (
            "queue, dead jobs",
            "/ui/queues/queue1?state=dead".to_owned(),
        ),
        (
            "queue, page 100",
            format!("/ui/queues/queue1?before={}", job_id - 25_000),
        ),
        (
            "queue, find by id",
            format!("/ui/queues/queue1?q={}", job_id - 4),
        ),
        (
            "queue, find payload text",
            "/ui/queues/queue1?q=user999991%40".to_owned(),
        ),
        ("job", format!("/ui/jobs/{job_id}")),
        (
            "subscription (4 partitions, all behind)",
            "/ui/subscriptions/billing".to_owned(),
        ),
        (
            "subscription (caught up)",
            "/ui/subscriptions/audit".to_owned(),
        ),
        ("events, newest", "/ui/events".to_owned()),
        (
            "events, one topic",
            "/ui/events?topic=orders.paid".to_owned(),
        ),
        ("event", format!("/ui/events/{pos}")),
    ];
    println!("| page | median ms | worst ms | bytes |");
    println!("|---|---:|---:|---:|");
    for (name, path) in pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..7 {
            let t = Instant::now();
            let (status, body) = get(addr, &path)?;
            times.push(t.elapsed());
            bytes = body;
            if status != 200 {
                return Err(format!("{path}: HTTP {status}").into());
            }
        }
        times.sort();
        println!(
            "| {name} | {:.1} | {:.1} | {bytes} |",
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
    server.shutdown();
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, usize)> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, raw.len()))
}
