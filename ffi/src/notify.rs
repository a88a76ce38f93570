//! Pub/sub on LISTEN/NOTIFY: notify, listeners and the events they deliver.

use std::ffi::{c_char, c_int, CString};
use std::time::Duration;

use pgbroker_core::{Event, Listener};

use crate::broker::pgbroker_broker;
use crate::error::{call, guard, pgbroker_error, Failure};
use crate::strings::{arg_str, free_handle, handle, opt_ptr, out_param, to_cstring, view};

/// Sends `payload` (any text up to 7999 bytes, delivered as is) on `channel` with NOTIFY. Like
/// NOTIFY, it is delivered only to those listening at that moment.
///
/// Fails with PGBROKER_KIND_INVALID_NAME for a bad channel and PGBROKER_KIND_PAYLOAD_TOO_LARGE
/// for a payload over 7999 bytes, before sending anything.
///
/// Ownership: the strings are borrowed for the call. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_notify(
    broker: *const pgbroker_broker,
    channel: *const c_char,
    payload: *const c_char,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        let channel = arg_str(channel, "channel")?;
        let payload = arg_str(payload, "payload")?;
        b.broker.notify(channel, payload)?;
        Ok(())
    })
}

/// Receives the notifications of one channel. Made by `pgbroker_listen`, freed by
/// `pgbroker_listener_free`.
///
/// A background thread owns a dedicated connection, LISTENs and queues what arrives (without
/// bound, so the server's notification queue never backs up); it reconnects by itself and
/// then delivers PGBROKER_EVENT_TYPE_DISCONNECTED and PGBROKER_EVENT_TYPE_RECONNECTED events.
/// Thread safety: `pgbroker_listener_recv` may be called from any thread, by one thread at a
/// time per listener.
pub struct pgbroker_listener {
    listener: Listener,
}

/// Starts listening on `channel` (case-sensitive: "Orders" and "orders" differ) and stores a
/// new listener in `*listener`. Notifications sent after this call returns are received.
///
/// Ownership: the caller owns `*listener` and frees it with `pgbroker_listener_free`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_listen(
    broker: *const pgbroker_broker,
    channel: *const c_char,
    listener: *mut *mut pgbroker_listener,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        let out = out_param(listener, "listener")?;
        let channel = arg_str(channel, "channel")?;
        let l = b.broker.listen(channel)?;
        *out = Box::into_raw(Box::new(pgbroker_listener { listener: l }));
        Ok(())
    })
}

/// What a listener delivered.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum pgbroker_event_type {
    /// A notification: `pgbroker_event_payload` is its payload.
    Notification = 0,
    /// The connection was lost; notifications sent until the next RECONNECTED are lost.
    /// `pgbroker_event_payload` says why.
    Disconnected = 1,
    /// Listening again: re-read durable state (tables, the log, the queue) now.
    Reconnected = 2,
}

/// One event from a listener: a kind, the channel and a payload. Made by
/// `pgbroker_listener_recv`, freed by `pgbroker_event_free`; immutable, so its accessors may
/// be called from any thread.
pub struct pgbroker_event {
    kind: pgbroker_event_type,
    channel: CString,
    payload: Option<CString>,
}

/// Waits up to `timeout_ms` milliseconds (forever when negative; 0 only looks) for the next
/// event. Stores a new event in `*event`, or NULL when none arrived in time (a timeout is not
/// an error: the call returns 0).
///
/// Fails with PGBROKER_KIND_SHUTDOWN when the listener's thread has ended.
///
/// Ownership: the caller owns `*event` and frees it with `pgbroker_event_free`.
/// Thread safety: one thread at a time per listener.
#[no_mangle]
pub extern "C" fn pgbroker_listener_recv(
    listener: *const pgbroker_listener,
    timeout_ms: i64,
    event: *mut *mut pgbroker_event,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let l = &handle(listener, "listener")?.listener;
        let out = out_param(event, "event")?;
        *out = std::ptr::null_mut();
        let received = match u64::try_from(timeout_ms) {
            Ok(ms) => l.recv_timeout(Duration::from_millis(ms))?,
            Err(_) => Some(l.recv()?),
        };
        let Some(received) = received else {
            return Ok(());
        };
        let converted = match received {
            Event::Notification(n) => pgbroker_event {
                kind: pgbroker_event_type::Notification,
                channel: to_cstring(n.channel()),
                payload: Some(to_cstring(n.payload())),
            },
            Event::Disconnected { channel, error } => pgbroker_event {
                kind: pgbroker_event_type::Disconnected,
                channel: to_cstring(channel),
                payload: Some(to_cstring(error)),
            },
            Event::Reconnected { channel, .. } => pgbroker_event {
                kind: pgbroker_event_type::Reconnected,
                channel: to_cstring(channel),
                payload: None,
            },
            other => {
                return Err(Failure::new(
                    crate::error::pgbroker_kind::Other,
                    format!("an event this version of the C ABI does not know: {other:?}"),
                ))
            }
        };
        *out = Box::into_raw(Box::new(converted));
        Ok(())
    })
}

/// Stops listening and frees the listener (its thread ends within about a second). Accepts
/// NULL. Events not yet received are dropped.
///
/// Thread safety: no other call may use `listener` at the same time or afterwards.
#[no_mangle]
pub extern "C" fn pgbroker_listener_free(listener: *mut pgbroker_listener) {
    free_handle(listener)
}

/// The kind of `event` (NOTIFICATION for NULL).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_event_kind(event: *const pgbroker_event) -> pgbroker_event_type {
    guard(pgbroker_event_type::Notification, || {
        view(event).map_or(pgbroker_event_type::Notification, |e| e.kind)
    })
}

/// The channel of `event`. Borrowed: valid until `pgbroker_event_free(event)`. "" for NULL.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_event_channel(event: *const pgbroker_event) -> *const c_char {
    guard(c"".as_ptr(), || {
        view(event).map_or(c"".as_ptr(), |e| e.channel.as_ptr())
    })
}

/// The payload of a notification (the reason of a DISCONNECTED event); NULL for RECONNECTED
/// and for NULL. Borrowed: valid until `pgbroker_event_free(event)`.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_event_payload(event: *const pgbroker_event) -> *const c_char {
    guard(std::ptr::null(), || {
        view(event).map_or(std::ptr::null(), |e| opt_ptr(&e.payload))
    })
}

/// Frees an event. Accepts NULL.
///
/// Thread safety: no other call may use `event` at the same time or afterwards.
#[no_mangle]
pub extern "C" fn pgbroker_event_free(event: *mut pgbroker_event) {
    free_handle(event)
}
