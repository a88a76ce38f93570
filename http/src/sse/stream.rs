//! One client's stream: the head, the replay, catching up to the shared reader, then the
//! events it fans out, with heartbeats.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;

use crossbeam_channel::RecvTimeoutError;
use pgbroker::topic::Position;

use super::hub::{Frame, Joined};
use crate::log_reader::{read_after, StreamEvent};
use crate::metrics::{add, sub};
use crate::server::Shared;

/// How many events one catch-up read takes.
const CATCH_UP_PAGE: usize = 1000;

/// A checked SSE request: its patterns, where it starts, and the replay already read.
pub(crate) struct EventStream {
    patterns: Arc<[String]>,
    after: Position,
    replay: Vec<StreamEvent>,
}

impl EventStream {
    pub(crate) fn new(
        patterns: Arc<[String]>,
        after: Position,
        replay: Vec<StreamEvent>,
    ) -> EventStream {
        EventStream {
            patterns,
            after,
            replay,
        }
    }

    /// Streams until the client goes, falls behind, or the server stops.
    pub(crate) fn run(self, shared: &Arc<Shared>, mut out: TcpStream) {
        add(&shared.metrics.sse_clients, 1);
        let _ = self.stream(shared, &mut out);
        sub(&shared.metrics.sse_clients, 1);
        let _ = out.shutdown(std::net::Shutdown::Both);
    }

    fn stream(self, shared: &Arc<Shared>, out: &mut TcpStream) -> std::io::Result<()> {
        let mut text = String::from(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
             X-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n",
        );
        text.push_str(&format!("retry: {}\n\n", shared.settings.retry.as_millis()));
        for e in &self.replay {
            text.push_str(&Frame::of(e).text);
        }
        out.write_all(text.as_bytes())?;
        add(&shared.metrics.sse_events_sent, self.replay.len() as u64);
        let mut after = self.after;
        let (rx, id) = loop {
            match shared.hub.join(&self.patterns, after) {
                Joined::Live(rx, id) => break (rx, id),
                Joined::Stopped => return Ok(()),
                Joined::Behind => {
                    // The shared reader is ahead: read the gap ourselves, then join again.
                    let page = match shared.broker.conn() {
                        Ok(mut c) => read_after(&mut **c, after, &self.patterns, CATCH_UP_PAGE),
                        Err(_) => return Ok(()),
                    };
                    let Ok(page) = page else { return Ok(()) };
                    let mut text = String::new();
                    for e in &page.events {
                        text.push_str(&Frame::of(e).text);
                    }
                    out.write_all(text.as_bytes())?;
                    add(&shared.metrics.sse_events_sent, page.events.len() as u64);
                    after = page.next;
                }
            }
        };
        let result = (|| loop {
            match rx.recv_timeout(shared.settings.heartbeat) {
                Ok(frame) => {
                    let mut text = frame.text.clone();
                    let mut n = 1;
                    while let Ok(f) = rx.try_recv() {
                        text.push_str(&f.text);
                        n += 1;
                    }
                    out.write_all(text.as_bytes())?;
                    add(&shared.metrics.sse_events_sent, n);
                }
                Err(RecvTimeoutError::Timeout) => out.write_all(b": ping\n\n")?,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        })();
        shared.hub.leave(&self.patterns, id);
        result
    }
}
