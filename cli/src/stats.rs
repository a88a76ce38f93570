//! `pgbroker stats`: the broker's health from one database connection. The metrics are
//! collected by `pgbroker_http::stats` (which `GET /metrics` of `pgbroker serve` also serves);
//! this command prints them as a table, `--json` or `--prometheus`.

use clap::Args;
use pgbroker_http::stats::{collect, prometheus, to_json, Metric};
use serde_json::Value;

use crate::failure::Failure;
use crate::output::Table;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Prometheus text exposition format.
    #[arg(long, conflicts_with = "json")]
    pub prometheus: bool,
    #[command(flatten)]
    pub output: crate::output::JsonFlag,
}

pub fn stats(url: &str, args: &StatsArgs, json: bool) -> Result<(), Failure> {
    let broker = crate::connection::broker(url)?;
    let mut conn = broker.conn()?;
    let metrics = collect(&mut conn)?;
    let text = if args.prometheus {
        prometheus(&metrics)
    } else if json {
        format!("{}\n", to_json(&metrics))
    } else {
        table(&metrics)
    };
    Ok(crate::output::print_text(&text)?)
}

fn table(metrics: &[Metric]) -> String {
    let mut t = Table::new(["metric", "value"]);
    for m in metrics {
        let v = match &m.value {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() => format!("{f:.3}"),
                _ => n.to_string(),
            },
            other => other.to_string(),
        };
        let name = match &m.object {
            Some(o) => format!("{}.{o}.{}", m.section, m.key),
            None => format!("{}.{}", m.section, m.key),
        };
        t.row([name, v]);
    }
    t.render()
}

#[cfg(test)]
mod test {
    use super::*;
    use serde_json::json;

    fn sample() -> Vec<Metric> {
        vec![
            Metric::gauge("notify", "queue_usage", json!(0.5), "q", "Queue."),
            Metric::gauge("connections", "idle", json!(2), "c", "Conns.").label("state", "idle"),
            Metric::gauge("connections", "active", json!(1), "c", "Conns.")
                .label("state", "active"),
            Metric::fact("horizon", "pid", Value::Null),
            Metric::gauge("queues", "dead", json!(3), "j", "Jobs.")
                .of("queue", "mail")
                .label("state", "dead"),
        ]
    }

    #[test]
    fn table_names_objects() {
        let t = table(&sample());
        assert!(t.contains("queues.mail.dead"), "{t}");
        assert!(t.contains("horizon.pid"), "{t}");
    }
}
