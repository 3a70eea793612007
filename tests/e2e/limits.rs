//! Edge limits end to end (SPEC §10): listener and route limits, connection caps per
//! listener, per client IP and for the process's file limit, and the refusal counters
//! `switchyard_http_refused_total` / `switchyard_tcp_refused_total`.
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn route_all() -> Value {
    json!([route("all", "p")])
}

/// The test configuration with listener `web` on `port`, a metrics listener on
/// `metrics`, pool `p` over `backends` with `pool_keys`, and `routes`.
fn edge_config(
    port: u16,
    metrics: u16,
    backends: &[String],
    pool_keys: Value,
    routes: Value,
) -> Value {
    let pools = json!([pool_with("p", pool_keys, backends)]);
    with(web_config(port, pools, routes), metrics_on(metrics))
}

/// Switchyard with one listener `web` with `limits`, a metrics listener, and `routes` to
/// a pool `p` over `backend`.
struct Edge {
    sy: Switchyard,
    port: u16,
    metrics: u16,
}

fn start(limits: Value, routes: Value, backend: &Backend) -> Edge {
    start_with(limits, routes, &backend.address())
}

fn start_with(limits: Value, routes: Value, backend: &str) -> Edge {
    let (port, metrics) = (listen_port(), listen_port());
    let mut config = edge_config(
        port,
        metrics,
        &[backend.to_string()],
        no_health_check(),
        routes,
    );
    config["listeners"][0]["limits"] = limits;
    let sy = Switchyard::start_config(&config, &[port, metrics]);
    Edge { sy, port, metrics }
}

impl Edge {
    fn refused(&self, reason: &str) -> f64 {
        metric(
            self.metrics,
            "switchyard_http_refused_total",
            &[("listener", "web"), ("reason", reason)],
        )
        .unwrap_or(-1.0)
    }

    fn wait_refused(&self, reason: &str, want: f64) -> f64 {
        wait_metric(
            self.metrics,
            "switchyard_http_refused_total",
            &[("listener", "web"), ("reason", reason)],
            want,
        )
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        s
    }
}

/// Lets the harness's start-up probe connections (which the caps count while they are
/// open) finish before a test fills a cap.
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

/// Everything the server sends until it closes (or `limit` passes): (bytes, closed).
fn read_to_close(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&out).into_owned(), true)
            }
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), false)
}

fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_header_trickled_past_header_timeout_gets_408_and_the_backend_nothing() {
    let a = Backend::start("a");
    let edge = start(json!({ "header_timeout": "1s" }), route_all(), &a);
    let mut s = edge.connect();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n").unwrap();
    // A byte every 200 ms: each read is quick, the header never completes in time.
    let start = Instant::now();
    let mut closed_at = None;
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        if s.write_all(b"X").is_err() {
            closed_at = Some(start.elapsed());
            break;
        }
    }
    let (text, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed, "the connection is closed");
    assert_eq!(status_of(&text), 408, "{text:?}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text:?}"
    );
    if let Some(t) = closed_at {
        assert!(t >= Duration::from_millis(900), "closed after {t:?}");
    }
    assert_eq!(edge.wait_refused("header_timeout", 1.0), 1.0);
    assert_eq!(a.count(), 0);
    // A prompt client on the same listener is served.
    assert_eq!(get(edge.port, "/fast").status, 200);
}

#[test]
fn an_idle_connection_is_closed_after_header_timeout_without_an_answer() {
    let a = Backend::start("a");
    let edge = start(json!({ "header_timeout": "1s" }), route_all(), &a);
    let mut s = edge.connect();
    let (text, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed, "an idle connection is closed");
    assert_eq!(text, "", "nothing is written to a client that sent nothing");
}

#[test]
fn keepalive_timeout_closes_an_idle_keepalive_connection_and_zero_closes_after_each_response() {
    let a = Backend::start("a");
    let edge = start(json!({ "keepalive_timeout": "1s" }), route_all(), &a);
    let mut s = edge.connect();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let reply = read_reply(&mut s).expect("reply");
    assert_eq!(reply.status, 200);
    let idle = Instant::now();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed, "the idle keep-alive connection is closed");
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "{:?}",
        idle.elapsed()
    );
    drop(edge);

    let edge = start(json!({ "keepalive_timeout": "0s" }), route_all(), &a);
    let mut s = edge.connect();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let reply = read_reply(&mut s).expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(2));
    assert!(closed, "closed after the response");
}

#[test]
fn max_requests_per_connection_closes_after_that_many() {
    let a = Backend::start("a");
    let edge = start(json!({ "max_requests_per_connection": 3 }), route_all(), &a);
    let mut s = edge.connect();
    for i in 1..=3 {
        s.write_all(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(
            read_reply(&mut s).expect("reply").status,
            200,
            "request {i}"
        );
    }
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(3));
    assert!(closed, "closed after the third response");
    assert_eq!(a.count(), 3);
}

#[test]
fn header_size_and_count_limits_answer_431_and_close() {
    let a = Backend::start("a");
    let edge = start(
        json!({ "max_header_bytes": 2048, "max_headers": 5 }),
        route_all(),
        &a,
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(3000)
    );
    let text = raw_exchange(edge.port, big.as_bytes());
    assert_eq!(status_of(&text), 431, "{text:?}");
    let many: String = (0..6).map(|i| format!("X-{i}: v\r\n")).collect();
    let text = raw_exchange(
        edge.port,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(status_of(&text), 431, "{text:?}");
    assert_eq!(edge.wait_refused("header_too_large", 2.0), 2.0);
    assert_eq!(a.count(), 0);
    // Within both limits: served.
    let ok = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-1: {}\r\n\r\n",
        "b".repeat(1000)
    );
    let mut s = edge.connect();
    s.write_all(ok.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut s).expect("reply").status, 200);
}

#[test]
fn a_body_over_max_body_bytes_is_413_declared_or_streamed_and_a_route_may_allow_more() {
    let a = Backend::start("a");
    let routes = json!([
        { "name": "upload", "path_prefix": "/upload", "max_body_bytes": 1000, "pool": "p" },
        route("all", "p"),
    ]);
    let edge = start(json!({ "max_body_bytes": 100 }), routes, &a);
    // Declared: refused before any backend is contacted.
    let text = raw_exchange(
        edge.port,
        format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 200\r\n\r\n{}",
            "x".repeat(200)
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&text), 413, "{text:?}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text:?}"
    );
    assert_eq!(
        a.count(),
        0,
        "the backend never saw the declared-too-large request"
    );
    // Streamed (chunked, no length): refused once the limit is passed.
    let chunk = "y".repeat(80);
    let chunked = format!(
        "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n{chunk}\r\n50\r\n{chunk}\r\n0\r\n\r\n"
    );
    let text = raw_exchange(edge.port, chunked.as_bytes());
    assert_eq!(status_of(&text), 413, "{text:?}");
    assert_eq!(edge.wait_refused("body_too_large", 2.0), 2.0);
    // The route's own limit: 500 bytes pass there, and a small body anywhere.
    let r = request(edge.port, "POST", "/upload/f", &[], &[b'z'; 500]);
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(edge.port, "POST", "/small", &[], &[b'z'; 100]);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn a_body_that_stalls_past_body_timeout_gets_408() {
    let a = Backend::start("a");
    let edge = start(json!({ "body_timeout": "1s" }), route_all(), &a);
    let mut s = edge.connect();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let started = Instant::now();
    let (text, closed) = read_to_close(&mut s, Duration::from_secs(6));
    assert!(closed, "closed");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status_of(&text), 408, "{text:?}");
    assert_eq!(edge.wait_refused("body_timeout", 1.0), 1.0);
}

/// Whether a request on `s` is answered 200 (false: closed or refused).
fn served(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_err() {
        return false;
    }
    read_reply(s).map(|r| r.status == 200).unwrap_or(false)
}

#[test]
fn max_connections_refuses_the_next_connection_until_one_closes() {
    let a = Backend::start("a");
    let edge = start(json!({ "max_connections": 2 }), route_all(), &a);
    settle();
    let mut first = edge.connect();
    let mut second = edge.connect();
    assert!(served(&mut first) && served(&mut second));
    let mut third = edge.connect();
    assert!(!served(&mut third), "a third connection is closed");
    assert_eq!(edge.wait_refused("connection_limit", 1.0), 1.0);
    drop(first);
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        served(&mut edge.connect())
    });
    assert!(ok, "served again once a connection closed");
    assert!(served(&mut second), "the held connection kept working");
}

#[test]
fn max_connections_per_ip_counts_each_client_address_apart() {
    let a = Backend::start("a");
    let edge = start(json!({ "max_connections_per_ip": 1 }), route_all(), &a);
    settle();
    eprintln!("start {}", edge.refused("per_ip_limit"));
    let mut one = connect_from("127.0.0.1", edge.port);
    assert!(served(&mut one));
    eprintln!("one {}", edge.refused("per_ip_limit"));
    let mut again = connect_from("127.0.0.1", edge.port);
    assert!(
        !served(&mut again),
        "a second connection from 127.0.0.1 is closed"
    );
    let mut other = connect_from("127.0.0.2", edge.port);
    assert!(served(&mut other), "127.0.0.2 has its own count");
    assert_eq!(
        edge.wait_refused("per_ip_limit", 1.0),
        1.0,
        "{}",
        edge.sy.stderr()
    );
    assert_eq!(edge.refused("connection_limit"), 0.0);
    // Every reason is exported from the start, at zero.
    for reason in ["header_timeout", "body_timeout", "malformed", "h2_abuse"] {
        assert_eq!(edge.refused(reason), 0.0, "{reason}");
    }
}

#[test]
fn h2_max_concurrent_streams_is_announced_in_settings() {
    let a = Backend::start("a");
    let (port, metrics) = (listen_port(), listen_port());
    let mut config = edge_config(
        port,
        metrics,
        &[a.address()],
        no_health_check(),
        route_all(),
    );
    config["listeners"][0]["http2"] = json!(true);
    config["listeners"][0]["limits"] = json!({ "h2_max_concurrent_streams": 7 });
    let _sy = Switchyard::start_config(&config, &[port]);
    let out = std::process::Command::new("nghttp")
        .args(["-nv", &format!("http://127.0.0.1:{port}/")])
        .output()
        .expect("nghttp (nghttp2-client) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7"),
        "{text}"
    );
    assert!(text.contains(":status: 200"), "{text}");
}

#[test]
fn tcp_service_caps_refuse_and_count() {
    let echo = TcpServer::echo();
    let (port, metrics) = (listen_port(), listen_port());
    let mut config = edge_config(
        port,
        metrics,
        &[echo.address()],
        no_health_check(),
        json!([]),
    );
    config["listeners"] = json!([]);
    config["tcp_services"] = json!([{
        "name": "t",
        "listen": format!("127.0.0.1:{port}"),
        "pool": "p",
        "max_connections": 2,
        "max_connections_per_ip": 1,
    }]);
    let _sy = Switchyard::start_config(&config, &[port, metrics]);
    settle();
    let echoes = |s: &mut TcpStream| -> bool {
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut b = [0u8; 4];
        s.write_all(b"ping").is_ok() && s.read_exact(&mut b).is_ok() && &b == b"ping"
    };
    // Clients come from other addresses than the harness's start-up probe (127.0.0.1),
    // which may still hold its count.
    let mut one = connect_from("127.0.0.4", port);
    assert!(echoes(&mut one));
    let mut same_ip = connect_from("127.0.0.4", port);
    assert!(!echoes(&mut same_ip), "per-IP cap");
    let mut two = connect_from("127.0.0.2", port);
    assert!(echoes(&mut two));
    let mut three = connect_from("127.0.0.3", port);
    assert!(!echoes(&mut three), "service cap");
    let refused = |reason: &str| {
        wait_metric(
            metrics,
            "switchyard_tcp_refused_total",
            &[("service", "t"), ("reason", reason)],
            1.0,
        )
    };
    assert_eq!(refused("per_ip_limit"), 1.0);
    assert_eq!(refused("connection_limit"), 1.0);
    assert_eq!(
        metric(
            metrics,
            "switchyard_tcp_refused_total",
            &[("service", "t"), ("reason", "denied")]
        ),
        Some(0.0)
    );
}

/// The process's file limit is lowered to 256 (soft = hard) for this test, so the
/// client budget is 128 descriptors: a flood of 300 idle connections is refused past
/// it, logged once, the process keeps serving health checks and backends, and serves
/// new clients once the flood leaves.
#[test]
fn a_connection_flood_stops_short_of_the_file_limit_and_is_logged_once() {
    let a = Backend::start("a");
    let (port, metrics) = (listen_port(), listen_port());
    let check = json!({ "health_check": {
        "kind": "http", "path": "/health", "interval": "200ms", "timeout": "1s",
    }});
    let config = edge_config(port, metrics, &[a.address()], check, route_all());
    let (dir, config) = write_config(&config_text(&config));
    let stderr_path = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let child = std::process::Command::new("prlimit")
        .args(["--nofile=256:256", "--"])
        .arg(BIN)
        .arg("-c")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("prlimit (util-linux) runs switchyard");
    let mut child = ChildGuard(child);
    assert!(wait_for_port(port, Duration::from_secs(10)));
    assert!(wait_for_port(metrics, Duration::from_secs(10)));
    let mut flood = Vec::new();
    for _ in 0..300 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => flood.push(s),
            Err(_) => break,
        }
    }
    let refused = wait_metric(
        metrics,
        "switchyard_http_refused_total",
        &[("listener", "web"), ("reason", "connection_limit")],
        1.0,
    );
    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "still running:\n{log}"
    );
    // Every connection past the budget was refused; metrics (not a client connection)
    // still answer.
    let total = metric(
        metrics,
        "switchyard_http_refused_total",
        &[("listener", "web"), ("reason", "connection_limit")],
    )
    .unwrap_or(0.0);
    assert!(refused >= 1.0 && total >= 150.0, "refused {total} of 300");
    let lines = log
        .lines()
        .filter(|l| l.contains("refused (connection_limit)"))
        .count();
    assert!(lines <= 2, "{lines} log lines for one flood:\n{log}");
    // The health check kept finding the backend up (no 'unhealthy' transition).
    assert!(!log.contains("healthy -> unhealthy"), "{log}");
    drop(flood);
    let back = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let mut s = match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => s,
            Err(_) => return false,
        };
        served(&mut s)
    });
    assert!(back, "served again after the flood");
}

#[test]
fn a_failure_repeated_on_every_request_is_logged_a_few_times_not_per_request() {
    let dead = format!("127.0.0.1:{}", closed_port());
    let edge = start_with(json!({ "max_headers": 100 }), route_all(), &dead);
    let mut statuses = std::collections::HashMap::new();
    for _ in 0..200 {
        *statuses.entry(get(edge.port, "/").status).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&502), Some(&200), "{statuses:?}");
    let log = edge.sy.stderr();
    let lines = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .count();
    assert!(
        lines <= 6,
        "{lines} warning/error lines for 200 failed requests:\n{log}"
    );
}

#[test]
fn requests_the_http1_parser_rejects_are_counted_as_malformed() {
    let a = Backend::start("a");
    let edge = start(json!({ "max_headers": 100 }), route_all(), &a);
    // Each of these is refused by Pingora's parser before any hook runs.
    for raw in [
        &b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        let text = raw_exchange(edge.port, raw);
        assert_eq!(status_of(&text), 400, "{text:?}");
    }
    assert_eq!(edge.wait_refused("malformed", 3.0), 3.0);
    assert_eq!(a.count(), 0);
    // A well-formed request is not counted.
    assert_eq!(get(edge.port, "/").status, 200);
    assert_eq!(edge.refused("malformed"), 3.0);
}
