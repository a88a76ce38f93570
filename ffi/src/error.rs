//! Errors across the boundary: the `pgbroker_error` object, its kinds, and `call`, the wrapper
//! of every fallible entry point (status code, `err` out-parameter, no unwinding into C).

use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pgbroker_core::ErrorKind;

use crate::strings::{free_handle, to_cstring};

/// What went wrong, broadly; also the status every fallible function returns (0 = ok).
///
/// New kinds may be added: treat an unknown value like `PGBROKER_KIND_OTHER`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum pgbroker_kind {
    /// No error (the status of a call that succeeded).
    Ok = 0,
    /// Could not connect to PostgreSQL (refused, timed out, authentication failed, bad URL host).
    Connect = 1,
    /// The connection pool could not hand out a connection in time.
    Pool = 2,
    /// PostgreSQL answered with an error: `pgbroker_error_sqlstate` gives its SQLSTATE.
    Db = 3,
    /// The connection was closed underneath (server restart, terminated backend, network).
    Closed = 4,
    /// An operation did not finish within its timeout.
    Timeout = 5,
    /// A payload is not valid JSON (or could not be serialized).
    Serialize = 6,
    /// A payload is larger than PostgreSQL accepts (7999 bytes for NOTIFY).
    PayloadTooLarge = 7,
    /// A channel, topic, queue or subscription name is not acceptable.
    InvalidName = 8,
    /// An argument is NULL where a value is required, not UTF-8, out of range or malformed.
    InvalidInput = 9,
    /// The listener, worker pool or broker has been shut down (or a pool was already started).
    Shutdown = 10,
    /// A handler failed.
    Handler = 11,
    /// Invalid configuration (a malformed URL, zero threads, a queue registered twice...).
    Config = 12,
    /// The item does not exist (for example a job no longer held by this claim).
    NotFound = 13,
    /// Reading or writing a local file or process failed.
    Io = 14,
    /// A bug in pgbroker: it panicked. The call had no effect that can be relied on.
    Internal = 15,
    /// A kind this version of the C ABI does not know yet.
    Other = 16,
}

impl From<ErrorKind> for pgbroker_kind {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Connect => Self::Connect,
            ErrorKind::Pool => Self::Pool,
            ErrorKind::Db => Self::Db,
            ErrorKind::Closed => Self::Closed,
            ErrorKind::Timeout => Self::Timeout,
            ErrorKind::Serialize => Self::Serialize,
            ErrorKind::PayloadTooLarge => Self::PayloadTooLarge,
            ErrorKind::InvalidName => Self::InvalidName,
            ErrorKind::InvalidInput => Self::InvalidInput,
            ErrorKind::Shutdown => Self::Shutdown,
            ErrorKind::Handler => Self::Handler,
            ErrorKind::Config => Self::Config,
            ErrorKind::NotFound => Self::NotFound,
            ErrorKind::Io => Self::Io,
            _ => Self::Other,
        }
    }
}

impl pgbroker_kind {
    fn name(self) -> &'static std::ffi::CStr {
        match self {
            Self::Ok => c"ok",
            Self::Connect => c"connect",
            Self::Pool => c"pool",
            Self::Db => c"db",
            Self::Closed => c"closed",
            Self::Timeout => c"timeout",
            Self::Serialize => c"serialize",
            Self::PayloadTooLarge => c"payload_too_large",
            Self::InvalidName => c"invalid_name",
            Self::InvalidInput => c"invalid_input",
            Self::Shutdown => c"shutdown",
            Self::Handler => c"handler",
            Self::Config => c"config",
            Self::NotFound => c"not_found",
            Self::Io => c"io",
            Self::Internal => c"internal",
            Self::Other => c"other",
        }
    }
}

/// An error: a kind, a message and, when PostgreSQL reported it, a SQLSTATE.
///
/// Created by pgbroker and handed to the caller through a `pgbroker_error **err`
/// out-parameter; the caller owns it and frees it with `pgbroker_error_free`. Immutable:
/// its accessors may be called from any thread.
pub struct pgbroker_error {
    kind: pgbroker_kind,
    message: CString,
    sqlstate: Option<CString>,
}

/// The error of a failed call inside this crate: what `call` turns into a status code.
pub(crate) struct Failure {
    kind: pgbroker_kind,
    message: String,
    sqlstate: Option<String>,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub(crate) fn new(kind: pgbroker_kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            sqlstate: None,
        }
    }

    /// A NULL or otherwise bad argument named `what`.
    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(pgbroker_kind::InvalidInput, message)
    }
}

impl From<pgbroker_core::Error> for Failure {
    fn from(e: pgbroker_core::Error) -> Failure {
        Failure {
            kind: e.kind().into(),
            message: e.to_string(),
            sqlstate: e.db_code().map(str::to_owned),
        }
    }
}

/// What every fallible entry point returns inside the crate.
pub(crate) type Result<T, E = Failure> = std::result::Result<T, E>;

/// Runs `f` for a fallible entry point: returns 0 on success, else the error's kind as a
/// number, storing a new `pgbroker_error` in `*err` when `err` is not NULL. A panic in `f` is
/// caught here (it never unwinds into C) and reported as `PGBROKER_KIND_INTERNAL`.
pub(crate) fn call(err: *mut *mut pgbroker_error, f: impl FnOnce() -> Result<()>) -> c_int {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Failure::new(
            pgbroker_kind::Internal,
            format!("pgbroker panicked (a bug, please report it): {what}"),
        ))
    });
    let status = match &outcome {
        Ok(()) => 0,
        Err(f) => f.kind as c_int,
    };
    if !err.is_null() {
        let value = match outcome {
            Ok(()) => std::ptr::null_mut(),
            Err(f) => Box::into_raw(Box::new(pgbroker_error {
                kind: f.kind,
                message: to_cstring(f.message),
                sqlstate: f.sqlstate.map(to_cstring),
            })),
        };
        // SAFETY: `err` is not NULL and the caller promises it points to a writable
        // `pgbroker_error *` (the documented contract of every `err` parameter).
        unsafe { *err = value };
    }
    status
}

/// Runs an infallible entry point (an accessor, a `_free`), returning `fallback` if it
/// panicked: no panic unwinds into C.
pub(crate) fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The kind of `err`; `PGBROKER_KIND_OK` for NULL.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_error_kind(err: *const pgbroker_error) -> pgbroker_kind {
    guard(pgbroker_kind::Internal, || {
        // SAFETY: NULL or a live error from pgbroker (the caller's contract).
        match unsafe { err.as_ref() } {
            Some(e) => e.kind,
            None => pgbroker_kind::Ok,
        }
    })
}

/// The message of `err`: what went wrong, with the cause (UTF-8, NUL-terminated). Borrowed:
/// valid until `pgbroker_error_free(err)`; do not free it. "" for NULL.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_error_message(err: *const pgbroker_error) -> *const c_char {
    guard(c"".as_ptr(), || {
        // SAFETY: NULL or a live error from pgbroker (the caller's contract).
        match unsafe { err.as_ref() } {
            Some(e) => e.message.as_ptr(),
            None => c"".as_ptr(),
        }
    })
}

/// The SQLSTATE of `err` (five characters, e.g. "23505") when PostgreSQL reported the error,
/// else NULL. Borrowed: valid until `pgbroker_error_free(err)`; do not free it.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_error_sqlstate(err: *const pgbroker_error) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live error from pgbroker (the caller's contract).
        match unsafe { err.as_ref() }.and_then(|e| e.sqlstate.as_ref()) {
            Some(s) => s.as_ptr(),
            None => std::ptr::null(),
        }
    })
}

/// A short, stable, lower-case name of `kind` ("connect", "db", "invalid_input", ...), for
/// logs and for bindings that map kinds to exception classes. Static: never free it.
/// "other" for a value this version does not know.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_kind_name(kind: c_int) -> *const c_char {
    guard(c"other".as_ptr(), || {
        let kind = KINDS
            .iter()
            .find(|k| **k as c_int == kind)
            .copied()
            .unwrap_or(pgbroker_kind::Other);
        kind.name().as_ptr()
    })
}

const KINDS: [pgbroker_kind; 17] = [
    pgbroker_kind::Ok,
    pgbroker_kind::Connect,
    pgbroker_kind::Pool,
    pgbroker_kind::Db,
    pgbroker_kind::Closed,
    pgbroker_kind::Timeout,
    pgbroker_kind::Serialize,
    pgbroker_kind::PayloadTooLarge,
    pgbroker_kind::InvalidName,
    pgbroker_kind::InvalidInput,
    pgbroker_kind::Shutdown,
    pgbroker_kind::Handler,
    pgbroker_kind::Config,
    pgbroker_kind::NotFound,
    pgbroker_kind::Io,
    pgbroker_kind::Internal,
    pgbroker_kind::Other,
];

/// Frees an error. Accepts NULL. Ownership: `err` must come from pgbroker and not be used
/// afterwards.
///
/// Thread safety: any thread, but not concurrently with other uses of `err`.
#[no_mangle]
pub extern "C" fn pgbroker_error_free(err: *mut pgbroker_error) {
    free_handle(err)
}

#[cfg(test)]
mod test {
    use std::ffi::CStr;

    use super::*;

    fn message(err: *const pgbroker_error) -> String {
        // SAFETY: the tests pass errors `call` made, not yet freed.
        unsafe { CStr::from_ptr(pgbroker_error_message(err)) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let mut err: *mut pgbroker_error = std::ptr::null_mut();
        let status = call(&mut err, || panic!("boom"));
        assert_eq!(status, pgbroker_kind::Internal as c_int);
        assert_eq!(pgbroker_error_kind(err), pgbroker_kind::Internal);
        assert!(message(err).contains("boom"), "{}", message(err));
        assert!(pgbroker_error_sqlstate(err).is_null());
        pgbroker_error_free(err);
        assert_eq!(guard(7, || panic!("in an accessor")), 7);
    }

    #[test]
    fn success_clears_err_and_failure_sets_it() {
        let mut err: *mut pgbroker_error = std::ptr::null_mut();
        assert_eq!(call(&mut err, || Ok(())), 0);
        assert!(err.is_null());
        let status = call(&mut err, || Err(Failure::invalid("`x` is NULL")));
        assert_eq!(status, pgbroker_kind::InvalidInput as c_int);
        assert_eq!(message(err), "`x` is NULL");
        pgbroker_error_free(err);
        // Without an error object the status still tells the kind.
        let status = call(std::ptr::null_mut(), || Err(Failure::invalid("no err")));
        assert_eq!(status, pgbroker_kind::InvalidInput as c_int);
    }

    #[test]
    fn every_kind_has_its_own_name() {
        let names: std::collections::HashSet<String> = KINDS
            .iter()
            .map(|k| {
                // SAFETY: kind names are static C strings.
                unsafe { CStr::from_ptr(pgbroker_kind_name(*k as c_int)) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names.len(), KINDS.len());
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(*k as usize, i, "kinds are numbered in order");
        }
    }
}
