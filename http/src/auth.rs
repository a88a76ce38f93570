//! Who may do what: the auth hook, its answer ([`Access`]) and what an allowed caller may use
//! ([`Grant`]).

use std::sync::Arc;

use crate::request::header_in;

/// What the auth hook sees of a request.
///
/// # Examples
///
/// ```
/// use pgbroker_http::{Access, AuthRequest, Grant};
///
/// fn check(req: &AuthRequest<'_>) -> Access {
///     match req.header("authorization") {
///         Some("Bearer s3cret") => Access::Allow(Grant::all()),
///         Some(_) => Access::Forbidden("unknown token".into()),
///         None => Access::Unauthenticated("send Authorization: Bearer <token>".into()),
///     }
/// }
/// ```
#[derive(Debug)]
pub struct AuthRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a [(String, String)],
    pub(crate) query: &'a [(String, String)],
}

impl<'a> AuthRequest<'a> {
    /// The method (`GET`, `POST`).
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The decoded path, without the query.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        header_in(self.headers, name)
    }

    /// Every header, in order.
    pub fn headers(&self) -> &'a [(String, String)] {
        self.headers
    }

    /// The first value of a decoded query parameter (`access_token`, for clients such as
    /// `EventSource` that cannot set headers).
    pub fn query(&self, name: &str) -> Option<&'a str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The auth hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Go ahead, within the grant.
    Allow(Grant),
    /// `401 Unauthorized`: no or unreadable credentials (the message is sent to the caller).
    Unauthenticated(String),
    /// `403 Forbidden`: known credentials without the right to this request.
    Forbidden(String),
}

/// What an allowed caller may use: topic patterns (to publish on and stream from) and queues
/// (to enqueue on). Built with [`Grant::all`] or [`Grant::none`] and the setters.
///
/// # Examples
///
/// ```
/// use pgbroker_http::Grant;
///
/// let g = Grant::none().topic("orders.#").queue("emails");
/// assert!(g.may_publish("orders.eu.created"));
/// assert!(g.may_stream("orders.*"));
/// assert!(!g.may_stream("#"));
/// assert!(g.may_enqueue("emails") && !g.may_enqueue("reports"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    topics: Vec<String>,
    queues: Vec<String>,
}

impl Grant {
    /// Every topic and every queue.
    pub fn all() -> Grant {
        Grant {
            topics: vec!["#".into()],
            queues: vec!["*".into()],
        }
    }

    /// Nothing (but `/metrics`): add topics and queues with the setters.
    pub fn none() -> Grant {
        Grant::default()
    }

    /// Allows the topics matching `pattern` (see [`pgbroker::topic::validate_pattern`]).
    pub fn topic(mut self, pattern: impl Into<String>) -> Grant {
        self.topics.push(pattern.into());
        self
    }

    /// Allows the queue `name`; `*` allows every queue.
    pub fn queue(mut self, name: impl Into<String>) -> Grant {
        self.queues.push(name.into());
        self
    }

    /// The topic patterns granted.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The queues granted (`*`: all).
    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// Whether publishing on `topic` is allowed.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.topics
            .iter()
            .any(|p| pgbroker::topic::pattern_matches(p, topic))
    }

    /// Whether streaming `pattern` is allowed: every topic it matches is granted.
    pub fn may_stream(&self, pattern: &str) -> bool {
        self.topics.iter().any(|g| pattern_covers(g, pattern))
    }

    /// Whether enqueueing on `queue` is allowed.
    pub fn may_enqueue(&self, queue: &str) -> bool {
        self.queues.iter().any(|q| q == "*" || q == queue)
    }
}

/// Whether every topic matched by `pattern` is matched by `grant`.
pub(crate) fn pattern_covers(grant: &str, pattern: &str) -> bool {
    if pgbroker::topic::validate_pattern(grant).is_err()
        || pgbroker::topic::validate_pattern(pattern).is_err()
    {
        return false;
    }
    let g: Vec<&str> = grant.split('.').collect();
    let p: Vec<&str> = pattern.split('.').collect();
    for (i, gs) in g.iter().enumerate() {
        if *gs == "#" {
            return true; // the rest of any topic, including none
        }
        let Some(ps) = p.get(i) else {
            return false; // the pattern is shorter: its topics lack this segment
        };
        match (*gs, *ps) {
            (_, "#") => return false, // the pattern reaches further than the grant
            ("*", _) => {}
            (a, b) if a == b => {}
            _ => return false,
        }
    }
    // Grant `orders` covers pattern `orders.#`? No: that also matches `orders.x`.
    g.len() == p.len()
}

/// The auth hook: sees every request but `/healthz` and says who may do what.
pub type AuthHook = Arc<dyn Fn(&AuthRequest<'_>) -> Access + Send + Sync>;

#[cfg(test)]
mod test {
    use super::pattern_covers;

    #[test]
    fn coverage() {
        assert!(pattern_covers("#", "a.*"));
        assert!(pattern_covers("#", "#"));
        assert!(pattern_covers("a.#", "a"));
        assert!(pattern_covers("a.#", "a.b.#"));
        assert!(pattern_covers("a.*", "a.b"));
        assert!(pattern_covers("a.*", "a.*"));
        assert!(!pattern_covers("a.*", "a.#"));
        assert!(!pattern_covers("a.b", "a.*"));
        assert!(!pattern_covers("a", "a.#"));
        assert!(!pattern_covers("a.b.#", "a.#"));
        assert!(pattern_covers("*.b", "x.b"));
        assert!(!pattern_covers("*.b", "x.c"));
    }
}
