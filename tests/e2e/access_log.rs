//! The JSON access log end to end (SPEC §7): one line per request with exactly the
//! documented fields, and the `log.access_log` targets (file, stdout, stderr, off).
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// SPEC §7's fields, then the four SPEC §13 adds.
const FIELDS: [&str; 18] = [
    "ts",
    "request_id",
    "client_ip",
    "method",
    "host",
    "path",
    "status",
    "duration_ms",
    "route",
    "pool",
    "backend",
    "bytes_sent",
    "protocol",
    "tls",
    "termination",
    "attempts",
    "upstream_connect_ms",
    "upstream_response_ms",
];

/// `2026-11-22T10:30:45.123Z`: RFC 3339, UTC, milliseconds.
fn is_rfc3339_utc_millis(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

fn assert_exact_fields(e: &Value) {
    let obj = e.as_object().expect("a JSON object per line");
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    let mut want = FIELDS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "fields of {e}");
    let ts = e["ts"].as_str().unwrap_or("");
    assert!(is_rfc3339_utc_millis(ts), "ts {ts:?}");
    assert!(e["status"].is_u64(), "status is a number: {e}");
    assert!(e["duration_ms"].is_number(), "duration_ms is a number: {e}");
    assert!(e["duration_ms"].as_f64().unwrap_or(-1.0) >= 0.0, "{e}");
    assert!(e["bytes_sent"].is_u64(), "bytes_sent is a number: {e}");
    assert!(e["tls"].is_boolean(), "tls is a boolean: {e}");
    for k in [
        "request_id",
        "client_ip",
        "method",
        "host",
        "path",
        "route",
        "pool",
        "backend",
        "protocol",
    ] {
        assert!(e[k].is_string(), "{k} is a string: {e}");
    }
}

/// The test configuration with listener `web` on `port`, pool `web` with backend `b`,
/// and `routes`.
fn web_pool_config(port: u16, b: &Backend, routes: Value) -> Value {
    web_config(port, json!([pool("web", &[b.address()])]), routes)
}

/// `web_pool_config`'s text.
fn web(port: u16, b: &Backend, routes: Value) -> String {
    config_text(&web_pool_config(port, b, routes))
}

/// The access log's one entry (waited for), with exactly the SPEC fields.
fn only_entry(sy: &Switchyard) -> Value {
    let entries = sy.access_entries(1);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_exact_fields(&entries[0]);
    entries[0].clone()
}

fn api_route() -> Value {
    json!([{ "name": "api", "host": "api.example.com", "pool": "web" }])
}

fn route_all() -> Value {
    json!([route("all", "web")])
}

#[test]
fn a_request_writes_one_line_with_exactly_the_spec_fields() {
    let b = Backend::start("a");
    let port = listen_port();
    let sy = Switchyard::start(&web(port, &b, api_route()), &[port]);
    let r = request(
        port,
        "GET",
        "/v1/users?x=1&y=2",
        &[("Host", "api.example.com")],
        b"",
    );
    assert_eq!(r.status, 200);
    let e = &only_entry(&sy);
    assert_eq!(e["request_id"], r.header("x-request-id").unwrap_or("?"));
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["method"], "GET");
    assert_eq!(e["host"], "api.example.com");
    assert_eq!(e["path"], "/v1/users?x=1&y=2");
    assert_eq!(e["status"], 200);
    assert_eq!(e["route"], "api");
    assert_eq!(e["pool"], "web");
    assert_eq!(e["backend"], b.address().as_str());
    assert_eq!(e["bytes_sent"], r.body.len());
    assert_eq!(e["bytes_sent"], "backend a\n".len());
    assert_eq!(e["protocol"], "HTTP/1.1");
    assert_eq!(e["tls"], false);
}

#[test]
fn requests_refused_while_their_header_is_read_are_logged_too() {
    let b = Backend::start("a");
    let port = listen_port();
    let mut config = web_pool_config(port, &b, route_all());
    config["listeners"][0]["limits"] = json!({ "header_timeout": "1s" });
    let sy = Switchyard::start_config(&config, &[port]);
    // Pingora's parser refuses a space before the colon (no hook runs for it).
    let reply = raw_exchange(port, b"GET / HTTP/1.1\r\nHost : a\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    let e = &only_entry(&sy);
    assert_eq!(e["status"], 400);
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["route"], "");
    assert_eq!(b.count(), 0);

    // Half a header, then silence past header_timeout: 408, logged as well.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::io::Write::write_all(&mut slow, b"GET / HTTP/1.1\r\nHo").expect("write");
    let entries = sy.access_entries(2);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_exact_fields(&entries[1]);
    assert_eq!(entries[1]["status"], 408);
}

#[test]
fn a_post_is_logged_with_its_method_and_status() {
    let b = Backend::start_with("a", Behaviour::with_status(201));
    let port = listen_port();
    let sy = Switchyard::start(&web(port, &b, api_route()), &[port]);
    let r = request(
        port,
        "POST",
        "/items",
        &[("Host", "api.example.com"), ("X-Request-Id", "post-1")],
        b"{\"k\":1}",
    );
    assert_eq!(r.status, 201);
    let e = &only_entry(&sy);
    assert_eq!(e["request_id"], "post-1");
    assert_eq!(e["method"], "POST");
    assert_eq!(e["status"], 201);
    assert_eq!(e["path"], "/items");
}

#[test]
fn an_http_10_request_is_logged_as_http_10() {
    let b = Backend::start("a");
    let port = listen_port();
    let sy = Switchyard::start(&web(port, &b, api_route()), &[port]);
    let text = raw_exchange(
        port,
        b"GET /old?q=1 HTTP/1.0\r\nHost: api.example.com\r\n\r\n",
    );
    let r = parse_reply(&text).unwrap_or_else(|| panic!("no reply: {text:?}"));
    assert_eq!(r.status, 200, "{r:?}");
    let e = &only_entry(&sy);
    assert_eq!(e["protocol"], "HTTP/1.0");
    assert_eq!(e["path"], "/old?q=1");
    assert_eq!(e["request_id"], r.header("x-request-id").unwrap_or("?"));
}

#[test]
fn an_unmatched_request_has_empty_route_and_pool() {
    let b = Backend::start("a");
    let port = listen_port();
    let sy = Switchyard::start(&web(port, &b, api_route()), &[port]);
    let r = request(port, "GET", "/nowhere?z=1", &[("Host", "other.test")], b"");
    assert_eq!(r.status, 404);
    let e = &only_entry(&sy);
    assert_eq!(e["status"], 404);
    assert_eq!(e["route"], "");
    assert_eq!(e["pool"], "");
    assert_eq!(e["host"], "other.test");
    assert_eq!(e["path"], "/nowhere?z=1");
    assert_eq!(e["request_id"], r.header("x-request-id").unwrap_or("?"));
    assert_eq!(e["bytes_sent"], r.body.len());
}

#[test]
fn every_request_writes_exactly_one_line() {
    let b = Backend::start("a");
    let port = listen_port();
    let sy = Switchyard::start(&web(port, &b, api_route()), &[port]);
    let mut ids = Vec::new();
    for (host, path) in [
        ("api.example.com", "/1"),
        ("other.test", "/2"),
        ("api.example.com", "/3"),
        ("api.example.com", "/4"),
        ("other.test", "/5"),
    ] {
        let r = request(port, "GET", path, &[("Host", host)], b"");
        ids.push(r.header("x-request-id").unwrap_or("?").to_string());
    }
    let entries = sy.access_entries(5);
    // Bounded settle: a duplicate line would show up here.
    std::thread::sleep(Duration::from_millis(200));
    let entries_later = sy.access_entries(5);
    assert_eq!(entries.len(), 5, "{entries:?}");
    assert_eq!(entries_later.len(), 5, "{entries_later:?}");
    let logged: Vec<String> = entries
        .iter()
        .map(|e| e["request_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(logged, ids, "one line per request, in order");
    let statuses: Vec<u64> = entries
        .iter()
        .map(|e| e["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, vec![200, 404, 200, 200, 404]);
}

#[test]
fn errors_are_logged_with_their_status_route_and_pool() {
    let b = Backend::start("a");
    let port = listen_port();
    let dead = dead_port();
    let routes = json!([
        { "name": "broken", "path_prefix": "/broken", "pool": "dead" },
        { "name": "guarded", "pool": "web", "deny": ["127.0.0.0/8"] },
    ]);
    let mut config = web_pool_config(port, &b, routes);
    let dead_pool = with(
        pool("dead", &[format!("127.0.0.1:{dead}")]),
        json!({ "retries": 0, "health_check": { "kind": "none" } }),
    );
    config["pools"] = json!([dead_pool, pool("web", &[b.address()])]);
    let sy = Switchyard::start_config(&config, &[port]);
    let r502 = get(port, "/broken");
    assert_eq!(r502.status, 502);
    let r403 = get(port, "/other");
    assert_eq!(r403.status, 403);
    let entries = sy.access_entries(2);
    assert_eq!(entries.len(), 2, "{entries:?}");
    for e in &entries {
        assert_exact_fields(e);
    }
    assert_eq!(entries[0]["status"], 502);
    assert_eq!(entries[0]["route"], "broken");
    assert_eq!(entries[0]["pool"], "dead");
    assert_eq!(
        entries[0]["request_id"],
        r502.header("x-request-id").unwrap_or("?")
    );
    assert_eq!(entries[1]["status"], 403);
    assert_eq!(entries[1]["route"], "guarded");
    assert_eq!(
        entries[1]["request_id"],
        r403.header("x-request-id").unwrap_or("?")
    );
    assert_eq!(b.count(), 0);
}

#[test]
fn client_ip_behind_a_trusted_proxy_is_the_forwarded_client() {
    let b = Backend::start("a");
    let port = listen_port();
    let config = with(
        web_pool_config(port, &b, route_all()),
        json!({ "server": { "trusted_proxies": ["127.0.0.1/32"] } }),
    );
    let sy = Switchyard::start_config(&config, &[port]);
    let r = request(port, "GET", "/", &[("X-Forwarded-For", "203.0.113.9")], b"");
    assert_eq!(r.status, 200);
    let entries = sy.access_entries(1);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["client_ip"], "203.0.113.9");
}

#[test]
fn a_tls_request_is_logged_with_tls_true() {
    let b = Backend::start("a");
    let port = listen_port();
    let (_certs, cert, key) = tls_test_cert_files();
    let mut config = web_pool_config(port, &b, route_all());
    config["listeners"] = json!([tls_listener("secure", port, &cert, &key)]);
    let sy = Switchyard::start_config(&config, &[port]);
    let r = tls_request(port, "GET", "/t", &[("Host", "example.com")]);
    assert_eq!(r.status, 200);
    let e = &only_entry(&sy);
    assert_eq!(e["tls"], true);
    assert_eq!(e["protocol"], "HTTP/1.1");
    assert_eq!(e["request_id"], r.header("x-request-id").unwrap_or("?"));
}

/// A switchyard in front of backend `a` whose stdout and stderr both go to files, for
/// the non-file targets.
struct Captured {
    child: Child,
    dir: tempfile::TempDir,
    stdout: PathBuf,
    stderr: PathBuf,
    port: u16,
    _backend: Backend,
}

impl Captured {
    /// Starts it on a new port with `log` as the `log:` section.
    fn start(log: Value) -> Captured {
        let backend = Backend::start("a");
        let port = listen_port();
        let (dir, config) = write_config(&with_log(port, &backend, log));
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        let child = Command::new(BIN)
            .arg("-c")
            .arg(&config)
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start switchyard");
        let c = Captured {
            child,
            dir,
            stdout,
            stderr,
            port,
            _backend: backend,
        };
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "switchyard did not listen on {port}: {}",
            c.read(&c.stderr)
        );
        c
    }

    fn read(&self, p: &PathBuf) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    /// JSON lines carrying a `request_id` in `p`, waiting (2 s at most) for `n`.
    fn json_lines(&self, p: &PathBuf, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let lines: Vec<Value> = self
                .read(p)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v.get("request_id").is_some())
                .collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GETs `path` and asserts that `file` (`name` in the failure) then holds exactly one
    /// line, that request's.
    fn get_logged_once(&self, path: &str, file: &PathBuf, name: &str) {
        let r = get(self.port, path);
        assert_eq!(r.status, 200);
        let lines = self.json_lines(file, 1);
        assert_eq!(lines.len(), 1, "{name}: {}", self.read(file));
        assert_exact_fields(&lines[0]);
        assert_eq!(lines[0]["path"], path);
        assert_eq!(
            lines[0]["request_id"],
            r.header("x-request-id").unwrap_or("?")
        );
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config whose `log:` section is `log` (the test `server:` section, no access-log file).
fn with_log(port: u16, b: &Backend, log: Value) -> String {
    let mut config = web_pool_config(port, b, route_all());
    config["log"] = log;
    config_text(&config)
}

#[test]
fn access_log_stderr_writes_lines_to_stderr() {
    let p = Captured::start(json!({ "level": "info", "access_log": "stderr" }));
    p.get_logged_once("/to-stderr", &p.stderr, "stderr");
    assert!(p.json_lines(&p.stdout, 0).is_empty(), "nothing on stdout");
}

#[test]
fn access_log_defaults_to_stdout() {
    let p = Captured::start(json!({ "level": "info" }));
    p.get_logged_once("/to-stdout", &p.stdout, "stdout");
}

#[test]
fn access_log_off_writes_nothing() {
    let p = Captured::start(json!({ "level": "info", "access_log": "off" }));
    let port = p.port;
    let mut ids = Vec::new();
    for path in ["/a", "/b?c=d", "/c"] {
        let r = get(port, path);
        assert_eq!(r.status, 200);
        ids.push(r.header("x-request-id").unwrap_or("?").to_string());
    }
    assert_eq!(get(port, "/").status, 200);
    // Bounded wait for lines that must not come.
    std::thread::sleep(Duration::from_millis(500));
    let out = p.read(&p.stdout);
    let err = p.read(&p.stderr);
    assert!(p.json_lines(&p.stdout, 0).is_empty(), "stdout: {out}");
    assert!(p.json_lines(&p.stderr, 0).is_empty(), "stderr: {err}");
    for id in &ids {
        assert!(
            !out.contains(id.as_str()) && !err.contains(id.as_str()),
            "request {id} was logged"
        );
    }
    let files: Vec<String> = std::fs::read_dir(p.dir.path())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        files.iter().all(|f| !f.contains("access")),
        "no access log file: {files:?}"
    );
}

/// A port nothing listens on: like `closed_port()`, but outside the ephemeral range so
/// a backend started meanwhile (`bind(0)`) cannot take it.
fn dead_port() -> u16 {
    listen_port()
}
