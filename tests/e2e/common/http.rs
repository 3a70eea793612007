//! HTTP/1.1 clients: one-shot requests, a keep-alive connection, reply parsing, the
//! distribution of replies over backends, and Prometheus metrics scraped from switchyard.

use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A simple HTTP response as a client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, Vec<String>>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(|s| s.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// A blocking HTTP/1.1 client with keep-alive off: one request per connection.
pub fn get(port: u16, path: &str) -> Reply {
    request(port, "GET", path, &[], b"")
}

pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        raw.push_str("Host: localhost\r\n");
    }
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("Connection: close\r\n\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    let text = raw_exchange(port, &bytes);
    parse_reply(&text).unwrap_or_else(|| panic!("no HTTP reply from 127.0.0.1:{port}: {text:?}"))
}

/// Sends raw bytes and reads until the server closes (5 s at most).
pub fn raw_exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

pub fn parse_reply(text: &str) -> Option<Reply> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            headers
                .entry(n.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    Some(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Counts of `X-Backend` over `n` GETs of `path`.
pub fn spread(port: u16, path: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = get(port, path);
        *counts
            .entry(r.header("x-backend").unwrap_or("none").to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// Counts of `X-Backend` over `n` GETs of `path`, each asserted to be a 200.
pub fn served_by(port: u16, path: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let r = get(port, path);
        assert_eq!(r.status, 200, "request {i} of {n} to {path} failed: {r:?}");
        *counts
            .entry(r.header("x-backend").unwrap_or("none").to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// The BACKEND `address` of an admin API POOL (JSON), if it is there.
pub fn backend_in(pool: &Value, address: &str) -> Option<Value> {
    pool["backends"]
        .as_array()?
        .iter()
        .find(|b| b["address"] == address)
        .cloned()
}

/// Reads one HTTP/1.1 response with a Content-Length body (or none) from any stream.
pub fn read_reply(s: &mut impl Read) -> Result<Reply, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
            let reply = parse_reply(&head).ok_or_else(|| format!("bad reply head {head:?}"))?;
            let length: usize = reply
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                return Ok(Reply { body, ..reply });
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out; got {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "connection closed; got {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// The value of the Prometheus series `name` whose labels include every one of
/// `labels`, from switchyard's metrics listener on `port` (`None` if absent).
pub fn metric(port: u16, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let reply = get(port, "/metrics");
    assert_eq!(reply.status, 200, "GET /metrics: {reply:?}");
    reply.body.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, label_text) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if all {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Polls `metric(...)` until it equals `want` (missing counts as 0), 10 s at most;
/// returns the last value seen.
pub fn wait_metric(port: u16, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = metric(port, name, labels).unwrap_or(0.0);
        if v == want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One persistent HTTP/1.1 connection to 127.0.0.1:`port` for sequential requests
/// (5 s read timeout). It reconnects when the server closed the connection after a
/// complete response (`Connection: close` or EOF before the next request is written).
pub struct HttpConn {
    pub port: u16,
    conn: Option<TcpStream>,
    /// Connections opened so far.
    pub connects: usize,
}

impl HttpConn {
    pub fn new(port: u16) -> HttpConn {
        HttpConn {
            port,
            conn: None,
            connects: 0,
        }
    }

    /// Sends `GET path` with `headers` and reads the response (Content-Length bodies).
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        if let Some(c) = &self.conn {
            // Drop a connection the server closed while it was idle.
            let _ = c.set_nonblocking(true);
            let mut b = [0u8; 1];
            let gone =
                !matches!(c.peek(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
            let _ = c.set_nonblocking(false);
            if gone {
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            let c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| format!("connect: {e}"))?;
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.set_write_timeout(Some(Duration::from_secs(5)));
            let _ = c.set_nodelay(true);
            self.conn = Some(c);
            self.connects += 1;
        }
        let c = self.conn.as_mut().expect("connection");
        let mut raw = format!("GET {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            raw.push_str("Host: localhost\r\n");
        }
        for (n, v) in headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        if let Err(e) = c.write_all(raw.as_bytes()) {
            self.conn = None;
            return Err(format!("write: {e}"));
        }
        match read_one_reply(c) {
            Ok(reply) => {
                let close = reply
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                if close {
                    self.conn = None;
                }
                Ok(reply)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body (or none) from `c`, 5 s at most.
fn read_one_reply(c: &mut TcpStream) -> Result<Reply, String> {
    read_reply(c)
}
