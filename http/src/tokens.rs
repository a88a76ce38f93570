//! Bearer tokens: the auth hook `pgbroker serve` offers, from a file or an environment
//! variable.

use std::sync::Arc;

use crate::auth::{Access, AuthHook, AuthRequest, Grant};
use crate::{Error, ErrorKind, Result};

/// A set of bearer tokens, each with its [`Grant`]. A request shows its token in
/// `Authorization: Bearer <token>`, or in an `access_token` query parameter (for
/// `EventSource`, which cannot set headers).
///
/// The file form, one token per line (blank lines and lines starting with `//` are skipped):
///
/// ```text
/// s3cr3t-admin
/// s3cr3t-shop   topics=orders.#,users.*  queues=emails,invoices
/// ```
///
/// A token without `topics=`/`queues=` may use every topic and queue.
///
/// # Examples
///
/// ```
/// use pgbroker_http::BearerTokens;
///
/// let tokens = BearerTokens::parse("admin\nshop topics=orders.# queues=emails\n")?;
/// assert_eq!(tokens.len(), 2);
/// # Ok::<(), pgbroker_http::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct BearerTokens {
    tokens: Vec<(String, Grant)>,
}

impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerTokens")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl BearerTokens {
    /// Parses the file form (see the type's docs). Fails with [`ErrorKind::InvalidInput`]
    /// naming the line.
    pub fn parse(text: &str) -> Result<BearerTokens> {
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            let mut words = line.split_whitespace();
            let token = words.next().unwrap_or_default().to_owned();
            let mut grant = Grant::none();
            let mut limited = false;
            for w in words {
                let bad = || {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "token line {}: {w:?} is not topics=PATTERN,... or queues=NAME,...",
                            n + 1
                        ),
                    )
                };
                let (k, v) = w.split_once('=').ok_or_else(bad)?;
                for item in v.split(',').filter(|s| !s.is_empty()) {
                    grant = match k {
                        "topics" => {
                            pgbroker::topic::validate_pattern(item).map_err(|e| {
                                Error::with_source(
                                    ErrorKind::InvalidInput,
                                    format!("token line {}", n + 1),
                                    e,
                                )
                            })?;
                            grant.topic(item)
                        }
                        "queues" => grant.queue(item),
                        _ => return Err(bad()),
                    };
                }
                limited = true;
            }
            tokens.push((token, if limited { grant } else { Grant::all() }));
        }
        Ok(BearerTokens { tokens })
    }

    /// Reads the file form from `path`.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<BearerTokens> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::with_source(ErrorKind::Config, format!("reading {}", path.display()), e)
        })?;
        BearerTokens::parse(&text)
    }

    /// Tokens with full access from an environment variable, separated by commas or
    /// whitespace. Fails with [`ErrorKind::Config`] when the variable is unset or empty.
    pub fn from_env(var: &str) -> Result<BearerTokens> {
        let value = std::env::var(var).unwrap_or_default();
        let tokens: Vec<(String, Grant)> = value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(|t| (t.to_owned(), Grant::all()))
            .collect();
        if tokens.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("environment variable {var} holds no token"),
            ));
        }
        Ok(BearerTokens { tokens })
    }

    /// Adds a token with its grant.
    pub fn with(mut self, token: impl Into<String>, grant: Grant) -> BearerTokens {
        self.tokens.push((token.into(), grant));
        self
    }

    /// Both sets of tokens.
    pub fn merge(mut self, other: BearerTokens) -> BearerTokens {
        self.tokens.extend(other.tokens);
        self
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The answer for a request: 401 without a token, 403 with an unknown one.
    pub fn check(&self, req: &AuthRequest<'_>) -> Access {
        let shown = req
            .header("authorization")
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .or_else(|| req.query("access_token"));
        let Some(shown) = shown else {
            return Access::Unauthenticated(
                "send Authorization: Bearer <token> (or ?access_token=<token>)".into(),
            );
        };
        for (token, grant) in &self.tokens {
            if constant_time_eq(token.as_bytes(), shown.as_bytes()) {
                return Access::Allow(grant.clone());
            }
        }
        Access::Forbidden("unknown token".into())
    }

    /// The tokens as an auth hook for [`ServerBuilder::auth`](crate::ServerBuilder::auth).
    pub fn into_hook(self) -> AuthHook {
        Arc::new(move |req: &AuthRequest<'_>| self.check(req))
    }
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn file_form() {
        let t = BearerTokens::parse("// c\n\na\nb topics=x.#,y queues=q\n").unwrap();
        assert_eq!(t.tokens[0], ("a".to_owned(), Grant::all()));
        assert_eq!(
            t.tokens[1],
            (
                "b".to_owned(),
                Grant::none().topic("x.#").topic("y").queue("q")
            )
        );
        assert!(BearerTokens::parse("a topics=x..y").is_err());
        assert!(BearerTokens::parse("a colour=red").is_err());
    }
}
