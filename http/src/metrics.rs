//! The server's own counters, exposed on `/metrics` after the broker's statistics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one running server. Read them with [`ServerHandle::metrics`](crate::ServerHandle::metrics).
#[derive(Debug, Default)]
pub struct ServerMetrics {
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) responses_4xx: AtomicU64,
    pub(crate) responses_5xx: AtomicU64,
    pub(crate) sse_clients: AtomicU64,
    pub(crate) sse_events_sent: AtomicU64,
    pub(crate) sse_slow_disconnects: AtomicU64,
    pub(crate) events_ingested: AtomicU64,
    pub(crate) jobs_ingested: AtomicU64,
    pub(crate) webhook_deliveries: AtomicU64,
    pub(crate) webhook_failures: AtomicU64,
    pub(crate) webhook_dead: AtomicU64,
    pub(crate) webhook_latency_micros: AtomicU64,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn sub(c: &AtomicU64, n: u64) {
    c.fetch_sub(n, Ordering::Relaxed);
}

impl ServerMetrics {
    /// Connected SSE clients now.
    pub fn sse_clients(&self) -> u64 {
        get(&self.sse_clients)
    }

    /// SSE events written to clients since start.
    pub fn sse_events_sent(&self) -> u64 {
        get(&self.sse_events_sent)
    }

    /// SSE clients disconnected because they fell a full buffer behind.
    pub fn sse_slow_disconnects(&self) -> u64 {
        get(&self.sse_slow_disconnects)
    }

    /// Webhook requests answered with 2xx since start.
    pub fn webhook_deliveries(&self) -> u64 {
        get(&self.webhook_deliveries)
    }

    /// Webhook requests that failed (status, timeout, connection) since start.
    pub fn webhook_failures(&self) -> u64 {
        get(&self.webhook_failures)
    }

    /// The Prometheus text of these counters.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        let rows: [(&str, &str, &str, &AtomicU64); 14] = [
            (
                "pgbroker_http_connections_open",
                "gauge",
                "Open HTTP connections (SSE streams included).",
                &self.connections_open,
            ),
            (
                "pgbroker_http_connections_total",
                "counter",
                "HTTP connections accepted.",
                &self.connections_total,
            ),
            (
                "pgbroker_http_connections_refused_total",
                "counter",
                "Connections refused with 503 at the connection limit.",
                &self.connections_refused,
            ),
            (
                "pgbroker_http_requests_total",
                "counter",
                "HTTP requests read.",
                &self.requests,
            ),
            (
                "pgbroker_http_responses_4xx_total",
                "counter",
                "Responses with a 4xx status.",
                &self.responses_4xx,
            ),
            (
                "pgbroker_http_responses_5xx_total",
                "counter",
                "Responses with a 5xx status.",
                &self.responses_5xx,
            ),
            (
                "pgbroker_http_sse_clients",
                "gauge",
                "Connected Server-Sent Events clients.",
                &self.sse_clients,
            ),
            (
                "pgbroker_http_sse_events_sent_total",
                "counter",
                "Events written to SSE clients.",
                &self.sse_events_sent,
            ),
            (
                "pgbroker_http_sse_slow_disconnects_total",
                "counter",
                "SSE clients disconnected for falling a full buffer behind.",
                &self.sse_slow_disconnects,
            ),
            (
                "pgbroker_http_events_published_total",
                "counter",
                "Events published through POST /topics.",
                &self.events_ingested,
            ),
            (
                "pgbroker_http_jobs_enqueued_total",
                "counter",
                "Jobs enqueued through POST /queues.",
                &self.jobs_ingested,
            ),
            (
                "pgbroker_http_webhook_deliveries_total",
                "counter",
                "Webhook requests answered 2xx.",
                &self.webhook_deliveries,
            ),
            (
                "pgbroker_http_webhook_failures_total",
                "counter",
                "Webhook requests failed (status, timeout, connection).",
                &self.webhook_failures,
            ),
            (
                "pgbroker_http_webhook_dead_total",
                "counter",
                "Webhook deliveries given up (dead) after the retry schedule.",
                &self.webhook_dead,
            ),
        ];
        for (name, kind, help, c) in rows {
            put(name, kind, help, get(c).to_string());
        }
        let done = get(&self.webhook_deliveries) + get(&self.webhook_failures);
        put(
            "pgbroker_http_webhook_request_seconds_sum",
            "counter",
            "Time spent in webhook requests.",
            format!("{}", get(&self.webhook_latency_micros) as f64 / 1e6),
        );
        put(
            "pgbroker_http_webhook_request_seconds_count",
            "counter",
            "Webhook requests made.",
            done.to_string(),
        );
        out
    }
}
