//! Streaming replication for [`TempPostgres`]: a primary that accepts replication
//! connections, hot standbys cloned from it with `pg_basebackup`, and promotion.
//!
//! ```no_run
//! use pgbroker_testing::TempPostgres;
//! let primary = TempPostgres::builder().replication(true).start()?;
//! let standby = primary.start_standby(false)?; // asynchronous, read-only, streaming
//! primary.stop()?;
//! standby.promote()?; // now it accepts writes
//! # Ok::<(), pgbroker_testing::Error>(())
//! ```

use crate::error::{Error, ErrorKind, Result};
use crate::temp_postgres::{TempPostgres, TempPostgresBuilder};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// How long a new standby may take to stream, and a promotion to finish.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl TempPostgresBuilder {
    /// When true, the cluster accepts streaming replication from
    /// [`start_standby`](TempPostgres::start_standby): `wal_level=replica`,
    /// `max_wal_senders=10`, `wal_keep_size=256MB` (so a standby that falls behind can catch
    /// up without a slot) and a `host replication` line for the superuser in `pg_hba.conf`.
    /// Default: false (PostgreSQL's own defaults).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use pgbroker_testing::TempPostgres;
    /// let primary = TempPostgres::builder().replication(true).start()?;
    /// let standby = primary.start_standby(false)?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn replication(mut self, on: bool) -> Self {
        self.replication = on;
        self
    }
}

impl TempPostgres {
    /// Clones this cluster with `pg_basebackup -R` into a fresh directory and starts it as a
    /// hot standby (read-only, streaming from this server) on its own port, with the same
    /// settings; returns once it accepts connections and streams. When `synchronous`, it is
    /// made this server's synchronous standby (`synchronous_standby_names`, then a reload):
    /// commits on this server then wait for the standby to flush them — so drop or stop the
    /// primary before (or together with) a synchronous standby, or writes block. The standby
    /// is stopped and deleted on drop like any `TempPostgres`.
    ///
    /// Fails with [`ErrorKind::Io`] when this cluster was not built with
    /// [`replication(true)`](TempPostgresBuilder::replication) or the copy fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use pgbroker_testing::TempPostgres;
    /// let primary = TempPostgres::builder().replication(true).start()?;
    /// let standby = primary.start_standby(true)?;
    /// let mut c = postgres::Client::connect(&standby.url(), postgres::NoTls).unwrap();
    /// let row = c.query_one("SELECT pg_is_in_recovery()", &[]).unwrap();
    /// assert!(row.get::<_, bool>(0));
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn start_standby(&self, synchronous: bool) -> Result<TempPostgres> {
        if !self.builder.replication {
            let msg = "start_standby needs a primary built with .replication(true)";
            return Err(Error::new(ErrorKind::Config, msg));
        }
        let mut standby = self.builder.new_cluster_dir()?;
        // pg_basebackup keeps an existing directory's mode; the server insists on 0700.
        std::fs::set_permissions(standby.data_dir(), std::fs::Permissions::from_mode(0o700))?;
        let name = format!("pgbroker_standby_{}", standby_number(&standby));
        let mut basebackup = standby.command("pg_basebackup");
        basebackup
            .arg("-D")
            .arg(standby.data_dir())
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-d"])
            .arg(format!(
                "host=127.0.0.1 port={} user={} application_name={name}",
                self.port(),
                self.user()
            ));
        standby.run(basebackup, "pg_basebackup")?;
        forget_synchronous_standbys(&standby)?;
        self.builder.launch(&mut standby)?;
        if synchronous {
            let mut primary = self.connect()?;
            // A name is an identifier here; ours are plain, quoting keeps them exact.
            let value = format!("\"{name}\"");
            primary.batch_execute(&format!(
                "ALTER SYSTEM SET synchronous_standby_names = '{value}'"
            ))?;
            primary.batch_execute("SELECT pg_reload_conf()")?;
        }
        self.wait_streaming(&name, synchronous)?;
        Ok(standby)
    }

    /// Promotes this standby to a primary (`pg_ctl promote`) and waits until it accepts
    /// writes. Fails when it is not a standby.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use pgbroker_testing::TempPostgres;
    /// let primary = TempPostgres::builder().replication(true).start()?;
    /// let standby = primary.start_standby(false)?;
    /// primary.stop()?;
    /// standby.promote()?;
    /// # Ok::<(), pgbroker_testing::Error>(())
    /// ```
    pub fn promote(&self) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(self.data_dir());
        cmd.args(["-w", "-t", "60", "promote"]);
        self.run(cmd, "pg_ctl promote")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let writable = self.connect().and_then(|mut c| {
                c.batch_execute("CREATE TEMP TABLE pgbroker_promoted ()")?;
                Ok(())
            });
            match writable {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Waits until the standby called `name` streams from this server (and is its synchronous
    /// standby when `synchronous`).
    fn wait_streaming(&self, name: &str, synchronous: bool) -> Result<()> {
        let mut client = self.connect()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let row = client.query_opt(
                "SELECT sync_state FROM pg_stat_replication
                  WHERE application_name = $1 AND state = 'streaming'",
                &[&name],
            )?;
            let sync_state: Option<String> = row.map(|r| r.get(0));
            match sync_state.as_deref() {
                Some("sync") => return Ok(()),
                Some(_) if !synchronous => return Ok(()),
                _ if Instant::now() > deadline => {
                    let msg = format!(
                        "standby {name} did not start streaming{} within {READY_TIMEOUT:?}",
                        if synchronous { " synchronously" } else { "" }
                    );
                    return Err(Error::new(ErrorKind::Io, msg));
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn connect(&self) -> Result<postgres::Client> {
        Ok(postgres::Client::connect(&self.url(), postgres::NoTls)?)
    }
}

/// The settings a primary needs to serve standbys.
pub(crate) fn replication_settings() -> Vec<(String, String)> {
    [
        ("wal_level", "replica"),
        ("max_wal_senders", "10"),
        ("wal_keep_size", "256MB"),
        ("hot_standby", "on"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Lets the superuser open replication connections over TCP on loopback (an `initdb` with
/// `-A trust` usually has such a line already; an explicit one keeps it true everywhere).
pub(crate) fn allow_replication(pg: &TempPostgres) -> Result<()> {
    let mut hba = std::fs::OpenOptions::new()
        .append(true)
        .open(pg.data_dir().join("pg_hba.conf"))?;
    writeln!(hba, "host replication {} 127.0.0.1/32 trust", pg.user())?;
    Ok(())
}

/// The copy carries the primary's `ALTER SYSTEM` settings: a `synchronous_standby_names`
/// naming another standby would make the copy's writes wait forever once promoted.
fn forget_synchronous_standbys(standby: &TempPostgres) -> Result<()> {
    let path = standby.data_dir().join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&path)?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("synchronous_standby_names"))
        .collect();
    // Rewriting in place keeps the file's owner (the unprivileged user).
    std::fs::write(&path, kept.join("\n") + "\n")?;
    Ok(())
}

/// A number that tells this standby apart from others of the process (its directory's).
fn standby_number(standby: &TempPostgres) -> String {
    let dir = standby.data_dir().parent().and_then(|p| p.file_name());
    let dir = dir
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.rsplit('-').nth(1).unwrap_or("0").to_owned()
}
