//! `pgbroker demo`: a private PostgreSQL, a few notifications, and what arrived.

use std::time::{Duration, Instant};

use crossbeam_channel::Select;
use pgbroker::{Broker, Event, TableOp};
use pgbroker_testing::TempPostgres;
use serde_json::{json, Value};

use crate::failure::Failure;

const CHANNEL: &str = "demo";
const TABLE_CHANNEL: &str = "demo_orders_changes";

pub fn demo(json_out: bool) -> Result<(), Failure> {
    crate::output::note("starting a private PostgreSQL for the demo...");
    let pg = TempPostgres::start()?;
    let broker = Broker::builder()
        .url(&pg.url())
        .pool_size(2)
        .listener_poll(Duration::from_millis(50))
        .build()?;
    broker.install()?;
    {
        let mut c = broker.conn()?;
        c.batch_execute(
            "CREATE TABLE demo_orders (id serial PRIMARY KEY, item text NOT NULL,
                                       status text NOT NULL DEFAULT 'placed')",
        )?;
    }
    broker.watch_table("demo_orders", TABLE_CHANNEL, &TableOp::ALL)?;
    let listeners = [broker.listen(CHANNEL)?, broker.listen(TABLE_CHANNEL)?];

    let mut select = Select::new();
    for l in &listeners {
        select.recv(l.receiver());
    }
    // Waits for `n` notifications (or a short while when none are expected).
    let mut collect = |n: usize, sent: Instant| -> Vec<Value> {
        let mut got = Vec::new();
        let wait = if n == 0 { 300 } else { 5_000 };
        let deadline = Instant::now() + Duration::from_millis(wait);
        while got.len() < n.max(1) {
            let Ok(i) = select.ready_deadline(deadline) else {
                break;
            };
            if let Some(Event::Notification(note)) = listeners[i].try_recv() {
                got.push(json!({
                    "channel": note.channel(),
                    "payload": note.payload(),
                    "ms": (sent.elapsed().as_secs_f64() * 1e4).round() / 10.0,
                }));
            }
        }
        got
    };

    let mut conn = broker.conn()?;
    let mut report = Vec::new();
    let mut expected = 0;
    let mut received = 0;
    for step in Step::ALL {
        let (what, n) = (step.describe(), step.expected());
        let sent = Instant::now();
        step.run(&broker, &mut conn)?;
        let got = collect(n, sent);
        expected += n;
        received += got.len();
        report.push(json!({"step": what, "expected": n, "received": got}));
    }

    let mut lines = Vec::new();
    if json_out {
        lines.push(json!({ "steps": report }).to_string());
    } else {
        for step in &report {
            lines.push(format!("> {}", step["step"].as_str().unwrap_or_default()));
            let got = step["received"].as_array().cloned().unwrap_or_default();
            if got.is_empty() {
                lines.push("    (nothing arrives: notifications are sent only on commit)".into());
            }
            for g in got {
                lines.push(format!(
                    "    {:>6} ms  {:<20} {}",
                    g["ms"],
                    g["channel"].as_str().unwrap_or_default(),
                    g["payload"].as_str().unwrap_or_default()
                ));
            }
        }
        lines.push(String::new());
        lines.push(format!(
            "{received} of {expected} expected notifications received; the rolled-back one \
             never arrived."
        ));
    }
    // A closed stdout (`| head -3`) is not an error: whoever read the output is gone.
    crate::output::print_lines(lines)?;
    if received != expected {
        return Err(Failure::failed(format!(
            "expected {expected} notifications, received {received}"
        )));
    }
    Ok(())
}

/// What the demo does, in order.
#[derive(Debug, Clone, Copy)]
enum Step {
    Text,
    Json,
    RolledBack,
    Committed,
    Update,
    Delete,
}

impl Step {
    const ALL: [Step; 6] = [
        Step::Text,
        Step::Json,
        Step::RolledBack,
        Step::Committed,
        Step::Update,
        Step::Delete,
    ];

    fn describe(self) -> &'static str {
        match self {
            Step::Text => "notify(\"demo\", \"hello\")",
            Step::Json => "notify(\"demo\", {\"order\":1,\"status\":\"paid\"})",
            Step::RolledBack => "notify_in(tx), then ROLLBACK",
            Step::Committed => "INSERT an order + notify_in(tx), then COMMIT",
            Step::Update => "UPDATE the order (watched table)",
            Step::Delete => "DELETE the order (watched table)",
        }
    }

    /// Notifications the step should deliver.
    fn expected(self) -> usize {
        match self {
            Step::RolledBack => 0,
            Step::Committed => 2, // the explicit one and the table trigger's
            _ => 1,
        }
    }

    fn run(self, broker: &Broker, conn: &mut pgbroker::PooledConn) -> Result<(), Failure> {
        match self {
            Step::Text => broker.notify(CHANNEL, "hello")?,
            Step::Json => broker.notify(CHANNEL, &json!({"order": 1, "status": "paid"}))?,
            Step::RolledBack => {
                let mut tx = conn.transaction()?;
                broker.notify_in(&mut tx, CHANNEL, "never delivered")?;
                tx.rollback()?;
            }
            Step::Committed => {
                let mut tx = conn.transaction()?;
                tx.execute("INSERT INTO demo_orders (item) VALUES ('book')", &[])?;
                broker.notify_in(&mut tx, CHANNEL, "order for a book committed")?;
                tx.commit()?;
            }
            Step::Update => {
                conn.execute("UPDATE demo_orders SET status = 'shipped'", &[])?;
            }
            Step::Delete => {
                conn.execute("DELETE FROM demo_orders", &[])?;
            }
        }
        Ok(())
    }
}
