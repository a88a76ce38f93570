//! Delivery: a dispatcher thread takes each enabled endpoint's advisory lock (on a dedicated
//! session, so no two servers deliver to one endpoint) and runs one thread per endpoint it
//! holds, so a slow or dead endpoint never delays the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use pgbroker::topic::Position;
use pgbroker::Broker;
use postgres::types::Type;
use serde_json::Value;

use super::signature::sign;
use crate::log_reader::{read_after, StreamEvent};
use crate::metrics::{add, ServerMetrics};
use crate::server::Settings;
use crate::{Error, ErrorKind, Result};

/// The running delivery of one server.
pub(crate) struct Deliveries {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Deliveries {
    pub(crate) fn start(
        broker: Broker,
        settings: Settings,
        metrics: Arc<ServerMetrics>,
    ) -> Result<Deliveries> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("pgbroker-http-webhooks".into())
            .spawn(move || Dispatcher::new(broker, settings, metrics, stop_rx).run())
            .map_err(|e| Error::with_source(ErrorKind::Io, "starting webhook delivery", e))?;
        Ok(Deliveries {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops after the requests in flight and joins every delivery thread.
    pub(crate) fn stop(mut self) {
        self.stop.take(); // disconnecting the channel wakes every thread
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Dispatcher {
    broker: Broker,
    settings: Settings,
    metrics: Arc<ServerMetrics>,
    stop: Receiver<()>,
    /// The session holding the endpoints' advisory locks (reconnected when lost).
    locks: Option<postgres::Client>,
    running: HashMap<i64, JoinHandle<()>>,
}

impl Dispatcher {
    fn new(
        broker: Broker,
        settings: Settings,
        metrics: Arc<ServerMetrics>,
        stop: Receiver<()>,
    ) -> Dispatcher {
        Dispatcher {
            broker,
            settings,
            metrics,
            stop,
            locks: None,
            running: HashMap::new(),
        }
    }

    fn run(mut self) {
        loop {
            if let Err(e) = self.pass() {
                log::warn!("pgbroker-http: webhook dispatcher: {e}");
                self.locks = None;
            }
            match self
                .stop
                .recv_timeout(self.settings.webhook_poll.max(Duration::from_millis(100)))
            {
                Err(RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
        for (_, t) in self.running.drain() {
            let _ = t.join();
        }
        // Closing the session releases every lock.
    }

    /// Joins finished endpoint threads (releasing their locks) and starts threads for the
    /// enabled endpoints whose lock it gets.
    fn pass(&mut self) -> std::result::Result<(), postgres::Error> {
        if self.locks.as_ref().is_none_or(|c| c.is_closed()) {
            self.locks = Some(self.broker.pg_config().connect(postgres::NoTls)?);
            // Locks of a lost session are gone: threads still running stop on their own when
            // they see the lock is not ours (they check the endpoint each pass).
        }
        let Some(locks) = self.locks.as_mut() else {
            return Ok(());
        };
        let finished: Vec<i64> = self
            .running
            .iter()
            .filter(|(_, t)| t.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in finished {
            if let Some(t) = self.running.remove(&id) {
                let _ = t.join();
            }
            locks.execute(
                "SELECT pg_advisory_unlock(pgbroker.webhook_lock_key($1))",
                &[&id],
            )?;
        }
        let ids: Vec<i64> = locks
            .query(
                "SELECT id FROM pgbroker.webhook_endpoints WHERE enabled ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for id in ids {
            if self.running.contains_key(&id) {
                continue;
            }
            let got: bool = locks
                .query_one(
                    "SELECT pg_try_advisory_lock(pgbroker.webhook_lock_key($1))",
                    &[&id],
                )?
                .get(0);
            if !got {
                continue;
            }
            let worker = EndpointWorker {
                id,
                broker: self.broker.clone(),
                settings: self.settings.clone(),
                metrics: self.metrics.clone(),
                stop: self.stop.clone(),
                agent: agent(self.settings.webhook_timeout),
            };
            match std::thread::Builder::new()
                .name(format!("pgbroker-webhook-{id}"))
                .spawn(move || worker.run())
            {
                Ok(t) => {
                    self.running.insert(id, t);
                }
                Err(e) => {
                    log::warn!("pgbroker-http: cannot start webhook thread: {e}");
                    locks.execute(
                        "SELECT pg_advisory_unlock(pgbroker.webhook_lock_key($1))",
                        &[&id],
                    )?;
                }
            }
        }
        Ok(())
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// An endpoint's settings and place, read fresh before each delivery.
struct EndpointState {
    url: String,
    patterns: Vec<String>,
    secret: String,
    headers: Vec<(String, String)>,
    cursor: Position,
    /// How long until the next attempt may be made (zero: now).
    wait: Duration,
}

const ENDPOINT_SQL: &str = "\
SELECT url, patterns, secret, headers, cursor_tx::text, cursor_id,
       greatest(0, extract(epoch FROM next_attempt_at - now()))::float8
  FROM pgbroker.webhook_endpoints WHERE id = $1 AND enabled";

const REDRIVE_SQL: &str = "\
SELECT event_id, tx::text, topic, payload::text, headers::text, key, created_at
  FROM pgbroker.webhook_dead_deliveries WHERE endpoint_id = $1 AND redrive
 ORDER BY tx, event_id LIMIT 1";

/// What came of one request.
enum Outcome {
    Delivered(u16),
    Gone,
    Failed(Option<u16>, String),
}

struct EndpointWorker {
    id: i64,
    broker: Broker,
    settings: Settings,
    metrics: Arc<ServerMetrics>,
    stop: Receiver<()>,
    agent: ureq::Agent,
}

impl EndpointWorker {
    fn run(self) {
        loop {
            let wait = match self.step() {
                Ok(Some(wait)) => wait,
                Ok(None) => return, // disabled or removed
                Err(e) => {
                    log::warn!("pgbroker-http: webhook endpoint {}: {e}", self.id);
                    Duration::from_secs(1)
                }
            };
            if !wait.is_zero() {
                match self.stop.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            } else if !self.stop.is_empty() || self.stopped() {
                return;
            }
        }
    }

    fn stopped(&self) -> bool {
        matches!(
            self.stop.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        )
    }

    /// One delivery (or none due): how long to wait before the next, `None` to stop.
    fn step(&self) -> std::result::Result<Option<Duration>, pgbroker::Error> {
        let Some(state) = self.load()? else {
            return Ok(None);
        };
        if let Some((event, tx)) = self.redrive_due()? {
            let outcome = self.send(&state, &event, tx);
            let (ok, status, error) = match &outcome {
                Outcome::Delivered(s) => (true, Some(*s as i32), None),
                Outcome::Gone => (false, Some(410), Some("410 Gone".to_owned())),
                Outcome::Failed(s, e) => (false, s.map(i32::from), Some(e.clone())),
            };
            let mut conn = self.broker.conn()?;
            conn.execute(
                "SELECT pgbroker.webhook_redriven($1, $2, $3, $4, $5)",
                &[&self.id, &event.position.id(), &ok, &status, &error],
            )?;
            if matches!(outcome, Outcome::Gone) {
                self.disable_gone(&state)?;
                return Ok(None);
            }
            return Ok(Some(Duration::ZERO));
        }
        if !state.wait.is_zero() {
            return Ok(Some(state.wait.min(
                self.settings.webhook_poll.max(Duration::from_millis(50)) * 4,
            )));
        }
        let page = {
            let mut conn = self.broker.conn()?;
            read_after(&mut **conn, state.cursor, &state.patterns, 1)?
        };
        let Some(event) = page.events.first() else {
            if page.next > state.cursor {
                // Skip the other topics' events up to the horizon.
                let mut conn = self.broker.conn()?;
                conn.execute(
                    "UPDATE pgbroker.webhook_endpoints SET cursor_tx = $4::text::xid8, cursor_id = $5
                      WHERE id = $1 AND cursor_tx = $2::text::xid8 AND cursor_id = $3 AND attempt = 0",
                    &[
                        &self.id,
                        &state.cursor.tx().to_string(),
                        &state.cursor.id(),
                        &page.next.tx().to_string(),
                        &page.next.id(),
                    ],
                )?;
            }
            return Ok(Some(self.settings.webhook_poll));
        };
        let outcome = self.send(&state, event, event.position.tx());
        let mut conn = self.broker.conn()?;
        let from = (state.cursor.tx().to_string(), state.cursor.id());
        let at = (event.position.tx().to_string(), event.position.id());
        match outcome {
            Outcome::Delivered(status) => {
                conn.query_typed(
                    "SELECT pgbroker.webhook_delivered($1, $2::text::xid8, $3, $4::text::xid8, $5, $6)",
                    &[
                        (&self.id, Type::INT8),
                        (&from.0, Type::TEXT),
                        (&from.1, Type::INT8),
                        (&at.0, Type::TEXT),
                        (&at.1, Type::INT8),
                        (&(status as i32), Type::INT4),
                    ],
                )?;
                Ok(Some(Duration::ZERO))
            }
            Outcome::Gone => {
                drop(conn);
                self.disable_gone(&state)?;
                Ok(None)
            }
            Outcome::Failed(status, error) => {
                let status = status.map(i32::from);
                let row = conn.query_typed(
                    "SELECT pgbroker.webhook_failed($1, $2::text::xid8, $3, $4::text::xid8, $5, $6, $7)",
                    &[
                        (&self.id, Type::INT8),
                        (&from.0, Type::TEXT),
                        (&from.1, Type::INT8),
                        (&at.0, Type::TEXT),
                        (&at.1, Type::INT8),
                        (&status, Type::INT4),
                        (&error, Type::TEXT),
                    ],
                )?;
                if row
                    .first()
                    .and_then(|r| r.get::<_, Option<String>>(0))
                    .as_deref()
                    == Some("dead")
                {
                    add(&self.metrics.webhook_dead, 1);
                }
                Ok(Some(Duration::ZERO))
            }
        }
    }

    fn load(&self) -> std::result::Result<Option<EndpointState>, pgbroker::Error> {
        let mut conn = self.broker.conn()?;
        let Some(row) = conn.query_opt(ENDPOINT_SQL, &[&self.id])? else {
            return Ok(None);
        };
        let headers: Value = row.get(3);
        let headers = headers
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let tx: String = row.get(4);
        Ok(Some(EndpointState {
            url: row.get(0),
            patterns: row.get(1),
            secret: row.get(2),
            headers,
            cursor: Position::new(tx.parse().unwrap_or(0), row.get(5)),
            wait: Duration::from_secs_f64(row.get::<_, f64>(6).max(0.0)),
        }))
    }

    fn redrive_due(&self) -> std::result::Result<Option<(StreamEvent, u64)>, pgbroker::Error> {
        let mut conn = self.broker.conn()?;
        let Some(r) = conn.query_opt(REDRIVE_SQL, &[&self.id])? else {
            return Ok(None);
        };
        let tx: String = r.get(1);
        let tx: u64 = tx.parse().unwrap_or(0);
        Ok(Some((
            StreamEvent {
                position: Position::new(tx, r.get(0)),
                topic: r.get(2),
                payload: r.get(3),
                headers: r.get(4),
                key: r.get(5),
                created_at: r.get(6),
            },
            tx,
        )))
    }

    fn disable_gone(&self, state: &EndpointState) -> std::result::Result<(), pgbroker::Error> {
        let mut conn = self.broker.conn()?;
        let reason = format!("410 Gone from {}", state.url);
        conn.execute(
            "SELECT pgbroker.webhook_set_enabled($1, false, $2)",
            &[&self.id, &reason],
        )?;
        Ok(())
    }

    fn send(&self, state: &EndpointState, event: &StreamEvent, _tx: u64) -> Outcome {
        let msg_id = format!("msg_{}_{}", self.id, event.position.id());
        let body = body(event);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let signature = match sign(&state.secret, &msg_id, now, body.as_bytes()) {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(None, format!("cannot sign: {e}")),
        };
        let mut req = self.agent.post(&state.url);
        for (k, v) in &state.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .header("content-type", "application/json")
            .header("user-agent", "pgbroker-webhooks")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", &signature)
            .header("idempotency-key", &msg_id);
        let started = Instant::now();
        let result = req.send(body.as_bytes());
        add(
            &self.metrics.webhook_latency_micros,
            started.elapsed().as_micros() as u64,
        );
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if (200..300).contains(&status) {
                    add(&self.metrics.webhook_deliveries, 1);
                    Outcome::Delivered(status)
                } else {
                    add(&self.metrics.webhook_failures, 1);
                    if status == 410 {
                        Outcome::Gone
                    } else {
                        Outcome::Failed(Some(status), format!("HTTP {status}"))
                    }
                }
            }
            Err(e) => {
                add(&self.metrics.webhook_failures, 1);
                Outcome::Failed(None, e.to_string())
            }
        }
    }
}

/// `{"type", "timestamp", "id", "event_id", "key", "headers", "data"}`; the payload and
/// headers go in as PostgreSQL printed them.
fn body(e: &StreamEvent) -> String {
    let s = |v: &str| Value::String(v.to_owned()).to_string();
    format!(
        "{{\"type\":{},\"timestamp\":{},\"id\":{},\"event_id\":{},\"key\":{},\"headers\":{},\"data\":{}}}",
        s(&e.topic),
        s(&rfc3339(e.created_at)),
        s(&e.position.to_string()),
        e.position.id(),
        e.key.as_deref().map_or("null".to_owned(), s),
        e.headers.as_deref().unwrap_or("null"),
        e.payload,
    )
}

/// UTC, with microseconds: `2026-12-06T01:02:03.456789Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod test {
    use super::rfc3339;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_709_251_199_123_456); // leap year
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.123456Z");
    }
}
