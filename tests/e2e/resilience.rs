//! Resilience end to end (SPEC §3 pools, §4 Health / Sticky, §9 Health, Circuit breaker,
//! Sticky, DNS discovery, §2 SIGHUP): active health checks take backends out and bring
//! them back, HTTP checks and expect_status, the circuit breaker's exact counts,
//! max_connections, backups, sticky cookies, DNS discovery and reloads that keep state.
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn route_all() -> Value {
    json!([route("all", "p")])
}

/// One route per name: `path_prefix: /name` to the pool of that name.
fn prefix_routes(names: &[&str]) -> Value {
    names
        .iter()
        .map(|n| json!({ "name": n, "path_prefix": format!("/{n}"), "pool": n }))
        .collect()
}

/// A TCP check (the default kind) every 200 ms, flipping after two results.
fn fast_check() -> Value {
    json!({
        "interval": "200ms",
        "timeout": "200ms",
        "healthy_threshold": 2,
        "unhealthy_threshold": 2,
    })
}

/// An HTTP check of /health at fast_check's pace, with `keys` added.
fn http_check(keys: Value) -> Value {
    with(
        fast_check(),
        with(json!({ "kind": "http", "path": "/health" }), keys),
    )
}

fn no_check() -> Value {
    json!({ "kind": "none" })
}

/// Generous bound for a health transition that should take interval × threshold
/// (~400 ms here): the machine may be busy.
const TRANSITION: Duration = Duration::from_secs(5);

/// `n` GETs of `path` sent at once, each from its own thread.
fn concurrent_gets(port: u16, path: &str, n: usize) -> Vec<Reply> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || get(port, &path))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("request thread"))
        .collect()
}

/// Switchyard's own 503: no backend answered (no X-Backend), plain text, request id.
fn assert_own_503(r: &Reply, what: &str) {
    assert_eq!(r.status, 503, "{what}: {r:?}");
    assert_eq!(
        r.header("x-backend"),
        None,
        "{what}: the 503 must come from switchyard, not a backend: {r:?}"
    );
    let ct = r.header("content-type").unwrap_or("").to_ascii_lowercase();
    assert!(ct.starts_with("text/plain"), "{what}: {r:?}");
    assert!(r.header("x-request-id").is_some(), "{what}: {r:?}");
}

// ---------------------------------------------------------------- active health checks

#[test]
fn a_stopped_backend_drops_out_and_comes_back_after_a_restart() {
    let a = Backend::start("a");
    let b_port = listen_port();
    let b = Backend::start_on("b", b_port);
    let b_addr = b.address();
    let port = listen_port();
    let pools = json!([pool_with(
        "p",
        json!({ "retries": 0, "health_check": fast_check() }),
        &[a.address(), b.address()],
    )]);
    let sy = Switchyard::start_config(&web_config(port, pools, route_all()), &[port]);
    let counts = served_by(port, "/", 10);
    assert_eq!(counts.get("a"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&5), "{counts:?}");

    drop(b);
    let down = sy.expect_stderr(&went_down(&b_addr), 1, TRANSITION);
    eprintln!("stopped backend taken out after {down:?} (interval 200ms x 2)");
    // No retries: any request still sent to the stopped backend would fail.
    let counts = served_by(port, "/", 30);
    assert_eq!(counts.get("a"), Some(&30), "{counts:?}");

    let b = Backend::start_on("b", b_port);
    let up = sy.expect_stderr(&came_up(&b_addr), 1, TRANSITION);
    eprintln!("restarted backend back after {up:?}");
    let counts = served_by(port, "/", 20);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(b.count(), 10);
}

#[test]
fn http_check_failing_with_500_takes_the_backend_out_and_back() {
    let sick = Backend::start_with("sick", Behaviour::with_status(500));
    let well = Backend::start("well");
    let port = listen_port();
    let pools = json!([pool_with(
        "p",
        json!({ "retries": 0, "health_check": http_check(json!({})) }),
        &[sick.address(), well.address()],
    )]);
    let sy = Switchyard::start_config(&web_config(port, pools, route_all()), &[port]);
    sy.expect_stderr(&went_down(&sick.address()), 1, TRANSITION);

    let counts = served_by(port, "/app", 20);
    assert_eq!(counts.get("well"), Some(&20), "{counts:?}");
    let paths = sick.paths();
    assert!(
        paths.iter().all(|p| p == "/health"),
        "only health checks may reach the unhealthy backend: {paths:?}"
    );
    assert!(paths.len() >= 2, "the check asks /health: {paths:?}");
    let check = sick.last().expect("a health check request");
    assert_eq!(check.method, "GET");
    assert_eq!(
        check.header("host"),
        Some(sick.address().as_str()),
        "default check Host is the backend's host:port"
    );

    // It answers 200 again: back in after healthy_threshold checks, and takes traffic.
    sick.set(Behaviour::default());
    sy.expect_stderr(&came_up(&sick.address()), 1, TRANSITION);
    let counts = served_by(port, "/app", 10);
    assert_eq!(counts.get("sick"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("well"), Some(&5), "{counts:?}");
}

#[test]
fn expect_status_ranges_decide_health() {
    let with_status =
        |name: &str, status: u16| Backend::start_with(name, Behaviour::with_status(status));
    // 503 is healthy when 500-599 is expected; 202 is not "200"; 202 is in "200-202".
    let five = with_status("five", 503);
    let exact = with_status("exact", 202);
    let range = with_status("range", 202);
    let check = |expect: &str| {
        json!({
            "retries": 0,
            "health_check": http_check(json!({ "expect_status": expect })),
        })
    };
    let pools = json!([
        pool_with("five", check("500-599"), &[five.address()]),
        pool_with("exact", check("200"), &[exact.address()]),
        pool_with("range", check("200-202"), &[range.address()]),
    ]);
    let routes = prefix_routes(&["five", "exact", "range"]);
    let port = listen_port();
    let sy = Switchyard::start_config(&web_config(port, pools, routes), &[port]);
    sy.expect_stderr(&went_down(&exact.address()), 1, TRANSITION);
    // Several rounds have passed for the other two as well.
    assert!(five.wait_count(3, TRANSITION) && range.wait_count(3, TRANSITION));
    for b in [&five, &range] {
        assert_eq!(
            sy.stderr_count(&went_down(&b.address())),
            0,
            "{} answers inside its expect_status range; stderr:\n{}",
            b.name,
            sy.stderr()
        );
    }

    let r = get(port, "/five");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("five"), "the backend's own 503");
    let r = get(port, "/range");
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("range"));
    let r = get(port, "/exact");
    assert_own_503(&r, "the only backend is out (202 is not \"200\")");
    assert!(
        exact.paths().iter().all(|p| p == "/health"),
        "{:?}",
        exact.paths()
    );
}

#[test]
fn backups_take_over_and_hand_back() {
    let (a_port, b_port) = (listen_port(), listen_port());
    let a = Backend::start_on("a", a_port);
    let b = Backend::start_on("b", b_port);
    let spare = Backend::start("spare");
    let (a_addr, b_addr) = (a.address(), b.address());
    let port = listen_port();
    let mut p = pool_with(
        "p",
        json!({ "retries": 0, "health_check": fast_check() }),
        &[a.address(), b.address()],
    );
    p["backends"]
        .as_array_mut()
        .expect("backends")
        .push(json!({ "address": spare.address(), "backup": true }));
    let sy = Switchyard::start_config(&web_config(port, json!([p]), route_all()), &[port]);
    let counts = served_by(port, "/", 10);
    assert_eq!(counts.get("spare"), None, "{counts:?}");

    // One primary left: still no backup.
    drop(a);
    sy.expect_stderr(&went_down(&a_addr), 1, TRANSITION);
    let counts = served_by(port, "/", 10);
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(spare.count(), 0);

    // No primary left: the backup serves everything.
    drop(b);
    sy.expect_stderr(&went_down(&b_addr), 1, TRANSITION);
    let counts = served_by(port, "/", 10);
    assert_eq!(counts.get("spare"), Some(&10), "{counts:?}");

    // A primary recovers: it takes everything back.
    let a = Backend::start_on("a", a_port);
    sy.expect_stderr(&came_up(&a_addr), 1, TRANSITION);
    let before = spare.count();
    let counts = served_by(port, "/", 10);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(spare.count(), before, "the backup is idle again");
    assert_eq!(a.count(), 10);
}

// ---------------------------------------------------------------- circuit breaker

#[test]
fn circuit_opens_after_exactly_failure_threshold_5xx() {
    let failing = Behaviour::with_status(500);
    let bad = Backend::start_with("bad", failing.clone());
    let good = Backend::start("good");
    let solo = Backend::start_with("solo", failing.clone());
    let lenient = Backend::start_with("lenient", failing);
    let breaker = |extra: Value| {
        json!({
            "health_check": no_check(),
            "circuit_breaker": with(json!({ "failure_threshold": 3, "open_for": "1h" }), extra),
        })
    };
    let pools = json!([
        pool_with("pair", breaker(json!({})), &[bad.address(), good.address()]),
        pool_with("solo", breaker(json!({})), &[solo.address()]),
        pool_with(
            "lenient",
            breaker(json!({ "on_5xx": false })),
            &[lenient.address()]
        ),
    ]);
    let routes = prefix_routes(&["pair", "solo", "lenient"]);
    let port = listen_port();
    let _sy = Switchyard::start_config(&web_config(port, pools, routes), &[port]);

    // Two backends: the failing one sees exactly 3 requests, then everything goes to
    // the other; its 500s reach the client as they are.
    let mut codes = Vec::new();
    for _ in 0..20 {
        let r = get(port, "/pair");
        if r.status == 500 {
            assert_eq!(r.header("x-backend"), Some("bad"), "{r:?}");
        }
        codes.push(r.status);
    }
    assert_eq!(bad.count(), 3, "statuses: {codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 500).count(), 3, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 17, "{codes:?}");
    assert_eq!(good.count(), 17);

    // Only backend: 3 answers of its own, then switchyard's 503 without contacting it.
    for i in 1..=3 {
        let r = get(port, "/solo");
        assert_eq!(r.status, 500, "{r:?}");
        assert_eq!(r.header("x-backend"), Some("solo"));
        assert_eq!(solo.count(), i);
    }
    for _ in 0..3 {
        assert_own_503(&get(port, "/solo"), "open circuit, only backend");
    }
    assert_eq!(solo.count(), 3);

    // on_5xx: false: a 5xx answer is not a failure.
    for i in 1..=6 {
        let r = get(port, "/lenient");
        assert_eq!(r.status, 500, "{r:?}");
        assert_eq!(r.header("x-backend"), Some("lenient"));
        assert_eq!(lenient.count(), i);
    }
}

#[test]
fn half_open_admits_exactly_the_trial_requests() {
    let x = Backend::start_with("x", Behaviour::with_status(500));
    let pools = json!([pool_with(
        "p",
        json!({
            "health_check": no_check(),
            "circuit_breaker": { "failure_threshold": 2, "open_for": "500ms", "half_open_requests": 2 },
        }),
        &[x.address()],
    )]);
    let port = listen_port();
    let _sy = Switchyard::start_config(&web_config(port, pools, route_all()), &[port]);
    for _ in 0..2 {
        assert_eq!(get(port, "/").status, 500);
    }
    assert_own_503(&get(port, "/"), "open");
    assert_eq!(x.count(), 2);

    // Half-open while still failing (slowly, so the trials overlap): of 6 requests at
    // once exactly 2 reach the backend, the rest are refused; the circuit opens again.
    x.set(Behaviour {
        status: 500,
        delay: Duration::from_millis(400),
        ..Behaviour::default()
    });
    std::thread::sleep(Duration::from_millis(700));
    let replies = concurrent_gets(port, "/", 6);
    let codes: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(x.count(), 4, "exactly 2 trials: {codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 500).count(), 2, "{codes:?}");
    for r in replies.iter().filter(|r| r.status != 500) {
        assert_own_503(r, "half-open, trials taken");
    }
    for _ in 0..3 {
        assert_own_503(&get(port, "/"), "open again after failed trials");
    }
    assert_eq!(x.count(), 4);

    // Healthy again: after open_for, 2 successful trials close the circuit...
    x.set(Behaviour::default());
    std::thread::sleep(Duration::from_millis(700));
    for i in 1..=2 {
        let r = get(port, "/");
        assert_eq!(
            r.status, 200,
            "trial {i} after the second open period: {r:?}"
        );
        assert_eq!(r.header("x-backend"), Some("x"));
    }
    assert_eq!(x.count(), 6);
    // ...and closed means no trial limit: 5 at once all reach it.
    let replies = concurrent_gets(port, "/", 5);
    let codes: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    assert_eq!(x.count(), 11);
}

#[test]
fn max_connections_skips_full_backends_and_refuses_at_once_when_all_are_full() {
    let slow = Behaviour::with_delay(Duration::from_millis(1000));
    let s1 = Backend::start_with("s1", slow.clone());
    let s2 = Backend::start_with("s2", slow);
    let pools = json!([pool_with(
        "p",
        json!({ "health_check": no_check(), "circuit_breaker": { "max_connections": 1 } }),
        &[s1.address(), s2.address()],
    )]);
    let port = listen_port();
    let _sy = Switchyard::start_config(&web_config(port, pools, route_all()), &[port]);

    let busy = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(3);
        while s1.count() + s2.count() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        s1.count() + s2.count()
    };
    let first = std::thread::spawn(move || get(port, "/one"));
    assert_eq!(busy(1), 1);
    let second = std::thread::spawn(move || get(port, "/two"));
    assert_eq!(busy(2), 2);
    assert_eq!(
        (s1.count(), s2.count()),
        (1, 1),
        "the full backend is skipped"
    );
    // Both are at max_connections: refused right away, neither backend sees it.
    for i in 0..3 {
        assert_own_503(&get(port, "/three"), &format!("extra request {i}"));
    }
    assert_eq!(s1.count() + s2.count(), 2);
    let (r1, r2) = (first.join().expect("first"), second.join().expect("second"));
    assert_eq!((r1.status, r2.status), (200, 200), "{r1:?} {r2:?}");
    // Slots are free again.
    assert_eq!(get(port, "/four").status, 200);
}

// ---------------------------------------------------------------- sticky sessions

fn base64(bytes: &[u8], url_safe: bool) -> String {
    let table: &[u8] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | ((*b as u32) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The cookie value must not carry `addr` ("127.0.0.1:PORT") in any plain encoding.
fn assert_opaque(value: &str, addr: &str) {
    let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or(addr);
    let hex: String = addr.bytes().map(|b| format!("{b:02x}")).collect();
    let lower = value.to_ascii_lowercase();
    for (what, enc) in [
        ("plain address", addr.to_string()),
        ("plain port", port.to_string()),
        ("hex", hex),
        ("base64", base64(addr.as_bytes(), false)),
        ("base64url", base64(addr.as_bytes(), true)),
    ] {
        let found = if what == "hex" {
            lower.contains(&enc)
        } else {
            value.contains(&enc)
        };
        assert!(!found, "cookie {value:?} carries {addr} as {what} ({enc})");
    }
}

/// The `NAME=value` of a Set-Cookie for `name`, and the whole header.
fn set_cookie(r: &Reply, name: &str) -> Option<(String, String)> {
    r.headers
        .get("set-cookie")?
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| {
            let value = c
                .split(';')
                .next()
                .unwrap_or("")
                .split_once('=')
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default();
            (value, c.clone())
        })
}

fn with_cookie(port: u16, cookie: &str) -> Reply {
    request(port, "GET", "/", &[("Cookie", cookie)], b"")
}

#[test]
fn sticky_client_stays_put_and_moves_when_its_backend_dies() {
    let ports = [listen_port(), listen_port(), listen_port()];
    let mut backends: Vec<Option<Backend>> = ["a", "b", "c"]
        .iter()
        .zip(ports)
        .map(|(n, p)| Some(Backend::start_on(n, p)))
        .collect();
    let addrs: HashMap<String, String> = backends
        .iter()
        .flatten()
        .map(|b| (b.name.clone(), b.address()))
        .collect();
    let list: Vec<String> = backends.iter().flatten().map(|b| b.address()).collect();
    let pools = json!([pool_with(
        "p",
        json!({
            "retries": 0,
            "sticky": { "cookie": "SY", "ttl": "1h" },
            "health_check": fast_check(),
        }),
        &list,
    )]);
    let port = listen_port();
    let sy = Switchyard::start_config(&web_config(port, pools, route_all()), &[port]);

    let first = get(port, "/");
    assert_eq!(first.status, 200, "{first:?}");
    let home = first.header("x-backend").expect("X-Backend").to_string();
    let (value, header) = set_cookie(&first, "SY").unwrap_or_else(|| panic!("{first:?}"));
    assert!(!value.is_empty(), "{header}");
    for addr in addrs.values() {
        assert_opaque(&value, addr);
    }
    // The client's jar: 50 requests, all on the same backend, no new cookie needed.
    let jar = format!("other=1; SY={value}");
    for i in 0..50 {
        let r = with_cookie(port, &jar);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-backend"), Some(home.as_str()), "request {i}");
        assert!(set_cookie(&r, "SY").is_none(), "request {i}: {r:?}");
    }

    // Its backend dies: once the health check takes it out the client is moved, and
    // the response that a new backend served carries the new cookie.
    let idx = ["a", "b", "c"]
        .iter()
        .position(|n| *n == home)
        .expect("home");
    drop(backends[idx].take());
    sy.expect_stderr(&went_down(&addrs[&home]), 1, TRANSITION);
    let r = with_cookie(port, &jar);
    assert_eq!(r.status, 200, "{r:?}");
    let moved = r.header("x-backend").expect("X-Backend").to_string();
    assert_ne!(moved, home);
    let (new_value, _) =
        set_cookie(&r, "SY").unwrap_or_else(|| panic!("moved without a new cookie: {r:?}"));
    assert_ne!(new_value, value);
    assert_opaque(&new_value, &addrs[&moved]);
    let jar = format!("SY={new_value}");
    for i in 0..20 {
        let r = with_cookie(port, &jar);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-backend"), Some(moved.as_str()), "request {i}");
    }
}

#[test]
fn sticky_cookie_attributes_and_forged_values() {
    let [a, b] = Backend::start_each(["a", "b"]);
    let [c, d] = Backend::start_each(["c", "d"]);
    let pools = json!([
        pool_with(
            "p",
            json!({ "health_check": no_check(), "sticky": { "cookie": "SY", "ttl": "1h" } }),
            &[a.address(), b.address()],
        ),
        pool_with(
            "session",
            json!({ "health_check": no_check(), "sticky": { "cookie": "SESS" } }),
            &[c.address(), d.address()],
        ),
    ]);
    let routes = json!([
        { "name": "session", "path_prefix": "/session", "pool": "session" },
        route("all", "p"),
    ]);
    let port = listen_port();
    let _sy = Switchyard::start_config(&web_config(port, pools, routes), &[port]);

    let r = get(port, "/");
    let (value, header) = set_cookie(&r, "SY").unwrap_or_else(|| panic!("{r:?}"));
    let attrs: Vec<String> = header
        .split(';')
        .skip(1)
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for want in ["path=/", "httponly", "samesite=lax", "max-age=3600"] {
        assert!(attrs.iter().any(|a| a == want), "{want} missing: {header}");
    }
    assert!(
        !attrs.iter().any(|a| a == "secure"),
        "no Secure on plaintext: {header}"
    );
    // Without ttl: a session cookie (no Max-Age, no Expires).
    let r = get(port, "/session");
    let (_, session) = set_cookie(&r, "SESS").unwrap_or_else(|| panic!("{r:?}"));
    let lower = session.to_ascii_lowercase();
    assert!(
        !lower.contains("max-age") && !lower.contains("expires"),
        "{session}"
    );

    // Forged values are treated as absent: served, and given a real cookie.
    let hex_of_a: String = a.address().bytes().map(|x| format!("{x:02x}")).collect();
    let forged = [
        "0123456789abcdef0123456789abcdef".to_string(),
        a.address(),
        hex_of_a,
        format!("{value}00"),
        String::new(),
    ];
    for f in &forged {
        let r = with_cookie(port, &format!("SY={f}"));
        assert_eq!(r.status, 200, "forged {f:?}: {r:?}");
        let (real, _) =
            set_cookie(&r, "SY").unwrap_or_else(|| panic!("forged {f:?} got no cookie: {r:?}"));
        assert_ne!(&real, f);
        // The cookie handed out is a real one: it keeps the client on that backend.
        let home = r.header("x-backend").expect("X-Backend").to_string();
        for _ in 0..4 {
            let again = with_cookie(port, &format!("SY={real}"));
            assert_eq!(again.header("x-backend"), Some(home.as_str()));
        }
    }
}

// ---------------------------------------------------------------- DNS discovery

#[test]
fn dns_discovery_of_localhost_adds_127_0_0_1() {
    let found = Backend::start("found");
    let backend_port = found.addr.port();
    let port = listen_port();
    let pools = json!([{
        "name": "p",
        "discovery": { "dns": { "name": "localhost", "port": backend_port, "interval": "1s" } },
        "retries": 1,
        "health_check": fast_check(),
    }]);
    let sy = Switchyard::start_config(&web_config(port, pools, route_all()), &[port]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = get(port, "/");
    while last.status != 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        last = get(port, "/");
    }
    assert_eq!(
        last.status,
        200,
        "the discovered backend never served: {last:?}; stderr:\n{}",
        sy.stderr()
    );
    let counts = served_by(port, "/", 10);
    assert_eq!(counts.get("found"), Some(&10), "{counts:?}");
    assert!(found.count() >= 11);
}

// ---------------------------------------------------------------- reload (SIGHUP)

#[test]
fn reload_keeps_state_of_unchanged_pools_and_refreshes_changed_ones() {
    let a = Backend::start("a");
    let b = Backend::start_on("b", listen_port());
    let b_addr = b.address();
    let port = listen_port();
    let members = [a.address(), b.address()];
    let pools_with = |timeout: &str| {
        json!([pool_with(
            "p",
            json!({
                "retries": 0,
                "health_check": with(fast_check(), json!({ "timeout": timeout })),
            }),
            &members,
        )])
    };
    let pools = pools_with("200ms");
    let sy = Switchyard::start_config(&web_config(port, pools.clone(), route_all()), &[port]);
    drop(b);
    sy.expect_stderr(&went_down(&b_addr), 1, TRANSITION);

    // A reload that only adds a route: pool p keeps b out, with no window.
    let routes = json!([
        { "name": "extra", "path_prefix": "/extra", "pool": "p" },
        route("all", "p"),
    ]);
    sy.rewrite_config(&config_text(&web_config(port, pools, routes.clone())));
    sy.signal("-HUP");
    assert!(
        sy.wait_stderr("reloaded ", 1, Duration::from_secs(5)),
        "stderr:\n{}",
        sy.stderr()
    );
    let counts = served_by(port, "/", 20);
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");
    assert_eq!(served_by(port, "/extra", 2).get("a"), Some(&2));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        sy.stderr_count(&went_down(&b_addr)),
        1,
        "b was never seen healthy again; stderr:\n{}",
        sy.stderr()
    );

    // A reload that changes the pool starts it fresh: b begins healthy and is taken
    // out again by the new pool's checks.
    sy.rewrite_config(&config_text(&web_config(port, pools_with("300ms"), routes)));
    sy.signal("-HUP");
    assert!(
        sy.wait_stderr("reloaded ", 2, Duration::from_secs(5)),
        "stderr:\n{}",
        sy.stderr()
    );
    sy.expect_stderr(&went_down(&b_addr), 2, TRANSITION);
    let counts = served_by(port, "/", 10);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
}

#[test]
fn a_reload_that_reorders_or_drops_listeners_keeps_each_socket_on_its_own_routes() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let (pa, pb) = (listen_port(), listen_port());
    let pools = json!([
        pool_with("pa", json!({ "health_check": no_check() }), &[a.address()]),
        pool_with("pb", json!({ "health_check": no_check() }), &[b.address()]),
    ]);
    let routes = |listeners: &[&str]| -> Value {
        listeners
            .iter()
            .map(|l| {
                let pool = if *l == "first" { "pa" } else { "pb" };
                json!({ "name": format!("to-{pool}"), "listeners": [l], "pool": pool })
            })
            .collect()
    };
    let first = listener("first", pa);
    let second = listener("second", pb);
    let text = |listeners: Value, names: &[&str]| {
        config_text(&config_of(listeners, pools.clone(), routes(names)))
    };
    let sy = Switchyard::start(
        &text(json!([first, second]), &["first", "second"]),
        &[pa, pb],
    );
    assert_eq!(served_by(pa, "/", 3).get("a"), Some(&3));
    assert_eq!(served_by(pb, "/", 3).get("b"), Some(&3));

    let reload = |text: String, n: usize| {
        sy.rewrite_config(&text);
        sy.signal("-HUP");
        assert!(
            sy.wait_stderr("reloaded ", n, Duration::from_secs(5)),
            "stderr:\n{}",
            sy.stderr()
        );
    };

    // The same listeners in the other order: each port keeps its own routes.
    reload(text(json!([second, first]), &["second", "first"]), 1);
    assert_eq!(
        served_by(pa, "/", 3).get("a"),
        Some(&3),
        "stderr:\n{}",
        sy.stderr()
    );
    assert_eq!(
        served_by(pb, "/", 3).get("b"),
        Some(&3),
        "stderr:\n{}",
        sy.stderr()
    );

    // "first" removed: its socket stays open until an upgrade and the reload says so;
    // "second" still serves its own route.
    reload(text(json!([second]), &["second"]), 2);
    assert_eq!(
        sy.stderr_count("listener first changes from"),
        1,
        "the reload must say the removed listener needs an upgrade; stderr:\n{}",
        sy.stderr()
    );
    assert_eq!(
        served_by(pb, "/", 3).get("b"),
        Some(&3),
        "stderr:\n{}",
        sy.stderr()
    );
    assert_eq!(
        get(pa, "/").status,
        404,
        "no route names the removed listener"
    );
}

#[test]
fn invalid_config_on_sighup_keeps_the_old_one_serving() {
    let a = Backend::start("a");
    let port = listen_port();
    let pools = json!([pool_with(
        "p",
        json!({ "health_check": no_check() }),
        &[a.address()]
    )]);
    let mut sy = Switchyard::start_config(&web_config(port, pools, route_all()), &[port]);
    assert_eq!(get(port, "/").status, 200);

    // A route to a missing pool and a typo'd key.
    let broken = web_config(
        port,
        json!([pool_with(
            "p",
            json!({ "health_check": no_check(), "retires": 2 }),
            &[a.address()],
        )]),
        json!([route("all", "nowhere")]),
    );
    sy.rewrite_config(&config_text(&broken));
    sy.signal("-HUP");
    assert!(
        sy.wait_stderr("reload rejected", 1, Duration::from_secs(5)),
        "stderr:\n{}",
        sy.stderr()
    );
    assert!(
        matches!(sy.child.try_wait(), Ok(None)),
        "switchyard must keep running"
    );
    let counts = served_by(port, "/", 5);
    assert_eq!(counts.get("a"), Some(&5), "{counts:?}");
    assert_eq!(a.count(), 6);
}

// ---------------------------------------------------------------- the closing metric

#[test]
fn killing_one_of_three_backends_under_load_fails_no_request() {
    let a = Backend::start("a");
    // b dies like a killed process: listener and connections closed at once.
    let mut b = KillableBackend::start_on("b", listen_port());
    let c = Backend::start("c");
    let b_addr = b.address();
    let port = listen_port();
    let members = [a.address(), b.address(), c.address()];
    let pools = json!([pool_with(
        "p",
        json!({ "retries": 1, "health_check": fast_check() }),
        &members,
    )]);
    let sy = Switchyard::start_config(&web_config(port, pools, route_all()), &[port]);

    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let load = {
        let (stop, failures) = (stop.clone(), failures.clone());
        std::thread::spawn(move || {
            let mut total = 0usize;
            let deadline = Instant::now() + Duration::from_secs(15);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let r = get(port, "/");
                total += 1;
                if r.status != 200 {
                    if let Ok(mut f) = failures.lock() {
                        f.push(format!("#{total}: {} {}", r.status, r.body.trim()));
                    }
                }
            }
            total
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let served_before_kill = b.count();
    b.kill();
    let down = sy.expect_stderr(&went_down(&b_addr), 1, TRANSITION);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let total = load.join().expect("load thread");
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    eprintln!(
        "KILL-UNDER-LOAD: {} failed of {total} requests (retries: 1; killed backend had served {served_before_kill}; taken out {down:?} after the kill)",
        failures.len()
    );
    assert!(
        total > 20 && served_before_kill > 0,
        "the load ran: {total}"
    );
    let failed_entries: Vec<String> = sy
        .access_entries(total)
        .iter()
        .filter(|e| e["status"] != 200)
        .map(|e| e.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {failures:?}\naccess log: {failed_entries:#?}\nstderr:\n{}",
        failures.len(),
        sy.stderr()
    );
    assert!(a.count() > 0 && c.count() > 0);
}
