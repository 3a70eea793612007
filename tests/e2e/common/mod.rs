//! End-to-end test harness: real backend servers on 127.0.0.1 and the real switchyard
//! binary started on free ports with a YAML written to a temporary directory.
//! Every wait is bounded; every process is killed on drop.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A port that was free a moment ago (the OS picks it).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A port with nothing listening (bound once, then closed).
pub fn closed_port() -> u16 {
    free_port()
}

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Lower-case names; repeated headers keep every value in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let b = behaviour.lock().map(|b| b.clone()).unwrap_or_default();
        if let Ok(mut s) = seen.lock() {
            s.push(Seen {
                method: method.clone(),
                path: path.clone(),
                headers,
                body,
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

/// A running switchyard process with its config and logs in a temporary directory.
pub struct Switchyard {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub access_log: PathBuf,
    pub stderr_path: PathBuf,
}

/// Writes `yaml` to a temp dir; `{dir}` in it is replaced by that directory.
pub fn write_config(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = yaml.replace("{dir}", &dir.path().display().to_string());
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, yaml).expect("write config");
    (dir, path)
}

/// Standard `server:` and `log:` sections for tests: files in `{dir}`, access log to a file.
pub const TEST_SERVER: &str = "
server:
  threads: 1
  pid_file: {dir}/switchyard.pid
  upgrade_sock: {dir}/upgrade.sock
  grace_period: 1s
  shutdown_timeout: 1s
log:
  level: info
  access_log: {dir}/access.log
";

/// TEST_SERVER with `keys` (server keys, each line indented by two spaces and ending in
/// a newline) added to its `server:` section.
pub fn test_server_with(keys: &str) -> String {
    assert!(
        TEST_SERVER.contains("\nserver:\n"),
        "TEST_SERVER changed shape"
    );
    TEST_SERVER.replacen("\nserver:\n", &format!("\nserver:\n{keys}"), 1)
}

/// A plaintext `listeners:` entry `name` on 127.0.0.1:`port`.
pub fn listener_yaml(name: &str, port: u16) -> String {
    format!("  - name: {name}\n    listen: 127.0.0.1:{port}\n")
}

/// A TLS `listeners:` entry `name` on 127.0.0.1:`port` serving one certificate (paths).
pub fn tls_listener_yaml(name: &str, port: u16, cert_file: &str, key_file: &str) -> String {
    format!(
        "{}    tls:\n      certificates:\n        - cert_file: {cert_file}\n          key_file: {key_file}\n",
        listener_yaml(name, port)
    )
}

/// A `pools:` entry `name` with `keys` (pool keys, each line indented by four spaces)
/// over one backend per address.
pub fn pool_yaml(name: &str, keys: &str, addresses: &[String]) -> String {
    let plain: Vec<(String, &str)> = addresses.iter().map(|a| (a.clone(), "")).collect();
    pool_yaml_with_backend_keys(name, keys, &plain)
}

/// Like `pool_yaml`, with backends given as (address, extra backend keys, one
/// `key: value` per line).
pub fn pool_yaml_with_backend_keys(name: &str, keys: &str, backends: &[(String, &str)]) -> String {
    let mut s = format!("  - name: {name}\n{keys}    backends:\n");
    for (address, extra) in backends {
        s.push_str(&format!("      - address: {address}\n"));
        for line in extra.lines().map(str::trim).filter(|l| !l.is_empty()) {
            s.push_str(&format!("        {line}\n"));
        }
    }
    s
}

/// A whole configuration: `head` (TEST_SERVER and any other top-level sections), then
/// the `listeners:`, `pools:` and `routes:` lists with the given entries.
pub fn config_yaml(head: &str, listeners: &str, pools: &str, routes: &str) -> String {
    format!("{head}listeners:\n{listeners}pools:\n{pools}routes:\n{routes}")
}

impl Switchyard {
    /// Starts switchyard with `yaml` (prefix it with TEST_SERVER) and waits until every
    /// port in `ports` accepts connections (10 s at most).
    pub fn start(yaml: &str, ports: &[u16]) -> Switchyard {
        Self::start_with_env(yaml, ports, &[])
    }

    pub fn start_with_env(yaml: &str, ports: &[u16], env: &[(&str, &str)]) -> Switchyard {
        let (dir, config_path) = write_config(yaml);
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(BIN);
        cmd.arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start switchyard");
        let mut s = Switchyard {
            child,
            access_log: dir.path().join("access.log"),
            dir,
            config_path,
            stderr_path,
        };
        for port in ports {
            if !wait_for_port(*port, Duration::from_secs(10)) {
                let _ = s.child.kill();
                panic!(
                    "switchyard did not listen on {port}; stderr:\n{}",
                    s.stderr()
                );
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("switchyard exited with {status}; stderr:\n{}", s.stderr());
            }
        }
        s
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The access log's JSON lines, waiting (2 s at most) until at least `n` are there.
    pub fn access_entries(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let entries: Vec<Value> = std::fs::read_to_string(&self.access_log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if entries.len() >= n || Instant::now() > deadline {
                return entries;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for_port(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Runs `switchyard -t -c FILE` (plus `extra` args) on `yaml`.
pub fn check_config(yaml: &str) -> (Output, PathBuf, tempfile::TempDir) {
    check_config_env(yaml, &[])
}

pub fn check_config_env(yaml: &str, env: &[(&str, &str)]) -> (Output, PathBuf, tempfile::TempDir) {
    let (dir, path) = write_config(yaml);
    let mut cmd = Command::new(BIN);
    cmd.arg("-t").arg("-c").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run switchyard -t");
    (out, path, dir)
}

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

/// Calls `done` every `every` until it returns true (then true) or `limit` has passed
/// (then false).
pub fn wait_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// A self-signed EC P-256 certificate for `localhost`, `example.com` and 127.0.0.1,
/// valid until 2126 (a test fixture; clients in these tests do not verify it).
pub const TLS_TEST_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBpzCCAU6gAwIBAgIUPl3j5UDxn4FWtZ2ZKKZthJ1tI6EwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMzEyNTAwMFoYDzIxMjYxMDMw
MTI1MDAwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQBtTpGDQlxTJZKUEc1qzi8sR1ERrhyRMVsS0nPJtw1fEGPliRA4W2E
uNAKzqDuqNhsSBU6WbO0NiGAPmv0kMHyo3wwejAdBgNVHQ4EFgQUMcVCLc2Sfdxd
aRrhHidyTA7fV4UwHwYDVR0jBBgwFoAUMcVCLc2SfdxdaRrhHidyTA7fV4UwDwYD
VR0TAQH/BAUwAwEB/zAnBgNVHREEIDAegglsb2NhbGhvc3SCC2V4YW1wbGUuY29t
hwR/AAABMAoGCCqGSM49BAMCA0cAMEQCIH7M0OArcXjMIgswpmS92u2ytE23BuQQ
LFSyGRCFqwm/AiAHRkYY5aUs/JW+Zab6TnbTPTg8H14XNBMFEKDuZnXd7g==
-----END CERTIFICATE-----
";

/// The private key of `TLS_TEST_CERT_PEM`.
pub const TLS_TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJD5Xk+ne1wweZMX4
1lnwvh9XoLwyF6qWAjlMDG66+g+hRANCAAQBtTpGDQlxTJZKUEc1qzi8sR1ERrhy
RMVsS0nPJtw1fEGPliRA4W2EuNAKzqDuqNhsSBU6WbO0NiGAPmv0kMHy
-----END PRIVATE KEY-----
";

/// Writes the test certificate and key into a new temporary directory; returns the
/// directory (keep it alive) and the two paths as strings for a YAML file.
pub fn tls_test_cert_files() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("tempdir for certificates");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, TLS_TEST_CERT_PEM).expect("write cert");
    std::fs::write(&key, TLS_TEST_KEY_PEM).expect("write key");
    (dir, cert.display().to_string(), key.display().to_string())
}

/// One HTTP/1.1 request over TLS (certificate not verified, SNI `localhost`),
/// keep-alive off; reads until the server closes (5 s at most).
pub fn tls_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    use pingora::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut builder = SslConnector::builder(SslMethod::tls()).expect("ssl connector");
    builder.set_verify(SslVerifyMode::NONE);
    let connector = builder.build();
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let mut s = connector
        .connect("localhost", tcp)
        .expect("TLS handshake with switchyard");
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        raw.push_str("Host: localhost\r\n");
    }
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("Connection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).expect("write over TLS");
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    parse_reply(&text).unwrap_or_else(|| panic!("no HTTP reply over TLS from {port}: {text:?}"))
}

/// A port for a switchyard listener that no other caller in this process gets and that
/// sits below the ephemeral range, so backends (`bind(0)`) and client sockets never take
/// it between the choice and switchyard's bind. Checked free when handed out.
pub fn listen_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static SEED: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let low: usize = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(32768);
    let span = low.saturating_sub(2048).min(12000);
    if span < 1000 {
        return free_port();
    }
    let start = low - span;
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as usize)
            .unwrap_or(0);
        (std::process::id() as usize).wrapping_mul(7919) ^ nanos
    });
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (start + (seed.wrapping_add(n)) % span) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
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

impl Switchyard {
    /// Sends `signal` (e.g. "-HUP") to the process with kill(1).
    pub fn signal(&self, signal: &str) {
        signal_process(signal, self.pid());
    }

    /// Replaces the configuration file (`{dir}` is replaced as in `write_config`).
    pub fn rewrite_config(&self, yaml: &str) {
        let yaml = yaml.replace("{dir}", &self.dir.path().display().to_string());
        let tmp = self.dir.path().join("switchyard.yaml.new");
        std::fs::write(&tmp, yaml).expect("write new config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }

    /// How many times `needle` occurs in stderr so far.
    pub fn stderr_count(&self, needle: &str) -> usize {
        self.stderr().matches(needle).count()
    }

    /// Waits (bounded by `limit`) until `needle` occurs at least `count` times in stderr.
    pub fn wait_stderr(&self, needle: &str, count: usize, limit: Duration) -> bool {
        wait_until(limit, Duration::from_millis(20), || {
            self.stderr_count(needle) >= count
        })
    }

    /// Sends SIGHUP and waits (10 s at most) until the metrics listener on `metrics`
    /// counts one successful reload, failing the test (with stderr) if it does not.
    pub fn reload_counted(&self, metrics: u16) {
        self.signal("-HUP");
        let reloads = wait_metric(
            metrics,
            "switchyard_config_reloads_total",
            &[("result", "success")],
            1.0,
        );
        assert_eq!(reloads, 1.0, "reload applied; stderr:\n{}", self.stderr());
    }

    /// Like `wait_stderr`, failing the test (with stderr) when `needle` does not come;
    /// returns how long it took.
    pub fn expect_stderr(&self, needle: &str, count: usize, limit: Duration) -> Duration {
        let t = Instant::now();
        assert!(
            self.wait_stderr(needle, count, limit),
            "no {needle:?} (x{count}) within {limit:?}; stderr:\n{}",
            self.stderr()
        );
        t.elapsed()
    }
}

/// The log line of a health check taking backend `addr` out.
pub fn went_down(addr: &str) -> String {
    format!("backend {addr} healthy -> unhealthy")
}

/// The log line of a health check bringing backend `addr` back.
pub fn came_up(addr: &str) -> String {
    format!("backend {addr} unhealthy -> healthy")
}

/// A backend that dies like a killed process: `kill()` closes its listener and every
/// open connection at once (no window in which new connections are still accepted).
/// Answers every request `200 backend NAME` with `X-Backend: NAME`, keeping connections
/// alive; request bodies are not expected.
pub struct KillableBackend {
    pub name: String,
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
            name: name.to_string(),
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

// ---------------------------------------------------------------------------------------
// TLS fixtures: a private CA issuing certificates at test time (OpenSSL, EC P-256), and a
// TLS client with full control over SNI, versions, ALPN, trust and client certificates.
// ---------------------------------------------------------------------------------------

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// A fresh EC P-256 private key.
pub fn new_key() -> PKey<Private> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
        .expect("P-256 group");
    let ec = openssl::ec::EcKey::generate(&group).expect("EC key");
    PKey::from_ec_key(ec).expect("PKey")
}

/// A private certificate authority that issues leaf certificates for tests.
pub struct TestCa {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CertUse {
    Server,
    Client,
}

fn x509_name(entries: &[(&str, &str)]) -> openssl::x509::X509Name {
    let mut name = openssl::x509::X509NameBuilder::new().expect("name builder");
    for (k, v) in entries {
        name.append_entry_by_text(k, v).expect("name entry");
    }
    name.build()
}

fn random_serial() -> openssl::asn1::Asn1Integer {
    let mut bn = openssl::bn::BigNum::new().expect("bignum");
    bn.rand(120, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .expect("random serial");
    bn.to_asn1_integer().expect("serial")
}

impl TestCa {
    /// A self-signed CA certificate with subject `CN=<cn>,O=Switchyard Tests`.
    pub fn new(cn: &str) -> TestCa {
        Self::make(cn, None)
    }

    /// An intermediate CA signed by this one (for chain tests).
    pub fn intermediate(&self, cn: &str) -> TestCa {
        Self::make(cn, Some(self))
    }

    /// A CA certificate for `CN=<cn>,O=Switchyard Tests`: self-signed for 10 years, or
    /// signed by `issuer` for 5 years with path length 0.
    fn make(cn: &str, issuer: Option<&TestCa>) -> TestCa {
        use openssl::x509::extension::{
            AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
        };
        let key = new_key();
        let name = x509_name(&[("CN", cn), ("O", "Switchyard Tests")]);
        let mut b = X509::builder().expect("x509 builder");
        b.set_version(2).expect("version");
        b.set_serial_number(&random_serial()).expect("serial");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(issuer.map_or(&*name, |i| i.cert.subject_name()))
            .expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        let days = if issuer.is_some() { 1825 } else { 3650 };
        let not_before = openssl::asn1::Asn1Time::days_from_now(0).expect("now");
        let not_after = openssl::asn1::Asn1Time::days_from_now(days).expect("later");
        b.set_not_before(&not_before).expect("not before");
        b.set_not_after(&not_after).expect("not after");
        let mut constraints = BasicConstraints::new();
        constraints.critical().ca();
        if issuer.is_some() {
            constraints.pathlen(0);
        }
        b.append_extension(constraints.build().expect("bc"))
            .expect("bc");
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku"),
        )
        .expect("ku");
        let issuer_cert = issuer.map(|i| &*i.cert);
        let skid = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(issuer_cert, None))
            .expect("skid");
        b.append_extension(skid).expect("skid");
        if issuer_cert.is_some() {
            let akid = AuthorityKeyIdentifier::new()
                .keyid(true)
                .build(&b.x509v3_context(issuer_cert, None))
                .expect("akid");
            b.append_extension(akid).expect("akid");
        }
        let signer = issuer.map_or(&key, |i| &i.key);
        b.sign(signer, openssl::hash::MessageDigest::sha256())
            .expect("sign CA");
        TestCa {
            cert: b.build(),
            key,
        }
    }

    /// A leaf certificate signed by this CA. `subject` is in certificate order (e.g.
    /// `[("O", "Example"), ("CN", "client-one")]`); `sans` are `DNS:name` or `IP:addr`.
    pub fn issue(
        &self,
        subject: &[(&str, &str)],
        sans: &[&str],
        usage: CertUse,
    ) -> (X509, PKey<Private>) {
        let key = new_key();
        let cert = self.issue_for(&key, subject, sans, usage);
        (cert, key)
    }

    /// Like `issue`, for an existing key.
    pub fn issue_for(
        &self,
        key: &PKey<Private>,
        subject: &[(&str, &str)],
        sans: &[&str],
        usage: CertUse,
    ) -> X509 {
        self.issue_for_days(key, subject, sans, usage, 365)
    }

    /// Like `issue_for`, valid from now for `days`.
    pub fn issue_for_days(
        &self,
        key: &PKey<Private>,
        subject: &[(&str, &str)],
        sans: &[&str],
        usage: CertUse,
        days: u32,
    ) -> X509 {
        use openssl::x509::extension::{
            AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage,
            SubjectAlternativeName,
        };
        let mut b = X509::builder().expect("x509 builder");
        b.set_version(2).expect("version");
        b.set_serial_number(&random_serial()).expect("serial");
        b.set_subject_name(&x509_name(subject)).expect("subject");
        b.set_issuer_name(self.cert.subject_name()).expect("issuer");
        b.set_pubkey(key).expect("pubkey");
        let not_before = openssl::asn1::Asn1Time::days_from_now(0).expect("now");
        let not_after = openssl::asn1::Asn1Time::days_from_now(days).expect("later");
        b.set_not_before(&not_before).expect("not before");
        b.set_not_after(&not_after).expect("not after");
        b.append_extension(BasicConstraints::new().build().expect("bc"))
            .expect("bc");
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build()
                .expect("ku"),
        )
        .expect("ku");
        let mut eku = ExtendedKeyUsage::new();
        match usage {
            CertUse::Server => eku.server_auth(),
            CertUse::Client => eku.client_auth(),
        };
        b.append_extension(eku.build().expect("eku")).expect("eku");
        if !sans.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for s in sans {
                match s.split_once(':') {
                    Some(("DNS", d)) => san.dns(d),
                    Some(("IP", ip)) => san.ip(ip),
                    _ => panic!("SAN {s:?} is not DNS:name or IP:addr"),
                };
            }
            let ext = san
                .build(&b.x509v3_context(Some(&self.cert), None))
                .expect("san");
            b.append_extension(ext).expect("san");
        }
        let akid = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))
            .expect("akid");
        b.append_extension(akid).expect("akid");
        b.sign(&self.key, openssl::hash::MessageDigest::sha256())
            .expect("sign leaf");
        b.build()
    }

    /// Writes the CA certificate to `dir/<name>` and returns the path as a string.
    pub fn write(&self, dir: &Path, name: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, self.cert.to_pem().expect("CA PEM")).expect("write CA");
        path.display().to_string()
    }
}

/// Writes `cert` (followed by `chain`) and `key` as PEM to `dir/<stem>.pem` and
/// `dir/<stem>.key`, overwriting in place; returns both paths as strings.
pub fn write_pair(
    dir: &Path,
    stem: &str,
    cert: &X509,
    chain: &[&X509],
    key: &PKey<Private>,
) -> (String, String) {
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    let mut pem = cert.to_pem().expect("cert PEM");
    for c in chain {
        pem.extend_from_slice(&c.to_pem().expect("chain PEM"));
    }
    std::fs::write(&cert_path, pem).expect("write cert");
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().expect("key PEM")).expect("write key");
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

/// The SHA-256 fingerprint of a certificate, as hex.
pub fn fingerprint(cert: &openssl::x509::X509Ref) -> String {
    cert.digest(openssl::hash::MessageDigest::sha256())
        .expect("digest")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The common name of a certificate's subject.
pub fn common_name(cert: &openssl::x509::X509Ref) -> String {
    cert.subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_default()
}

/// How a test TLS client connects.
#[derive(Default, Clone)]
pub struct TlsClient {
    /// SNI to send (None = no SNI extension at all).
    pub sni: Option<String>,
    /// Trust this CA and verify the chain (and the SNI name when set); None = no
    /// verification.
    pub ca: Option<X509>,
    /// A client certificate and its key (mutual TLS).
    pub identity: Option<(X509, PKey<Private>)>,
    /// Both bounds of the protocol version (None = library defaults).
    pub min_version: Option<openssl::ssl::SslVersion>,
    pub max_version: Option<openssl::ssl::SslVersion>,
    /// ALPN protocols offered, e.g. `["h2", "http/1.1"]`.
    pub alpn: Vec<&'static str>,
    /// OpenSSL security level 0 (needed to even offer TLS 1.0/1.1).
    pub legacy: bool,
}

/// An established TLS connection (the handshake is done).
pub type TlsStream = openssl::ssl::SslStream<TcpStream>;

impl TlsClient {
    pub fn sni(name: &str) -> TlsClient {
        TlsClient {
            sni: Some(name.to_string()),
            ..TlsClient::default()
        }
    }

    /// Connects to 127.0.0.1:`port` and runs the handshake (5 s timeouts).
    pub fn connect(&self, port: u16) -> Result<TlsStream, String> {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
        if self.legacy {
            b.set_security_level(0);
            b.set_cipher_list("DEFAULT:@SECLEVEL=0")
                .map_err(|e| e.to_string())?;
        }
        b.set_min_proto_version(self.min_version)
            .map_err(|e| e.to_string())?;
        b.set_max_proto_version(self.max_version)
            .map_err(|e| e.to_string())?;
        match &self.ca {
            Some(ca) => {
                let mut store =
                    openssl::x509::store::X509StoreBuilder::new().map_err(|e| e.to_string())?;
                store.add_cert(ca.clone()).map_err(|e| e.to_string())?;
                b.set_verify_cert_store(store.build())
                    .map_err(|e| e.to_string())?;
                b.set_verify(SslVerifyMode::PEER);
            }
            None => b.set_verify(SslVerifyMode::NONE),
        }
        if let Some((cert, key)) = &self.identity {
            b.set_certificate(cert).map_err(|e| e.to_string())?;
            b.set_private_key(key).map_err(|e| e.to_string())?;
        }
        if !self.alpn.is_empty() {
            let mut wire = Vec::new();
            for p in &self.alpn {
                wire.push(p.len() as u8);
                wire.extend_from_slice(p.as_bytes());
            }
            b.set_alpn_protos(&wire).map_err(|e| e.to_string())?;
        }
        let connector = b.build();
        let mut config = connector.configure().map_err(|e| e.to_string())?;
        config.set_verify_hostname(self.ca.is_some() && self.sni.is_some());
        config.set_use_server_name_indication(self.sni.is_some());
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(5)));
        config
            .connect(self.sni.as_deref().unwrap_or("localhost"), tcp)
            .map_err(|e| e.to_string())
    }

    /// Handshake plus one `GET path` (keep-alive off). Any failure — handshake, alert
    /// after the handshake (TLS 1.3 client-certificate checks), no or short reply — is Err.
    pub fn get(&self, port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        let mut s = self.connect(port)?;
        let host = self.sni.clone().unwrap_or_else(|| "localhost".to_string());
        let mut hs: Vec<(&str, &str)> = vec![("Host", host.as_str()), ("Connection", "close")];
        hs.extend_from_slice(headers);
        tls_send_request(&mut s, "GET", path, &hs)?;
        tls_read_reply(&mut s)
    }
}

/// The certificate the server presented on `s`.
pub fn served_cert(s: &TlsStream) -> X509 {
    s.ssl().peer_certificate().expect("server certificate")
}

/// Writes one HTTP/1.1 request (no body) on a TLS stream.
pub fn tls_send_request(
    s: &mut TlsStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(), String> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    s.write_all(raw.as_bytes()).map_err(|e| e.to_string())
}

/// Reads one HTTP/1.1 response with a Content-Length body (keep-alive safe), 5 s at most.
pub fn tls_read_reply(s: &mut TlsStream) -> Result<Reply, String> {
    read_reply(s)
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

/// A child process killed and reaped on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command-line tool with a time limit (it is killed past it); returns its output,
/// or None when the tool is not installed.
pub fn run_tool(program: &str, args: &[&str], limit: Duration) -> Option<Output> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    let mut child = child;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait for tool");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    Some(out)
}

/// Runs `cmd` with `input` on its stdin; its output (stdout and stderr captured).
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .unwrap_or_else(|e| panic!("cannot feed {cmd:?}: {e}"));
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("no output from {cmd:?}: {e}"))
}

/// Runs curl with `args` (20 s at most): (success, stdout, stderr). Fails the test when
/// curl is not installed.
pub fn curl(args: &[&str]) -> (bool, String, String) {
    let out = run_tool("curl", args, Duration::from_secs(20))
        .expect("curl is not installed (scripts/ensure-build-deps installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs h2load (nghttp2-client, 30 s at most) and returns its stdout.
pub fn h2load(args: &[&str]) -> String {
    let out = run_tool("h2load", args, Duration::from_secs(30))
        .expect("h2load is not installed: the test command must install nghttp2-client");
    String::from_utf8_lossy(&out.stdout).to_string()
}

// ---------------------------------------------------------------------------------
// L4 helpers: raw TCP servers, private PostgreSQL and MariaDB instances, metrics.
// ---------------------------------------------------------------------------------

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

    pub fn port(&self) -> u16 {
        self.addr.port()
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

/// Sends `sig` (e.g. "-INT") to `pid` with kill(1); false if that failed.
pub fn send_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Sends `signal` to `pid` with kill(1), failing the test if that fails.
pub fn signal_process(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// Is `pid` a live (not zombie) process?
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        // With /proc mounted, no entry means no process; without it, ask kill -0.
        Err(_) if Path::new("/proc/self").exists() => false,
        Err(_) => Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
    }
}

/// Waits (`limit` at most) until process `pid` is gone; false if it still runs.
pub fn wait_pid_gone(pid: u32, limit: Duration) -> bool {
    wait_until(limit, Duration::from_millis(25), || !pid_alive(pid))
}

/// Reads a live pid other than `not` from `pid_file`, waiting `limit` at most.
pub fn wait_pid_file(pid_file: &Path, not: Option<u32>, limit: Duration) -> Option<u32> {
    let mut pid = None;
    wait_until(limit, Duration::from_millis(25), || {
        pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|p| Some(*p) != not && pid_alive(*p));
        pid.is_some()
    });
    pid
}

/// Kills the processes of these pids on drop (daemonised instances are not our children).
pub struct PidGuard(pub Vec<u32>);

impl Drop for PidGuard {
    fn drop(&mut self) {
        for pid in &self.0 {
            if pid_alive(*pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// A switchyard command without the inherited $SWITCHYARD_CONFIG / $SWITCHYARD_LOG.
pub fn switchyard_command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("SWITCHYARD_CONFIG")
        .env_remove("SWITCHYARD_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Polls `child` until it exits, at most `limit`: its exit status, or None.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(limit, Duration::from_millis(20), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// Waits for `child` to exit, `limit` at most; kills it (SIGKILL) if it has not.
pub fn wait_or_kill(child: &mut Child, limit: Duration) {
    if wait_exit(child, limit).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs `cmd` with its output captured, killing it after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} did not finish within {limit:?}"));
            }
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("{cmd:?}: {e}"))
}

/// Like `run_bounded`, but only a zero exit counts: its trimmed stdout, else the error.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    let out = run_bounded(cmd, limit)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd:?} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The first of `names` found in `dirs` or on PATH.
pub fn find_program(names: &[&str], dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut all: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
    all.extend(std::env::split_paths(&path));
    for name in names {
        for dir in &all {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// True when the tests run as root (the owner of /proc/self is the effective user).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The uid and gid database servers run as when the tests run as root (nobody:nogroup).
const UNPRIVILEGED: u32 = 65534;

/// A command running `program` as an unprivileged user when the tests run as root
/// (PostgreSQL refuses to run as root), else as the current user.
fn unprivileged(program: &Path) -> Command {
    if running_as_root() {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={UNPRIVILEGED}"))
            .arg(format!("--regid={UNPRIVILEGED}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// A temporary directory under /tmp that the unprivileged user can write to.
fn shared_tempdir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("tempdir under /tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod tempdir");
    dir
}

/// Waits (`limit` at most, polling every `every`) until `ready(server)`; fails the test
/// with `log(server)` when time runs out or the process in `child(server)` exits first.
/// `what` ("postgres on PORT") names the server in the failure.
fn await_server<S>(
    server: &mut S,
    what: &str,
    (limit, every): (Duration, Duration),
    child: fn(&mut S) -> &mut Option<Child>,
    ready: fn(&S) -> bool,
    log: fn(&S) -> String,
) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(Ok(Some(status))) = child(server).as_mut().map(|c| c.try_wait()) {
            panic!("{what} exited with {status}; log:\n{}", log(server));
        }
        if ready(server) {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what} not ready; log:\n{}", log(server));
        }
        std::thread::sleep(every);
    }
}

/// Whether `cmd` exits 0 within 5 s.
fn succeeds(cmd: &mut Command) -> bool {
    run_bounded(cmd, Duration::from_secs(5)).is_ok_and(|o| o.status.success())
}

/// A private PostgreSQL server on 127.0.0.1 (trust authentication, superuser
/// `postgres`, role `switchyard_health` created), in a temporary directory, run as
/// nobody when the tests run as root. Stopped and removed on drop.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Postgres {
    /// The newest `/usr/lib/postgresql/*/bin` (or PATH) with the server binaries.
    fn bin_dir() -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort_by_key(|d| {
            d.parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        });
        let complete = |d: &Path| {
            ["initdb", "postgres", "psql", "pg_isready"]
                .iter()
                .all(|b| d.join(b).is_file())
        };
        if let Some(d) = dirs.into_iter().rev().find(|d| complete(d)) {
            return Some(d);
        }
        find_program(&["initdb"], &[])
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| complete(d))
    }

    /// Starts an instance, or prints a SKIP line and returns `None` when PostgreSQL is
    /// not installed (CI installs the `postgresql` package).
    pub fn start() -> Option<Postgres> {
        let Some(bin) = Self::bin_dir() else {
            eprintln!("SKIP: PostgreSQL server binaries not found (apt-get install postgresql)");
            return None;
        };
        if running_as_root() && find_program(&["setpriv"], &["/usr/bin", "/bin"]).is_none() {
            eprintln!("SKIP: running as root and setpriv (util-linux) is missing");
            return None;
        }
        let dir = shared_tempdir("switchyard-pg-");
        let data = dir.path().join("data");
        run_ok(
            unprivileged(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["--auth=trust", "-U", "postgres", "-N", "-E", "UTF8"])
                .arg("--locale=C"),
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("initdb failed: {e}"));
        let mut pg = Postgres {
            port: listen_port(),
            bin,
            dir,
            child: None,
        };
        pg.launch();
        pg.psql(pg.port, "CREATE ROLE switchyard_health LOGIN")
            .unwrap_or_else(|e| panic!("create role: {e}"));
        Some(pg)
    }

    /// Starts the server process (again) and waits until it accepts queries (60 s at most).
    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("postgres log file");
        let log2 = log.try_clone().expect("log file");
        let child = unprivileged(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=60"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let what = format!("postgres on {}", self.port);
        await_server(
            self,
            &what,
            (Duration::from_secs(60), Duration::from_millis(100)),
            |pg| &mut pg.child,
            |pg| {
                succeeds(
                    Command::new(pg.bin.join("pg_isready"))
                        .args(["-h", "127.0.0.1", "-t", "2", "-p"])
                        .arg(pg.port.to_string()),
                ) && pg.psql(pg.port, "SELECT 1").is_ok()
            },
            Postgres::log,
        );
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Runs `sql` with psql as `postgres` against 127.0.0.1:`port` (this instance or a
    /// proxy in front of it); the unaligned, tuples-only output.
    pub fn psql(&self, port: u16, sql: &str) -> Result<String, String> {
        psql_at(&self.bin, port, sql, &[])
    }

    /// Like `psql`, but started in the background with `PGAPPNAME=app` (stopped on drop).
    pub fn psql_background(&self, port: u16, sql: &str, app: &str) -> ChildGuard {
        let child = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-w",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-p")
            .arg(port.to_string())
            .args(["-Atc", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .env("PGAPPNAME", app)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start psql");
        ChildGuard(child)
    }

    /// Puts `line` first in pg_hba.conf (first match wins) and reloads the server.
    pub fn prepend_hba(&self, line: &str) {
        let path = self.dir.path().join("data").join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).expect("read pg_hba.conf");
        std::fs::write(&path, format!("{line}\n{old}")).expect("write pg_hba.conf");
        self.psql(self.port, "SELECT pg_reload_conf()")
            .unwrap_or_else(|e| panic!("reload: {e}"));
    }

    /// Fast shutdown (SIGINT), waiting for the server to exit (SIGKILL after 20 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), "-CONT");
            send_signal(child.id(), "-INT");
            wait_or_kill(&mut child, Duration::from_secs(20));
        }
    }

    /// Starts the stopped server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Freezes the server (SIGSTOP): the kernel still accepts TCP connections for it,
    /// but nothing answers the protocol.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            assert!(send_signal(pid, "-STOP"), "SIGSTOP postgres");
        }
    }

    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            assert!(send_signal(pid, "-CONT"), "SIGCONT postgres");
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn psql_at(bin: &Path, port: u16, sql: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let mut cmd = Command::new(bin.join("psql"));
    cmd.args([
        "-X",
        "-w",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "postgres",
    ])
    .arg("-p")
    .arg(port.to_string())
    .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
    .env("PGCONNECT_TIMEOUT", "5");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_ok(&mut cmd, Duration::from_secs(20))
}

/// A private MariaDB server on 127.0.0.1 with `--max-connect-errors=5`, root without
/// a password over TCP and a password-less `switchyard_health@'%'`, in a temporary
/// directory. Stopped and removed on drop.
pub struct Mariadb {
    pub port: u16,
    server: PathBuf,
    client: PathBuf,
    admin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mariadb {
    /// Starts an instance, or prints a SKIP line and returns `None` when MariaDB is not
    /// installed (CI installs `mariadb-server` and `mariadb-client`).
    pub fn start() -> Option<Mariadb> {
        let sbin = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];
        let found = (
            find_program(&["mariadbd", "mysqld"], &sbin),
            find_program(&["mariadb-install-db", "mysql_install_db"], &sbin),
            find_program(&["mariadb", "mysql"], &sbin),
            find_program(&["mariadb-admin", "mysqladmin"], &sbin),
        );
        let (Some(server), Some(install), Some(client), Some(admin)) = found else {
            eprintln!(
                "SKIP: MariaDB binaries not found (apt-get install mariadb-server mariadb-client)"
            );
            return None;
        };
        let dir = shared_tempdir("switchyard-mdb-");
        let mut cmd = Command::new(&install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--tmpdir={}", dir.path().display()));
        if running_as_root() {
            cmd.arg("--user=root");
        }
        run_ok(&mut cmd, Duration::from_secs(180))
            .unwrap_or_else(|e| panic!("mariadb-install-db failed: {e}"));
        let mut db = Mariadb {
            port: listen_port(),
            server,
            client,
            admin,
            dir,
            child: None,
        };
        db.launch();
        // Set up over the unix socket: root may log in over TCP from 127.0.0.1, the
        // health-check user from anywhere, both without a password.
        let setup = "CREATE USER IF NOT EXISTS root@'127.0.0.1'; \
             GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION; \
             CREATE USER switchyard_health@'%'; FLUSH PRIVILEGES;";
        run_ok(
            Command::new(&db.client)
                .arg("--no-defaults")
                .arg(format!("--socket={}", db.socket().display()))
                .args(["-uroot", "-e", setup]),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("mariadb setup failed: {e}; log:\n{}", db.log()));
        Some(db)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// Starts mariadbd (again) and waits until it answers a ping (60 s at most).
    fn launch(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new(&self.server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--tmpdir={}", d.display()))
            .args([
                "--skip-log-bin",
                "--max-connect-errors=5",
                "--skip-name-resolve",
            ])
            .args(["--innodb-buffer-pool-size=32M", "--max-connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if running_as_root() {
            cmd.arg("--user=root");
        }
        self.child = Some(cmd.spawn().expect("start mariadbd"));
        let what = format!("mariadbd on {}", self.port);
        await_server(
            self,
            &what,
            (Duration::from_secs(60), Duration::from_millis(100)),
            |db| &mut db.child,
            |db| {
                succeeds(
                    Command::new(&db.admin)
                        .args(["--no-defaults", "--protocol=tcp", "-h127.0.0.1", "-uroot"])
                        .arg(format!("-P{}", db.port))
                        .args(["--connect-timeout=2", "ping"]),
                )
            },
            Mariadb::log,
        );
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Runs `sql` as root over TCP against 127.0.0.1:`port` (this server or a proxy in
    /// front of it); tab-separated rows without column names.
    pub fn query(&self, port: u16, sql: &str) -> Result<String, String> {
        run_ok(
            Command::new(&self.client)
                .args([
                    "--no-defaults",
                    "--protocol=tcp",
                    "-h",
                    "127.0.0.1",
                    "-uroot",
                ])
                .arg(format!("-P{port}"))
                .args(["--connect-timeout=5", "-N", "-B", "-e", sql]),
            Duration::from_secs(20),
        )
    }

    /// A global status counter of this server (e.g. `Connections`, `Aborted_connects`).
    pub fn status(&self, name: &str) -> u64 {
        let out = self
            .query(self.port, &format!("SHOW GLOBAL STATUS LIKE '{name}'"))
            .unwrap_or_else(|e| panic!("status {name}: {e}"));
        out.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no status {name} in {out:?}"))
    }

    /// Graceful shutdown (SIGTERM), waiting for the server to exit (SIGKILL after 30 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), "-TERM");
            wait_or_kill(&mut child, Duration::from_secs(30));
        }
    }

    /// Starts the stopped server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True once something listens on 127.0.0.1:`port` (or the IPv4/IPv6 wildcard),
/// judged from /proc/net/tcp{,6} without connecting to it.
pub fn is_listening(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|file| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                cols.len() > 3
                    && cols[1].ends_with(&hex)
                    && cols[3] == "0A"
                    && (cols[1].starts_with("0100007F")
                        || cols[1].starts_with("00000000")
                        || cols[1].starts_with("00000000000000000000000000000000"))
            })
    })
}

impl Switchyard {
    /// Like `start`, but waits for the ports to be listening without connecting to
    /// them (for TCP services, where a probe connection would be a proxied session).
    pub fn start_without_probe(yaml: &str, ports: &[u16]) -> Switchyard {
        let (dir, config_path) = write_config(yaml);
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = Command::new(BIN)
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start switchyard");
        let mut s = Switchyard {
            child,
            access_log: dir.path().join("access.log"),
            dir,
            config_path,
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ports.iter().all(|p| is_listening(*p)) {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("switchyard exited with {status}; stderr:\n{}", s.stderr());
            }
            if Instant::now() > deadline {
                let _ = s.child.kill();
                panic!(
                    "switchyard did not listen on all of {ports:?}; stderr:\n{}",
                    s.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        s
    }
}

// ---------------------------------------------------------------------------------------
// Rate-limit helpers: a keep-alive HTTP/1.1 client, process memory, a private Redis.
// ---------------------------------------------------------------------------------------

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

/// The resident set size of process `pid` in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A private Redis server on 127.0.0.1 (`--save '' --appendonly no`), in a temporary
/// directory; stopped on drop.
pub struct Redis {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    /// Starts an instance, or prints a SKIP line and returns `None` when redis-server is
    /// not installed (CI installs `redis-server`).
    pub fn start() -> Option<Redis> {
        let dirs = ["/usr/bin", "/usr/local/bin", "/usr/sbin"];
        let Some(bin) = find_program(&["redis-server"], &dirs) else {
            eprintln!("SKIP: redis-server not found (apt-get install redis-server)");
            return None;
        };
        let mut r = Redis {
            port: listen_port(),
            bin,
            dir: tempfile::tempdir().expect("tempdir for redis"),
            child: None,
        };
        r.launch();
        Some(r)
    }

    /// Starts the server (again) on the same port and waits until it answers PING
    /// (10 s at most).
    pub fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("redis log");
        let child = Command::new(&self.bin)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let what = format!("redis-server on {}", self.port);
        await_server(
            self,
            &what,
            (Duration::from_secs(10), Duration::from_millis(50)),
            |r| &mut r.child,
            |r| r.command(&["PING"]).is_ok_and(|pong| pong == "+PONG"),
            Redis::log,
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Sends one command (RESP) and returns the answer: a status, error or integer line
    /// as sent (`+PONG`, `-ERR …`, `:1`), or a bulk string's content (`(nil)` for none).
    /// Arrays are not supported. 2 s timeouts.
    pub fn command(&self, args: &[&str]) -> Result<String, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut out: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(end) = out.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&out[..end]).to_string();
                match line.strip_prefix('$') {
                    None => return Ok(line),
                    Some(len) => {
                        let len: i64 = len.parse().map_err(|_| format!("bad reply {line:?}"))?;
                        if len < 0 {
                            return Ok("(nil)".to_string());
                        }
                        let len = len as usize;
                        if out.len() >= end + 2 + len {
                            return Ok(
                                String::from_utf8_lossy(&out[end + 2..end + 2 + len]).to_string()
                            );
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no complete reply: {:?}",
                    String::from_utf8_lossy(&out)
                ));
            }
            match s.read(&mut chunk) {
                Ok(0) => return Err("connection closed".to_string()),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// A field of `INFO section` (e.g. `connected_clients` in `clients`), if present.
    pub fn info(&self, section: &str, field: &str) -> Option<String> {
        let text = self.command(&["INFO", section]).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            assert!(send_signal(pid, "-STOP"), "SIGSTOP redis");
        }
    }

    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            assert!(send_signal(pid, "-CONT"), "SIGCONT redis");
        }
    }

    /// Stops the server (SIGKILL, like a crash) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
