//! `pgbroker demo`: a private PostgreSQL, a few notifications, and what arrived.

use std::time::{Duration, Instant};

use crossbeam_channel::Select;
use pgbroker::{Broker, Event, TableOp, TempPostgres};
use serde_json::json;

use crate::failure::Failure;
use crate::output::Table;

const CHANNEL: &str = "demo";
const TABLE_CHANNEL: &str = "demo_orders_changes";

pub fn demo(json_out: bool) -> Result<(), Failure> {
    eprintln!("pgbroker: starting a private PostgreSQL for the demo...");
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

    let start = Instant::now();
    let mut sent: Vec<(String, String)> = Vec::new();
    let mut say = |what: &str, channel: &str| sent.push((channel.to_owned(), what.to_owned()));

    broker.notify(CHANNEL, "hello")?;
    say("notify(\"demo\", \"hello\")", CHANNEL);
    broker.notify(CHANNEL, &json!({"order": 1, "status": "paid"}))?;
    say(
        "notify(\"demo\", {\"order\":1,\"status\":\"paid\"})",
        CHANNEL,
    );
    {
        let mut c = broker.conn()?;
        let mut tx = c.transaction()?;
        broker.notify_in(&mut tx, CHANNEL, "never delivered")?;
        tx.rollback()?;
        say("notify_in(tx) then ROLLBACK: never delivered", CHANNEL);
        let mut tx = c.transaction()?;
        tx.execute("INSERT INTO demo_orders (item) VALUES ('book')", &[])?;
        broker.notify_in(&mut tx, CHANNEL, "order for a book committed")?;
        tx.commit()?;
        say("INSERT + notify_in(tx) then COMMIT", CHANNEL);
        say("(trigger) insert of the book order", TABLE_CHANNEL);
        c.execute("UPDATE demo_orders SET status = 'shipped'", &[])?;
        say("(trigger) UPDATE status = 'shipped'", TABLE_CHANNEL);
        c.execute("DELETE FROM demo_orders", &[])?;
        say("(trigger) DELETE", TABLE_CHANNEL);
    }
    let expected = sent.len() - 1; // the rolled-back one never arrives

    let mut received = Vec::new();
    let mut select = Select::new();
    for l in &listeners {
        select.recv(l.receiver());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.len() < expected {
        let Ok(i) = select.ready_deadline(deadline) else {
            break;
        };
        if let Some(Event::Notification(n)) = listeners[i].try_recv() {
            received.push((
                start.elapsed(),
                n.channel().to_owned(),
                n.payload().to_owned(),
            ));
        }
    }

    if json_out {
        let out = json!({
            "sent": sent.iter().map(|(c, w)| json!({"channel": c, "what": w})).collect::<Vec<_>>(),
            "received": received.iter().map(|(t, c, p)| json!({
                "ms": t.as_secs_f64() * 1000.0, "channel": c, "payload": p
            })).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        println!("Sent, in this order:");
        for (c, w) in &sent {
            println!("  {c:<20} {w}");
        }
        println!();
        println!("Received by the listeners:");
        let mut t = Table::new(["ms", "channel", "payload"]);
        for (at, c, p) in &received {
            t.row([
                format!("{:.1}", at.as_secs_f64() * 1000.0),
                c.clone(),
                p.clone(),
            ]);
        }
        print!("{}", t.render());
        println!();
        println!(
            "{} sent, {} received: a notification is delivered only when its transaction \
             commits, so the rolled-back one never arrived.",
            sent.len(),
            received.len()
        );
    }
    if received.len() != expected {
        return Err(Failure::failed(format!(
            "expected {expected} notifications, received {}",
            received.len()
        )));
    }
    Ok(())
}
