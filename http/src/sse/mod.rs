//! Server-Sent Events: `GET /events?topic=PATTERN...` streams the durable log.
//!
//! Each event is sent as `id: <position>` (the `(tx, id)` place in the log, `"<tx>-<id>"`),
//! `event: <topic>` and `data: <payload JSON on one line>`. A client resuming with
//! `Last-Event-ID` (or `?lastEventId=`) gets exactly the events after that position, none
//! skipped even when transactions committed out of order (the reader stays below the xid8
//! horizon). Replay is bounded ([`ServerBuilder::replay_limits`](crate::ServerBuilder::replay_limits)):
//! an ID that is malformed, unknown (dropped by retention) or too far back gets
//! `204 No Content`, which makes a browser's `EventSource` stop; the client then starts over
//! with a new `EventSource` (without the ID), after reloading whatever state it derives from
//! the events.
//!
//! One reader per server reads the log for every client ([`hub`]); a client that falls
//! [`client_buffer`](crate::ServerBuilder::client_buffer) events behind is disconnected and
//! resumes with its `Last-Event-ID`.

mod hub;
mod stream;

pub(crate) use hub::Hub;
pub(crate) use stream::EventStream;

use std::sync::Arc;

use pgbroker::topic::{validate_pattern, Position};

use crate::auth::Grant;
use crate::ingest::failure;
use crate::log_reader::{event_too_old, read_after};
use crate::request::Request;
use crate::response::Response;
use crate::routes::Reply;
use crate::server::Shared;

/// Checks the request and reads the replay; the stream then takes over the connection.
pub(crate) fn open(shared: &Arc<Shared>, grant: &Grant, req: &Request) -> Reply {
    match prepare(shared, grant, req) {
        Ok(stream) => Reply::Stream(stream),
        Err(resp) => Reply::Response(resp),
    }
}

fn prepare(shared: &Arc<Shared>, grant: &Grant, req: &Request) -> Result<EventStream, Response> {
    let mut patterns: Vec<String> = req.query_all("topic").map(str::to_owned).collect();
    if patterns.is_empty() {
        return Err(Response::error(
            400,
            "missing_topic",
            "name the topics to stream: /events?topic=PATTERN (repeatable; '*' one segment, \
             a final '#' any number; URL-encode '#' as %23)",
        ));
    }
    for p in &patterns {
        validate_pattern(p).map_err(|e| Response::error(400, "invalid_pattern", e.to_string()))?;
        if !grant.may_stream(p) {
            return Err(Response::error(
                403,
                "forbidden",
                format!("not allowed to stream {p:?}"),
            ));
        }
    }
    patterns.sort();
    patterns.dedup();
    let patterns: Arc<[String]> = patterns.into();
    let last_id = req
        .header("last-event-id")
        .or_else(|| req.query_first("lastEventId"))
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let Some(last_id) = last_id else {
        let at = shared.hub.start_position().map_err(failure)?;
        return Ok(EventStream::new(patterns, at, Vec::new()));
    };
    // A browser stops reconnecting on 204: the ID cannot be resumed from.
    let Ok(at) = last_id.parse::<Position>() else {
        return Err(Response::no_content());
    };
    let settings = &shared.settings;
    let mut conn = shared.broker.conn().map_err(failure)?;
    match event_too_old(&mut **conn, at, settings.replay_max_age.as_secs_f64())
        .map_err(|e| failure(e.into()))?
    {
        Some(false) => {}
        Some(true) | None => return Err(Response::no_content()),
    }
    let page = read_after(&mut **conn, at, &patterns, settings.replay_max_events + 1)
        .map_err(|e| failure(e.into()))?;
    if page.events.len() > settings.replay_max_events {
        return Err(Response::no_content());
    }
    Ok(EventStream::new(patterns, page.next, page.events))
}
