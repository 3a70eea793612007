//! Error answers end to end (SPEC §4, §9): 404, 403, 502, 504 bodies and headers,
//! backend 5xx passed through, retries only on connect failure, malformed requests.
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Switchyard on a new port with one plaintext listener, pool `p` over `backends` with
/// `pool_keys`, and `routes`.
fn start(backends: &[String], pool_keys: Value, routes: Value) -> (Switchyard, u16) {
    let port = listen_port();
    let config = web_config(port, json!([pool_with("p", pool_keys, backends)]), routes);
    (Switchyard::start_config(&config, &[port]), port)
}

fn route_all() -> Value {
    json!([route("all", "p")])
}

/// Pool keys: `retries`, no health check.
fn no_check(retries: u32) -> Value {
    json!({ "retries": retries, "health_check": { "kind": "none" } })
}

/// SPEC §9: an error answer is text/plain, under 1 KiB, with an X-Request-Id.
fn assert_error_answer(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "{r:?}");
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase().starts_with("text/plain"),
        "{status}: Content-Type {ct:?}"
    );
    assert!(!r.body.is_empty(), "{status}: a short body is expected");
    assert!(
        r.body.len() < 1024,
        "{status}: body of {} bytes",
        r.body.len()
    );
    let id = r.header("x-request-id").unwrap_or("");
    assert!(!id.is_empty(), "{status}: no X-Request-Id: {r:?}");
}

/// GET `path`, then GET `id_path` with `X-Request-Id: id`: both are `status` error
/// answers, and the second keeps the client's id.
fn assert_error_answers(port: u16, status: u16, path: &str, id_path: &str, id: &str) {
    assert_error_answer(&get(port, path), status);
    let r = request(port, "GET", id_path, &[("X-Request-Id", id)], b"");
    assert_error_answer(&r, status);
    assert_eq!(r.header("x-request-id"), Some(id));
}

#[test]
fn no_route_is_404_plain_text_with_request_id() {
    let a = Backend::start("a");
    let routes = json!([{ "name": "only", "path_prefix": "/only", "pool": "p" }]);
    let (_sy, port) = start(&[a.address()], json!({}), routes);
    // A sane client id is kept on errors too.
    assert_error_answers(port, 404, "/elsewhere", "/x", "err-404.test");
    assert_eq!(a.count(), 0);
}

#[test]
fn acl_refusal_is_403_plain_text_with_request_id() {
    let a = Backend::start("a");
    let routes = json!([{ "name": "all", "pool": "p", "deny": ["127.0.0.0/8"] }]);
    let (_sy, port) = start(&[a.address()], json!({}), routes);
    assert_error_answers(port, 403, "/", "/", "err-403");
    assert_eq!(a.count(), 0);
}

#[test]
fn closed_backend_is_502_plain_text_with_request_id() {
    let dead = format!("127.0.0.1:{}", dead_port());
    let (_sy, port) = start(&[dead], no_check(0), route_all());
    assert_error_answers(port, 502, "/", "/", "err-502");
}

#[test]
fn slow_backend_is_504_and_is_not_retried() {
    let slow = Behaviour::with_delay(Duration::from_millis(1500));
    let (a, b) = (
        Backend::start_with("a", slow.clone()),
        Backend::start_with("b", slow),
    );
    let keys = with(no_check(1), json!({ "timeouts": { "read": "300ms" } }));
    let (_sy, port) = start(&[a.address(), b.address()], keys, route_all());
    let r = request(port, "GET", "/", &[("X-Request-Id", "err-504")], b"");
    assert_error_answer(&r, 504);
    assert_eq!(r.header("x-request-id"), Some("err-504"));
    // Bounded wait: a retry (which SPEC forbids) would show up within the read timeout.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        a.count() + b.count(),
        1,
        "a timed-out request is never retried on another backend"
    );
}

#[test]
fn backend_5xx_passes_through_unchanged_without_retry() {
    for status in [500u16, 503] {
        let beh = Behaviour {
            status,
            extra_headers: vec![("X-Upstream-Error".into(), "yes".into())],
            ..Behaviour::default()
        };
        let (a, b) = (
            Backend::start_with("a", beh.clone()),
            Backend::start_with("b", beh),
        );
        let (_sy, port) = start(&[a.address(), b.address()], no_check(1), route_all());
        for i in 1..=4 {
            let r = get(port, "/");
            assert_eq!(r.status, status, "{r:?}");
            let name = r.header("x-backend").unwrap_or("").to_string();
            assert_eq!(r.body, format!("backend {name}\n"), "backend's own body");
            assert_eq!(r.header("x-upstream-error"), Some("yes"));
            assert_eq!(
                a.count() + b.count(),
                i,
                "a {status} is seen exactly once per request"
            );
        }
    }
}

#[test]
fn retries_move_past_a_closed_backend() {
    let live = Backend::start("live");
    let dead = format!("127.0.0.1:{}", dead_port());
    let (_sy, port) = start(&[dead, live.address()], no_check(1), route_all());
    for _ in 0..10 {
        let r = get(port, "/");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-backend"), Some("live"));
    }
    assert_eq!(live.count(), 10);
}

#[test]
fn without_retries_a_closed_backend_gives_502s() {
    let live = Backend::start("live");
    let dead = format!("127.0.0.1:{}", dead_port());
    let (_sy, port) = start(&[dead, live.address()], no_check(0), route_all());
    let mut codes = Vec::new();
    for _ in 0..10 {
        let r = get(port, "/");
        if r.status == 502 {
            assert_error_answer(&r, 502);
        }
        codes.push(r.status);
    }
    assert!(
        codes.contains(&502),
        "round robin must hit the closed port: {codes:?}"
    );
    assert!(codes.contains(&200), "{codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 502), "{codes:?}");
    let ok = codes.iter().filter(|c| **c == 200).count();
    assert_eq!(live.count(), ok);
}

/// Sends `bytes` raw; the answer must not be a 2xx and, if any, must be a 4xx; the
/// backend must not see anything; afterwards a normal request still gets 200.
fn assert_rejected(what: &str, bytes: &[u8]) {
    let b = Backend::start("a");
    let (_sy, port) = start(&[b.address()], json!({}), route_all());
    let text = raw_exchange(port, bytes);
    let statuses: Vec<u16> = text
        .split("\r\n")
        .filter(|l| l.starts_with("HTTP/1."))
        .filter_map(|l| l.split(' ').nth(1).and_then(|s| s.parse().ok()))
        .collect();
    assert!(
        statuses.iter().all(|s| (400..500).contains(s)),
        "{what}: answered {statuses:?}, expected a 4xx or a closed connection: {text:?}"
    );
    // Let anything forwarded by mistake reach the backend before counting.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        b.count(),
        0,
        "{what}: the backend must never see it, it saw {:?}",
        b.seen.lock().map(|s| s.clone()).unwrap_or_default()
    );
    let r = get(port, "/after");
    assert_eq!(r.status, 200, "{what}: the proxy must still serve: {r:?}");
    assert_eq!(b.count(), 1);
}

#[test]
fn garbage_request_line_is_rejected() {
    assert_rejected("garbage", b"GARBAGE\x01\x02 nonsense here\r\n\r\n");
}

#[test]
fn conflicting_content_lengths_are_rejected() {
    assert_rejected(
        "duplicate Content-Length",
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!",
    );
}

#[test]
fn content_length_with_chunked_smuggling_is_rejected() {
    assert_rejected(
        "Content-Length + Transfer-Encoding",
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
}

#[test]
fn a_smuggled_request_never_reaches_the_backend() {
    // Whatever the answer to the outer request, the request hidden in its body must
    // never be forwarded as a request of its own (with or without keep-alive).
    for close in ["Connection: close\r\n", ""] {
        let b = Backend::start("a");
        let (_sy, port) = start(&[b.address()], json!({}), route_all());
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n{close}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
        );
        let _ = raw_exchange(port, raw.as_bytes());
        std::thread::sleep(Duration::from_millis(200));
        let seen = b.seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert!(
            seen.iter().all(|s| !s.path.contains("smuggled")),
            "the smuggled request reached the backend: {seen:?}"
        );
        assert_eq!(get(port, "/after").status, 200);
    }
}

#[test]
fn a_200_kib_header_is_rejected() {
    let mut raw = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 200 * 1024));
    raw.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    assert_rejected("200 KiB header", &raw);
}

/// A port nothing listens on: like `closed_port()`, but outside the ephemeral range so
/// a backend started meanwhile (`bind(0)`) cannot take it.
fn dead_port() -> u16 {
    listen_port()
}
