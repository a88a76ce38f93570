//! Connecting where production PostgreSQL lives: TLS with libpq's sslmode semantics, the
//! libpq environment, connection failures in words, the pool across a server restart.

mod support;

#[cfg(feature = "tls")] // certificates and a TLS-only server
#[path = "connect/certs.rs"]
mod certs;
#[cfg(feature = "tls")]
#[path = "connect/env.rs"]
mod env;
#[path = "connect/errors.rs"]
mod errors;
#[path = "connect/failover.rs"]
mod failover;
#[path = "connect/pgbouncer.rs"]
mod pgbouncer;
#[path = "connect/restart.rs"]
mod restart;
#[cfg(feature = "tls")]
#[path = "connect/tls.rs"]
mod tls;
