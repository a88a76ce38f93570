//! The dashboard's actions (POST forms): retry, cancel, delete and run a job now, retry a
//! queue's dead jobs, re-drive dead letters, seek a subscription. Each checks the CSRF token
//! and the origin, refuses on a read-only server, and redirects back with what it did.

use super::data::{Data, DataResult};
use super::html::url_part;
use super::{html_response, pages, parse_position, parse_time, redirect};
use crate::request::Request;
use crate::response::Response;
use crate::server::Shared;

pub(crate) fn handle(shared: &Shared, req: &Request, segments: &[&str], csrf: &str) -> Response {
    if shared.settings.read_only {
        return html_response(
            403,
            pages::problem(
                "Read-only",
                "this dashboard is read-only: actions are refused",
            ),
        );
    }
    if !same_origin(req) {
        return html_response(
            403,
            pages::problem("Forbidden", "the form was not sent from this dashboard"),
        );
    }
    let form = parse_form(&req.body);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("csrf") != Some(csrf) {
        return html_response(
            403,
            pages::problem(
                "Forbidden",
                "the form's CSRF token is missing or stale: reload the page and try again",
            ),
        );
    }
    let mut data = match Data::new(&shared.broker) {
        Ok(d) => d,
        Err(e) => return html_response(503, pages::problem("Database unavailable", &e)),
    };
    let done = match segments {
        ["jobs", id, what] => match id.parse::<i64>() {
            Ok(id) => job_action(&mut data, id, what).map(|m| (format!("/ui/jobs/{id}"), m)),
            Err(_) => Err("a job id is a number".into()),
        },
        ["queues", queue, "retry-dead"] => data.retry_dead(queue).map(|n| {
            (
                format!("/ui/queues/{}?state=dead", url_part(queue)),
                format!("{n} dead jobs of {queue} will run again"),
            )
        }),
        ["subscriptions", name, "redrive"] => {
            let ids = match field("id").map(str::parse::<i64>) {
                None => None,
                Some(Ok(id)) => Some(vec![id]),
                Some(Err(_)) => return bad("an event id is a number"),
            };
            data.redrive(name, ids).map(|n| {
                (
                    format!("/ui/subscriptions/{}", url_part(name)),
                    format!("{n} dead letters re-driven"),
                )
            })
        }
        ["subscriptions", name, "seek"] => seek(&mut data, name, field("position"), {
            let offset = field("tz_offset_minutes")
                .and_then(|o| o.parse::<i64>().ok())
                .unwrap_or(0);
            field("time").map(|t| (t.to_owned(), offset))
        })
        .map(|m| (format!("/ui/subscriptions/{}", url_part(name)), m)),
        ["webhooks", endpoint, what] => webhook_action(&mut data, endpoint, what, field("event"))
            .map(|m| ("/ui/webhooks".to_owned(), m)),
        _ => {
            return html_response(
                404,
                pages::problem("Not found", &format!("no action at {}", req.path)),
            )
        }
    };
    match done {
        Ok((back, message)) => redirect(
            &format!("{back}{}done={}", sep(&back), url_part(&message)),
            None,
        ),
        Err(e) => html_response(400, pages::problem("The action failed", &e)),
    }
}

fn sep(url: &str) -> char {
    if url.contains('?') {
        '&'
    } else {
        '?'
    }
}

fn job_action(data: &mut Data, id: i64, what: &str) -> DataResult<String> {
    match what {
        "retry" => Ok(if data.retry_job(id)? {
            format!("job {id} will run again")
        } else {
            format!("job {id} was not retried (it is available, running, or gone)")
        }),
        "cancel" => Ok(if data.cancel_job(id)? {
            format!("job {id} cancelled")
        } else {
            format!("job {id} was not cancelled (it had finished or is gone)")
        }),
        "delete" => Ok(match data.delete_job(id)? {
            Some(queue) => format!("job {id} of {queue} deleted"),
            None => format!("job {id} was not deleted (it is running — cancel it first — or gone)"),
        }),
        "run-now" => Ok(if data.run_job_now(id)? {
            format!("job {id} runs now")
        } else {
            format!("job {id} is not waiting to run")
        }),
        other => Err(format!("no job action {other:?}")),
    }
}

fn seek(
    data: &mut Data,
    name: &str,
    position: Option<&str>,
    time: Option<(String, i64)>,
) -> DataResult<String> {
    let position = position.map(str::trim).filter(|p| !p.is_empty());
    let time = time.filter(|(t, _)| !t.trim().is_empty());
    let (tx, id, what) = match (position, time) {
        (Some(p), None) => {
            let (tx, id) = parse_position(p)?;
            (tx, id, format!("position {p}"))
        }
        (None, Some((t, offset))) => {
            let at = parse_time(&t, offset)?.ok_or("no time given")?;
            match data.position_at(at)? {
                Some((tx, id)) => (tx, id, format!("the first event at or after {t}")),
                None => return Err(format!("no event was written at or after {t}")),
            }
        }
        (Some(_), Some(_)) => return Err("give a position or a time, not both".into()),
        (None, None) => return Err("give a position (tx-id) or a time".into()),
    };
    let moved = data.seek(name, &tx, id)?;
    Ok(format!("{moved} partitions of {name} moved to {what}"))
}

/// `application/x-www-form-urlencoded` pairs, decoded.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// A POST from a page of this server: its `Origin` (or, failing that, `Referer`) names the
/// host the request was sent to. Browsers send `Origin` with every form POST.
fn same_origin(req: &Request) -> bool {
    let Some(host) = req.header("host") else {
        return false;
    };
    let from = req.header("origin").or_else(|| req.header("referer"));
    match from {
        None => false,
        Some(o) => {
            let rest = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .unwrap_or("");
            rest.split('/').next() == Some(host)
        }
    }
}

fn bad(message: &str) -> Response {
    html_response(400, pages::problem("Bad request", message))
}

fn webhook_action(
    data: &mut Data,
    endpoint: &str,
    what: &str,
    event: Option<&str>,
) -> DataResult<String> {
    let endpoint: i64 = endpoint
        .parse()
        .map_err(|_| "an endpoint id is a number".to_owned())?;
    match what {
        "redrive" => {
            let event = match event.map(str::parse::<i64>) {
                None => None,
                Some(Ok(e)) => Some(e),
                Some(Err(_)) => return Err("an event id is a number".into()),
            };
            let n = data.webhook_redrive(endpoint, event)?;
            Ok(format!(
                "{n} dead deliveries of endpoint {endpoint} will be sent again"
            ))
        }
        "enable" | "disable" => {
            let on = what == "enable";
            if data.webhook_set_enabled(endpoint, on)? {
                Ok(format!("endpoint {endpoint} {what}d"))
            } else {
                Err(format!("no endpoint {endpoint}"))
            }
        }
        other => Err(format!("no webhook action {other:?}")),
    }
}
