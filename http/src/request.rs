//! Reading one HTTP/1.1 request from a connection: the head with `httparse`, the body by
//! `Content-Length` (within the configured limit).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use percent_encoding::percent_decode_str;

/// The longest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 32 * 1024;
const MAX_HEADERS: usize = 64;

/// A parsed request: method, path, decoded query parameters, headers and body.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) keep_alive: bool,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// Every value of a query parameter, decoded, in order.
    pub(crate) fn query_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter.
    pub(crate) fn query_first<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.query_all(name).next()
    }
}

pub(crate) fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why no request could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed (or the read timed out) before a request began: just close.
    Closed,
    /// A malformed request: answer 400 and close.
    Malformed(String),
    /// `Content-Length` over the limit: answer 413 and close.
    TooLarge {
        limit: usize,
        length: u64,
    },
    /// A body without `Content-Length` (chunked): answer 411 and close.
    LengthRequired,
    Io(#[allow(dead_code)] io::Error),
}

/// Reads the next request; `Closed` when the connection ends cleanly between requests.
pub(crate) fn read_request(
    reader: &mut BufReader<TcpStream>,
    body_limit: usize,
) -> Result<Request, ReadError> {
    let head = read_head(reader)?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(ReadError::Malformed("incomplete head".into()))
        }
        Err(e) => return Err(ReadError::Malformed(format!("malformed request: {e}"))),
    }
    let method = parsed.method.unwrap_or("").to_owned();
    let target = parsed.path.unwrap_or("/");
    let version = parsed.version.unwrap_or(1);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect();
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let path = percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| ReadError::Malformed("path is not UTF-8".into()))?
        .into_owned();
    let query =
        parse_query(raw_query).ok_or_else(|| ReadError::Malformed("query is not UTF-8".into()))?;
    let connection = header_in(&headers, "connection").unwrap_or("");
    let keep_alive = if version == 0 {
        connection.eq_ignore_ascii_case("keep-alive")
    } else {
        !connection.eq_ignore_ascii_case("close")
    };
    if header_in(&headers, "transfer-encoding").is_some() {
        return Err(ReadError::LengthRequired);
    }
    let length: u64 = match header_in(&headers, "content-length") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| ReadError::Malformed(format!("invalid Content-Length {v:?}")))?,
    };
    if length > body_limit as u64 {
        return Err(ReadError::TooLarge {
            limit: body_limit,
            length,
        });
    }
    if length > 0
        && header_in(&headers, "expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        let stream = reader.get_mut();
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(ReadError::Io)?;
    }
    let mut body = vec![0; length as usize];
    reader.read_exact(&mut body).map_err(ReadError::Io)?;
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
        keep_alive,
    })
}

/// The head up to and including the blank line.
fn read_head(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, ReadError> {
    let mut head = Vec::with_capacity(1024);
    loop {
        let start = head.len();
        match reader.read_until(b'\n', &mut head) {
            Ok(0) if head.is_empty() => return Err(ReadError::Closed),
            Ok(0) => return Err(ReadError::Malformed("connection closed mid-request".into())),
            Ok(_) => {}
            Err(e)
                if head.is_empty()
                    && matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::ConnectionReset
                    ) =>
            {
                return Err(ReadError::Closed)
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
        // Tolerate blank lines before the request line (RFC 9112 2.2).
        if start == 0 && (head == b"\r\n" || head == b"\n") {
            head.clear();
            continue;
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(ReadError::Malformed("request head too large".into()));
        }
        let line = &head[start..];
        if line == b"\r\n" || line == b"\n" {
            return Ok(head);
        }
    }
}

/// `a=1&b=x%20y&c` → `[("a","1"),("b","x y"),("c","")]`; `+` is a space (HTML forms).
pub(crate) fn parse_query(raw: &str) -> Option<Vec<(String, String)>> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_decode_str(&s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn query_is_decoded() {
        assert_eq!(
            parse_query("topic=orders.*&topic=users.%23&x=a+b&flag").unwrap(),
            vec![
                ("topic".to_owned(), "orders.*".to_owned()),
                ("topic".to_owned(), "users.#".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert!(parse_query("a=%ff").is_none());
    }
}
