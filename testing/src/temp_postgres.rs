//! A private, throwaway PostgreSQL cluster for examples, tests and demos.
//!
//! [`TempPostgres::start`] runs `initdb` into a fresh directory under [`std::env::temp_dir`],
//! starts the server with `pg_ctl` on `127.0.0.1` and a free port, and removes everything
//! when dropped. Binaries are looked up in `$PGBROKER_PG_BINDIR`, then on `PATH`, then via
//! `pg_config --bindir`, then under `/usr/lib/postgresql/*/bin` (highest version). When the
//! process runs as root, `initdb` and `pg_ctl` run as the `postgres` OS user (else `nobody`).
//! Set `PGBROKER_KEEP_TEMP_PG=1` to keep the data directory after drop.

use crate::error::{Error, ErrorKind, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The database superuser created by `initdb` (trust authentication).
const DB_USER: &str = "postgres";
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Options for a [`TempPostgres`] cluster; create with [`TempPostgres::builder`].
///
/// # Examples
///
/// ```no_run
/// use pgbroker_testing::TempPostgres;
/// let pg = TempPostgres::builder().setting("max_wal_senders", "0").start()?;
/// # Ok::<(), pgbroker_testing::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct TempPostgresBuilder {
    settings: Vec<(String, String)>,
    durable: bool,
    /// Streaming replication allowed (see `standby.rs`).
    pub(crate) replication: bool,
}

impl TempPostgresBuilder {
    /// Adds a server setting, passed as `-c name=value` (later settings win).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use pgbroker_testing::TempPostgres;
    /// let pg = TempPostgres::builder().setting("log_statement", "all").start()?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// When false (the default), runs with `fsync`, `synchronous_commit` and
    /// `full_page_writes` off: fast, but a crash of the machine may lose data.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use pgbroker_testing::TempPostgres;
    /// let pg = TempPostgres::builder().durable(true).start()?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Creates the cluster and starts the server; see [`TempPostgres::start`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use pgbroker_testing::TempPostgres;
    /// let pg = TempPostgres::builder().start()?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn start(self) -> Result<TempPostgres> {
        let mut pg = self.new_cluster_dir()?;
        let mut initdb = pg.command("initdb");
        initdb.arg("-D").arg(&pg.data_dir);
        initdb.args(["-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"]);
        initdb.arg(format!("--username={DB_USER}"));
        pg.run(initdb, "initdb")?;
        if self.replication {
            crate::standby::allow_replication(&pg)?;
        }
        self.launch(&mut pg)?;
        Ok(pg)
    }

    /// A fresh directory (owned by the unprivileged user when we are root) with an empty
    /// `data` directory in it, for `initdb` or `pg_basebackup`.
    pub(crate) fn new_cluster_dir(&self) -> Result<TempPostgres> {
        let bin_dir = find_bin_dir()?;
        let run_as = if is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("pgbroker-pg-{}-{n}-{nanos}", std::process::id());
        let root = std::env::temp_dir().join(name);
        std::fs::create_dir(&root)?;
        let pg = TempPostgres {
            data_dir: root.join("data"),
            root,
            bin_dir,
            run_as,
            port: 0,
            options: String::new(),
            builder: self.clone(),
            guardian: None,
        };
        std::fs::create_dir(&pg.data_dir)?;
        if let Some(u) = &pg.run_as {
            std::os::unix::fs::chown(&pg.root, Some(u.uid), Some(u.gid))?;
            std::os::unix::fs::chown(&pg.data_dir, Some(u.uid), Some(u.gid))?;
        }
        Ok(pg)
    }

    /// Starts the server of a ready data directory on a free port (retrying when another
    /// process took the port meanwhile) and arms the cleanup guardian.
    pub(crate) fn launch(&self, pg: &mut TempPostgres) -> Result<()> {
        let mut attempt = 0;
        loop {
            pg.port = free_port()?;
            pg.options = self.options(pg.port);
            let _ = std::fs::remove_file(pg.log_file());
            match pg.resume() {
                Ok(()) => return pg.spawn_guardian(),
                Err(_) if attempt < 4 && port_taken(&pg.log_tail()) => attempt += 1,
                Err(e) => return Err(e),
            }
            log::debug!("temp postgres: port {} was taken, retrying", pg.port);
        }
    }

    fn options(&self, port: u16) -> String {
        let mut s: Vec<(String, String)> = vec![("unix_socket_directories".into(), "".into())];
        if !self.durable {
            for name in ["fsync", "synchronous_commit", "full_page_writes"] {
                s.push((name.into(), "off".into()));
            }
        }
        s.push(("max_connections".into(), "200".into()));
        s.push(("shared_buffers".into(), "128MB".into()));
        if self.replication {
            s.extend(crate::standby::replication_settings());
        }
        s.extend(self.settings.iter().cloned());
        s.push(("listen_addresses".into(), "127.0.0.1".into()));
        s.push(("port".into(), port.to_string()));
        let args: Vec<String> = s
            .iter()
            .map(|(k, v)| format!("-c {}", shell_quote(&format!("{k}={v}"))))
            .collect();
        args.join(" ")
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// A throwaway PostgreSQL cluster, stopped and deleted on drop.
///
/// # Examples
///
/// ```no_run
/// use pgbroker_testing::TempPostgres;
/// let pg = TempPostgres::start()?;
/// let mut client = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
/// client.batch_execute("SELECT 1").unwrap();
/// # Ok::<(), pgbroker_testing::Error>(())
/// ```
#[derive(Debug)]
pub struct TempPostgres {
    root: PathBuf,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    options: String,
    /// The options it was started with (a standby starts with the same).
    pub(crate) builder: TempPostgresBuilder,
    /// Stops the cluster and deletes its directory when this process ends without dropping us
    /// (a `static`, a panic that aborts, SIGKILL): see `spawn_guardian`.
    guardian: Option<(std::process::Child, std::process::ChildStdin)>,
}

impl TempPostgres {
    /// Runs `initdb` into a fresh temporary directory, starts the server on `127.0.0.1` and a
    /// free port and waits until it accepts connections. Fails with [`ErrorKind::Config`] when
    /// no PostgreSQL binaries are installed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use pgbroker_testing::TempPostgres;
    /// let pg = TempPostgres::start()?;
    /// println!("{}", pg.url());
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn start() -> Result<TempPostgres> {
        Self::builder().start()
    }

    /// A builder for extra server settings.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use pgbroker_testing::TempPostgres;
    /// let pg = TempPostgres::builder().setting("work_mem", "16MB").start()?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn builder() -> TempPostgresBuilder {
        TempPostgresBuilder::default()
    }

    /// The URL of the `postgres` database, as the superuser: `postgres://postgres@127.0.0.1:PORT/postgres`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let pg = pgbroker_testing::TempPostgres::start()?;
    /// let client = postgres::Client::connect(&pg.url(), postgres::NoTls);
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `dbname` on this cluster (create it first).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let pg = pgbroker_testing::TempPostgres::start()?;
    /// assert!(pg.url_for("app").ends_with("/app"));
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn url_for(&self, dbname: &str) -> String {
        format!("postgres://{DB_USER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// The TCP port the server listens on (on `127.0.0.1`); it stays the same across restarts.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let pg = pgbroker_testing::TempPostgres::start()?;
    /// println!("port {}", pg.port());
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database superuser name (`postgres`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let pg = pgbroker_testing::TempPostgres::start()?;
    /// assert_eq!(pg.user(), "postgres");
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn user(&self) -> &str {
        DB_USER
    }

    /// The cluster's data directory (it holds `server.log`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let pg = pgbroker_testing::TempPostgres::start()?;
    /// println!("{}", pg.data_dir().join("server.log").display());
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server (`pg_ctl stop -m fast`), keeping the data; [`resume`](Self::resume)
    /// starts it again.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let pg = pgbroker_testing::TempPostgres::start()?;
    /// pg.stop()?;
    /// pg.resume()?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn stop(&self) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir);
        cmd.args(["-m", "fast", "-w", "-t", "60", "stop"]);
        self.run(cmd, "pg_ctl stop")
    }

    /// Starts the stopped server again, on the same port with the same data, and waits until
    /// it accepts connections.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let pg = pgbroker_testing::TempPostgres::start()?;
    /// pg.stop()?;
    /// pg.resume()?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn resume(&self) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_file());
        cmd.args(["-w", "-t", "60", "start", "-o", &self.options]);
        self.run(cmd, "pg_ctl start")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if Instant::now() > deadline {
                let msg = format!("server started but port {} refuses connections", self.port);
                return Err(Error::new(ErrorKind::Io, msg));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the server ([`stop`](Self::stop)) and starts it again ([`resume`](Self::resume)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let pg = pgbroker_testing::TempPostgres::start()?;
    /// pg.restart()?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.resume()
    }

    fn log_file(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read(self.log_file()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A command for one of the binaries, run as the unprivileged user when we are root.
    pub(crate) fn command(&self, program: &str) -> Command {
        self.command_at(&self.bin_dir.join(program))
    }

    /// Starts a shell that waits for its stdin (a pipe only this process holds) to close, then
    /// stops the cluster and removes its directory. The pipe closes when this value is dropped
    /// or when the process ends in any way, so no cluster outlives the process that started it.
    /// The shell ignores the signals a Ctrl-C or a terminal hang-up sends to the process group.
    fn spawn_guardian(&mut self) -> Result<()> {
        const SCRIPT: &str = "trap '' INT TERM HUP
            read _ignored
            \"$1\" -D \"$2\" -m immediate -w -t 30 stop >/dev/null 2>&1
            [ \"$PGBROKER_KEEP_TEMP_PG\" = 1 ] || rm -rf \"$3\"";
        let mut cmd = self.command_at(Path::new("/bin/sh"));
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("pgbroker-temp-postgres-guardian")
            .arg(self.bin_dir.join("pg_ctl"))
            .arg(&self.data_dir)
            .arg(&self.root)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().map_err(|e| {
            Error::with_cause(
                ErrorKind::Io,
                Some("starting the cleanup guardian".into()),
                e,
            )
        })?;
        match child.stdin.take() {
            Some(stdin) => {
                self.guardian = Some((child, stdin));
                Ok(())
            }
            None => Err(Error::new(ErrorKind::Io, "cleanup guardian has no stdin")),
        }
    }

    fn command_at(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root);
        for var in ["PGDATA", "PGPORT", "PGHOST"] {
            cmd.env_remove(var);
        }
        if let Some(u) = &self.run_as {
            cmd.uid(u.uid).gid(u.gid);
            cmd.env("HOME", &self.root)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name);
        }
        cmd
    }

    pub(crate) fn run(&self, mut cmd: Command, what: &str) -> Result<()> {
        let out = cmd
            .output()
            .map_err(|e| Error::with_cause(ErrorKind::Io, Some(format!("running {what}")), e))?;
        if out.status.success() {
            return Ok(());
        }
        let mut msg = format!("{what} failed ({})", out.status);
        for stream in [&out.stdout, &out.stderr] {
            let s = String::from_utf8_lossy(stream);
            if !s.trim().is_empty() {
                msg.push_str(&format!("\n{}", s.trim_end()));
            }
        }
        let tail = self.log_tail();
        if !tail.is_empty() {
            msg.push_str(&format!("\nserver.log (tail):\n{tail}"));
        }
        Err(Error::new(ErrorKind::Io, msg))
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let mut cmd = self.command("pg_ctl");
            cmd.arg("-D").arg(&self.data_dir);
            cmd.args(["-m", "immediate", "-w", "-t", "30", "stop"]);
            let _ = cmd.output();
        }
        if std::env::var("PGBROKER_KEEP_TEMP_PG").is_ok_and(|v| v == "1") {
            log::info!("keeping temp postgres data dir {}", self.data_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
        // Everything is done: closing the pipe lets the guardian exit (finding nothing to do).
        if let Some((mut child, stdin)) = self.guardian.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn port_taken(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Quotes `s` for `/bin/sh` (pg_ctl passes `-o` through the shell).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn has_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PGBROKER_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_binaries(&dir) {
            return Ok(dir);
        }
        let msg = format!("PGBROKER_PG_BINDIR={} lacks initdb/pg_ctl", dir.display());
        return Err(Error::new(ErrorKind::Config, msg));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| {
            std::fs::canonicalize(d.join("initdb"))
                .ok()?
                .parent()
                .map(PathBuf::from)
        });
    let pg_config = Command::new("pg_config").arg("--bindir").output().ok();
    let pg_config = pg_config
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let versioned = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| Some(e.ok()?.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    on_path
        .chain(pg_config)
        .chain(highest_version(versioned))
        .find(|d| has_binaries(d))
        .ok_or_else(|| {
            let msg = "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH, via \
                pg_config or under /usr/lib/postgresql; install them (e.g. `apt-get install \
                postgresql`) or set PGBROKER_PG_BINDIR";
            Error::new(ErrorKind::Config, msg)
        })
}

/// `/usr/lib/postgresql/<version>/bin` directories, highest version first.
fn highest_version(mut dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    let version = |d: &PathBuf| -> Vec<u32> {
        let name = d.parent().and_then(|p| p.file_name()).unwrap_or_default();
        name.to_string_lossy()
            .split('.')
            .filter_map(|s| s.parse().ok())
            .collect()
    };
    dirs.sort_by_key(|d| std::cmp::Reverse(version(d)));
    dirs
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match status.lines().find_map(|l| l.strip_prefix("Uid:")) {
        Some(ids) => ids.split_whitespace().nth(1) == Some("0"),
        None => Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0"),
    }
}

/// The `postgres` OS user from /etc/passwd, else `nobody`.
fn unprivileged_user() -> Result<RunAs> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let find = |name: &str| {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| {
                let (uid, gid) = (f[2].parse().ok()?, f[3].parse().ok()?);
                Some(RunAs {
                    name: name.into(),
                    uid,
                    gid,
                })
            })?
        })
    };
    find("postgres").or_else(|| find("nobody")).ok_or_else(|| {
        let msg = "running as root, but no `postgres` or `nobody` user to run PostgreSQL as";
        Error::new(ErrorKind::Config, msg)
    })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let dirs = ["9.6", "15", "10", "16"].map(|v| PathBuf::from(format!("/x/{v}/bin")));
        let sorted = highest_version(dirs.to_vec());
        assert_eq!(sorted[0], PathBuf::from("/x/16/bin"));
        assert_eq!(sorted[3], PathBuf::from("/x/9.6/bin"));
    }

    #[test]
    fn helpers() {
        assert_ne!(free_port().unwrap(), 0);
        assert_eq!(shell_quote("a='b c'"), r"'a='\''b c'\'''");
        assert!(port_taken("LOG: could not bind IPv4 address"));
        let b = TempPostgres::builder()
            .setting("work_mem", "1MB")
            .options(5);
        assert!(b.contains("-c 'fsync=off'") && b.ends_with("-c 'port=5'"));
        assert!(!TempPostgres::builder()
            .durable(true)
            .options(5)
            .contains("fsync"));
    }
}
