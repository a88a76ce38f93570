//! Where and how to connect, the way libpq does it: connection strings in both forms, the
//! `PG*` variables and libpq's defaults for what a string leaves out, the password file, and
//! TLS with libpq's `sslmode` meanings. Every connection pgbroker opens (pool, listeners,
//! benchmark) goes through [`Target::connect`], which bounds the whole startup by the connect
//! timeout and explains failures in words.

mod conninfo;
mod environment;
mod failure;
mod pgpass;
mod tls;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use postgres::config::Host;
use postgres::Client;

pub(crate) use environment::process_env;
use environment::Lookup;
use tls::{Connector, Roots, SslMode, TlsSettings};

use crate::{Error, ErrorKind, Result};

thread_local! {
    /// The database of the last pooled connection this thread took: named by the error that
    /// says the pgbroker schema is missing (see `Error::from(postgres::Error)`).
    static DATABASE: std::cell::RefCell<Option<std::sync::Arc<str>>> = const { std::cell::RefCell::new(None) };
}

/// Notes that this thread now works on `dbname`.
pub(crate) fn note_database(dbname: &std::sync::Arc<str>) {
    DATABASE.with(|d| {
        let mut d = d.borrow_mut();
        if !d
            .as_ref()
            .is_some_and(|cur| std::sync::Arc::ptr_eq(cur, dbname))
        {
            *d = Some(dbname.clone());
        }
    });
}

/// The database this thread last worked on, if known.
pub(crate) fn noted_database() -> Option<std::sync::Arc<str>> {
    DATABASE.with(|d| d.borrow().clone())
}

/// libpq settings pgbroker does not implement; refused rather than silently ignored.
const UNSUPPORTED: &[&str] = &[
    "service",
    "sslcrl",
    "sslcrldir",
    "requirepeer",
    "krbsrvname",
    "gsslib",
    "require_auth",
];

/// A server to connect to and how: the `postgres::Config` plus the TLS connector.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pg: postgres::Config,
    tls: TlsSettings,
    connector: Connector,
}

impl Target {
    /// Reads a connection string as libpq does: its own settings, then the `PG*` variables
    /// (through `env`), then libpq's defaults. An empty string is all environment.
    pub(crate) fn from_string(s: &str, env: Lookup<'_>) -> Result<Target> {
        let mut settings = conninfo::Settings::parse(s)?;
        environment::apply(&mut settings, env);
        for key in UNSUPPORTED {
            if settings.get(key).is_some() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("the connection setting `{key}` is not supported by pgbroker"),
                ));
            }
        }
        match settings.take("gssencmode").as_deref() {
            None | Some("disable" | "prefer") => {}
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("gssencmode={other} is not supported: pgbroker encrypts with TLS only"),
                ))
            }
        }
        let home = environment::home(env);
        let passfile = settings.take("passfile");
        let mut tls = TlsSettings::resolve(
            settings.take("sslmode").as_deref(),
            settings.take("sslrootcert").as_deref(),
            settings.take("sslcert").as_deref(),
            settings.take("sslkey").as_deref(),
            settings.take("sslpassword"),
            home.as_deref(),
        )?;
        if settings.get("password").is_none() {
            let file = passfile
                .map(std::path::PathBuf::from)
                .or_else(|| home.map(|h| h.join(".pgpass")));
            if let Some(pw) = file.and_then(|f| password_from_file(&f, &settings)) {
                settings.set("password", pw);
            }
        }
        let mut pg: postgres::Config =
            settings
                .to_keyword_string()
                .parse()
                .map_err(|e: postgres::Error| {
                    let why =
                        std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
                    Error::explained(
                        ErrorKind::Config,
                        format!("invalid connection string{why}"),
                        e,
                    )
                })?;
        if only_sockets(&pg) {
            // libpq never uses TLS over a Unix socket, whatever sslmode says.
            tls.mode = SslMode::Disable;
        }
        pg.ssl_mode(tls.mode.negotiation());
        let connector = tls::connector(&tls)?;
        Ok(Target { pg, tls, connector })
    }

    /// A target for a prebuilt `postgres::Config`: its `ssl_mode` (disable, prefer, require)
    /// encrypts without verifying the server, as libpq's modes of those names do.
    pub(crate) fn from_pg_config(pg: postgres::Config) -> Result<Target> {
        let tls = TlsSettings::unverified(pg.get_ssl_mode());
        let connector = tls::connector(&tls)?;
        Ok(Target { pg, tls, connector })
    }

    pub(crate) fn pg(&self) -> &postgres::Config {
        &self.pg
    }

    pub(crate) fn pg_mut(&mut self) -> &mut postgres::Config {
        &mut self.pg
    }

    /// The database name (libpq's default: the user name).
    pub(crate) fn dbname(&self) -> &str {
        self.pg
            .get_dbname()
            .or(self.pg.get_user())
            .unwrap_or("postgres")
    }

    /// libpq's name of the TLS mode in use (`verify-full`, ...).
    pub(crate) fn sslmode(&self) -> &'static str {
        self.tls.mode.as_str()
    }

    /// Opens a connection. The whole startup (TCP, TLS, authentication) must finish within
    /// the connect timeout per host, so a server that accepts the connection but never
    /// answers fails with [`ErrorKind::Timeout`] instead of hanging.
    pub(crate) fn connect(&self) -> Result<Client> {
        /// Attempts stuck on a silent server; each holds a thread until the server answers
        /// or closes. Past this many, new attempts fail at once instead of adding threads.
        const MAX_WAITING: usize = 16;
        static WAITING: AtomicUsize = AtomicUsize::new(0);

        let per_host = self
            .pg
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10));
        let hosts = self
            .pg
            .get_hosts()
            .len()
            .max(self.pg.get_hostaddrs().len())
            .max(1);
        // A little past postgres's own TCP timeout, so that its message wins when it applies.
        let deadline = per_host * hosts as u32 + Duration::from_millis(250);
        let waiting = WAITING.load(Ordering::Relaxed);
        if waiting >= MAX_WAITING {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{waiting} earlier connection attempts to {} are still waiting for the server to answer",
                    self.endpoints()
                ),
            ));
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (pg, connector) = (self.pg.clone(), self.connector.clone());
        WAITING.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("pgbroker-connect".into())
            .spawn(move || {
                let result = connector.connect(&pg);
                WAITING.fetch_sub(1, Ordering::Relaxed);
                // The caller may have given up; then the client is dropped (closed) here.
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            WAITING.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::with_cause(
                ErrorKind::Io,
                Some("starting a connection thread".into()),
                e,
            ));
        }
        match rx.recv_timeout(deadline) {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(self.explain(e)),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{} accepted the connection but did not complete the PostgreSQL startup within {:?} \
                     (connect_timeout): is it a PostgreSQL server or pooler, and is it overloaded?",
                    self.endpoints(),
                    per_host
                ),
            )),
        }
    }

    fn explain(&self, e: postgres::Error) -> Error {
        let endpoints = self.endpoints();
        let attempt = failure::Attempt {
            endpoints: &endpoints,
            user: self.pg.get_user(),
            dbname: self.pg.get_dbname(),
            sslmode: self.sslmode(),
            rootcert: match &self.tls.roots {
                Roots::File(p) => Some(p.display().to_string()),
                Roots::System => Some("system".into()),
                Roots::None => None,
            },
            host_names: self
                .pg
                .get_hosts()
                .iter()
                .filter_map(|h| match h {
                    Host::Tcp(name) => Some(name.clone()),
                    _ => None,
                })
                .collect(),
        };
        failure::explain(e, &attempt)
    }

    /// `host:port` of each server, `socket /dir/.s.PGSQL.port` for Unix sockets.
    pub(crate) fn endpoints(&self) -> String {
        let ports = self.pg.get_ports();
        let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let mut out: Vec<String> = Vec::new();
        let hosts = self.pg.get_hosts();
        let addrs = self.pg.get_hostaddrs();
        for i in 0..hosts.len().max(addrs.len()) {
            let p = port(i);
            let name = match (hosts.get(i), addrs.get(i)) {
                (Some(Host::Tcp(h)), _) if h.contains(':') => format!("[{h}]:{p}"),
                (Some(Host::Tcp(h)), _) => format!("{h}:{p}"),
                (Some(Host::Unix(path)), _) => {
                    format!("socket {}/.s.PGSQL.{p}", path.display())
                }
                (None, Some(addr)) if addr.is_ipv6() => format!("[{addr}]:{p}"),
                (None, Some(addr)) => format!("{addr}:{p}"),
                (None, None) => continue,
            };
            out.push(name);
        }
        if out.is_empty() {
            "the server".into()
        } else {
            out.join(", ")
        }
    }
}

fn only_sockets(pg: &postgres::Config) -> bool {
    !pg.get_hosts().is_empty()
        && pg.get_hostaddrs().is_empty()
        && pg.get_hosts().iter().all(|h| !matches!(h, Host::Tcp(_)))
}

fn password_from_file(path: &std::path::Path, s: &conninfo::Settings) -> Option<String> {
    let host = s
        .get("host")
        .or(s.get("hostaddr"))
        .and_then(|h| h.split(',').next())
        .unwrap_or("localhost");
    let port = s
        .get("port")
        .and_then(|p| p.split(',').next())
        .unwrap_or("5432");
    let user = s.get("user")?;
    let who = pgpass::Lookup {
        host,
        port,
        dbname: s.get("dbname").unwrap_or(user),
        user,
    };
    pgpass::find(path, &who)
}

#[cfg(test)]
mod test {
    use super::*;

    fn target(s: &str, env: &[(&str, &str)]) -> Result<Target> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Target::from_string(s, &move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn libpq_forms_become_one_config() {
        let t = target("postgres:///app", &[]).unwrap();
        assert_eq!(t.endpoints(), "socket /var/run/postgresql/.s.PGSQL.5432");
        assert_eq!(t.sslmode(), "disable", "no TLS over a Unix socket");
        assert_eq!(t.pg().get_dbname(), Some("app"));

        let t = target(
            "",
            &[
                ("PGHOST", "db1,db2"),
                ("PGPORT", "5433,5434"),
                ("PGUSER", "u"),
            ],
        )
        .unwrap();
        assert_eq!(t.endpoints(), "db1:5433, db2:5434");
        assert_eq!(t.pg().get_user(), Some("u"));
        assert_eq!(t.sslmode(), "prefer");

        let t = target("host=::1 port=6000 sslmode=require", &[]).unwrap();
        assert_eq!(t.endpoints(), "[::1]:6000");
        assert_eq!(t.pg().get_ssl_mode(), postgres::config::SslMode::Require);

        let err = target("host=h sslcrl=/x", &[]).unwrap_err();
        assert!(
            err.to_string().contains("`sslcrl` is not supported"),
            "{err}"
        );
        let err = target("host=h nonsense=1", &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("nonsense"), "{err}");
    }

    #[test]
    fn password_file_fills_a_missing_password() {
        use std::os::unix::fs::PermissionsExt;
        let path =
            std::env::temp_dir().join(format!("pgbroker-target-pgpass-{}", std::process::id()));
        std::fs::write(&path, "h:5432:app:u:from-file\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = path.to_str().unwrap();
        let t = target("postgres://u@h/app", &[("PGPASSFILE", file)]).unwrap();
        assert_eq!(t.pg().get_password(), Some(&b"from-file"[..]));
        let t = target("postgres://u:given@h/app", &[("PGPASSFILE", file)]).unwrap();
        assert_eq!(t.pg().get_password(), Some(&b"given"[..]));
        let t = target(
            "postgres://u@h/app",
            &[("PGPASSFILE", file), ("PGPASSWORD", "env")],
        )
        .unwrap();
        assert_eq!(t.pg().get_password(), Some(&b"env"[..]));
        std::fs::remove_file(&path).unwrap();
    }
}
