//! Connection failures in words: which server, and what happened (refused, unknown host,
//! timed out, TLS refused or unverifiable, password missing or wrong, no such database).

use std::error::Error as StdError;

use crate::{Error, ErrorKind};

/// What the explanation needs to know about the attempt.
pub(crate) struct Attempt<'a> {
    /// `host:port` of every server tried, or the socket path.
    pub endpoints: &'a str,
    pub user: Option<&'a str>,
    pub dbname: Option<&'a str>,
    pub sslmode: &'a str,
    pub rootcert: Option<String>,
    pub host_names: Vec<String>,
}

/// `e`, a failed connection attempt, explained.
pub(crate) fn explain(e: postgres::Error, a: &Attempt<'_>) -> Error {
    let ep = a.endpoints;
    if let Some(db) = e.as_db_error() {
        let msg = db.message().to_owned();
        let user = a.user.unwrap_or("?");
        let (kind, text) = match db.code().code() {
            "28P01" => (
                ErrorKind::Connect,
                format!("authentication failed for user {user} at {ep}: wrong password"),
            ),
            "28000" if msg.contains("no encryption") => (
                ErrorKind::Tls,
                format!(
                    "{ep} requires TLS (its pg_hba.conf has no entry for unencrypted connections), \
                     but sslmode={}: use sslmode=require or stronger",
                    a.sslmode
                ),
            ),
            "28000" => (
                ErrorKind::Connect,
                format!("{ep} refused the login of user {user}"),
            ),
            "3D000" => (
                ErrorKind::Connect,
                format!(
                    "database {} does not exist on {ep}",
                    a.dbname.unwrap_or(user)
                ),
            ),
            _ => (ErrorKind::Connect, format!("{ep} refused the connection")),
        };
        // The server's own message and SQLSTATE follow (Error's Display adds them).
        return Error::with_cause(kind, Some(text), e);
    }
    let chain = chain_text(&e);
    let io = io_kind(&e);
    let (kind, text) = if io == Some(std::io::ErrorKind::ConnectionRefused) {
        (
            ErrorKind::Connect,
            format!("connection refused by {ep}: no PostgreSQL is listening there (is it running? check listen_addresses and port)"),
        )
    } else if io == Some(std::io::ErrorKind::NotFound) && ep.starts_with("socket") {
        (
            ErrorKind::Connect,
            format!("no PostgreSQL at {ep}: is the server running on this machine? For another server give a URL or set PGHOST"),
        )
    } else if io == Some(std::io::ErrorKind::TimedOut) || chain.contains("timed out") {
        (
            ErrorKind::Timeout,
            format!("connecting to {ep} timed out: no answer from the network (wrong address, or a firewall drops the packets)"),
        )
    } else if chain.contains("lookup address")
        || chain.contains("Name or service not known")
        || chain.contains("No address associated")
        || chain.contains("nodename nor servname")
        || chain.contains("could not resolve")
    {
        (
            ErrorKind::Connect,
            format!(
                "unknown host {}: the name does not resolve to an address",
                a.host_names.join(", ")
            ),
        )
    } else if chain.contains("password missing") {
        (
            ErrorKind::Connect,
            format!(
                "{ep} asks for a password for user {} and none was given: put it in the URL, PGPASSWORD or ~/.pgpass",
                a.user.unwrap_or("?")
            ),
        )
    } else if chain.contains("server does not support TLS") {
        (
            ErrorKind::Tls,
            format!(
                "{ep} does not accept TLS, but sslmode={} requires it: enable ssl on the server, or use sslmode=prefer or disable",
                a.sslmode
            ),
        )
    } else if chain.contains("TLS handshake") || chain.contains("SSL routines") {
        (ErrorKind::Tls, handshake(&chain, a))
    } else if chain.contains("SCRAM") || chain.contains("authentication") {
        (
            ErrorKind::Connect,
            format!("authentication with {ep} failed: {}", last_cause(&e)),
        )
    } else {
        (
            ErrorKind::Connect,
            format!("connecting to {ep} failed: {}", last_cause(&e)),
        )
    };
    Error::explained(kind, text, e)
}

fn handshake(chain: &str, a: &Attempt<'_>) -> String {
    let ep = a.endpoints;
    let lower = chain.to_ascii_lowercase();
    let roots = a
        .rootcert
        .as_deref()
        .map_or(String::new(), |r| format!(" (sslrootcert {r})"));
    if lower.contains("hostname mismatch") || lower.contains("ip address mismatch") {
        format!(
            "the certificate of {ep} is not for host {}: sslmode=verify-full checks the name \
             (connect with a name the certificate lists, or use verify-ca)",
            a.host_names.join(", ")
        )
    } else if lower.contains("unable to get local issuer")
        || lower.contains("self-signed certificate")
        || lower.contains("self signed certificate")
        || lower.contains("unable to verify the first certificate")
    {
        format!("the certificate of {ep} is not signed by a trusted CA{roots}")
    } else if lower.contains("certificate has expired") {
        format!("the certificate of {ep} has expired")
    } else if lower.contains("certificate required")
        || lower.contains("alert bad certificate")
        || lower.contains("alert unknown ca")
    {
        format!(
            "{ep} rejected the TLS handshake: it wants a client certificate it trusts (sslcert, sslkey)"
        )
    } else {
        format!(
            "TLS handshake with {ep} failed: {}",
            chain.rsplit(": ").next().unwrap_or(chain)
        )
    }
}

/// Every message of the cause chain, joined with `: `.
fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    parts.join(": ")
}

/// The innermost cause's message.
fn last_cause(e: &(dyn StdError + 'static)) -> String {
    let mut cur: &(dyn StdError + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn io_kind(e: &(dyn StdError + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = c.source();
    }
    None
}
