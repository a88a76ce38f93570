//! Which handler answers a request.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | pages given to `ServerBuilder::page` | fixed HTML (no auth) |
//! | GET | `/healthz` | `{"status":"ok"}` when the database answers (no auth) |
//! | GET | `/metrics` | Prometheus text: the broker's statistics and the server's counters |
//! | POST | `/topics/{topic}` | publish one event (an object) or a batch (an array) |
//! | POST | `/queues/{queue}/jobs` | enqueue one job (an object) or a batch (an array) |
//! | GET | `/events?topic=PATTERN...` | Server-Sent Events from the log |
//! | GET, POST | `/`, `/ui/...` | the dashboard (see `dashboard`) |

use std::sync::Arc;

use serde_json::json;

use crate::ingest;
use crate::request::Request;
use crate::response::Response;
use crate::server::Shared;
use crate::sse::{self, EventStream};

/// A complete response, or an event stream that takes over the connection.
pub(crate) enum Reply {
    Response(Response),
    Stream(EventStream),
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Response(r)
    }
}

pub(crate) fn route(shared: &Arc<Shared>, req: &Request) -> Reply {
    let segments: Vec<&str> = req.path.split('/').skip(1).collect();
    let method = req.method.as_str();
    if let Some((_, html)) = shared.settings.pages.iter().find(|(p, _)| *p == req.path) {
        let html = html.clone();
        return only(method, "GET", || {
            Response::new(200, "text/html; charset=utf-8", html.as_bytes())
        })
        .into();
    }
    if let Some(reply) = crate::dashboard::route(shared, req) {
        return reply;
    }
    if segments == ["healthz"] {
        return only(method, "GET", || health(shared)).into();
    }
    let known = matches!(
        segments.as_slice(),
        ["metrics"] | ["topics", _] | ["queues", _, "jobs"] | ["events"]
    );
    if !known {
        return Response::error(404, "not_found", format!("no such path {:?}", req.path)).into();
    }
    let grant = match shared.authorize(req) {
        Ok(g) => g,
        Err(resp) => return resp.into(),
    };
    match segments.as_slice() {
        ["metrics"] => only(method, "GET", || metrics(shared)).into(),
        ["topics", topic] => only(method, "POST", || {
            ingest::publish(shared, &grant, topic, req)
        })
        .into(),
        ["queues", queue, "jobs"] => only(method, "POST", || {
            ingest::enqueue(shared, &grant, queue, req)
        })
        .into(),
        ["events"] if method == "GET" => sse::open(shared, &grant, req),
        _ => method_not_allowed("GET").into(),
    }
}

fn only(method: &str, allowed: &'static str, f: impl FnOnce() -> Response) -> Response {
    if method == allowed {
        f()
    } else {
        method_not_allowed(allowed)
    }
}

fn method_not_allowed(allowed: &'static str) -> Response {
    Response::error(405, "method_not_allowed", format!("use {allowed}")).header("Allow", allowed)
}

fn health(shared: &Shared) -> Response {
    let ok = shared
        .broker
        .conn()
        .and_then(|mut c| Ok(c.simple_query("SELECT 1")?))
        .is_ok();
    if ok {
        Response::json(200, &json!({"status": "ok"}))
    } else {
        Response::json(503, &json!({"status": "database unavailable"}))
    }
}

fn metrics(shared: &Shared) -> Response {
    let broker = shared
        .broker
        .conn()
        .map_err(|e| e.to_string())
        .and_then(|mut c| crate::stats::collect(&mut c).map_err(|e| e.to_string()));
    match broker {
        Ok(m) => {
            let mut text = crate::stats::prometheus(&m);
            text.push_str(&shared.metrics.prometheus());
            Response::new(200, "text/plain; version=0.0.4; charset=utf-8", text)
        }
        Err(e) => Response::error(503, "database_unavailable", e),
    }
}
