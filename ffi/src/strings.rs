//! Strings across the boundary: reading the caller's C strings, making the ones pgbroker hands
//! out, and writing out-parameters. Also the owned-string functions (`pgbroker_string_free`).

use std::ffi::{c_char, CStr, CString};

use crate::error::{guard, Failure, Result};

/// A C string of `s`; an interior NUL (which PostgreSQL text never holds) becomes U+FFFD.
pub(crate) fn to_cstring(s: impl Into<String>) -> CString {
    let s = s.into();
    CString::new(s).unwrap_or_else(|e| {
        let fixed = String::from_utf8_lossy(&e.into_vec()).replace('\0', "\u{FFFD}");
        CString::new(fixed).unwrap_or_default()
    })
}

/// An optional C string of `s`.
pub(crate) fn to_opt_cstring(s: Option<&str>) -> Option<CString> {
    s.map(to_cstring)
}

/// The pointer of an optional C string: NULL for `None`.
pub(crate) fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// The caller's string argument `what`: fails for NULL and for text that is not UTF-8.
pub(crate) fn arg_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str> {
    opt_arg_str(ptr, what)?.ok_or_else(|| Failure::invalid(format!("`{what}` is NULL")))
}

/// The caller's optional string argument `what` (NULL gives `None`): fails for text that is
/// not UTF-8.
pub(crate) fn opt_arg_str<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string that stays alive and
    // unchanged for the duration of the call (the contract of every string parameter).
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map(Some)
        .map_err(|e| Failure::invalid(format!("`{what}` is not UTF-8: {e}")))
}

/// The caller's out-parameter `what` as a reference to write to: fails for NULL.
pub(crate) fn out_param<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T> {
    // SAFETY: the caller promises `ptr` is NULL or points to a writable, properly aligned
    // `T` for the duration of the call (the contract of every out-parameter).
    unsafe { ptr.as_mut() }.ok_or_else(|| Failure::invalid(format!("`{what}` is NULL")))
}

/// Writes `value` through an optional out-parameter (NULL: the value is not wanted).
pub(crate) fn write_opt<T>(ptr: *mut T, value: T) {
    // SAFETY: as in `out_param`: NULL or a writable, aligned `T` (the caller's contract).
    if let Some(slot) = unsafe { ptr.as_mut() } {
        *slot = value;
    }
}

/// The caller's handle argument `what`: fails for NULL.
pub(crate) fn handle<'a, T>(ptr: *const T, what: &str) -> Result<&'a T> {
    // SAFETY: the caller promises `ptr` is NULL or a live handle pgbroker made and has not
    // freed, used as the header's thread-safety notes allow.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::invalid(format!("`{what}` is NULL")))
}

/// A borrowed view of a handle for an accessor: `None` for NULL.
pub(crate) fn view<'a, T>(ptr: *const T) -> Option<&'a T> {
    // SAFETY: as in `handle`: NULL or a live handle from pgbroker (the caller's contract).
    unsafe { ptr.as_ref() }
}

/// Frees a handle pgbroker made with `Box::into_raw` (every `pgbroker_*_free`); NULL is
/// allowed. A panic in a destructor is caught.
pub(crate) fn free_handle<T>(ptr: *mut T) {
    guard((), || {
        if !ptr.is_null() {
            // SAFETY: every handle pgbroker hands out comes from Box::into_raw of its type, and
            // the `_free` contract is that it is freed once, with no concurrent or later use.
            drop(unsafe { Box::from_raw(ptr) });
        }
    })
}

/// Frees a string pgbroker returned as owned (documented as "free with
/// `pgbroker_string_free`"). Accepts NULL. Never pass a borrowed string (an accessor's result).
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_string_free(s: *mut c_char) {
    guard((), || {
        if !s.is_null() {
            // SAFETY: `s` came from CString::into_raw in pgbroker and is freed once (contract).
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

/// The version of libpgbroker, e.g. "0.1.0". Static: never free it.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// The schema SQL `pgbroker_install` applies (for `psql -1 -f`, or to review it). Owned:
/// free it with `pgbroker_string_free`. NULL only if pgbroker failed internally.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn pgbroker_schema_sql() -> *mut c_char {
    guard(std::ptr::null_mut(), || {
        to_cstring(pgbroker_core::schema_sql()).into_raw()
    })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn interior_nul_is_replaced_not_truncated() {
        assert_eq!(to_cstring("a\0b").to_str(), Ok("a\u{FFFD}b"));
        assert_eq!(to_cstring("plain").to_str(), Ok("plain"));
    }

    #[test]
    fn null_and_non_utf8_arguments_are_errors() {
        assert!(arg_str(std::ptr::null(), "url").is_err());
        assert_eq!(opt_arg_str(std::ptr::null(), "key").ok(), Some(None));
        let bad = c"\xff\xfe";
        assert!(arg_str(bad.as_ptr(), "url").is_err());
        assert_eq!(arg_str(c"ok".as_ptr(), "url").ok(), Some("ok"));
    }
}
