//! Backends the tests put behind switchyard: a recording HTTP/1.1 server with scriptable
//! behaviour, one that dies like a killed process, and a raw TCP server.

use super::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Lower-case names; repeated headers keep every value in order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// How a backend answers.
#[derive(Clone)]
pub struct Behaviour {
    pub status: u16,
    pub delay: Duration,
    pub extra_headers: Vec<(String, String)>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            status: 200,
            delay: Duration::ZERO,
            extra_headers: Vec::new(),
        }
    }
}

impl Behaviour {
    /// Answers every request with `status`.
    pub fn with_status(status: u16) -> Behaviour {
        Behaviour {
            status,
            ..Behaviour::default()
        }
    }

    /// Answers every request with these extra response headers.
    pub fn with_headers(headers: &[(&str, &str)]) -> Behaviour {
        Behaviour {
            extra_headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Behaviour::default()
        }
    }

    /// Answers every request after `delay`.
    pub fn with_delay(delay: Duration) -> Behaviour {
        Behaviour {
            delay,
            ..Behaviour::default()
        }
    }
}

/// A small HTTP/1.1 server on its own thread: answers `backend NAME` with an
/// `X-Backend: NAME` header, records every request and counts connections.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        Self::start_with(name, Behaviour::default())
    }

    pub fn start_with(name: &str, behaviour: Behaviour) -> Backend {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind backend");
        Self::serve_on(name, listener, behaviour)
    }

    /// Serves requests on `listener` until dropped.
    fn serve_on(name: &str, listener: StdListener, behaviour: Behaviour) -> Backend {
        let addr = listener.local_addr().expect("backend addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let b = Backend {
            name: name.to_string(),
            addr,
            seen: Arc::default(),
            connections: Arc::default(),
            behaviour: Arc::new(Mutex::new(behaviour)),
            stop: Arc::default(),
        };
        let (seen, conns, beh, stop, name) = (
            b.seen.clone(),
            b.connections.clone(),
            b.behaviour.clone(),
            b.stop.clone(),
            b.name.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        conns.fetch_add(1, Ordering::Relaxed);
                        let (seen, beh, name, stop) =
                            (seen.clone(), beh.clone(), name.clone(), stop.clone());
                        std::thread::spawn(move || serve(stream, &name, &seen, &beh, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        b
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().ok().and_then(|s| s.last().cloned())
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn set(&self, behaviour: Behaviour) {
        if let Ok(mut b) = self.behaviour.lock() {
            *b = behaviour;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut stream: TcpStream,
    name: &str,
    seen: &Mutex<Vec<Seen>>,
    behaviour: &Mutex<Behaviour>,
    stop: &std::sync::atomic::AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut idle = 0;
    loop {
        if stop.load(Ordering::Relaxed) || idle > 300 {
            return;
        }
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    idle = 0;
                    buf.extend_from_slice(&chunk[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    idle += 1;
                }
                Err(_) => return,
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        buf.drain(..head_end + length);
        let b = behaviour.lock().map(|b| b.clone()).unwrap_or_default();
        if let Ok(mut s) = seen.lock() {
            s.push(Seen {
                method: method.clone(),
                path: path.clone(),
                headers,
            });
        }
        if !b.delay.is_zero() {
            std::thread::sleep(b.delay);
        }
        let text = format!("backend {name}\n");
        let mut resp = format!(
            "HTTP/1.1 {} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\n",
            b.status,
            text.len()
        );
        for (n, v) in &b.extra_headers {
            resp.push_str(&format!("{n}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(&text);
        if stream.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

impl Backend {
    /// Starts a backend on `port` of 127.0.0.1 (e.g. to restart one that was dropped),
    /// retrying the bind for up to 2 s while the old listener goes away.
    pub fn start_on(name: &str, port: u16) -> Backend {
        Self::start_on_with(name, port, Behaviour::default())
    }

    pub fn start_on_with(name: &str, port: u16, behaviour: Behaviour) -> Backend {
        let deadline = Instant::now() + Duration::from_secs(2);
        let listener = loop {
            match StdListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cannot bind backend {name} on 127.0.0.1:{port}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        Self::serve_on(name, listener, behaviour)
    }

    /// Starts one backend per name (`let [a, b] = Backend::start_each(["a", "b"]);`).
    pub fn start_each<const N: usize>(names: [&str; N]) -> [Backend; N] {
        names.map(Backend::start)
    }

    /// Waits (bounded by `limit`) until this backend has seen at least `n` requests.
    pub fn wait_count(&self, n: usize, limit: Duration) -> bool {
        wait_until(limit, Duration::from_millis(10), || self.count() >= n)
    }

    /// The paths of every request this backend saw, in order.
    pub fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|s| s.iter().map(|r| r.path.clone()).collect())
            .unwrap_or_default()
    }
}

/// A backend that dies like a killed process: `kill()` closes its listener and every
/// open connection at once (no window in which new connections are still accepted).
/// Answers every request `200 backend NAME` with `X-Backend: NAME`, keeping connections
/// alive; request bodies are not expected.
pub struct KillableBackend {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl KillableBackend {
    /// Listens on `port` of 127.0.0.1 (retrying the bind for up to 2 s).
    pub fn start_on(name: &str, port: u16) -> KillableBackend {
        let deadline = Instant::now() + Duration::from_secs(2);
        let listener = loop {
            match StdListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cannot bind backend {name} on 127.0.0.1:{port}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("backend addr");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("backend runtime");
        let requests: Arc<AtomicUsize> = Arc::default();
        let (count, label) = (requests.clone(), name.to_string());
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_killable(stream, label.clone(), count.clone()));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        });
        KillableBackend {
            addr,
            requests,
            rt: Some(rt),
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Requests answered so far.
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Closes the listener and every connection now.
    pub fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for KillableBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve_killable(mut stream: tokio::net::TcpStream, name: String, count: Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            count.fetch_add(1, Ordering::Relaxed);
            let body = format!("backend {name}\n");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A raw TCP server on 127.0.0.1 running `handler` on its own thread for every accepted
/// connection. Dropping it closes the listener and shuts down every open connection.
pub struct TcpServer {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Connections whose handler has returned.
    pub finished: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Clones of the connections whose handler runs, to shut them down on drop.
    open: Arc<Mutex<HashMap<usize, TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpServer {
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> TcpServer {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind tcp server");
        let addr = listener.local_addr().expect("tcp server addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let handler = Arc::new(handler);
        let accepted: Arc<AtomicUsize> = Arc::default();
        let finished: Arc<AtomicUsize> = Arc::default();
        let stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let open: Arc<Mutex<HashMap<usize, TcpStream>>> = Arc::default();
        let (acc, fin, st, op) = (
            accepted.clone(),
            finished.clone(),
            stop.clone(),
            open.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let id = acc.fetch_add(1, Ordering::Relaxed);
                        if let (Ok(clone), Ok(mut list)) = (stream.try_clone(), op.lock()) {
                            list.insert(id, clone);
                        }
                        let (h, fin, op) = (handler.clone(), fin.clone(), op.clone());
                        std::thread::spawn(move || {
                            h(stream);
                            // The handler dropped its stream: close the socket for real.
                            if let Ok(mut list) = op.lock() {
                                list.remove(&id);
                            }
                            fin.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpServer {
            addr,
            accepted,
            finished,
            stop,
            open,
            thread: Some(thread),
        }
    }

    /// Echoes every byte back; passes the client's half-close on once all is echoed.
    pub fn echo() -> TcpServer {
        Self::start(|mut s| {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = s.shutdown(std::net::Shutdown::Write);
        })
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(list) = self.open.lock() {
            for s in list.values() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
