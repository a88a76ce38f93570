//! The webhooks page: every endpoint with its delivery state (in flight, retries due, last
//! answer, counts) and the dead deliveries, with enable/disable and re-drive.

use std::fmt::Write as _;

use super::data::{Data, DataResult};
use super::html::{esc, flash, page, time};
use super::pages::View;

/// The webhooks page: every endpoint with its delivery state (in flight, retries due, last
/// answer, counts) and the dead deliveries with re-drive.
pub(crate) fn render(data: &mut Data, view: &View<'_>) -> DataResult<String> {
    let endpoints = data.webhook_endpoints()?;
    let dead = data.webhook_dead()?;
    let mut body = flash(view.flash);
    body.push_str(
        "<h2>Endpoints</h2><div class=\"scroll\"><table id=\"endpoints\"><thead><tr>\
         <th class=\"num\">id</th><th>url</th><th>patterns</th><th>state</th>\
         <th class=\"num\">delivered</th><th class=\"num\">failed tries</th>\
         <th>in flight</th><th>last answer</th><th class=\"num\">dead</th><th></th></tr></thead><tbody>",
    );
    if endpoints.is_empty() {
        body.push_str(
            "<tr><td colspan=\"10\" class=\"muted\">no endpoints: pgbroker webhooks add URL \
             --topic PATTERN</td></tr>",
        );
    }
    for e in &endpoints {
        let idt = e.id.to_string();
        let state = if e.enabled {
            "<span class=\"state completed\">enabled</span>".to_owned()
        } else {
            format!(
                "<span class=\"state dead\">disabled</span> {}",
                esc(e.disabled_reason.as_deref().unwrap_or(""))
            )
        };
        let in_flight = if e.attempt > 0 {
            format!("retry {} due {}", e.attempt, time(e.next_attempt_at))
        } else {
            "<span class=\"muted\">—</span>".into()
        };
        let last = match (e.last_status, &e.last_error) {
            (Some(s), Some(err)) => format!("{s}: {}", esc(err)),
            (Some(s), None) => s.to_string(),
            (None, Some(err)) => esc(err),
            (None, None) => "—".into(),
        };
        let mut actions = if e.enabled {
            view.action(
                &format!("/ui/webhooks/{}/disable", e.id),
                &[("id", &idt)],
                "Disable",
                &format!("Disable endpoint {}?", e.id),
            )
        } else {
            view.action(
                &format!("/ui/webhooks/{}/enable", e.id),
                &[("id", &idt)],
                "Enable",
                &format!("Enable endpoint {}?", e.id),
            )
        };
        if e.dead > 0 {
            actions.push_str(&view.action(
                &format!("/ui/webhooks/{}/redrive", e.id),
                &[],
                "Re-drive all dead",
                &format!("Deliver every dead delivery of endpoint {} again?", e.id),
            ));
        }
        let _ = write!(
            body,
            "<tr data-endpoint=\"{id}\"><td class=\"num\">{id}</td><td><code>{url}</code>{headers}</td>\
             <td><code>{patterns}</code></td><td>{state}</td><td class=\"num\">{delivered}</td>\
             <td class=\"num\">{failed}</td><td>{in_flight}</td><td class=\"error\">{last}</td>\
             <td class=\"num\">{dead}</td><td>{actions}</td></tr>",
            id = e.id,
            url = esc(&e.url),
            headers = e
                .header_names
                .as_deref()
                .map(|h| format!("<br><span class=\"muted\">headers: {}</span>", esc(h)))
                .unwrap_or_default(),
            patterns = esc(&e.patterns),
            delivered = e.delivered,
            failed = e.failed,
            dead = e.dead,
        );
    }
    body.push_str(
        "</tbody></table></div><h2>Dead deliveries</h2><div class=\"scroll\"><table id=\"dead-deliveries\">\
         <thead><tr><th class=\"num\">endpoint</th><th>event</th><th>topic</th><th>payload</th>\
         <th class=\"num\">attempts</th><th>last answer</th><th>failed</th><th></th></tr></thead><tbody>",
    );
    if dead.is_empty() {
        body.push_str("<tr><td colspan=\"8\" class=\"muted\">none</td></tr>");
    }
    for d in &dead {
        let evt = d.event_id.to_string();
        let action = if d.redrive {
            "<span class=\"muted\">re-driving</span>".to_owned()
        } else {
            view.action(
                &format!("/ui/webhooks/{}/redrive", d.endpoint_id),
                &[("event", &evt)],
                "Re-drive",
                &format!(
                    "Deliver event {} to endpoint {} again?",
                    d.position, d.endpoint_id
                ),
            )
        };
        let last = match (d.last_status, &d.last_error) {
            (Some(s), Some(err)) => format!("{s}: {}", esc(err)),
            (Some(s), None) => s.to_string(),
            (None, Some(err)) => esc(err),
            (None, None) => "—".into(),
        };
        let _ = write!(
            body,
            "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td>\
             <td><code class=\"payload\">{}</code></td><td class=\"num\">{}</td>\
             <td class=\"error\">{last}</td><td>{}</td><td>{action}</td></tr>",
            d.endpoint_id,
            esc(&d.position),
            esc(&d.topic),
            esc(&d.payload),
            d.attempts,
            time(d.failed_at),
        );
    }
    body.push_str("</tbody></table></div>");
    Ok(page("Webhooks", "Webhooks", &body))
}
