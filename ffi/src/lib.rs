//! The C ABI of pgbroker: `libpgbroker.so` / `libpgbroker.a` and `include/pgbroker.h`.
//!
//! Conventions, the same for every function (see the header for each one's contract):
//! - every fallible call returns `int`: 0 on success, else the error's `pgbroker_kind`; its
//!   last parameter `pgbroker_error **err` may be NULL, else receives a new error (to free
//!   with `pgbroker_error_free`) on failure and NULL on success;
//! - handles are opaque; whatever pgbroker returns as owned is freed by the caller with the
//!   matching `_free` (strings with `pgbroker_string_free`), and every `_free` accepts NULL;
//!   strings returned by accessors are borrowed from their object;
//! - no panic unwinds into C: each entry point catches it (`PGBROKER_KIND_INTERNAL`).
//!
//! `unsafe` lives here only (the core crate forbids it), each block with its reason.
#![allow(non_camel_case_types)]
#![warn(rust_2018_idioms, clippy::all)]

mod broker;
mod error;
mod log;
mod notify;
mod pool;
mod queue;
mod strings;
