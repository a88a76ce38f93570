//! The dashboard: HTML pages under `/ui/` for operators — queues and their jobs (retry,
//! cancel, delete, run now), subscriptions (partitions, members, lag, dead letters, re-drive,
//! seek), the event log (browse, live tail) and webhooks — served by the same server, behind
//! the same auth.
//!
//! | path | page |
//! |---|---|
//! | `/` | redirects to `/ui/` |
//! | `/ui/` | overview: queues by state, subscriptions with lag, live (polls `/ui/api/overview`) |
//! | `/ui/queues/{queue}` | jobs filtered by state, found by id, unique key or payload text |
//! | `/ui/jobs/{id}` | one job: payload, attempts, error history, lease holder; actions |
//! | `/ui/subscriptions/{name}` | partitions, members, cursors, lag, dead letters; seek |
//! | `/ui/events` | the log by topic pattern and time, an event's payload, live tail (SSE) |
//! | `/ui/webhooks` | webhook endpoints and their deliveries |
//!
//! Safety: every value shown is HTML-escaped and the pages carry a Content-Security-Policy
//! that allows no inline script; actions are POSTs carrying a CSRF token (an HMAC of the
//! caller's token under a per-process secret) and must come from the same origin; a
//! read-only server ([`ServerBuilder::read_only`](crate::ServerBuilder::read_only)) shows
//! no actions and refuses them. A browser signs in once with `?access_token=`; the token is
//! then kept in an `HttpOnly`, `SameSite=Strict` cookie. The dashboard needs a grant of every
//! topic (`#`) and every queue (`*`).

mod actions;
mod data;
mod html;
mod pages;
mod webhooks_page;

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::Grant;
use crate::request::Request;
use crate::response::Response;
use crate::routes::Reply;
use crate::server::Shared;

use data::{Data, EventFilter, JobFilter};
use pages::{View, PAGE_ROWS};

const COOKIE: &str = "pgbroker_token";
const CSS: &str = include_str!("../../assets/dashboard.css");
const JS: &str = include_str!("../../assets/dashboard.js");
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'";

/// Answers `/` and `/ui/...`; `None` for every other path (the API's).
pub(crate) fn route(shared: &Arc<Shared>, req: &Request) -> Option<Reply> {
    if !shared.settings.dashboard {
        return None;
    }
    if req.path == "/" {
        return Some(redirect("/ui/", None).into());
    }
    let rest = req.path.strip_prefix("/ui")?;
    let segments: Vec<&str> = rest.split('/').skip(1).filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["assets", "dashboard.css"] => return Some(asset("text/css; charset=utf-8", CSS).into()),
        ["assets", "dashboard.js"] => {
            return Some(asset("text/javascript; charset=utf-8", JS).into())
        }
        _ => {}
    }
    // Signing in: the token moves from the query into a cookie, and out of the address bar.
    if req.method == "GET" {
        if let Some(token) = req.query_first("access_token") {
            let cookie = format!(
                "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict",
                html::url_part(token)
            );
            return Some(redirect(&req.path, Some(cookie)).into());
        }
    }
    let (req, token) = with_cookie_token(req);
    let grant = match shared.authorize(&req) {
        Ok(g) => g,
        Err(resp) if resp.status == 401 => {
            return Some(
                html_response(
                    401,
                    pages::sign_in("Sign in with a token of this server.", &req.path),
                )
                .into(),
            )
        }
        Err(resp) => return Some(resp.into()),
    };
    if !is_operator(&grant) {
        return Some(
            html_response(
                403,
                pages::problem(
                    "Not allowed",
                    "The dashboard needs a token granted every topic (#) and every queue (*).",
                ),
            )
            .into(),
        );
    }
    let csrf = csrf_token(token.as_deref().unwrap_or(""));
    if req.method == "POST" {
        return Some(actions::handle(shared, &req, &segments, &csrf).into());
    }
    if req.method != "GET" {
        return Some(Response::error(405, "method_not_allowed", "use GET or POST").into());
    }
    if segments.as_slice() == ["tail"] {
        return Some(crate::sse::open(shared, &grant, &req));
    }
    let view = View {
        csrf: &csrf,
        read_only: shared.settings.read_only,
        flash: req.query_first("done"),
    };
    Some(get(shared, &req, &segments, &view).into())
}

fn get(shared: &Shared, req: &Request, segments: &[&str], view: &View<'_>) -> Response {
    let mut data = match Data::new(&shared.broker) {
        Ok(d) => d,
        Err(e) => return html_response(503, pages::problem("Database unavailable", &e)),
    };
    let page = match segments {
        [] => pages::overview(&mut data, view).map(Some),
        ["api", "overview"] => {
            return match data.overview_json() {
                Ok(v) => Response::json(200, &v),
                Err(e) => Response::error(503, "database_unavailable", e),
            }
        }
        ["queues", queue] => {
            let before_id = match req.query_first("before").map(str::parse::<i64>) {
                None => None,
                Some(Ok(id)) => Some(id),
                Some(Err(_)) => return bad_request("before must be a job id (a number)"),
            };
            let filter = JobFilter {
                state: req.query_first("state").filter(|s| !s.is_empty()),
                before_id,
                search: req.query_first("q").filter(|s| !s.is_empty()),
                limit: PAGE_ROWS,
            };
            pages::queue(&mut data, view, queue, &filter).map(Some)
        }
        ["jobs", id] => match id.parse::<i64>() {
            Ok(id) => pages::job(&mut data, view, id),
            Err(_) => return bad_request("a job id is a number"),
        },
        ["subscriptions", name] => pages::subscription(&mut data, view, name),
        ["events"] => {
            let pattern = req.query_first("topic").filter(|s| !s.is_empty());
            if let Some(p) = pattern {
                if let Err(e) = pgbroker::topic::validate_pattern(p) {
                    return bad_request(&e.to_string());
                }
            }
            let raw_time = req.query_first("before_time").unwrap_or("");
            let before_time = match parse_time(raw_time, 0) {
                Ok(t) => t,
                Err(e) => return bad_request(&e),
            };
            let before = match req.query_first("before").map(parse_position) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => return bad_request(&e),
            };
            let filter = EventFilter {
                pattern,
                before_time,
                before,
                limit: PAGE_ROWS,
            };
            pages::events(&mut data, view, &filter, raw_time).map(Some)
        }
        ["events", position] => match parse_position(position) {
            Ok((tx, id)) => pages::event(&mut data, &tx, id),
            Err(e) => return bad_request(&e),
        },
        ["webhooks"] => webhooks_page::render(&mut data, view).map(Some),
        _ => Ok(None),
    };
    match page {
        Ok(Some(html)) => html_response(200, html),
        Ok(None) => html_response(
            404,
            pages::problem("Not found", &format!("nothing at {}", req.path)),
        ),
        Err(e) => html_response(500, pages::problem("The database refused", &e)),
    }
}

/// Every topic and every queue: what an operator's token must grant.
fn is_operator(grant: &Grant) -> bool {
    grant.may_stream("#") && grant.may_enqueue("*")
}

/// The request with `Authorization: Bearer <cookie token>` when it came with the cookie only,
/// and the token the caller used (for the CSRF token).
fn with_cookie_token(req: &Request) -> (Request, Option<String>) {
    let bearer = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer ").map(str::to_owned));
    if bearer.is_some() {
        return (req.clone(), bearer);
    }
    let cookie = req.header("cookie").and_then(|c| {
        c.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE).then(|| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    });
    match cookie {
        Some(token) => {
            let mut with = req.clone();
            with.headers
                .push(("Authorization".into(), format!("Bearer {token}")));
            (with, Some(token))
        }
        None => (req.clone(), None),
    }
}

/// The per-process secret the CSRF tokens are made with.
fn secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut key = [0u8; 32];
        let read = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key));
        if read.is_err() {
            // No /dev/urandom: a key from the clock and the process id, still unknown to a
            // page on another origin (which cannot read ours).
            let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
            let mut mac = Hmac::<Sha256>::new_from_slice(seed.as_bytes()).expect("any key");
            mac.update(b"pgbroker dashboard");
            key.copy_from_slice(&mac.finalize().into_bytes());
        }
        key
    })
}

/// The CSRF token of a caller: an HMAC of its token (empty without auth).
fn csrf_token(caller_token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret()).expect("HMAC takes any key length");
    mac.update(b"csrf:");
    mac.update(caller_token.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `"<tx>-<id>"` (an event's position, as SSE ids and the pages show it).
fn parse_position(s: &str) -> Result<(String, i64), String> {
    let p: pgbroker::topic::Position = s
        .parse()
        .map_err(|_| format!("{s:?} is not a position (<tx>-<id>, e.g. 7467-1042)"))?;
    Ok((p.tx().to_string(), p.id()))
}

/// An RFC 3339 time (`2026-12-06T10:00:00Z`, `2026-12-06T10:00:00+01:00`), or a
/// `datetime-local` value (`2026-12-06T10:00[:00]`) at `offset_minutes` east of UTC; empty is
/// none.
fn parse_time(s: &str, offset_minutes: i64) -> Result<Option<SystemTime>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || format!("{s:?} is not a time like 2026-12-06T10:00:00Z");
    let (date, rest) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, mo, da) = match (d.next(), d.next(), d.next()) {
        (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) => (y, m, d),
        _ => return Err(bad()),
    };
    let (clock, offset) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, o) = rest.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':').ok_or_else(bad)?;
        let oh: i64 = oh.parse().map_err(|_| bad())?;
        let om: i64 = om.parse().map_err(|_| bad())?;
        (c, sign * (oh * 60 + om))
    } else {
        (rest, offset_minutes)
    };
    let mut c = clock.splitn(3, ':');
    let h: i64 = c.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let mi: i64 = c.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let sec: f64 = c.next().unwrap_or("0").parse().map_err(|_| bad())?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || sec >= 61.0 {
        return Err(bad());
    }
    let days = days_from_civil(y, mo, da);
    let total = days * 86_400 + h * 3600 + mi * 60 - offset * 60;
    let t = if total >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(total as u64)
    } else {
        SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(total.unsigned_abs())
    };
    Ok(Some(t + std::time::Duration::from_secs_f64(sec)))
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn asset(content_type: &str, body: &'static str) -> Response {
    Response::new(200, content_type, body).header("Cache-Control", "max-age=300")
}

pub(crate) fn html_response(status: u16, html: String) -> Response {
    Response::new(status, "text/html; charset=utf-8", html)
        .header("Content-Security-Policy", CSP)
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "same-origin")
        .header("Cache-Control", "no-store")
}

fn bad_request(message: &str) -> Response {
    html_response(400, pages::problem("Bad request", message))
}

/// A 303 to `location` (after a form, or the sign-in), optionally setting a cookie.
pub(crate) fn redirect(location: &str, cookie: Option<String>) -> Response {
    let mut r =
        Response::new(303, "text/plain; charset=utf-8", "").header("Location", location.to_owned());
    if let Some(c) = cookie {
        r = r.header("Set-Cookie", c);
    }
    r
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parses_times() {
        let t = |s: &str| {
            parse_time(s, 60)
                .unwrap()
                .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
        };
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("1970-01-02T00:00:00+01:00"), Some(86_400 - 3600));
        assert_eq!(t("1970-01-02T01:00"), Some(86_400), "local, 60 min east");
        assert_eq!(t("2026-12-06T00:00:00Z"), Some(1_796_515_200));
        assert_eq!(t(""), None);
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("2026-13-01T00:00Z", 0).is_err());
    }

    #[test]
    fn csrf_tokens_differ_per_caller() {
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_eq!(csrf_token("a").len(), 32);
    }
}
