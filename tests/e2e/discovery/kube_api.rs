//! A Kubernetes API server test double on 127.0.0.1 (plain HTTP, reached through a
//! kubeconfig file), faithful to the published API for what discovery uses:
//! `GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices` with `labelSelector`
//! (equality terms), answering an `EndpointSliceList` with `metadata.resourceVersion`
//! (items without `kind`/`apiVersion`, as the server sends them), and the same path with
//! `watch=true&resourceVersion=RV`: a chunked stream of JSON lines `{"type": ADDED |
//! MODIFIED | DELETED | BOOKMARK | ERROR, "object": ...}` replaying what happened after
//! RV, or, when RV is older than the compacted history, one `ERROR` event carrying the
//! `Status` `410 Expired` ("too old resource version") and the end of the stream.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PATH_PREFIX: &str = "/apis/discovery.k8s.io/v1/namespaces/";

/// A `labelSelector` of equality terms.
type Selector = Vec<(String, String)>;

#[derive(Default)]
struct State {
    /// name → the slice (with its resourceVersion).
    slices: BTreeMap<String, Value>,
    rv: u64,
    /// Every change as (resourceVersion, the watch event line).
    history: Vec<(u64, String)>,
    /// Watches from a resourceVersion below this get 410.
    compacted: u64,
    /// Open watches: their label selector and where their lines go.
    watches: Vec<(Selector, mpsc::Sender<Option<String>>)>,
    lists: usize,
    /// The `resourceVersion` of every watch request, in order.
    watch_versions: Vec<String>,
    /// While set, new watch requests wait (a client that is away, as far as it sees).
    hold: bool,
}

pub struct KubeApi {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stopping: Arc<AtomicBool>,
}

/// An EndpointSlice of Service `service`: one port (`port_name`, `port`) and
/// `endpoints` as (IP, ready, terminating).
pub fn slice(
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: &[(&str, bool, bool)],
) -> Value {
    json!({
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "generateName": format!("{service}-"),
            "uid": format!("00000000-0000-0000-0000-{:0>12}", name.len()),
        },
        "addressType": "IPv4",
        "endpoints": endpoints.iter().map(|(ip, ready, terminating)| json!({
            "addresses": [ip],
            "conditions": {"ready": ready, "serving": *ready || *terminating, "terminating": terminating},
            "nodeName": "node-1",
        })).collect::<Vec<_>>(),
        "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"})).collect::<Vec<_>>(),
    })
}

fn typed(mut object: Value) -> Value {
    object["kind"] = json!("EndpointSlice");
    object["apiVersion"] = json!("discovery.k8s.io/v1");
    object
}

fn labels_match(object: &Value, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| object["metadata"]["labels"][k].as_str() == Some(v.as_str()))
}

impl KubeApi {
    pub fn start(port: u16, slices: &[Value]) -> KubeApi {
        Self::start_at(port, slices, 100)
    }

    /// A server whose history starts at resourceVersion `rv` (an API server restarted
    /// over the same store: older versions are gone, so a resuming watch gets 410).
    pub fn start_at(port: u16, slices: &[Value], rv: u64) -> KubeApi {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the Kubernetes API");
        let api = KubeApi {
            port,
            state: Arc::new(Mutex::new(State::default())),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        {
            let mut s = api.state.lock().unwrap();
            s.rv = rv;
            s.compacted = rv;
            for sl in slices {
                apply_locked(&mut s, sl.clone());
            }
        }
        let (st, stop) = (api.state.clone(), api.stopping.clone());
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
        api
    }

    /// A kubeconfig naming this server (a token user, as a service account has).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\nusers:\n- name: test\n  user:\n    token: test-token\n",
            self.port
        )
    }

    /// Creates or replaces a slice (ADDED or MODIFIED).
    /// Returns the change's resourceVersion.
    pub fn apply(&self, slice: Value) -> String {
        let mut s = self.state.lock().unwrap();
        apply_locked(&mut s, slice);
        s.rv.to_string()
    }

    pub fn delete(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        let Some(mut object) = s.slices.remove(name) else {
            panic!("no slice {name}");
        };
        s.rv += 1;
        object["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        emit(&mut s, "DELETED", object);
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch.
    pub fn bookmark(&self) -> String {
        let mut s = self.state.lock().unwrap();
        let rv = s.rv.to_string();
        let object = json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": {"resourceVersion": rv}});
        let line = format!("{}\n", json!({"type": "BOOKMARK", "object": object}));
        s.watches
            .retain(|(_, tx)| tx.send(Some(line.clone())).is_ok());
        rv
    }

    /// Ends every open watch as the server does at its timeout (the client resumes).
    pub fn end_watches(&self) {
        let mut s = self.state.lock().unwrap();
        for (_, tx) in s.watches.drain(..) {
            let _ = tx.send(None);
        }
    }

    /// Compacts the history: a watch resuming from before now gets 410 Gone.
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.compacted = s.rv;
        s.history.clear();
    }

    /// Holds new watch requests until `hold(false)`.
    pub fn hold(&self, on: bool) {
        self.state.lock().unwrap().hold = on;
    }

    /// The current resourceVersion.
    pub fn version(&self) -> u64 {
        self.state.lock().unwrap().rv
    }

    pub fn lists(&self) -> usize {
        self.state.lock().unwrap().lists
    }

    pub fn watch_versions(&self) -> Vec<String> {
        self.state.lock().unwrap().watch_versions.clone()
    }

    pub fn watches(&self) -> usize {
        let mut s = self.state.lock().unwrap();
        s.watches
            .retain(|(_, tx)| tx.send(Some(String::new())).is_ok());
        s.watches.len()
    }

    pub fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        self.end_watches();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

fn apply_locked(s: &mut State, mut object: Value) {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    s.rv += 1;
    object["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    let kind = if s.slices.contains_key(&name) {
        "MODIFIED"
    } else {
        "ADDED"
    };
    s.slices.insert(name, object.clone());
    emit(s, kind, object);
}

fn emit(s: &mut State, kind: &str, object: Value) {
    let line = format!(
        "{}\n",
        json!({"type": kind, "object": typed(object.clone())})
    );
    let rv = s.rv;
    s.history.push((rv, line.clone()));
    s.watches.retain(|(selector, tx)| {
        !labels_match(&object, selector) || tx.send(Some(line.clone())).is_ok()
    });
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(w: &mut TcpStream, code: u16, reason: &str, message: &str) -> std::io::Result<()> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code})
    .to_string();
    let text = match code {
        404 => "Not Found",
        410 => "Gone",
        _ => "Bad Request",
    };
    write!(w, "HTTP/1.1 {code} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

fn serve(conn: TcpStream, state: &Mutex<State>, stopping: &AtomicBool) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut w = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let namespace = path
            .strip_prefix(PATH_PREFIX)
            .and_then(|rest| rest.strip_suffix("/endpointslices"));
        let Some(namespace) = namespace.filter(|n| !n.contains('/')) else {
            if status(
                &mut w,
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
            .is_err()
            {
                return;
            }
            continue;
        };
        let selector: Vec<(String, String)> = params
            .get("labelSelector")
            .map(|s| {
                s.split(',')
                    .filter_map(|t| t.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
            // A watch that ended cleanly leaves the connection open for the next request.
            let from = params.get("resourceVersion").cloned();
            if !watch(&mut w, state, namespace, selector, from, stopping) {
                return;
            }
            continue;
        }
        let body = {
            let mut s = state.lock().unwrap();
            s.lists += 1;
            let items: Vec<Value> = s
                .slices
                .values()
                .filter(|o| o["metadata"]["namespace"] == namespace && labels_match(o, &selector))
                .cloned()
                .collect();
            json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                   "metadata": {"resourceVersion": s.rv.to_string()}, "items": items})
            .to_string()
        };
        let sent = write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if sent.is_err() {
            return;
        }
    }
}

/// Streams one watch; true when it ended cleanly (the connection can serve on).
fn watch(
    w: &mut TcpStream,
    state: &Mutex<State>,
    namespace: &str,
    selector: Vec<(String, String)>,
    from: Option<String>,
    stopping: &AtomicBool,
) -> bool {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunk = |w: &mut TcpStream, line: &str| -> bool {
        w.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())
            .is_ok()
            && w.flush().is_ok()
    };
    let end = |w: &mut TcpStream| w.write_all(b"0\r\n\r\n").is_ok() && w.flush().is_ok();
    if w.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let (tx, rx) = mpsc::channel();
    while state.lock().unwrap().hold && !stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let replay: Result<Vec<String>, String> = {
        let mut s = state.lock().unwrap();
        let rv = from.clone().unwrap_or_default();
        s.watch_versions.push(rv.clone());
        let since: u64 = rv.parse().unwrap_or(s.rv);
        if since < s.compacted {
            Err(format!(
                "too old resource version: {since} ({})",
                s.compacted
            ))
        } else {
            s.watches.push((selector.clone(), tx));
            Ok(s.history
                .iter()
                .filter(|(v, line)| {
                    *v > since && {
                        let e: Value = serde_json::from_str(line).unwrap_or_default();
                        e["object"]["metadata"]["namespace"] == namespace
                            && labels_match(&e["object"], &selector)
                    }
                })
                .map(|(_, l)| l.clone())
                .collect())
        }
    };
    let lines = match replay {
        Ok(lines) => lines,
        Err(message) => {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": message, "reason": "Expired", "code": 410});
            let line = format!("{}\n", json!({"type": "ERROR", "object": status}));
            return chunk(w, &line) && end(w);
        }
    };
    for line in lines {
        if !chunk(w, &line) {
            return false;
        }
    }
    loop {
        if stopping.load(Ordering::SeqCst) {
            let _ = w.shutdown(std::net::Shutdown::Both);
            return false;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(line)) if line.is_empty() => {}
            Ok(Some(line)) => {
                if !chunk(w, &line) {
                    return false;
                }
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => return end(w),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}
