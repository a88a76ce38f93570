//! The broker's health as metrics, from one database connection: what `pgbroker stats` prints
//! (as a table, `--json` or `--prometheus`) and what `GET /metrics` serves.
//!
//! Each area contributes a collector; a collector returns metrics, and the output forms are
//! made from that one list.

use postgres::Client;
use serde_json::{json, Map, Value};

/// One measured value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The group in JSON and the table (`notify`, `horizon`, ...).
    pub section: &'static str,
    /// The object inside the section that the key belongs to (a queue, a subscription).
    pub object: Option<String>,
    /// The key inside the group.
    pub key: String,
    /// The value (a number, or a fact's text, or null).
    pub value: Value,
    /// How Prometheus sees it; `None` for JSON-only facts (a pid, a name).
    pub prometheus: Option<Exposition>,
}

/// A metric's Prometheus name, help text and labels (every pgbroker metric is a gauge).
#[derive(Debug, Clone, PartialEq)]
pub struct Exposition {
    /// The metric name.
    pub name: &'static str,
    /// The help text.
    pub help: &'static str,
    /// The labels, in order.
    pub labels: Vec<(&'static str, String)>,
}

impl Metric {
    /// A gauge, with its Prometheus name and help.
    pub fn gauge(
        section: &'static str,
        key: impl Into<String>,
        value: Value,
        name: &'static str,
        help: &'static str,
    ) -> Metric {
        Metric {
            section,
            object: None,
            key: key.into(),
            value,
            prometheus: Some(Exposition {
                name,
                help,
                labels: Vec::new(),
            }),
        }
    }

    /// A JSON-only fact (a pid, a name): not in the Prometheus text.
    pub fn fact(section: &'static str, key: impl Into<String>, value: Value) -> Metric {
        Metric {
            section,
            object: None,
            key: key.into(),
            value,
            prometheus: None,
        }
    }

    /// Files the metric under `object` of its section, labelled `label="object"`.
    pub fn of(mut self, label: &'static str, object: &str) -> Metric {
        self.object = Some(object.to_owned());
        self.label(label, object)
    }

    /// Adds a Prometheus label.
    pub fn label(mut self, name: &'static str, value: impl Into<String>) -> Metric {
        if let Some(p) = &mut self.prometheus {
            p.labels.push((name, value.into()));
        }
        self
    }
}

type Collector = fn(&mut Client) -> Result<Vec<Metric>, postgres::Error>;

/// Every area's collector, in output order.
const COLLECTORS: &[Collector] = &[schema, notify, connections, horizon, queues, subscriptions];

/// Every area's metrics (schema, notify, connections, horizon, queues, subscriptions), in
/// output order. Works on a database without (part of) the pgbroker schema.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let metrics = pgbroker_http::stats::collect(&mut **broker.conn()?)?;
/// print!("{}", pgbroker_http::stats::prometheus(&metrics));
/// # Ok(()) }
/// ```
pub fn collect(client: &mut Client) -> Result<Vec<Metric>, postgres::Error> {
    let mut metrics = Vec::new();
    for c in COLLECTORS {
        metrics.extend(c(client)?);
    }
    Ok(metrics)
}

fn schema(c: &mut Client) -> Result<Vec<Metric>, postgres::Error> {
    // Not via Broker::schema_version: stats must work on a database without the schema.
    let installed: bool = c
        .query_one(
            "SELECT to_regclass('pgbroker.schema_version') IS NOT NULL",
            &[],
        )?
        .get(0);
    let version: Option<i32> = if installed {
        c.query_one("SELECT max(version) FROM pgbroker.schema_version", &[])?
            .get(0)
    } else {
        None
    };
    Ok(vec![Metric::gauge(
        "schema",
        "version",
        json!(version),
        "pgbroker_schema_version",
        "Installed pgbroker schema version (absent when not installed).",
    )])
}

fn notify(c: &mut Client) -> Result<Vec<Metric>, postgres::Error> {
    let usage: f64 = c
        .query_one("SELECT pg_notification_queue_usage()", &[])?
        .get(0);
    Ok(vec![Metric::gauge(
        "notify",
        "queue_usage",
        json!(usage),
        "pgbroker_notification_queue_usage_ratio",
        "Fraction of the cluster's NOTIFY queue in use; a listener that stops reading makes it grow.",
    )])
}

fn connections(c: &mut Client) -> Result<Vec<Metric>, postgres::Error> {
    let mut out = Vec::new();
    let max: i32 = c
        .query_one("SELECT current_setting('max_connections')::int", &[])?
        .get(0);
    let rows = c.query(
        "SELECT coalesce(state, 'unknown'), count(*)
           FROM pg_stat_activity
          WHERE backend_type = 'client backend'
          GROUP BY 1 ORDER BY 1",
        &[],
    )?;
    let mut total = 0i64;
    for r in rows {
        let state: String = r.get(0);
        let n: i64 = r.get(1);
        total += n;
        out.push(
            Metric::gauge(
                "connections",
                state.clone(),
                json!(n),
                "pgbroker_connections",
                "Client connections to the cluster, by state.",
            )
            .label("state", state),
        );
    }
    out.push(Metric::gauge(
        "connections",
        "total",
        json!(total),
        "pgbroker_connections_total",
        "Client connections to the cluster.",
    ));
    out.push(Metric::gauge(
        "connections",
        "max",
        json!(max),
        "pgbroker_connections_max",
        "The server's max_connections.",
    ));
    Ok(out)
}

/// What holds back `pg_snapshot_xmin(pg_current_snapshot())`, the horizon below which log
/// readers may deliver: the oldest transaction that has an xid and is still running (a
/// session's or a prepared one). Read-only transactions have no xid and hold nothing back.
/// Sessions of other users show only with `pg_read_all_stats`.
fn horizon(c: &mut Client) -> Result<Vec<Metric>, postgres::Error> {
    let row = c.query_opt(
        "SELECT * FROM (
             SELECT pid, application_name AS holder, state, false AS prepared,
                    extract(epoch FROM clock_timestamp() - xact_start)::float8 AS seconds,
                    age(backend_xid)::int8 AS xids
               FROM pg_stat_activity
              WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
             UNION ALL
             SELECT NULL, gid, 'prepared', true,
                    extract(epoch FROM clock_timestamp() - prepared)::float8,
                    age(transaction)::int8
               FROM pg_prepared_xacts
         ) t ORDER BY xids DESC, seconds DESC LIMIT 1",
        &[],
    )?;
    let (seconds, xids, pid, holder, state, prepared) = match &row {
        Some(r) => (
            r.get::<_, Option<f64>>("seconds").unwrap_or(0.0),
            r.get::<_, i64>("xids"),
            json!(r.get::<_, Option<i32>>("pid")),
            json!(r.get::<_, Option<String>>("holder")),
            json!(r.get::<_, Option<String>>("state")),
            json!(r.get::<_, bool>("prepared")),
        ),
        None => (0.0, 0, Value::Null, Value::Null, Value::Null, Value::Null),
    };
    Ok(vec![
        Metric::gauge(
            "horizon",
            "holdback_seconds",
            json!(seconds),
            "pgbroker_horizon_holdback_seconds",
            "Age of the oldest running transaction with an xid; log delivery waits for it.",
        ),
        Metric::gauge(
            "horizon",
            "holdback_xids",
            json!(xids),
            "pgbroker_horizon_holdback_xids",
            "Transactions started since the oldest running one with an xid.",
        ),
        Metric::fact("horizon", "pid", pid),
        Metric::fact("horizon", "holder", holder),
        Metric::fact("horizon", "state", state),
        Metric::fact("horizon", "prepared", prepared),
    ])
}

/// Whether `pgbroker.<table>` exists: stats work on a database without (part of) the schema.
fn has_table(c: &mut Client, table: &str) -> Result<bool, postgres::Error> {
    let sql = "SELECT to_regclass('pgbroker.' || $1) IS NOT NULL";
    Ok(c.query_one(sql, &[&table])?.get(0))
}

/// Jobs by queue and state, and how long each queue's oldest ready job has waited.
fn queues(c: &mut Client) -> Result<Vec<Metric>, postgres::Error> {
    if !has_table(c, "queue_stats")? {
        return Ok(Vec::new());
    }
    let rows = c.query(
        "SELECT queue, available, scheduled, running, completed, dead, cancelled,
                coalesce(oldest_available_secs, 0)
           FROM pgbroker.queue_stats ORDER BY queue",
        &[],
    )?;
    let mut out = Vec::new();
    for r in rows {
        let queue: String = r.get(0);
        for (i, state) in [
            "available",
            "scheduled",
            "running",
            "completed",
            "dead",
            "cancelled",
        ]
        .into_iter()
        .enumerate()
        {
            out.push(
                Metric::gauge(
                    "queues",
                    state,
                    json!(r.get::<_, i64>(i + 1)),
                    "pgbroker_queue_jobs",
                    "Jobs by queue and state (scheduled: available, but not before their run_at).",
                )
                .of("queue", &queue)
                .label("state", state),
            );
        }
        out.push(
            Metric::gauge(
                "queues",
                "oldest_available_seconds",
                json!(r.get::<_, f64>(7)),
                "pgbroker_queue_oldest_available_seconds",
                "How long the oldest job ready to run has waited (0 when none waits).",
            )
            .of("queue", &queue),
        );
    }
    Ok(out)
}

/// Per subscription: events after its cursors, the age of the oldest, how many of them the
/// horizon holds back (written by transactions newer than a still-running one) and the
/// backend holding it then, retrying events and dead letters. Counting scans each
/// subscription's unread events.
fn subscriptions(c: &mut Client) -> Result<Vec<Metric>, postgres::Error> {
    if !has_table(c, "subscriptions")? {
        return Ok(Vec::new());
    }
    let rows = c.query(
        "SELECT s.name, s.partitions, l.behind, l.oldest, l.held, l.pid,
                (SELECT count(*) FROM pgbroker.event_retries r
                  WHERE r.subscription = s.name AND r.dead),
                (SELECT count(*) FROM pgbroker.event_retries r
                  WHERE r.subscription = s.name AND NOT r.dead)
           FROM pgbroker.subscriptions s
          CROSS JOIN LATERAL (
                SELECT sum(events_behind)::int8 AS behind,
                       coalesce(extract(epoch FROM max(oldest_age)), 0)::float8 AS oldest,
                       sum(beyond_horizon)::int8 AS held,
                       min(horizon_pid) FILTER (WHERE beyond_horizon > 0) AS pid
                  FROM pgbroker.subscription_lag(s.name)) l
          ORDER BY s.name",
        &[],
    )?;
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        let gauge = |key: &'static str, value: Value, metric, help| {
            Metric::gauge("subscriptions", key, value, metric, help).of("subscription", &name)
        };
        out.push(gauge(
            "events_behind",
            json!(r.get::<_, i64>(2)),
            "pgbroker_subscription_events_behind",
            "Matching events after the subscription's cursors, readable or not yet.",
        ));
        out.push(gauge(
            "oldest_seconds",
            json!(r.get::<_, f64>(3)),
            "pgbroker_subscription_oldest_event_age_seconds",
            "Age of the oldest matching event not acknowledged yet (0 when caught up).",
        ));
        out.push(gauge(
            "held_by_horizon",
            json!(r.get::<_, i64>(4)),
            "pgbroker_subscription_events_held_by_horizon",
            "Of those, events not readable yet because an older transaction still runs.",
        ));
        out.push(gauge(
            "dead_letters",
            json!(r.get::<_, i64>(6)),
            "pgbroker_subscription_dead_letters",
            "Events its handler gave up on (re-drive with Broker::redrive_events).",
        ));
        out.push(gauge(
            "retrying",
            json!(r.get::<_, i64>(7)),
            "pgbroker_subscription_retrying_events",
            "Failed events waiting for their next delivery.",
        ));
        out.push(gauge(
            "partitions",
            json!(r.get::<_, i32>(1)),
            "pgbroker_subscription_partitions",
            "Partitions of the subscription.",
        ));
        out.push(
            Metric::fact(
                "subscriptions",
                "horizon_pid",
                json!(r.get::<_, Option<i32>>(5)),
            )
            .of("subscription", &name),
        );
    }
    Ok(out)
}

/// `{"section": {"key": value}}`, or `{"section": {"object": {"key": value}}}` for metrics of
/// an object; sections and keys in collection order.
pub fn to_json(metrics: &[Metric]) -> Value {
    let mut out = Map::new();
    for m in metrics {
        let mut group = out
            .entry(m.section)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(object) = &m.object {
            if let Value::Object(s) = group {
                group = s
                    .entry(object.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
        }
        if let Value::Object(g) = group {
            g.insert(m.key.clone(), m.value.clone());
        }
    }
    Value::Object(out)
}

/// The Prometheus text exposition of `metrics` (gauges; facts are left out).
pub fn prometheus(metrics: &[Metric]) -> String {
    let mut out = String::new();
    let mut described: Vec<&str> = Vec::new();
    for m in metrics {
        let Some(p) = &m.prometheus else { continue };
        let Some(v) = m.value.as_f64() else { continue };
        if !described.contains(&p.name) {
            described.push(p.name);
            out.push_str(&format!(
                "# HELP {} {}\n# TYPE {} gauge\n",
                p.name, p.help, p.name
            ));
        }
        let labels: Vec<String> = p
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        out.push_str(&format!("{}{} {}\n", p.name, labels, v));
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;

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
    fn json_groups_by_section() {
        assert_eq!(
            to_json(&sample()),
            json!({"notify": {"queue_usage": 0.5},
                   "connections": {"idle": 2, "active": 1},
                   "horizon": {"pid": null},
                   "queues": {"mail": {"dead": 3}}})
        );
    }

    #[test]
    fn prometheus_describes_each_name_once() {
        assert_eq!(
            prometheus(&sample()),
            "# HELP q Queue.\n# TYPE q gauge\nq 0.5\n\
             # HELP c Conns.\n# TYPE c gauge\nc{state=\"idle\"} 2\nc{state=\"active\"} 1\n\
             # HELP j Jobs.\n# TYPE j gauge\nj{queue=\"mail\",state=\"dead\"} 3\n"
        );
    }
}
