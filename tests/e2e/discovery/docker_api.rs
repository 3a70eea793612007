//! A Docker Engine API test server on a Unix socket, faithful to the published API
//! (v1.4x/1.5x) for what discovery uses: `GET /v{version}/containers/json` with the
//! `all` and `filters` (JSON: `label` as `key` or `key=value`, `status`) parameters,
//! answering `ContainerSummary` objects (`Id`, `Names`, `Labels`, `State`, `Status`,
//! `Ports`, `NetworkSettings.Networks.*.IPAddress`), and `GET /v{version}/events`, a
//! chunked stream of newline-separated event objects (`Type`, `Action`, `Actor.ID`,
//! `Actor.Attributes` holding the labels, `scope`, `time`, `timeNano`) filtered by
//! `type` and `label`, replaying past events from `since` (Unix seconds) first. Unknown paths get 404 `{"message": ...}` as the engine answers.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone)]
pub struct Container {
    pub id: String,
    pub labels: Vec<(String, String)>,
    /// (network name, IP address)
    pub networks: Vec<(String, String)>,
    pub exposed: Vec<u16>,
    pub running: bool,
    pub unhealthy: bool,
}

impl Container {
    /// A running container on network `bridge` at 127.0.0.1 with `labels`.
    pub fn new(id: &str, labels: &[(&str, &str)]) -> Container {
        Container {
            id: format!("{id:0<64}"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            networks: vec![("bridge".into(), "127.0.0.1".into())],
            exposed: Vec::new(),
            running: true,
            unhealthy: false,
        }
    }

    fn summary(&self) -> Value {
        let labels: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let networks: serde_json::Map<String, Value> = self
            .networks
            .iter()
            .map(|(name, ip)| {
                (
                    name.clone(),
                    json!({"NetworkID": format!("{name:x<64}"), "EndpointID": "", "Gateway": "",
                           "IPAddress": ip, "IPPrefixLen": 8, "MacAddress": ""}),
                )
            })
            .collect();
        let status = match (self.running, self.unhealthy) {
            (false, _) => "Exited (0) 1 second ago".to_string(),
            (true, true) => "Up 10 seconds (unhealthy)".to_string(),
            (true, false) => "Up 10 seconds".to_string(),
        };
        json!({
            "Id": self.id,
            "Names": [format!("/{}", &self.id[..12])],
            "Image": "example/web:latest",
            "ImageID": format!("sha256:{:0<64}", 0),
            "Command": "/serve",
            "Created": 1_700_000_000,
            "Ports": self.exposed.iter().map(|p| json!({"PrivatePort": p, "Type": "tcp"})).collect::<Vec<_>>(),
            "Labels": labels,
            "State": if self.running { "running" } else { "exited" },
            "Status": status,
            "HostConfig": {"NetworkMode": "bridge"},
            "NetworkSettings": {"Networks": networks},
            "Mounts": [],
        })
    }

    fn matches(&self, filters: &HashMap<String, Vec<String>>, all: bool) -> bool {
        if !all && !self.running {
            return false;
        }
        let labels_ok = filters.get("label").is_none_or(|want| {
            want.iter().all(|f| match f.split_once('=') {
                Some((k, v)) => self.labels.iter().any(|(lk, lv)| lk == k && lv == v),
                None => self.labels.iter().any(|(lk, _)| lk == f),
            })
        });
        let state = if self.running { "running" } else { "exited" };
        let status_ok = filters
            .get("status")
            .is_none_or(|want| want.iter().any(|s| s == state));
        labels_ok && status_ok
    }
}

/// A query's `filters`: name to accepted values.
type Filters = HashMap<String, Vec<String>>;

struct State {
    containers: Vec<Container>,
    /// Open `/events` streams: their filters and where their lines go.
    streams: Vec<(Filters, mpsc::Sender<String>)>,
    /// `GET /containers/json` requests served.
    lists: usize,
    /// Every event as (time in seconds, the container, its line), for `since`.
    history: Vec<(u64, Container, String)>,
}

/// The engine: serves until dropped (or `stop`ped), removing its socket.
pub struct DockerApi {
    pub socket: PathBuf,
    state: Arc<Mutex<State>>,
    stopping: Arc<AtomicBool>,
}

impl DockerApi {
    pub fn start(socket: &Path, containers: Vec<Container>) -> DockerApi {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).expect("bind the Docker API socket");
        let state = Arc::new(Mutex::new(State {
            containers,
            streams: Vec::new(),
            lists: 0,
            history: Vec::new(),
        }));
        let stopping = Arc::new(AtomicBool::new(false));
        let (st, stop) = (state.clone(), stopping.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (st, stop) = (st.clone(), stop.clone());
                std::thread::spawn(move || serve(conn, &st, &stop));
            }
        });
        DockerApi {
            socket: socket.to_path_buf(),
            state,
            stopping,
        }
    }

    /// Adds (or replaces) a container and announces it as the engine does (`start`).
    pub fn run(&self, c: Container) {
        let mut s = self.state.lock().unwrap();
        s.containers.retain(|o| o.id != c.id);
        s.containers.push(c.clone());
        publish(&mut s, &c, "start");
    }

    /// The container stops: `die`, then `stop`.
    pub fn stop_container(&self, id: &str) {
        let mut s = self.state.lock().unwrap();
        let Some(c) = s.containers.iter_mut().find(|c| c.id.starts_with(id)) else {
            panic!("no container {id}");
        };
        c.running = false;
        let c = c.clone();
        publish(&mut s, &c, "die");
        publish(&mut s, &c, "stop");
    }

    /// The Docker health check changes (`health_status: healthy|unhealthy`).
    pub fn set_health(&self, id: &str, healthy: bool) {
        let mut s = self.state.lock().unwrap();
        let Some(c) = s.containers.iter_mut().find(|c| c.id.starts_with(id)) else {
            panic!("no container {id}");
        };
        c.unhealthy = !healthy;
        let c = c.clone();
        let action = if healthy {
            "health_status: healthy"
        } else {
            "health_status: unhealthy"
        };
        publish(&mut s, &c, action);
    }

    /// `GET /containers/json` requests so far.
    pub fn lists(&self) -> usize {
        self.state.lock().unwrap().lists
    }

    /// Open `/events` streams.
    pub fn streams(&self) -> usize {
        let mut s = self.state.lock().unwrap();
        s.streams.retain(|(_, tx)| tx.send(String::new()).is_ok());
        s.streams.len()
    }

    /// The engine goes away: the socket closes and every stream ends.
    pub fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        self.state.lock().unwrap().streams.clear();
        let _ = UnixStream::connect(&self.socket);
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for DockerApi {
    fn drop(&mut self) {
        self.stop();
    }
}

fn publish(s: &mut State, c: &Container, action: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut attributes: serde_json::Map<String, Value> = c
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    attributes.insert("name".into(), json!(&c.id[..12]));
    attributes.insert("image".into(), json!("example/web:latest"));
    let event = json!({
        "Type": "container",
        "Action": action,
        "Actor": {"ID": c.id, "Attributes": attributes},
        "scope": "local",
        "time": now.as_secs(),
        "timeNano": now.as_nanos() as u64,
    });
    let line = format!("{event}\n");
    s.history.push((now.as_secs(), c.clone(), line.clone()));
    s.streams
        .retain(|(filters, tx)| !wanted(filters, c) || tx.send(line.clone()).is_ok());
}

fn wanted(filters: &Filters, c: &Container) -> bool {
    let type_ok = filters
        .get("type")
        .is_none_or(|t| t.iter().any(|t| t == "container"));
    type_ok && c.matches(filters, true)
}

/// The request target's path (without `/v1.xx`) and its decoded query parameters.
fn split_target(target: &str) -> (String, HashMap<String, String>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest
            .find('/')
            .map_or("/".to_string(), |i| rest[i..].to_string()),
        _ => path.to_string(),
    };
    let params = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    (path, params)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn filters_of(params: &HashMap<String, String>) -> Result<HashMap<String, Vec<String>>, String> {
    match params.get("filters").filter(|f| !f.is_empty()) {
        None => Ok(HashMap::new()),
        Some(f) => {
            let v: Value = serde_json::from_str(f).map_err(|e| format!("invalid filter: {e}"))?;
            let map = v.as_object().ok_or("invalid filter: not an object")?;
            let mut out = HashMap::new();
            for (k, v) in map {
                // Older clients send {"label": {"a=b": true}}; current ones a list.
                let values: Vec<String> = match v {
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                    Value::Object(o) => o.keys().cloned().collect(),
                    _ => return Err(format!("invalid filter {k}")),
                };
                out.insert(k.clone(), values);
            }
            Ok(out)
        }
    }
}

fn respond(w: &mut UnixStream, status: &str, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    write!(
        w,
        "HTTP/1.1 {status}\r\nApi-Version: 1.47\r\nContent-Type: application/json\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/27.0.0 (linux)\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One client connection: requests in turn (keep-alive) until EOF, or one events stream.
fn serve(conn: UnixStream, state: &Mutex<State>, stopping: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut w = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let (path, params) = split_target(target);
        let filters = match filters_of(&params) {
            Ok(f) => f,
            Err(e) => {
                let _ = respond(&mut w, "400 Bad Request", &json!({"message": e}));
                continue;
            }
        };
        let sent = match (method, path.as_str()) {
            ("GET", "/_ping") => write!(w, "HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nOK"),
            ("GET", "/containers/json") => {
                let all = params.get("all").is_some_and(|a| a == "true" || a == "1");
                let mut s = state.lock().unwrap();
                s.lists += 1;
                let list: Vec<Value> = s
                    .containers
                    .iter()
                    .filter(|c| c.matches(&filters, all))
                    .map(Container::summary)
                    .collect();
                drop(s);
                respond(&mut w, "200 OK", &Value::Array(list))
            }
            ("GET", "/events") => {
                let (tx, rx) = mpsc::channel();
                let mut s = state.lock().unwrap();
                // `since`: past events from that time on come first.
                if let Some(since) = params.get("since").and_then(|t| t.parse::<u64>().ok()) {
                    for (_, _, line) in s
                        .history
                        .iter()
                        .filter(|(t, c, _)| *t >= since && wanted(&filters, c))
                    {
                        let _ = tx.send(line.clone());
                    }
                }
                s.streams.push((filters, tx));
                drop(s);
                stream_events(w, rx, stopping);
                return;
            }
            _ => respond(
                &mut w,
                "404 Not Found",
                &json!({"message": format!("page not found: {method} {path}")}),
            ),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Chunked transfer of each event line until the engine stops or the client leaves.
fn stream_events(mut w: UnixStream, rx: mpsc::Receiver<String>, stopping: &AtomicBool) {
    let head = "HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\nContent-Type: application/json\r\nServer: Docker/27.0.0 (linux)\r\nTransfer-Encoding: chunked\r\n\r\n";
    if w.write_all(head.as_bytes()).is_err() || w.flush().is_err() {
        return;
    }
    loop {
        if stopping.load(Ordering::SeqCst) {
            let _ = w.shutdown(std::net::Shutdown::Both);
            return;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            // An empty line is a liveness probe from `streams`; nothing goes out.
            Ok(line) if line.is_empty() => {}
            Ok(line) => {
                let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                if w.write_all(chunk.as_bytes()).is_err() || w.flush().is_err() {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = w.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}
