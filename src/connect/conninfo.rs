//! libpq connection strings, both forms, as an ordered list of `key = value` settings:
//! `postgres://user:secret@host:5432,other:5433/db?sslmode=verify-full` and
//! `host=db.internal dbname=app sslmode=require`. pgbroker reads a few settings itself
//! (the TLS ones, `passfile`), so it parses the string before `postgres::Config` sees it.

use crate::{Error, ErrorKind, Result};

/// Settings in the order given; a later duplicate replaces an earlier one (as in libpq).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Settings(Vec<(String, String)>);

impl Settings {
    /// Parses a URL (`postgres://` or `postgresql://`) or a key/value string. An empty string
    /// is valid: every setting then comes from the environment and libpq's defaults.
    pub(crate) fn parse(s: &str) -> Result<Settings> {
        let t = s.trim();
        if let Some(rest) = t
            .strip_prefix("postgres://")
            .or_else(|| t.strip_prefix("postgresql://"))
        {
            parse_url(rest)
        } else if t.contains("://") {
            Err(invalid(
                "a URL must start with postgres:// or postgresql://",
            ))
        } else {
            parse_keywords(t)
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value`, replacing any earlier value.
    pub(crate) fn set(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// Removes `key` and returns its value.
    pub(crate) fn take(&mut self, key: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    /// The settings as a key/value string for `postgres::Config`, every value quoted.
    pub(crate) fn to_keyword_string(&self) -> String {
        let quote = |v: &str| v.replace('\\', r"\\").replace('\'', r"\'");
        self.0
            .iter()
            .map(|(k, v)| format!("{k}='{}'", quote(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("invalid connection string: {msg}"),
    )
}

fn parse_keywords(s: &str) -> Result<Settings> {
    let mut out = Settings::default();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        if key.is_empty() {
            if chars.peek().is_none() {
                return Ok(out);
            }
            return Err(invalid("expected a keyword before `=`"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(format!("missing `=` after `{key}`")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(invalid(format!("unterminated quoted value of `{key}`"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.set(&key, value);
    }
}

fn parse_url(rest: &str) -> Result<Settings> {
    let mut out = Settings::default();
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let hostlist = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                out.set("user", decode(user)?);
            }
            if let Some(p) = password {
                out.set("password", decode(p)?);
            }
            hosts
        }
        None => authority,
    };
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for spec in hostlist.split(',') {
            let (host, port) = split_host_port(spec)?;
            hosts.push(decode(host)?);
            ports.push(port.to_owned());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            out.set("host", hosts.join(","));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            // libpq: a host without a port uses the default port.
            let ports: Vec<String> = ports
                .into_iter()
                .map(|p| if p.is_empty() { "5432".into() } else { p })
                .collect();
            out.set("port", ports.join(","));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.set("dbname", decode(db)?);
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| invalid(format!("URL parameter `{pair}` has no `=`")))?;
        out.set(&decode(k)?, decode(v)?);
    }
    Ok(out)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(spec: &str) -> Result<(&str, &str)> {
    if let Some(v6) = spec.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| invalid(format!("unclosed `[` in host `{spec}`")))?;
        let port = match after {
            "" => "",
            p => p
                .strip_prefix(':')
                .ok_or_else(|| invalid(format!("unexpected `{p}` after `[{host}]`")))?,
        };
        return Ok((host, port));
    }
    Ok(spec.split_once(':').unwrap_or((spec, "")))
}

/// Percent-decoding of one URL part.
fn decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid(format!("bad percent-encoding in `{s}`")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("`{s}` does not decode to UTF-8")))
}

#[cfg(test)]
mod test {
    use super::*;

    fn pairs(s: &str) -> Vec<(String, String)> {
        Settings::parse(s).unwrap().0
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn urls() {
        assert_eq!(
            pairs(
                "postgres://u:p%40ss@db.example:6432/app?sslmode=verify-full&sslrootcert=%2Fca.pem"
            ),
            vec![
                p("user", "u"),
                p("password", "p@ss"),
                p("host", "db.example"),
                p("port", "6432"),
                p("dbname", "app"),
                p("sslmode", "verify-full"),
                p("sslrootcert", "/ca.pem"),
            ]
        );
        assert_eq!(pairs("postgres:///app"), vec![p("dbname", "app")]);
        assert_eq!(pairs("postgresql://"), vec![]);
        assert_eq!(
            pairs("postgres://a:5432,[::1],b:5434/db"),
            vec![
                p("host", "a,::1,b"),
                p("port", "5432,5432,5434"),
                p("dbname", "db")
            ]
        );
        assert_eq!(
            pairs("postgres://%2Fvar%2Frun%2Fpostgresql/db"),
            vec![p("host", "/var/run/postgresql"), p("dbname", "db")]
        );
        assert!(Settings::parse("postgres://h/db?sslmode").is_err());
        assert!(Settings::parse("mysql://h/db").is_err());
        assert!(Settings::parse("postgres://h/%zz").is_err());
    }

    #[test]
    fn keywords() {
        assert_eq!(
            pairs(r"host=h  dbname = 'my db' password='it\'s' sslmode=verify-ca"),
            vec![
                p("host", "h"),
                p("dbname", "my db"),
                p("password", "it's"),
                p("sslmode", "verify-ca")
            ]
        );
        assert_eq!(pairs(""), vec![]);
        assert!(Settings::parse("host").is_err());
        assert!(Settings::parse("host='x").is_err());
    }

    #[test]
    fn round_trip_through_postgres_config() {
        let s = Settings::parse(r"host=h user=u password='a b\'c\\d' dbname=x").unwrap();
        let pg: postgres::Config = s.to_keyword_string().parse().unwrap();
        assert_eq!(pg.get_password(), Some(&br"a b'c\d"[..]));
        assert_eq!(pg.get_dbname(), Some("x"));
    }
}
