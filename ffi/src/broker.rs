//! The broker handle: connect, free, install.

use std::ffi::{c_char, c_int};

use pgbroker_core::Broker;

use crate::error::{call, pgbroker_error};
use crate::strings::{arg_str, free_handle, handle, out_param, write_opt};

/// A connection pool to one PostgreSQL database used as a broker.
///
/// Made by `pgbroker_connect`, freed by `pgbroker_free`. Thread safety: every function
/// taking a `const pgbroker_broker *` may be called from any thread, concurrently. Listeners,
/// worker pools, batches and jobs made from a broker stay valid after it is freed (they hold
/// their own reference to the pool).
pub struct pgbroker_broker {
    pub(crate) broker: Broker,
}

/// Connects to the database at `url` (`postgres://user:password@host:port/db?options`, or the
/// libpq key-value form) with default settings and stores a new broker in `*broker`.
///
/// Connects once to check the server is reachable: fails with PGBROKER_KIND_CONFIG for a
/// malformed URL and PGBROKER_KIND_CONNECT for an unreachable server or failed
/// authentication (within the default connect timeout).
///
/// Ownership: `url` is borrowed for the call; the caller owns `*broker` and frees it with
/// `pgbroker_free`. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_connect(
    url: *const c_char,
    broker: *mut *mut pgbroker_broker,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let out = out_param(broker, "broker")?;
        let url = arg_str(url, "url")?;
        let connected = Broker::connect(url)?;
        *out = Box::into_raw(Box::new(pgbroker_broker { broker: connected }));
        Ok(())
    })
}

/// Frees a broker. Accepts NULL. Its idle connections close; listeners and pools made from it
/// keep running until freed themselves.
///
/// Thread safety: no other call may use `broker` at the same time or afterwards.
#[no_mangle]
pub extern "C" fn pgbroker_free(broker: *mut pgbroker_broker) {
    free_handle(broker)
}

/// Creates or upgrades the `pgbroker` schema (tables, functions) in the database; safe to call
/// on every start and from several processes at once. Stores the installed schema version in
/// `*version` unless `version` is NULL.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_install(
    broker: *const pgbroker_broker,
    version: *mut i32,
    err: *mut *mut pgbroker_error,
) -> c_int {
    call(err, || {
        let b = handle(broker, "broker")?;
        write_opt(version, b.broker.install()?);
        Ok(())
    })
}
