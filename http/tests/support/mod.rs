//! Test support: a fresh database with the schema on the private cluster, a server on a free
//! loopback port, and a small raw HTTP client (so tests see exactly what goes on the wire).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use pgbroker::Broker;
use pgbroker_http::{Server, ServerBuilder};
use pgbroker_testing::TestDatabase;

pub struct Env {
    pub db: TestDatabase,
    pub broker: Broker,
}

pub fn env() -> Env {
    let db = TestDatabase::with_schema().expect("test database");
    let broker = Broker::builder()
        .url(db.url())
        .pool_size(8)
        .build()
        .expect("broker");
    broker.install().expect("install");
    Env { db, broker }
}

impl Env {
    pub fn server(&self) -> ServerBuilder {
        Server::builder(self.broker.clone())
            .listen("127.0.0.1:0")
            .poll_interval(Duration::from_millis(10))
            .webhook_poll(Duration::from_millis(50))
    }
}

/// A response: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends one request (Connection: close) and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw)
}

pub fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"")
}

pub fn post_json(addr: SocketAddr, path: &str, body: &str) -> Reply {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// The Python of the test venv (`target/http-venv`, made by .ci/run), or `None`.
pub fn venv_python() -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/http-venv/bin/python");
    p.exists().then_some(p)
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// A local webhook receiver: answers each request with what `answer` says (status, and a
/// delay before answering), given the request and how many requests with its webhook-id came
/// before. Records every request.
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(
        answer: impl Fn(&Received, usize) -> (u16, Duration) + Send + Sync + 'static,
    ) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Received>::new()));
        let answer = std::sync::Arc::new(answer);
        let recorded = got.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let got = recorded.clone();
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
                    let mut headers = Vec::new();
                    let mut line = String::new();
                    use std::io::BufRead;
                    reader.read_line(&mut line).unwrap();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                        }
                    }
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .map(|(_, v)| v.parse().unwrap())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let r = Received {
                        headers,
                        body: String::from_utf8(body).unwrap(),
                    };
                    let before = {
                        let mut g = got.lock().unwrap();
                        let n = g
                            .iter()
                            .filter(|x| x.header("webhook-id") == r.header("webhook-id"))
                            .count();
                        g.push(r.clone());
                        n
                    };
                    let (status, delay) = answer(&r, before);
                    std::thread::sleep(delay);
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                });
            }
        });
        Receiver { addr, got }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}
