//! `pgbroker webhooks add|list|disable|enable|remove|redrive|dead`: webhook endpoints, which
//! `pgbroker serve` delivers to.

use clap::{Args, Subcommand};
use pgbroker_http::webhooks::{parse_schedule, NewEndpoint, Webhooks};
use serde_json::json;

use crate::failure::Failure;
use crate::output::Table;

#[derive(Debug, Args)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    pub command: WebhooksCommand,
    /// Machine-readable JSON output instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Add an endpoint for the events of some topics; prints its id and signing secret.
    Add(AddArgs),
    /// List the endpoints with their delivery state.
    List,
    /// Stop delivering to an endpoint (it keeps its place).
    Disable(EndpointArg),
    /// Resume delivering to an endpoint where it stopped.
    Enable(EndpointArg),
    /// Remove an endpoint and its dead deliveries.
    Remove(EndpointArg),
    /// Deliver an endpoint's dead deliveries once more (all, or --event's).
    Redrive(RedriveArgs),
    /// List an endpoint's dead deliveries.
    Dead(EndpointArg),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Where to POST the events (http:// or https://).
    #[arg(value_name = "URL")]
    pub endpoint: String,
    /// A topic pattern (repeatable): `orders.*`, `orders.#`, `#`.
    #[arg(long = "topic", value_name = "PATTERN", required = true)]
    pub topics: Vec<String>,
    /// The signing secret, `whsec_<base64>` (default: generated).
    #[arg(long, value_name = "whsec_...")]
    pub secret: Option<String>,
    /// A header sent with every request, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The waits after each failure before dead (default 1m,5m,15m,1h,6h).
    #[arg(long, value_name = "1m,5m,15m")]
    pub retries: Option<String>,
}

#[derive(Debug, Args)]
pub struct EndpointArg {
    /// The endpoint's id (as `add` printed it).
    pub id: i64,
}

#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The endpoint's id.
    pub id: i64,
    /// Only this event's dead delivery.
    #[arg(long, value_name = "EVENT_ID")]
    pub event: Option<i64>,
}

pub fn webhooks(url: &str, args: &WebhooksArgs) -> Result<(), Failure> {
    let json = args.json;
    let broker = crate::connection::broker(url)?;
    let hooks = Webhooks::new(&broker);
    let failed = |e: pgbroker_http::Error| match e.kind() {
        pgbroker_http::ErrorKind::InvalidInput | pgbroker_http::ErrorKind::NotFound => {
            Failure::usage(e)
        }
        _ => Failure::failed(e),
    };
    match &args.command {
        WebhooksCommand::Add(a) => {
            let mut e = NewEndpoint::new(&a.endpoint, a.topics.iter().cloned());
            if let Some(s) = &a.secret {
                e = e.secret(s);
            }
            for h in &a.headers {
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| Failure::usage(format!("--header {h:?}: use 'Name: value'")))?;
                e = e.header(k.trim(), v.trim());
            }
            if let Some(r) = &a.retries {
                e = e.retries(parse_schedule(r).map_err(failed)?);
            }
            let added = hooks.add(&e).map_err(failed)?;
            if json {
                out(format!(
                    "{}",
                    json!({"id": added.id, "secret": added.secret})
                ))?;
            } else {
                out(format!("{} {}", added.id, added.secret))?;
            }
        }
        WebhooksCommand::List => {
            let list = hooks.list().map_err(failed)?;
            if json {
                for e in list {
                    out(format!(
                        "{}",
                        json!({"id": e.id, "url": e.url, "patterns": e.patterns,
                               "enabled": e.enabled, "disabled_reason": e.disabled_reason,
                               "attempt": e.attempt, "last_status": e.last_status,
                               "last_error": e.last_error, "delivered": e.delivered,
                               "failed": e.failed, "dead": e.dead})
                    ))?;
                }
            } else {
                let mut t = Table::new([
                    "id",
                    "url",
                    "topics",
                    "enabled",
                    "delivered",
                    "failed",
                    "dead",
                    "last_error",
                ]);
                for e in list {
                    t.row([
                        e.id.to_string(),
                        e.url,
                        e.patterns.join(","),
                        if e.enabled {
                            "yes".into()
                        } else {
                            format!("no: {}", e.disabled_reason.unwrap_or_default())
                        },
                        e.delivered.to_string(),
                        e.failed.to_string(),
                        e.dead.to_string(),
                        e.last_error.unwrap_or_default(),
                    ]);
                }
                crate::output::print_text(&t.render())?;
            }
        }
        WebhooksCommand::Disable(a) => hooks.disable(a.id).map_err(failed)?,
        WebhooksCommand::Enable(a) => hooks.enable(a.id).map_err(failed)?,
        WebhooksCommand::Remove(a) => hooks.remove(a.id).map_err(failed)?,
        WebhooksCommand::Redrive(a) => {
            let n = hooks.redrive(a.id, a.event).map_err(failed)?;
            out(format!("{n}"))?;
        }
        WebhooksCommand::Dead(a) => {
            let mut t = Table::new(["event", "topic", "attempts", "status", "error", "redrive"]);
            for d in hooks.dead(a.id).map_err(failed)? {
                if json {
                    out(format!(
                        "{}",
                        json!({"event_id": d.event_id, "topic": d.topic, "attempts": d.attempts,
                               "last_status": d.last_status, "last_error": d.last_error,
                               "redrive": d.redrive})
                    ))?;
                } else {
                    t.row([
                        d.event_id.to_string(),
                        d.topic,
                        d.attempts.to_string(),
                        d.last_status.map(|s| s.to_string()).unwrap_or_default(),
                        d.last_error.unwrap_or_default(),
                        d.redrive.to_string(),
                    ]);
                }
            }
            if !json {
                crate::output::print_text(&t.render())?;
            }
        }
    }
    Ok(())
}

/// One line on standard output (a closed pipe ends the output quietly, as everywhere in the
/// CLI).
fn out(line: String) -> std::io::Result<()> {
    crate::output::print_text(&format!("{line}\n"))
}
