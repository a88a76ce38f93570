//! # pgbroker-http
//!
//! pgbroker over HTTP, for browsers, webhook consumers and services without a PostgreSQL
//! driver: Server-Sent Events from the durable log (resuming with `Last-Event-ID`), signed
//! webhooks (Standard Webhooks) with retries, ingest (`POST /topics/{topic}`,
//! `POST /queues/{queue}/jobs`), `GET /metrics` (Prometheus) and `GET /healthz`.
//! Synchronous like pgbroker: threads of its own, no async runtime, an explicit graceful
//! [`shutdown`](ServerHandle::shutdown). The `pgbroker serve` command runs it.
//!
//! ```no_run
//! use pgbroker_http::{BearerTokens, Server};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = pgbroker::Broker::connect("postgres://app@localhost/app")?;
//! broker.install()?;
//! let server = Server::builder(broker)
//!     .listen("0.0.0.0:8080")
//!     .auth(BearerTokens::parse("s3cret topics=orders.# queues=emails")?.into_hook())
//!     .start()?;
//! // curl -H 'Authorization: Bearer s3cret' --json '{"payload": {"id": 1}}' \
//! //      http://localhost:8080/topics/orders.created
//! // curl -N 'http://localhost:8080/events?topic=orders.*&access_token=s3cret'
//! server.shutdown();
//! # Ok(()) }
//! ```
//!
//! ## Why its own HTTP/1.1 server
//! Requests are parsed by `httparse` (hyper's parser) on `std::net` sockets that the server
//! owns, one thread per connection. A server crate such as `tiny_http` hides the socket:
//! no write timeout for a stalled SSE client, no way to end streams on shutdown. Owning the
//! sockets gives both (write timeouts, `shutdown()` closing every stream and joining every
//! thread). Outgoing webhook requests use `ureq` (blocking, rustls).
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, clippy::all)]

mod auth;
mod dashboard;
mod error;
mod ingest;
mod log_reader;
mod metrics;
mod request;
mod response;
mod routes;
mod server;
mod sse;
pub mod stats;
mod tokens;
pub mod webhooks;

pub use auth::{Access, AuthHook, AuthRequest, Grant};
pub use error::{Error, ErrorKind, Result};
pub use metrics::ServerMetrics;
pub use server::{Server, ServerBuilder, ServerHandle};
pub use tokens::BearerTokens;
