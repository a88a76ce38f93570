//! The durable event log: publish, subscribe, read batches and acknowledge them.

use std::ffi::{c_char, c_int, CString};

use pgbroker_core::topic::NewEvent;
use pgbroker_core::Batch;

use crate::broker::pgbroker_broker;
use crate::error::{call, guard, pgbroker_error, Failure, Result};
use crate::strings::{
    arg_str, free_handle, handle, opt_arg_str, opt_ptr, out_param, to_cstring, to_opt_cstring,
    view, write_opt,
};

/// Parses the caller's JSON text `what`: PGBROKER_KIND_SERIALIZE when it is not JSON.
pub(crate) fn parse_json(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        Failure::new(
            crate::error::pgbroker_kind::Serialize,
            format!("`{what}` is not valid JSON: {e}"),
        )
    })
}

fn new_event(topic: &str, json: &str, key: Option<&str>, json_name: &str) -> Result<NewEvent> {
    let event = NewEvent::new(topic, parse_json(json, json_name)?);
    Ok(match key {
        Some(k) => event.key(k),
        None => event,
    })
}

/// Publishes one event on `topic` with the JSON text `json` as payload and an optional `key`
/// (NULL for none; events of one key stay in order on partitioned subscriptions). Stores the
/// event's id in `*event_id` unless `event_id` is NULL. Durable once this returns 0.
///
/// Fails with PGBROKER_KIND_SERIALIZE when `json` is not JSON and PGBROKER_KIND_INVALID_NAME
/// for a bad topic, before writing anything.
///
/// Ownership: the strings are borrowed for the call. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_publish(
    broker: *const pgbroker_broker,
    topic: *const c_char,
    json: *const c_char,
    key: *const c_char,
    event_id: *mut i64,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        let topic = arg_str(topic, "topic")?;
        let json = arg_str(json, "json")?;
        let key = opt_arg_str(key, "key")?;
        let id = b
            .broker
            .publish_event(&new_event(topic, json, key, "json")?)?;
        write_opt(event_id, id.get());
        Ok(())
    })
}

/// One event of `pgbroker_publish_batch`: `topic` and `json` are required, `key` may be NULL.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pgbroker_new_event {
    /// The topic.
    pub topic: *const c_char,
    /// The payload: JSON text.
    pub json: *const c_char,
    /// The key, or NULL.
    pub key: *const c_char,
}

/// Publishes `count` events in one transaction: all or none. Stores their ids, in order, in
/// `event_ids[0..count]` unless `event_ids` is NULL. `events` may be NULL when `count` is 0.
///
/// Fails before writing anything when any event is invalid (the message names its index).
///
/// Ownership: everything is borrowed for the call. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_publish_batch(
    broker: *const pgbroker_broker,
    events: *const pgbroker_new_event,
    count: usize,
    event_ids: *mut i64,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        if count == 0 {
            return Ok(());
        }
        if events.is_null() {
            return Err(Failure::invalid("`events` is NULL"));
        }
        // SAFETY: not NULL, and the caller promises `count` initialised elements that stay
        // alive and unchanged for the duration of the call.
        let given = unsafe { std::slice::from_raw_parts(events, count) };
        let mut batch = Vec::with_capacity(count);
        for (i, e) in given.iter().enumerate() {
            let at = |what: &str| format!("events[{i}].{what}");
            let topic = arg_str(e.topic, &at("topic"))?;
            let json = arg_str(e.json, &at("json"))?;
            let key = opt_arg_str(e.key, &at("key"))?;
            batch.push(new_event(topic, json, key, &at("json"))?);
        }
        let ids = b.broker.publish_batch(batch)?;
        if !event_ids.is_null() {
            // SAFETY: not NULL, and the caller promises room for `count` ids; the library
            // returns one id per event.
            let out = unsafe { std::slice::from_raw_parts_mut(event_ids, count) };
            for (slot, id) in out.iter_mut().zip(&ids) {
                *slot = id.get();
            }
        }
        Ok(())
    })
}

/// Creates (starting at the end of the log: it receives events published from now on) or
/// updates subscription `name` to the topics matching `pattern` ("orders.*" matches one
/// level, "orders.#" any number, "#" everything).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_subscribe(
    broker: *const pgbroker_broker,
    name: *const c_char,
    pattern: *const c_char,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        let name = arg_str(name, "name")?;
        let pattern = arg_str(pattern, "pattern")?;
        b.broker.subscribe(name, &[pattern])?;
        Ok(())
    })
}

/// Events read from a subscription, in log order. Made by `pgbroker_read` (freed by
/// `pgbroker_batch_free`) or handed to a subscription callback (borrowed for the call).
/// Immutable: its accessors may be called from any thread.
pub struct pgbroker_batch {
    pub(crate) batch: Batch,
    subscription: CString,
    events: Vec<EventText>,
}

struct EventText {
    topic: CString,
    json: CString,
    key: Option<CString>,
}

impl pgbroker_batch {
    pub(crate) fn new(batch: Batch) -> pgbroker_batch {
        let events = batch
            .events()
            .iter()
            .map(|e| EventText {
                topic: to_cstring(e.topic()),
                json: to_cstring(e.payload_json()),
                key: to_opt_cstring(e.key()),
            })
            .collect();
        pgbroker_batch {
            subscription: to_cstring(batch.subscription()),
            batch,
            events,
        }
    }
}

/// Reads up to `max` events after the cursor of subscription `name` and stores them in a new
/// batch in `*batch` (possibly empty). Reading does not move the cursor: `pgbroker_ack` does.
///
/// Fails with PGBROKER_KIND_NOT_FOUND when the subscription does not exist.
///
/// Ownership: the caller owns `*batch` and frees it with `pgbroker_batch_free`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_read(
    broker: *const pgbroker_broker,
    name: *const c_char,
    max: usize,
    batch: *mut *mut pgbroker_batch,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        let out = out_param(batch, "batch")?;
        let name = arg_str(name, "name")?;
        let read = b.broker.read(name, max)?;
        *out = Box::into_raw(Box::new(pgbroker_batch::new(read)));
        Ok(())
    })
}

/// Moves the subscription's cursor past `batch` (a batch from `pgbroker_read`): its events
/// are not read again. Acknowledging an empty batch is allowed (it may skip scanned events of
/// other topics).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_ack(
    broker: *const pgbroker_broker,
    batch: *const pgbroker_batch,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        let batch = &handle(batch, "batch")?.batch;
        if let Some(position) = batch.ack_position() {
            b.broker
                .ack_partition(batch.subscription(), batch.partition(), position)?;
        }
        Ok(())
    })
}

/// The number of events in `batch` (0 for NULL).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_batch_len(batch: *const pgbroker_batch) -> usize {
    guard(0, || view(batch).map_or(0, |b| b.events.len()))
}

/// The subscription `batch` was read from. Borrowed: valid as long as the batch. "" for NULL.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_batch_subscription(batch: *const pgbroker_batch) -> *const c_char {
    guard(c"".as_ptr(), || {
        view(batch).map_or(c"".as_ptr(), |b| b.subscription.as_ptr())
    })
}

/// How many times these events failed before (0 on first delivery). 0 for NULL.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_batch_attempt(batch: *const pgbroker_batch) -> u32 {
    guard(0, || view(batch).map_or(0, |b| b.batch.attempt()))
}

/// The id of event `index` of `batch`; 0 when `batch` is NULL or `index` out of range.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_batch_event_id(batch: *const pgbroker_batch, index: usize) -> i64 {
    guard(0, || {
        view(batch)
            .and_then(|b| b.batch.events().get(index))
            .map_or(0, |e| e.id().get())
    })
}

/// The topic of event `index` of `batch`. Borrowed: valid as long as the batch. NULL when
/// `batch` is NULL or `index` out of range.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_batch_topic(
    batch: *const pgbroker_batch,
    index: usize,
) -> *const c_char {
    guard(std::ptr::null(), || {
        text(batch, index).map_or(std::ptr::null(), |e| e.topic.as_ptr())
    })
}

/// The payload of event `index` of `batch` as JSON text (as PostgreSQL prints jsonb: keys
/// sorted). Borrowed: valid as long as the batch. NULL when `batch` is NULL or `index` out of
/// range.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_batch_payload(
    batch: *const pgbroker_batch,
    index: usize,
) -> *const c_char {
    guard(std::ptr::null(), || {
        text(batch, index).map_or(std::ptr::null(), |e| e.json.as_ptr())
    })
}

/// The key of event `index` of `batch`, NULL when it has none (or `batch` is NULL, or `index`
/// out of range). Borrowed: valid as long as the batch.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_batch_key(batch: *const pgbroker_batch, index: usize) -> *const c_char {
    guard(std::ptr::null(), || {
        text(batch, index).map_or(std::ptr::null(), |e| opt_ptr(&e.key))
    })
}

fn text<'a>(batch: *const pgbroker_batch, index: usize) -> Option<&'a EventText> {
    view(batch).and_then(|b| b.events.get(index))
}

/// Frees a batch from `pgbroker_read`. Accepts NULL. Never free the batch a callback
/// receives.
///
/// Thread safety: no other call may use `batch` at the same time or afterwards.
#[no_mangle]
pub extern "C" fn pgbroker_batch_free(batch: *mut pgbroker_batch) {
    free_handle(batch)
}
