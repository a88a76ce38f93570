//! The password file (`~/.pgpass`, or `passfile` / `$PGPASSFILE`): lines of
//! `hostname:port:database:username:password`, `*` matching anything, `\:` and `\\` escaped.
//! As in libpq, a file that others can read is ignored (with a warning), and a Unix-socket
//! connection matches the host name `localhost`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Who is connecting where: the fields a line must match.
pub(crate) struct Lookup<'a> {
    pub host: &'a str,
    pub port: &'a str,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// The password for `who` from the file at `path`, if the file exists, is private and has a
/// matching line.
pub(crate) fn find(path: &Path, who: &Lookup<'_>) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "password file {} has group or world access; permissions should be u=rw (0600) or less: ignored",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    find_in(&text, who)
}

fn find_in(text: &str, who: &Lookup<'_>) -> Option<String> {
    let socket = who.host.starts_with('/');
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let f = fields(line);
            if f.len() < 5 {
                return None;
            }
            let host_ok = f[0] == "*" || f[0] == who.host || (socket && f[0] == "localhost");
            let ok = |field: &str, value: &str| field == "*" || field == value;
            (host_ok && ok(&f[1], who.port) && ok(&f[2], who.dbname) && ok(&f[3], who.user))
                .then(|| f[4..].join(":"))
        })
}

/// Splits a line on unescaped `:`, removing the escapes.
fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out
                .last_mut()
                .into_iter()
                .for_each(|f| f.extend(chars.next())),
            ':' => out.push(String::new()),
            c => out.last_mut().into_iter().for_each(|f| f.push(c)),
        }
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;

    const FILE: &str = "# comment\n\
        db.example:5432:app:alice:s3cr\\:et\n\
        *:*:*:bob:bobs\n\
        localhost:5433:*:carol:local\n";

    fn who<'a>(host: &'a str, port: &'a str, user: &'a str) -> Lookup<'a> {
        Lookup {
            host,
            port,
            dbname: "app",
            user,
        }
    }

    #[test]
    fn matches_as_libpq_does() {
        assert_eq!(
            find_in(FILE, &who("db.example", "5432", "alice")).as_deref(),
            Some("s3cr:et")
        );
        assert_eq!(find_in(FILE, &who("db.example", "5433", "alice")), None);
        assert_eq!(
            find_in(FILE, &who("x", "1", "bob")).as_deref(),
            Some("bobs")
        );
        assert_eq!(
            find_in(FILE, &who("/var/run/postgresql", "5433", "carol")).as_deref(),
            Some("local")
        );
        assert_eq!(find_in(FILE, &who("other", "5433", "carol")), None);
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        let dir = std::env::temp_dir().join(format!("pgbroker-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pgpass");
        std::fs::write(&path, "*:*:*:*:pw\n").unwrap();
        let all = who("h", "5432", "u");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find(&path, &all), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(find(&path, &all).as_deref(), Some("pw"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
