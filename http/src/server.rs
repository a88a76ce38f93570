//! `Server`: the builder, the accept loop, one thread per connection, and the handle that
//! shuts it all down.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pgbroker::Broker;

use crate::auth::{Access, AuthHook, AuthRequest, Grant};
use crate::metrics::{add, sub, ServerMetrics};
use crate::request::{read_request, ReadError};
use crate::response::Response;
use crate::routes::{route, Reply};
use crate::sse::Hub;
use crate::webhooks::delivery::Deliveries;
use crate::{Error, ErrorKind, Result};

/// The settings of a server; every setter of [`ServerBuilder`] documents its default.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) body_limit: usize,
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) replay_max_events: usize,
    pub(crate) replay_max_age: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) retry: Duration,
    pub(crate) client_buffer: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) webhooks: bool,
    pub(crate) webhook_timeout: Duration,
    pub(crate) webhook_poll: Duration,
    pub(crate) dashboard: bool,
    pub(crate) read_only: bool,
    /// Fixed pages served at their path (GET, no auth).
    pub(crate) pages: Vec<(String, Arc<str>)>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            body_limit: 1024 * 1024,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            replay_max_events: 1000,
            replay_max_age: Duration::from_secs(300),
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            client_buffer: 1024,
            poll_interval: Duration::from_millis(250),
            webhooks: true,
            webhook_timeout: Duration::from_secs(5),
            webhook_poll: Duration::from_millis(250),
            dashboard: true,
            read_only: false,
            pages: Vec::new(),
        }
    }
}

/// What every connection thread shares.
pub(crate) struct Shared {
    pub(crate) broker: Broker,
    pub(crate) settings: Settings,
    auth: Option<AuthHook>,
    pub(crate) metrics: Arc<ServerMetrics>,
    pub(crate) hub: Hub,
    pub(crate) stopping: AtomicBool,
    connections: Mutex<Connections>,
}

#[derive(Default)]
struct Connections {
    next: u64,
    open: HashMap<u64, (TcpStream, Option<JoinHandle<()>>)>,
}

impl Shared {
    /// The caller's grant, or the 401/403 response.
    pub(crate) fn authorize(&self, req: &crate::request::Request) -> Result<Grant, Response> {
        let Some(hook) = &self.auth else {
            return Ok(Grant::all());
        };
        let view = AuthRequest {
            method: &req.method,
            path: &req.path,
            headers: &req.headers,
            query: &req.query,
        };
        match hook(&view) {
            Access::Allow(grant) => Ok(grant),
            Access::Unauthenticated(msg) => {
                Err(Response::error(401, "unauthenticated", msg)
                    .header("WWW-Authenticate", "Bearer"))
            }
            Access::Forbidden(msg) => Err(Response::error(403, "forbidden", msg)),
        }
    }
}

/// The HTTP door to a broker: Server-Sent Events, webhooks, ingest, `/metrics`, `/healthz`.
///
/// # Examples
///
/// ```no_run
/// use pgbroker_http::Server;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = pgbroker::Broker::connect("postgres://app@localhost/app")?;
/// broker.install()?;
/// let server = Server::builder(broker).listen("127.0.0.1:8080").start()?;
/// println!("listening on http://{}", server.local_addr());
/// // ... until the process should stop:
/// server.shutdown();
/// # Ok(()) }
/// ```
pub struct Server;

impl Server {
    /// A builder for a server of `broker`.
    pub fn builder(broker: Broker) -> ServerBuilder {
        ServerBuilder {
            broker,
            listen: "127.0.0.1:8080".into(),
            auth: None,
            allow_anyone: false,
            settings: Settings::default(),
        }
    }
}

/// Settings of a [`Server`]; `start()` binds and runs it.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use pgbroker_http::{BearerTokens, Server};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// let server = Server::builder(broker)
///     .listen("0.0.0.0:8080")
///     .auth(BearerTokens::from_env("PGBROKER_TOKENS")?.into_hook())
///     .body_limit(256 * 1024)
///     .replay_limits(5000, Duration::from_secs(3600))
///     .start()?;
/// # server.shutdown();
/// # Ok(()) }
/// ```
pub struct ServerBuilder {
    broker: Broker,
    listen: String,
    auth: Option<AuthHook>,
    allow_anyone: bool,
    settings: Settings,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("listen", &self.listen)
            .field("auth", &self.auth.is_some())
            .field("allow_anyone", &self.allow_anyone)
            .field("settings", &self.settings)
            .finish()
    }
}

impl ServerBuilder {
    /// The address to listen on (default `127.0.0.1:8080`; port 0 picks a free port, see
    /// [`ServerHandle::local_addr`]).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// The auth hook, asked for every request but `GET /healthz` (default: none, and then
    /// every caller may do everything, which [`start`](Self::start) allows only on a loopback
    /// address unless [`allow_anyone`](Self::allow_anyone) says otherwise).
    pub fn auth(mut self, hook: AuthHook) -> Self {
        self.auth = Some(hook);
        self
    }

    /// Serve without authentication even on a non-loopback address (default: refused).
    pub fn allow_anyone(mut self) -> Self {
        self.allow_anyone = true;
        self
    }

    /// The largest request body accepted; larger ones get `413` (default 1 MiB).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.settings.body_limit = bytes;
        self
    }

    /// The most connections open at once, SSE streams included; more get `503` (default
    /// 4096).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.settings.max_connections = n;
        self
    }

    /// How far back `Last-Event-ID` may resume: at most `events` events and `age` (defaults
    /// 1,000 and 5 minutes); an ID further back gets `204 No Content`.
    pub fn replay_limits(mut self, events: usize, age: Duration) -> Self {
        self.settings.replay_max_events = events;
        self.settings.replay_max_age = age;
        self
    }

    /// How often an idle SSE stream gets a `: ping` comment (default 15 s).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.settings.heartbeat = every;
        self
    }

    /// The reconnect delay sent to SSE clients as `retry:` (default 2 s).
    pub fn retry(mut self, delay: Duration) -> Self {
        self.settings.retry = delay;
        self
    }

    /// How many events an SSE client may fall behind before it is disconnected (default
    /// 1024); it then resumes with `Last-Event-ID`.
    pub fn client_buffer(mut self, events: usize) -> Self {
        self.settings.client_buffer = events.max(1);
        self
    }

    /// How often the shared SSE reader looks for new events while clients are connected and
    /// no wake-up came (default 250 ms). Events published through pgbroker wake it at once
    /// (it registers as a waiting reader of the log while idle); this interval is for events
    /// written with plain SQL, and for when LISTEN is not available.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.settings.poll_interval = every;
        self
    }

    /// Whether this server delivers webhooks (default true).
    pub fn webhooks(mut self, deliver: bool) -> Self {
        self.settings.webhooks = deliver;
        self
    }

    /// The timeout of one webhook request (default 5 s).
    pub fn webhook_timeout(mut self, timeout: Duration) -> Self {
        self.settings.webhook_timeout = timeout;
        self
    }

    /// How often idle webhook endpoints look for new events (default 250 ms).
    pub fn webhook_poll(mut self, every: Duration) -> Self {
        self.settings.webhook_poll = every;
        self
    }

    /// Serves the dashboard under `/ui/` (default: on). It needs a grant of every topic and
    /// every queue, like an operator's token.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let server = pgbroker_http::Server::builder(broker).dashboard(false).start()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dashboard(mut self, serve: bool) -> Self {
        self.settings.dashboard = serve;
        self
    }

    /// A read-only dashboard: it shows no actions (retry, cancel, delete, run now, re-drive,
    /// seek) and refuses them (default: off).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let server = pgbroker_http::Server::builder(broker).read_only(true).start()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.settings.read_only = read_only;
        self
    }

    /// Serves a fixed HTML page at `path` to `GET`, without asking the auth hook: the page
    /// holds no data, and what it fetches is authorized as usual (default: no pages).
    pub fn page(mut self, path: impl Into<String>, html: impl Into<String>) -> Self {
        let html: String = html.into();
        self.settings.pages.push((path.into(), html.into()));
        self
    }

    /// Binds, starts the accept thread, the shared SSE reader and webhook delivery, and
    /// returns the handle. Fails with [`ErrorKind::Config`] when the address is not loopback
    /// and there is no auth hook (nor [`allow_anyone`](Self::allow_anyone)), and with
    /// [`ErrorKind::Io`] when it cannot bind.
    pub fn start(self) -> Result<ServerHandle> {
        let addrs: Vec<SocketAddr> = self
            .listen
            .to_socket_addrs()
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Config,
                    format!("invalid listen address {:?}", self.listen),
                    e,
                )
            })?
            .collect();
        if self.auth.is_none() && !self.allow_anyone && addrs.iter().any(|a| !a.ip().is_loopback())
        {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "refusing to serve {} without authentication: give an auth hook (bearer \
                     tokens) or allow anyone explicitly",
                    self.listen
                ),
            ));
        }
        let listener = TcpListener::bind(&addrs[..]).map_err(|e| {
            Error::with_source(ErrorKind::Io, format!("binding {}", self.listen), e)
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::with_source(ErrorKind::Io, "local address", e))?;
        let metrics = Arc::new(ServerMetrics::default());
        let hub = Hub::start(self.broker.clone(), self.settings.clone(), metrics.clone())?;
        let shared = Arc::new(Shared {
            broker: self.broker.clone(),
            settings: self.settings.clone(),
            auth: self.auth,
            metrics: metrics.clone(),
            hub,
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Connections::default()),
        });
        let deliveries = if self.settings.webhooks {
            Some(Deliveries::start(
                self.broker.clone(),
                self.settings.clone(),
                metrics.clone(),
            )?)
        } else {
            None
        };
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("pgbroker-http-accept".into())
                .spawn(move || accept_loop(listener, shared))
                .map_err(|e| Error::with_source(ErrorKind::Io, "starting the accept thread", e))?
        };
        Ok(ServerHandle {
            local,
            shared,
            accept: Some(accept),
            deliveries,
        })
    }
}

/// A running server; [`shutdown`](Self::shutdown) stops it (dropping it does too).
pub struct ServerHandle {
    local: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    deliveries: Option<Deliveries>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local)
            .finish()
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's counters.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.shared.metrics
    }

    /// Stops gracefully: stops accepting, ends every SSE stream and open connection (a
    /// request being answered finishes first), stops webhook delivery after the request in
    /// flight, and joins every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop with a connection of our own.
        let _ = TcpStream::connect_timeout(&wake_addr(self.local), Duration::from_secs(1));
        let _ = accept.join();
        self.shared.hub.stop();
        if let Some(d) = self.deliveries.take() {
            d.stop();
        }
        let open: Vec<_> = {
            let mut c = lock(&self.shared.connections);
            c.open.drain().map(|(_, v)| v).collect()
        };
        // Idle keep-alive connections and SSE streams end now; a thread answering a request
        // finds its socket closed only when it writes.
        for (stream, _) in &open {
            let _ = stream.shutdown(Shutdown::Read);
        }
        for (stream, thread) in open {
            if let Some(t) = thread {
                let _ = t.join();
            }
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wake_addr(local: SocketAddr) -> SocketAddr {
    let mut a = local;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // EMFILE and friends: do not spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        add(&shared.metrics.connections_total, 1);
        let _ = stream.set_nodelay(true);
        let open = lock(&shared.connections).open.len();
        if open >= shared.settings.max_connections {
            add(&shared.metrics.connections_refused, 1);
            let mut s = stream;
            let _ = Response::error(503, "too_many_connections", "too many connections")
                .write_to(&mut s, false);
            continue;
        }
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let mut conns = lock(&shared.connections);
        let id = conns.next;
        conns.next += 1;
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("pgbroker-http-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                add(&thread_shared.metrics.connections_open, 1);
                serve_connection(stream, &thread_shared);
                sub(&thread_shared.metrics.connections_open, 1);
                lock(&thread_shared.connections).open.remove(&id);
            });
        match spawned {
            Ok(handle) => {
                conns.open.insert(id, (clone, Some(handle)));
            }
            Err(e) => log::warn!("pgbroker-http: cannot start a connection thread: {e}"),
        }
    }
}

fn serve_connection(stream: TcpStream, shared: &Arc<Shared>) {
    let _ = stream.set_read_timeout(Some(shared.settings.idle_timeout));
    let _ = stream.set_write_timeout(Some(shared.settings.write_timeout));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let req = match read_request(&mut reader, shared.settings.body_limit) {
            Ok(r) => r,
            Err(ReadError::Closed) | Err(ReadError::Io(_)) => return,
            Err(e) => {
                let resp = match e {
                    ReadError::TooLarge { limit, length } => Response::error(
                        413,
                        "body_too_large",
                        format!("the body ({length} bytes) is over the limit of {limit} bytes"),
                    ),
                    ReadError::LengthRequired => Response::error(
                        411,
                        "length_required",
                        "send the body with a Content-Length (chunked bodies are not accepted)",
                    ),
                    ReadError::Malformed(m) => Response::error(400, "bad_request", m),
                    ReadError::Closed | ReadError::Io(_) => return,
                };
                count_status(shared, resp.status);
                let _ = resp.write_to(&mut out, false);
                let _ = out.flush();
                // Read (a little of) what the client still sends: closing a socket with
                // unread data resets it, and the client could miss the answer.
                let _ = out.shutdown(Shutdown::Write);
                let _ = reader
                    .get_ref()
                    .set_read_timeout(Some(Duration::from_millis(500)));
                let _ = std::io::copy(
                    &mut std::io::Read::take(&mut reader, 4 * 1024 * 1024),
                    &mut std::io::sink(),
                );
                return;
            }
        };
        add(&shared.metrics.requests, 1);
        let keep_alive = req.keep_alive && !shared.stopping.load(Ordering::SeqCst);
        match route(shared, &req) {
            Reply::Response(resp) => {
                count_status(shared, resp.status);
                if resp.write_to(&mut out, keep_alive).is_err() || !keep_alive {
                    return;
                }
            }
            Reply::Stream(stream) => {
                stream.run(shared, out);
                return;
            }
        }
    }
}

fn count_status(shared: &Shared, status: u16) {
    match status {
        400..=499 => add(&shared.metrics.responses_4xx, 1),
        500..=599 => add(&shared.metrics.responses_5xx, 1),
        _ => {}
    }
}
