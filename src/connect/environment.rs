//! libpq's environment and defaults: what a connection string leaves out comes from the `PG*`
//! variables, then from libpq's built-in defaults (the local socket directory, port 5432, the
//! operating-system user name), exactly as `psql` resolves it.

use super::conninfo::Settings;

/// Reads an environment variable; the real one is `std::env::var`, tests pass a map.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty values counting as unset (as libpq does).
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// libpq's variables and the settings they fill.
const VARIABLES: &[(&str, &str)] = &[
    ("PGHOST", "host"),
    ("PGHOSTADDR", "hostaddr"),
    ("PGPORT", "port"),
    ("PGDATABASE", "dbname"),
    ("PGUSER", "user"),
    ("PGPASSWORD", "password"),
    ("PGPASSFILE", "passfile"),
    ("PGOPTIONS", "options"),
    ("PGAPPNAME", "application_name"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLCERT", "sslcert"),
    ("PGSSLKEY", "sslkey"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGSSLNEGOTIATION", "sslnegotiation"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
    ("PGTARGETSESSIONATTRS", "target_session_attrs"),
    ("PGCHANNELBINDING", "channel_binding"),
    ("PGLOADBALANCEHOSTS", "load_balance_hosts"),
    ("PGGSSENCMODE", "gssencmode"),
];

/// libpq's default socket directory on Debian, Ubuntu and most Linux packages.
pub(crate) const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Fills what `settings` leaves out from the environment, then from libpq's defaults.
pub(crate) fn apply(settings: &mut Settings, env: Lookup<'_>) {
    for (var, key) in VARIABLES {
        if settings.get(key).is_none() {
            if let Some(v) = env(var) {
                settings.set(key, v);
            }
        }
    }
    if settings.get("host").is_none() && settings.get("hostaddr").is_none() {
        settings.set("host", DEFAULT_SOCKET_DIR.into());
    }
    if settings.get("user").is_none() {
        if let Some(user) = os_user(env) {
            settings.set("user", user);
        }
    }
}

/// The name of the user this process runs as (libpq's default database user).
fn os_user(env: Lookup<'_>) -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned))
        });
    let from_passwd = uid.and_then(|uid| {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned())
        })
    });
    from_passwd
        .or_else(|| env("USER"))
        .or_else(|| env("LOGNAME"))
}

/// The home directory, for `~/.pgpass` and `~/.postgresql/`.
pub(crate) fn home(env: Lookup<'_>) -> Option<std::path::PathBuf> {
    env("HOME").map(std::path::PathBuf::from)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_string_wins_then_variables_then_defaults() {
        let env = |k: &str| match k {
            "PGHOST" => Some("envhost".to_owned()),
            "PGUSER" => Some("envuser".to_owned()),
            "PGSSLMODE" => Some("verify-full".to_owned()),
            _ => None,
        };
        let mut s = Settings::parse("postgres://h/app").unwrap();
        apply(&mut s, &env);
        assert_eq!(s.get("host"), Some("h"));
        assert_eq!(s.get("user"), Some("envuser"));
        assert_eq!(s.get("sslmode"), Some("verify-full"));

        let mut s = Settings::parse("").unwrap();
        apply(&mut s, &|_| None);
        assert_eq!(s.get("host"), Some(DEFAULT_SOCKET_DIR));
        assert!(s.get("user").is_some(), "the OS user");
        assert_eq!(s.get("port"), None);
    }
}
