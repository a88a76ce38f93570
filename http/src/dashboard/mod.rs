//! The dashboard (issue #16, a first page): `GET /` shows every queue with its jobs per
//! state, every subscription with its lag, and the webhook endpoints with their deliveries,
//! updated every two seconds from `GET /api/overview` without reloading. Plain HTML, CSS and
//! a little JS served from the binary; every value is inserted as text, never as HTML.
//! Enabled with [`ServerBuilder::dashboard`](crate::ServerBuilder::dashboard).

use serde_json::{json, Value};

use crate::response::Response;
use crate::server::Shared;
use crate::webhooks::Webhooks;

/// The overview page.
pub(crate) const OVERVIEW_HTML: &str = include_str!("overview.html");

/// `GET /api/overview`: the broker's statistics (as `pgbroker stats --json`) and the webhook
/// endpoints.
pub(crate) fn overview(shared: &Shared) -> Response {
    let stats = shared
        .broker
        .conn()
        .map_err(|e| e.to_string())
        .and_then(|mut c| crate::stats::collect(&mut c).map_err(|e| e.to_string()));
    let stats = match stats {
        Ok(m) => crate::stats::to_json(&m),
        Err(e) => return Response::error(503, "database_unavailable", e),
    };
    let webhooks: Vec<Value> = Webhooks::new(&shared.broker)
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            json!({"id": e.id, "url": e.url, "patterns": e.patterns, "enabled": e.enabled,
                   "disabled_reason": e.disabled_reason, "delivered": e.delivered,
                   "failed": e.failed, "dead": e.dead, "last_error": e.last_error})
        })
        .collect();
    Response::json(200, &json!({"stats": stats, "webhooks": webhooks}))
        .header("Cache-Control", "no-store")
}
