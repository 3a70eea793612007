//! An origin server for the cache tests whose behaviour each test sets per path: status,
//! headers, body, a delay before answering, a body streamed in pieces behind a gate,
//! `ETag` revalidation (304 on a matching `If-None-Match`), and counts of what it served.
//! HTTP/1.1 with keep-alive; every connection thread ends when the origin stops.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one path answers.
#[derive(Clone)]
pub struct Resource {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Waits this long before the response header.
    pub delay: Duration,
    /// Sends the body chunked: the first `split` bytes, then waits for `Origin::open_gate`
    /// (10 s at most), then the rest.
    pub gated_split: Option<usize>,
}

impl Resource {
    pub fn new(headers: &[(&str, &str)], body: &str) -> Resource {
        Resource {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
            gated_split: None,
        }
    }

    pub fn status(mut self, s: u16) -> Resource {
        self.status = s;
        self
    }

    pub fn delay(mut self, d: Duration) -> Resource {
        self.delay = d;
        self
    }

    pub fn bytes(mut self, body: Vec<u8>) -> Resource {
        self.body = body;
        self
    }

    pub fn gated(mut self, split: usize) -> Resource {
        self.gated_split = Some(split);
        self
    }

    fn etag(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
            .map(|(_, v)| v.as_str())
    }
}

/// One request the origin received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// Whether it was answered 304.
    pub not_modified: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    resources: HashMap<String, Resource>,
    seen: Vec<Seen>,
    finished: HashMap<String, usize>,
}

struct Shared {
    state: Mutex<State>,
    gate: (Mutex<bool>, Condvar),
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

pub struct Origin {
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Origin {
    pub fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let port = listener.local_addr().expect("origin address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            gate: (Mutex::new(false), Condvar::new()),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        if let Ok(c) = stream.try_clone() {
                            s.conns.lock().unwrap().push(c);
                        }
                        let s = s.clone();
                        std::thread::spawn(move || serve(stream, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Origin {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sets what `path` (without query) answers.
    pub fn set(&self, path: &str, r: Resource) {
        self.shared
            .state
            .lock()
            .unwrap()
            .resources
            .insert(path.to_string(), r);
    }

    /// Requests received for `path` (query ignored).
    pub fn hits(&self, path: &str) -> usize {
        self.seen(path).len()
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.shared
            .state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.target.split('?').next() == Some(path))
            .cloned()
            .collect()
    }

    /// Responses to `path` whose last byte was sent.
    pub fn finished(&self, path: &str) -> usize {
        let st = self.shared.state.lock().unwrap();
        st.finished.get(path).copied().unwrap_or(0)
    }

    /// Lets gated bodies send their rest.
    pub fn open_gate(&self) {
        let (lock, cv) = &self.shared.gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Waits (bounded) until `path` was requested `n` times.
    pub fn wait_hits(&self, path: &str, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.hits(path) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.hits(path) >= n
    }

    /// Stops listening and closes every connection: the backend is down.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.open_gate();
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf[..end].to_vec();
            buf.drain(..end + 4);
            return Some(head);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
}

fn serve(mut stream: TcpStream, s: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    for _ in 0..10_000 {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(head) = read_head(&mut stream, &mut buf) else {
            return;
        };
        let text = String::from_utf8_lossy(&head).to_string();
        let mut lines = text.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("/").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        // Request bodies (none in these tests beyond a POST's few bytes) are skipped.
        if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while buf.len() < len {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..len);
        }
        let path = target.split('?').next().unwrap_or("/").to_string();
        let resource = s
            .state
            .lock()
            .unwrap()
            .resources
            .get(&path)
            .cloned()
            .unwrap_or_else(|| Resource::new(&[], "no such resource").status(404));
        let not_modified = matches!(
            (resource.etag(), header("if-none-match")),
            (Some(tag), Some(asked)) if tag == asked
        );
        s.state.lock().unwrap().seen.push(Seen {
            method: method.clone(),
            target: target.clone(),
            headers: headers.clone(),
            not_modified,
        });
        if !resource.delay.is_zero() {
            std::thread::sleep(resource.delay);
        }
        let status = if not_modified { 304 } else { resource.status };
        let mut out = format!("HTTP/1.1 {status} X\r\n");
        for (k, v) in &resource.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        let head_only = method == "HEAD" || not_modified;
        let ok = if resource.gated_split.is_some() && !head_only {
            out.push_str("Transfer-Encoding: chunked\r\n\r\n");
            send_gated(&mut stream, s, out, &resource)
        } else {
            if !not_modified {
                out.push_str(&format!("Content-Length: {}\r\n", resource.body.len()));
            }
            out.push_str("\r\n");
            let mut bytes = out.into_bytes();
            if !head_only {
                bytes.extend_from_slice(&resource.body);
            }
            stream.write_all(&bytes).is_ok()
        };
        if !ok {
            return;
        }
        *s.state.lock().unwrap().finished.entry(path).or_insert(0) += 1;
        if header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
            return;
        }
    }
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

fn send_gated(stream: &mut TcpStream, s: &Shared, head: String, r: &Resource) -> bool {
    let split = r.gated_split.unwrap_or(0).min(r.body.len());
    let mut first = head.into_bytes();
    first.extend(chunk(&r.body[..split]));
    if stream.write_all(&first).is_err() {
        return false;
    }
    let _ = stream.flush();
    let (lock, cv) = &s.gate;
    let open = lock.lock().unwrap();
    let (open, _) = cv
        .wait_timeout_while(open, Duration::from_secs(10), |o| !*o)
        .unwrap();
    drop(open);
    let mut rest = Vec::new();
    for piece in r.body[split..].chunks(64 * 1024) {
        rest.extend(chunk(piece));
    }
    rest.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&rest).is_ok()
}
