//! Connecting where production PostgreSQL lives: TLS with libpq's sslmode semantics, the
//! libpq environment, connection failures in words, the pool across a server restart.

mod support;

#[path = "connect/certs.rs"]
mod certs;
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
#[path = "connect/tls.rs"]
mod tls;
