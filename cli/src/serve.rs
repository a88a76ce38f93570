//! `pgbroker serve`: the HTTP server (SSE, webhooks, ingest, /metrics, the dashboard) until
//! Ctrl-C or SIGTERM.

use std::time::Duration;

use clap::Args;
use pgbroker_http::{BearerTokens, Server};

use crate::failure::Failure;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on. A non-loopback address needs tokens (or --allow-anyone).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Bearer tokens, one a line: `TOKEN [topics=PATTERN,...] [queues=NAME,...]`.
    #[arg(long, value_name = "PATH")]
    pub tokens_file: Option<String>,

    /// An environment variable holding bearer tokens with full access (comma-separated).
    #[arg(long, value_name = "VAR")]
    pub tokens_env: Option<String>,

    /// Serve without authentication on a non-loopback address.
    #[arg(long)]
    pub allow_anyone: bool,

    /// The largest request body, in bytes (default 1 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// At most this many events are replayed for a Last-Event-ID.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub replay_events: usize,

    /// A Last-Event-ID at most this many seconds old is replayed.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub replay_seconds: u64,

    /// Do not deliver webhooks from this process.
    #[arg(long)]
    pub no_webhooks: bool,

    /// Do not serve the dashboard (under /ui/).
    #[arg(long)]
    pub no_dashboard: bool,

    /// A read-only dashboard: no retry, cancel, delete, run-now, re-drive or seek.
    #[arg(long)]
    pub read_only: bool,
}

pub fn serve(url: &str, args: &ServeArgs) -> Result<(), Failure> {
    let broker = pgbroker::Broker::builder()
        .url(url)
        .application_name("pgbroker-serve")
        .build()?;
    let mut builder = Server::builder(broker)
        .listen(&args.listen)
        .body_limit(args.body_limit)
        .replay_limits(args.replay_events, Duration::from_secs(args.replay_seconds))
        .webhooks(!args.no_webhooks)
        .dashboard(!args.no_dashboard)
        .read_only(args.read_only);
    let mut tokens = BearerTokens::default();
    if let Some(path) = &args.tokens_file {
        tokens = BearerTokens::from_file(path).map_err(Failure::usage)?;
    }
    if let Some(var) = &args.tokens_env {
        let more = BearerTokens::from_env(var).map_err(Failure::usage)?;
        tokens = tokens.merge(more);
    }
    if !tokens.is_empty() {
        builder = builder.auth(tokens.into_hook());
    }
    if args.allow_anyone {
        builder = builder.allow_anyone();
    }
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .map_err(|e| Failure::failed(format!("cannot catch signals: {e}")))?;
    let server = builder.start().map_err(|e| match e.kind() {
        pgbroker_http::ErrorKind::Config => Failure::usage(e),
        _ => Failure::failed(e),
    })?;
    crate::output::note(format!("serving on http://{}", server.local_addr()));
    let _ = stop_rx.recv();
    crate::output::note("stopping");
    server.shutdown();
    Ok(())
}
