//! `POST /topics/{topic}` and `POST /queues/{queue}/jobs`: JSON in, ids out. Everything is
//! checked before anything is written, and a batch is written atomically.

use std::time::Duration;

use pgbroker::queue::Job;
use pgbroker::topic::NewEvent;
use serde_json::{json, Map, Value};

use crate::auth::Grant;
use crate::metrics::add;
use crate::request::Request;
use crate::response::Response;
use crate::server::Shared;

/// The most items in one batch request.
const MAX_BATCH: usize = 1000;

/// A 4xx answer while checking the input.
type Checked<T> = Result<T, Response>;

pub(crate) fn publish(shared: &Shared, grant: &Grant, topic: &str, req: &Request) -> Response {
    respond(publish_checked(shared, grant, topic, req))
}

pub(crate) fn enqueue(shared: &Shared, grant: &Grant, queue: &str, req: &Request) -> Response {
    respond(enqueue_checked(shared, grant, queue, req))
}

fn respond(r: Checked<Response>) -> Response {
    r.unwrap_or_else(|e| e)
}

fn publish_checked(
    shared: &Shared,
    grant: &Grant,
    topic: &str,
    req: &Request,
) -> Checked<Response> {
    pgbroker::topic::validate_topic(topic).map_err(|e| bad("invalid_name", e.to_string()))?;
    if !grant.may_publish(topic) {
        return Err(Response::error(
            403,
            "forbidden",
            format!("not allowed to publish on {topic:?}"),
        ));
    }
    let (items, batch) = items(req)?;
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let event = new_event(topic, item).map_err(|m| bad("invalid_event", at(batch, i, m)))?;
        event
            .validate()
            .map_err(|e| bad("invalid_event", at(batch, i, e.to_string())))?;
        events.push(event);
    }
    let ids: Vec<i64> = if batch {
        shared
            .broker
            .publish_batch(events)
            .map_err(failure)?
            .into_iter()
            .map(|id| id.get())
            .collect()
    } else {
        vec![shared
            .broker
            .publish_event(&events[0])
            .map_err(failure)?
            .get()]
    };
    add(&shared.metrics.events_ingested, ids.len() as u64);
    Ok(Response::json(201, &json!({ "ids": ids })))
}

fn enqueue_checked(
    shared: &Shared,
    grant: &Grant,
    queue: &str,
    req: &Request,
) -> Checked<Response> {
    pgbroker::queue::validate_queue(queue).map_err(|e| bad("invalid_name", e.to_string()))?;
    if !grant.may_enqueue(queue) {
        return Err(Response::error(
            403,
            "forbidden",
            format!("not allowed to enqueue on {queue:?}"),
        ));
    }
    let (items, batch) = items(req)?;
    let mut jobs = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        jobs.push(new_job(queue, item).map_err(|m| bad("invalid_job", at(batch, i, m)))?);
    }
    let ids = if batch {
        let mut conn = shared.broker.conn().map_err(failure)?;
        let mut tx = conn.transaction().map_err(|e| failure(e.into()))?;
        let mut ids = Vec::with_capacity(jobs.len());
        for job in &jobs {
            ids.push(shared.broker.enqueue_in(&mut tx, job).map_err(failure)?);
        }
        tx.commit().map_err(|e| failure(e.into()))?;
        ids
    } else {
        vec![shared.broker.enqueue_job(&jobs[0]).map_err(failure)?]
    };
    add(&shared.metrics.jobs_ingested, ids.len() as u64);
    Ok(Response::json(201, &json!({ "ids": ids })))
}

/// The body as a list of objects, and whether it was an array (a batch).
fn items(req: &Request) -> Checked<(Vec<Map<String, Value>>, bool)> {
    if let Some(ct) = req.header("content-type") {
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(bad(
                "unsupported_content_type",
                format!("send application/json, not {mime:?}"),
            ));
        }
    }
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| bad("invalid_json", format!("the body is not JSON: {e}")))?;
    let (values, batch) = match body {
        Value::Array(a) => (a, true),
        v @ Value::Object(_) => (vec![v], false),
        other => {
            return Err(bad(
                "invalid_body",
                format!(
                    "send a JSON object (one) or an array of objects (a batch), not {}",
                    kind(&other)
                ),
            ))
        }
    };
    if values.is_empty() {
        return Err(bad("invalid_body", "an empty batch"));
    }
    if values.len() > MAX_BATCH {
        return Err(Response::error(
            413,
            "batch_too_large",
            format!(
                "a batch holds at most {MAX_BATCH} items, got {}",
                values.len()
            ),
        ));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(m) => Ok(m),
            other => Err(bad(
                "invalid_body",
                at(
                    batch,
                    i,
                    format!("expected an object, got {}", kind(&other)),
                ),
            )),
        })
        .collect::<Checked<Vec<_>>>()
        .map(|v| (v, batch))
}

fn new_event(topic: &str, mut m: Map<String, Value>) -> Result<NewEvent, String> {
    let payload = m
        .remove("payload")
        .ok_or("missing \"payload\" (the event's JSON)")?;
    let mut event = NewEvent::new(topic, payload);
    if let Some(k) = m.remove("key") {
        event = event.key(k.as_str().ok_or("\"key\" must be a string")?);
    }
    if let Some(h) = m.remove("headers") {
        if !h.is_object() {
            return Err("\"headers\" must be an object".into());
        }
        event = event.headers(h);
    }
    unknown(m, "payload, key, headers")?;
    Ok(event)
}

fn new_job(queue: &str, mut m: Map<String, Value>) -> Result<Job, String> {
    let payload = m
        .remove("payload")
        .ok_or("missing \"payload\" (the job's JSON)")?;
    let mut job = Job::new(queue, &payload);
    if let Some(p) = m.remove("priority") {
        let p = p
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or("\"priority\" must be a 32-bit integer")?;
        job = job.priority(p);
    }
    if let Some(d) = m.remove("delay") {
        let secs = d
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e10)
            .ok_or("\"delay\" must be a number of seconds, 0 or more")?;
        job = job.delay(Duration::from_secs_f64(secs));
    }
    if let Some(n) = m.remove("max_attempts") {
        let n = n
            .as_u64()
            .filter(|n| (1..=i32::MAX as u64).contains(n))
            .ok_or("\"max_attempts\" must be a positive integer")?;
        job = job.max_attempts(n as u32);
    }
    if let Some(k) = m.remove("unique_key") {
        job = job.unique_key(k.as_str().ok_or("\"unique_key\" must be a string")?);
    }
    unknown(m, "payload, priority, delay, max_attempts, unique_key")?;
    Ok(job)
}

fn unknown(m: Map<String, Value>, known: &str) -> Result<(), String> {
    match m.keys().next() {
        Some(k) => Err(format!("unknown option {k:?} (known: {known})")),
        None => Ok(()),
    }
}

fn at(batch: bool, i: usize, message: String) -> String {
    if batch {
        format!("item {i}: {message}")
    } else {
        message
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn bad(code: &str, message: impl Into<String>) -> Response {
    Response::error(400, code, message)
}

/// A broker error as a response: the caller's fault → 4xx, the database's → 5xx.
pub(crate) fn failure(e: pgbroker::Error) -> Response {
    use pgbroker::ErrorKind as K;
    match e.kind() {
        K::InvalidName => bad("invalid_name", e.to_string()),
        K::InvalidInput | K::Serialize => bad("invalid_input", e.to_string()),
        K::PayloadTooLarge => Response::error(413, "payload_too_large", e.to_string()),
        K::Pool | K::Connect | K::Closed | K::Timeout => {
            Response::error(503, "database_unavailable", e.to_string())
        }
        _ => {
            log::warn!("pgbroker-http: {e}");
            Response::error(500, "database_error", e.to_string())
        }
    }
}
