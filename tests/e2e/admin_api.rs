//! The admin API end to end (SPEC §5): bearer tokens and the CIDR allowlist on every
//! route, the POOL and BACKEND shapes, adding, re-weighting, draining and deleting
//! backends with the traffic following at once, input validation with the offending
//! field, reload through the API, the redacted configuration, the OpenAPI description,
//! and the state file: kept across reloads and restarts, never corrupt after kill -9.
use crate::common::config::*;
use crate::common::*;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A token no other string in a configuration or a JSON answer could contain.
const TOKEN: &str = "t0ken-5ecret-9f3a";

/// The BACKEND keys of SPEC §5 (plus `requests`, the dashboard's request counter).
const BACKEND_KEYS: [&str; 10] = [
    "address", "weight", "backup", "source", "healthy", "circuit", "active", "draining", "ejected",
    "requests",
];

// ---------------------------------------------------------------- helpers

/// A request to the admin listener with `authorization` as the raw header value.
fn api(port: u16, method: &str, path: &str, authorization: Option<&str>, body: &str) -> Reply {
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = authorization {
        headers.push(("Authorization", a));
    }
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    request(port, method, path, &headers, body.as_bytes())
}

/// A request with the right bearer token.
fn authed(port: u16, method: &str, path: &str, body: &str) -> Reply {
    api(port, method, path, Some(&format!("Bearer {TOKEN}")), body)
}

fn json_of(r: &Reply) -> Value {
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "a JSON answer expected: {r:?}"
    );
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

/// The `admin:` section with the test token and a state file in `{dir}`.
fn admin_section(port: u16) -> Value {
    json!({
        "listen": format!("127.0.0.1:{port}"),
        "tokens": [TOKEN],
        "state_file": "{dir}/state.json",
    })
}

/// Pools `web` (a, b; round robin) and `other` (c; least_conn); `/other` goes to
/// `other`, everything else to `web`. `pool_keys` is added to both pools.
fn config(admin: Value, web: u16, addrs: [&str; 3], pool_keys: Value) -> Value {
    let [a, b, c] = addrs.map(str::to_string);
    let other = with(pool("other", &[c]), json!({ "algorithm": "least_conn" }));
    let pools = json!([
        with(pool("web", &[a, b]), pool_keys.clone()),
        with(other, pool_keys),
    ]);
    let routes = json!([
        { "name": "other", "path_prefix": "/other", "pool": "other" },
        route("all", "web"),
    ]);
    with(web_config(web, pools, routes), json!({ "admin": admin }))
}

/// The `admin:` section with the test token and the state file at `state_file`.
fn admin_with_state_file(port: u16, state_file: &Path) -> Value {
    with(
        admin_section(port),
        json!({ "state_file": state_file.display().to_string() }),
    )
}

/// Three backends and a switchyard with an admin listener in front of them.
struct Setup {
    sy: Switchyard,
    admin: u16,
    web: u16,
    a: Backend,
    b: Backend,
    c: Backend,
}

impl Setup {
    fn start() -> Setup {
        let [a, b, c] = Backend::start_each(["a", "b", "c"]);
        let (admin, web) = (listen_port(), listen_port());
        let config = config(
            admin_section(admin),
            web,
            [&a.address(), &b.address(), &c.address()],
            json!({}),
        );
        let sy = Switchyard::start_config(&config, &[admin, web]);
        Setup {
            sy,
            admin,
            web,
            a,
            b,
            c,
        }
    }

    fn addrs(&self) -> [String; 3] {
        [self.a.address(), self.b.address(), self.c.address()]
    }

    /// Pool `web` still holds exactly `a` and `b`, and `a` is not draining; `a`'s BACKEND.
    fn assert_web_unchanged(&self) -> Value {
        let web = self.pool("web");
        assert_eq!(
            addresses(&web),
            [self.a.address(), self.b.address()].into_iter().collect(),
            "{web}"
        );
        let a = backend_in(&web, &self.a.address()).expect("a");
        assert_eq!(a["draining"], false, "{a}");
        a
    }

    fn pool(&self, name: &str) -> Value {
        let r = authed(self.admin, "GET", &format!("/api/v1/pools/{name}"), "");
        assert_eq!(r.status, 200, "GET pool {name}: {r:?}");
        json_of(&r)
    }
}

fn addresses(pool: &Value) -> BTreeSet<String> {
    pool["backends"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .filter_map(|b| b["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that `v` is an object (a `what`) with exactly the keys `want`.
fn assert_keys(v: &Value, what: &str, want: &[&str]) {
    let keys: BTreeSet<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, want.iter().copied().collect(), "{what} keys: {v}");
}

fn assert_backend_shape(b: &Value) {
    assert_keys(b, "BACKEND", &BACKEND_KEYS);
    assert!(b["address"].is_string(), "{b}");
    assert!(b["weight"].is_u64(), "{b}");
    assert!(b["backup"].is_boolean(), "{b}");
    assert!(
        ["static", "dns", "dns_srv", "docker", "kubernetes", "api"]
            .contains(&b["source"].as_str().unwrap_or("")),
        "{b}"
    );
    assert!(b["healthy"].is_boolean(), "{b}");
    assert!(
        ["closed", "open", "half_open"].contains(&b["circuit"].as_str().unwrap_or("")),
        "{b}"
    );
    assert!(b["active"].is_u64(), "{b}");
    assert!(b["draining"].is_boolean(), "{b}");
    assert!(b["requests"].is_u64(), "{b}");
}

fn assert_pool_shape(p: &Value) {
    assert_keys(p, "POOL", &["name", "algorithm", "backends"]);
    for b in p["backends"].as_array().expect("backends array") {
        assert_backend_shape(b);
    }
}

fn encoded(address: &str) -> String {
    address.replace(':', "%3A")
}

/// One request that never panics: `None` when the server is gone or silent.
fn try_request(port: u16, method: &str, path: &str, body: &str) -> Option<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(raw.as_bytes()).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1)?.parse().ok()
}

// ---------------------------------------------------------------- authentication

#[test]
fn every_api_route_needs_a_valid_bearer_token() {
    let s = Setup::start();
    let d = Backend::start("d");
    let a = s.a.address();
    let routes: Vec<(&str, String, String)> = vec![
        ("GET", "/api/v1/pools".into(), String::new()),
        ("GET", "/api/v1/pools/web".into(), String::new()),
        ("GET", "/api/v1/pools/nope".into(), String::new()),
        (
            "POST",
            "/api/v1/pools/web/backends".into(),
            json!({"address": d.address(), "weight": 1}).to_string(),
        ),
        (
            "PATCH",
            format!("/api/v1/pools/web/backends/{a}"),
            r#"{"draining":true}"#.into(),
        ),
        (
            "DELETE",
            format!("/api/v1/pools/web/backends/{}", s.b.address()),
            String::new(),
        ),
        ("POST", "/api/v1/reload".into(), String::new()),
        ("GET", "/api/v1/config".into(), String::new()),
        ("GET", "/api/v1/openapi.json".into(), String::new()),
        ("GET", "/api/v2/anything".into(), String::new()),
        ("GET", "/api/".into(), String::new()),
    ];
    let basic = format!("Basic {}", base64(&format!("admin:{TOKEN}")));
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("wrong token", Some("Bearer not-the-token".into())),
        ("token plus a byte", Some(format!("Bearer {TOKEN}x"))),
        (
            "token prefix",
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        ),
        ("empty bearer", Some("Bearer ".into())),
        ("Basic scheme", Some(basic)),
        ("Token scheme", Some(format!("Token {TOKEN}"))),
        ("no scheme", Some(TOKEN.into())),
    ];
    for (method, path, body) in &routes {
        for (what, auth) in &bad {
            let r = api(s.admin, method, path, auth.as_deref(), body);
            assert_eq!(r.status, 401, "{method} {path} with {what}: {r:?}");
            let v = json_of(&r);
            assert!(v["error"].is_string(), "{method} {path}: {v}");
        }
    }
    // Nothing changed through the rejected requests.
    s.assert_web_unchanged();
    assert!(
        !s.sy.dir.path().join("state.json").exists(),
        "no state written by rejected requests"
    );

    // Probes and the dashboard need no token.
    let r = get(s.admin, "/healthz");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(json_of(&r), json!({"status": "ok"}));
    assert_eq!(get(s.admin, "/readyz").status, 200);
    let r = get(s.admin, "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));

    // With the token every route does its job.
    let expected = [200, 200, 404, 201, 200, 204, 200, 200, 200, 404, 404];
    for ((method, path, body), want) in routes.iter().zip(expected) {
        let r = authed(s.admin, method, path, body);
        assert_eq!(r.status, want, "{method} {path} with the token: {r:?}");
    }
}

#[test]
fn any_of_several_tokens_is_accepted() {
    let [a, b, c] = Backend::start_each(["a", "b", "c"]);
    let (admin, web) = (listen_port(), listen_port());
    let section = with(
        admin_section(admin),
        json!({ "tokens": ["first-t0ken", TOKEN] }),
    );
    let config = config(
        section,
        web,
        [&a.address(), &b.address(), &c.address()],
        json!({}),
    );
    let _sy = Switchyard::start_config(&config, &[admin, web]);
    for t in ["first-t0ken", TOKEN] {
        let r = api(
            admin,
            "GET",
            "/api/v1/pools",
            Some(&format!("Bearer {t}")),
            "",
        );
        assert_eq!(r.status, 200, "token {t}: {r:?}");
    }
    let r = api(admin, "GET", "/api/v1/pools", Some("Bearer first-t0ke"), "");
    assert_eq!(r.status, 401, "{r:?}");
}

#[test]
fn a_client_outside_allow_gets_403() {
    let a = Backend::start("a");
    let (admin, web) = (listen_port(), listen_port());
    let section = with(admin_section(admin), json!({ "allow": ["10.0.0.0/8"] }));
    let [b, c] = Backend::start_each(["b", "c"]);
    let config = config(
        section,
        web,
        [&a.address(), &b.address(), &c.address()],
        json!({}),
    );
    let _sy = Switchyard::start_config(&config, &[admin, web]);
    for (method, path, body) in [
        ("GET", "/api/v1/pools", ""),
        ("GET", "/api/v1/pools/web", ""),
        ("POST", "/api/v1/reload", ""),
        ("GET", "/api/v1/config", ""),
    ] {
        let r = authed(admin, method, path, body);
        assert_eq!(r.status, 403, "{method} {path} from 127.0.0.1: {r:?}");
        assert!(json_of(&r)["error"].is_string());
        let r = api(admin, method, path, None, body);
        assert_eq!(r.status, 403, "{method} {path} without token: {r:?}");
    }
    assert_eq!(get(admin, "/").status, 403);
    // The proxy itself is not concerned.
    assert_eq!(get(web, "/").status, 200);
}

// ---------------------------------------------------------------- reading pools

#[test]
fn pools_and_backends_have_the_documented_shapes() {
    let s = Setup::start();
    let r = authed(s.admin, "GET", "/api/v1/pools", "");
    assert_eq!(r.status, 200, "{r:?}");
    let v = json_of(&r);
    let pools = v["pools"].as_array().expect("pools array");
    let names: Vec<&str> = pools.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["web", "other"], "{v}");
    for p in pools {
        assert_pool_shape(p);
    }
    assert_eq!(pools[0]["algorithm"], "round_robin");
    assert_eq!(pools[1]["algorithm"], "least_conn");
    let a = backend_in(&pools[0], &s.a.address()).expect("a in web");
    assert_eq!(a["weight"], 1);
    assert_eq!(a["backup"], false);
    assert_eq!(a["healthy"], true);
    assert_eq!(a["circuit"], "closed");
    assert_eq!(a["active"], 0);
    assert_eq!(a["draining"], false);

    let other = s.pool("other");
    assert_pool_shape(&other);
    assert_eq!(other["name"], "other");
    assert_eq!(
        addresses(&other),
        [s.c.address()].into_iter().collect(),
        "{other}"
    );

    let r = authed(s.admin, "GET", "/api/v1/pools/nope", "");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(json_of(&r)["error"].is_string());
    let r = authed(
        s.admin,
        "PATCH",
        &format!("/api/v1/pools/nope/backends/{}", s.a.address()),
        r#"{"weight":2}"#,
    );
    assert_eq!(r.status, 404, "PATCH in an unknown pool: {r:?}");
    let r = authed(
        s.admin,
        "POST",
        "/api/v1/pools/nope/backends",
        r#"{"address":"127.0.0.1:9"}"#,
    );
    assert_eq!(r.status, 404, "POST to an unknown pool: {r:?}");
    let r = authed(s.admin, "GET", "/api/v1/nothing-here", "");
    assert_eq!(r.status, 404, "{r:?}");

    // Request counters move with the traffic.
    served_by(s.web, "/", 4);
    let web = s.pool("web");
    let total: u64 = web["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 4, "{web}");
}

#[test]
fn readyz_answers_200_while_serving() {
    let s = Setup::start();
    for _ in 0..3 {
        let r = get(s.admin, "/readyz");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(json_of(&r).is_object());
        assert_eq!(get(s.web, "/").status, 200);
    }
}

// ---------------------------------------------------------------- changing backends

#[test]
fn an_added_backend_takes_traffic_at_once() {
    let s = Setup::start();
    let d = Backend::start("d");
    let r = authed(
        s.admin,
        "POST",
        "/api/v1/pools/web/backends",
        &json!({"address": d.address(), "weight": 1}).to_string(),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let b = json_of(&r);
    assert_backend_shape(&b);
    assert_eq!(b["address"], d.address());
    assert_eq!(b["weight"], 1);
    assert_eq!(b["draining"], false);
    assert_eq!(b["backup"], false);
    assert_eq!(b["source"], "api", "added through the API (SPEC §12)");

    let counts = served_by(s.web, "/", 30);
    assert_eq!(counts.get("d"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert!(backend_in(&s.pool("web"), &d.address()).is_some());

    // Adding it again, or a backend the file already has: 409.
    for addr in [d.address(), s.a.address()] {
        let r = authed(
            s.admin,
            "POST",
            "/api/v1/pools/web/backends",
            &json!({"address": addr}).to_string(),
        );
        assert_eq!(r.status, 409, "POST {addr} again: {r:?}");
        assert!(json_of(&r)["error"].is_string());
    }
    // Weight defaults to 1.
    let e = Backend::start("e");
    let r = authed(
        s.admin,
        "POST",
        "/api/v1/pools/other/backends",
        &json!({"address": e.address()}).to_string(),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(json_of(&r)["weight"], 1);
}

#[test]
fn bad_input_is_400_with_the_offending_field() {
    let s = Setup::start();
    let post = "/api/v1/pools/web/backends";
    let cases: Vec<(&str, &str)> = vec![
        ("not json", "body"),
        ("[1,2]", "body"),
        ("\"127.0.0.1:9\"", "body"),
        ("{}", "address"),
        (r#"{"weight":1}"#, "address"),
        (r#"{"address":12}"#, "address"),
        (r#"{"address":"nonsense"}"#, "address"),
        (r#"{"address":"127.0.0.1"}"#, "address"),
        (r#"{"address":"127.0.0.1:0"}"#, "address"),
        (r#"{"address":"127.0.0.1:99999"}"#, "address"),
        (r#"{"address":":8080"}"#, "address"),
        (r#"{"address":"127.0.0.1:9","weight":0}"#, "weight"),
        (r#"{"address":"127.0.0.1:9","weight":1001}"#, "weight"),
        (r#"{"address":"127.0.0.1:9","weight":"x"}"#, "weight"),
        (r#"{"address":"127.0.0.1:9","weight":-1}"#, "weight"),
        (r#"{"address":"127.0.0.1:9","weight":2.5}"#, "weight"),
        (r#"{"address":"127.0.0.1:9","colour":"red"}"#, "colour"),
    ];
    for (body, field) in &cases {
        let r = authed(s.admin, "POST", post, body);
        assert_eq!(r.status, 400, "POST {body}: {r:?}");
        let v = json_of(&r);
        assert_eq!(v["field"], *field, "POST {body}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "POST {body}: {v}"
        );
    }
    let patch = format!("/api/v1/pools/web/backends/{}", s.a.address());
    for (body, field) in [
        ("nope", "body"),
        ("{}", "body"),
        (r#"{"weight":0}"#, "weight"),
        (r#"{"weight":1001}"#, "weight"),
        (r#"{"weight":"x"}"#, "weight"),
        (r#"{"draining":"yes"}"#, "draining"),
        (r#"{"weight":2,"backup":true}"#, "backup"),
    ] {
        let r = authed(s.admin, "PATCH", &patch, body);
        assert_eq!(r.status, 400, "PATCH {body}: {r:?}");
        let v = json_of(&r);
        assert_eq!(v["field"], field, "PATCH {body}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    // Nothing was changed by the rejected requests.
    let a = s.assert_web_unchanged();
    assert_eq!(a["weight"], 1, "{a}");
}

#[test]
fn weight_and_draining_change_the_traffic() {
    let s = Setup::start();
    let a = s.a.address();
    let r = authed(
        s.admin,
        "PATCH",
        &format!("/api/v1/pools/web/backends/{a}"),
        r#"{"weight":3}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let v = json_of(&r);
    assert_backend_shape(&v);
    assert_eq!(v["weight"], 3, "{v}");
    let counts = served_by(s.web, "/", 40);
    assert_eq!(counts.get("a"), Some(&30), "weight 3:1 {counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "weight 3:1 {counts:?}");

    // Drain through the percent-encoded address.
    let before = s.a.count();
    let r = authed(
        s.admin,
        "PATCH",
        &format!("/api/v1/pools/web/backends/{}", encoded(&a)),
        r#"{"draining":true}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let v = json_of(&r);
    assert_eq!(v["draining"], true, "{v}");
    assert_eq!(v["address"], a, "{v}");
    let counts = served_by(s.web, "/", 20);
    assert_eq!(counts.get("b"), Some(&20), "a drained: {counts:?}");
    assert_eq!(
        s.a.count(),
        before,
        "the drained backend got no new request"
    );
    let shown = backend_in(&s.pool("web"), &a).expect("a is still listed");
    assert_eq!(shown["draining"], true, "{shown}");
    assert_eq!(shown["weight"], 3, "{shown}");

    // Undrain (lower-case escape this time).
    let r = authed(
        s.admin,
        "PATCH",
        &format!("/api/v1/pools/web/backends/{}", a.replace(':', "%3a")),
        r#"{"draining":false}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let counts = served_by(s.web, "/", 8);
    assert_eq!(counts.get("a"), Some(&6), "{counts:?}");

    // Unknown backend: 404.
    for method in ["PATCH", "DELETE"] {
        let r = authed(
            s.admin,
            method,
            "/api/v1/pools/web/backends/127.0.0.1:9",
            r#"{"weight":2}"#,
        );
        assert_eq!(r.status, 404, "{method} of an unknown backend: {r:?}");
        assert!(json_of(&r)["error"].is_string());
    }
    // A backend of another pool is unknown in this one.
    let r = authed(
        s.admin,
        "PATCH",
        &format!("/api/v1/pools/web/backends/{}", s.c.address()),
        r#"{"weight":2}"#,
    );
    assert_eq!(r.status, 404, "{r:?}");
}

#[test]
fn draining_lets_in_flight_requests_finish() {
    let s = Setup::start();
    s.c.set(Behaviour::with_delay(Duration::from_millis(1500)));
    let web = s.web;
    let slow = std::thread::spawn(move || get(web, "/other/slow"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.c.count() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(s.c.count(), 1, "the slow request reached c");
    let r = authed(
        s.admin,
        "PATCH",
        &format!("/api/v1/pools/other/backends/{}", encoded(&s.c.address())),
        r#"{"draining":true}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let v = json_of(&r);
    assert_eq!(v["draining"], true, "{v}");
    assert_eq!(v["active"], 1, "the in-flight request is counted: {v}");
    let r = slow.join().expect("slow request");
    assert_eq!(r.status, 200, "the in-flight request finished: {r:?}");
    assert_eq!(r.header("x-backend"), Some("c"));
    // No other backend in `other`: new requests get 503 and c sees none.
    let r = get(s.web, "/other/new");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(s.c.count(), 1);
}

#[test]
fn a_deleted_backend_stops_getting_traffic() {
    let s = Setup::start();
    let b = s.b.address();
    served_by(s.web, "/", 2);
    let before = s.b.count();
    let r = authed(
        s.admin,
        "DELETE",
        &format!("/api/v1/pools/web/backends/{b}"),
        "",
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty(), "204 has no body: {r:?}");
    let counts = served_by(s.web, "/", 20);
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");
    assert_eq!(s.b.count(), before);
    assert!(backend_in(&s.pool("web"), &b).is_none());
    let r = authed(
        s.admin,
        "DELETE",
        &format!("/api/v1/pools/web/backends/{}", encoded(&b)),
        "",
    );
    assert_eq!(r.status, 404, "deleting it again: {r:?}");

    // An added backend can be deleted too, and a deleted file backend re-added.
    let d = Backend::start("d");
    let r = authed(
        s.admin,
        "POST",
        "/api/v1/pools/web/backends",
        &json!({"address": d.address()}).to_string(),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = authed(
        s.admin,
        "DELETE",
        &format!("/api/v1/pools/web/backends/{}", encoded(&d.address())),
        "",
    );
    assert_eq!(r.status, 204, "{r:?}");
    let r = authed(
        s.admin,
        "POST",
        "/api/v1/pools/web/backends",
        &json!({"address": b, "weight": 2}).to_string(),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(json_of(&r)["weight"], 2);
    assert_eq!(
        addresses(&s.pool("web")),
        [s.a.address(), b.clone()].into_iter().collect()
    );
    let counts = served_by(s.web, "/", 6);
    assert_eq!(counts.get("b"), Some(&4), "{counts:?}");
    assert_eq!(d.count(), 0);
}

// ---------------------------------------------------------------- reload and config

#[test]
fn reload_through_the_api() {
    let s = Setup::start();
    let r = authed(s.admin, "POST", "/api/v1/reload", "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(json_of(&r), json!({"status": "ok"}));

    // A broken file: 422 with every error, key path included; the old config serves.
    let [a, b, c] = s.addrs();
    let mut broken = config(admin_section(s.admin), s.web, [&a, &b, &c], json!({}));
    broken["pools"][0]["backends"][0]["address"] = json!("not-an-address");
    broken["pools"][1]["algorithm"] = json!("fastest");
    s.sy.rewrite_config(&config_text(&broken));
    let r = authed(s.admin, "POST", "/api/v1/reload", "");
    assert_eq!(r.status, 422, "{r:?}");
    let v = json_of(&r);
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors array: {v}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("pools[0].backends[0].address")),
        "an error names pools[0].backends[0].address: {errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("pools[1].algorithm")),
        "every error is reported, pools[1].algorithm too: {errors:?}"
    );
    let counts = served_by(s.web, "/", 4);
    assert_eq!(
        counts.get("a"),
        Some(&2),
        "the old config serves: {counts:?}"
    );
    assert_eq!(
        addresses(&s.pool("web")),
        [a.clone(), b.clone()].into_iter().collect()
    );

    // A valid change applies.
    let d = Backend::start("d");
    s.sy.rewrite_config(&config_text(&config(
        admin_section(s.admin),
        s.web,
        [&a, &d.address(), &c],
        json!({}),
    )));
    let r = authed(s.admin, "POST", "/api/v1/reload", "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        addresses(&s.pool("web")),
        [a.clone(), d.address()].into_iter().collect()
    );
    let counts = served_by(s.web, "/", 4);
    assert_eq!(counts.get("d"), Some(&2), "{counts:?}");
    let r = authed(s.admin, "GET", "/api/v1/reload", "");
    assert_eq!(r.status, 405, "GET /api/v1/reload: {r:?}");
}

#[test]
fn config_is_served_with_secrets_redacted() {
    let (_certs, cert, key) = tls_test_cert_files();
    let [a, b, c] = Backend::start_each(["a", "b", "c"]);
    let (admin, web, tls) = (listen_port(), listen_port(), listen_port());
    let mut config = config(
        admin_section(admin),
        web,
        [&a.address(), &b.address(), &c.address()],
        json!({}),
    );
    config["listeners"]
        .as_array_mut()
        .expect("listeners")
        .push(tls_listener("websecure", tls, &cert, &key));
    let _sy = Switchyard::start_config(&config, &[admin, web, tls]);
    let r = authed(admin, "GET", "/api/v1/config", "");
    assert_eq!(r.status, 200, "{r:?}");
    let v = json_of(&r);
    assert!(
        !r.body.contains(TOKEN),
        "the token appears in GET /api/v1/config: {}",
        r.body
    );
    assert!(
        !r.body.contains(&key) && !r.body.contains("PRIVATE KEY"),
        "the key file appears in GET /api/v1/config: {}",
        r.body
    );
    assert!(r.body.contains(&cert), "the certificate path is not secret");
    let pools = v["pools"]
        .as_array()
        .unwrap_or_else(|| panic!("pools: {v}"));
    let names: Vec<&str> = pools.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["web", "other"], "{v}");
    let web_backends: Vec<&str> = pools[0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .filter_map(|b| b["address"].as_str())
        .collect();
    assert_eq!(web_backends, [a.address(), b.address()], "{v}");
    let tokens = v["admin"]["tokens"].as_array().expect("admin.tokens");
    assert_eq!(tokens.len(), 1, "one (redacted) token: {v}");
    assert_ne!(tokens[0], TOKEN);
    assert!(v["routes"].as_array().is_some_and(|r| r.len() == 2), "{v}");
}

#[test]
fn openapi_description_is_valid_openapi_3() {
    let s = Setup::start();
    let r = authed(s.admin, "GET", "/api/v1/openapi.json", "");
    assert_eq!(r.status, 200, "{r:?}");
    let v = json_of(&r);
    assert!(
        v["openapi"].as_str().is_some_and(|o| o.starts_with("3.")),
        "OpenAPI 3: {}",
        v["openapi"]
    );
    let paths = v["paths"].as_object().expect("paths");
    for p in [
        "/healthz",
        "/readyz",
        "/api/v1/pools",
        "/api/v1/pools/{pool}",
        "/api/v1/pools/{pool}/backends",
        "/api/v1/pools/{pool}/backends/{address}",
        "/api/v1/reload",
        "/api/v1/config",
        "/api/v1/openapi.json",
        "/",
    ] {
        assert!(paths.contains_key(p), "{p} is described");
    }
    let has_module = Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_module {
        eprintln!(
            "SKIP openapi validation: python3 module openapi_spec_validator missing (pip install openapi-spec-validator)"
        );
        return;
    }
    let out = output_with_stdin(
        Command::new("python3").args([
            "-c",
            "from openapi_spec_validator import validate; import json,sys; validate(json.load(sys.stdin))",
        ]),
        r.body.as_bytes(),
    );
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects GET /api/v1/openapi.json:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------- the state file

/// The runtime changes made by `state_survives_reloads_and_restarts`, as the API shows them.
fn assert_changed_state(admin: u16, a: &str, b: &str, c: &str, d: &str, when: &str) {
    let r = authed(admin, "GET", "/api/v1/pools", "");
    assert_eq!(r.status, 200, "{when}: {r:?}");
    let v = json_of(&r);
    let pools = v["pools"].as_array().expect("pools");
    let web = pools.iter().find(|p| p["name"] == "web").expect("web");
    let other = pools.iter().find(|p| p["name"] == "other").expect("other");
    assert_eq!(
        addresses(web),
        [a.to_string(), d.to_string()].into_iter().collect(),
        "{when}: b deleted, d added: {web}"
    );
    assert!(backend_in(web, b).is_none(), "{when}: {web}");
    assert_eq!(
        backend_in(web, a).expect("a")["draining"],
        true,
        "{when}: {web}"
    );
    assert_eq!(backend_in(web, d).expect("d")["weight"], 2, "{when}: {web}");
    assert_eq!(
        backend_in(other, c).expect("c")["weight"],
        5,
        "{when}: {other}"
    );
}

#[test]
fn state_survives_reloads_and_restarts() {
    let state_dir = tempfile::tempdir().expect("state dir");
    let state = state_dir.path().join("state.json");
    let [a, b, c, d] = Backend::start_each(["a", "b", "c", "d"]);
    let [aa, ba, ca, da] = [a.address(), b.address(), c.address(), d.address()];
    let file_text = |admin: u16, web: u16, pool_keys: Value| {
        config_text(&config(
            admin_with_state_file(admin, &state),
            web,
            [&aa, &ba, &ca],
            pool_keys,
        ))
    };
    let (admin, web) = (listen_port(), listen_port());
    let mut sy = Switchyard::start(&file_text(admin, web, json!({})), &[admin, web]);
    let ok = |r: Reply, want: u16| assert_eq!(r.status, want, "{r:?}");
    ok(
        authed(
            admin,
            "PATCH",
            &format!("/api/v1/pools/web/backends/{aa}"),
            r#"{"draining":true}"#,
        ),
        200,
    );
    ok(
        authed(
            admin,
            "POST",
            "/api/v1/pools/web/backends",
            &json!({"address": da, "weight": 2}).to_string(),
        ),
        201,
    );
    ok(
        authed(
            admin,
            "DELETE",
            &format!("/api/v1/pools/web/backends/{ba}"),
            "",
        ),
        204,
    );
    ok(
        authed(
            admin,
            "PATCH",
            &format!("/api/v1/pools/other/backends/{ca}"),
            r#"{"weight":5}"#,
        ),
        200,
    );
    assert_changed_state(admin, &aa, &ba, &ca, &da, "after the changes");
    let text = std::fs::read_to_string(&state).expect("the state file is written");
    serde_json::from_str::<Value>(&text).expect("the state file is JSON");
    let counts = served_by(web, "/", 6);
    assert_eq!(counts.get("d"), Some(&6), "only d serves web: {counts:?}");

    // SIGHUP with the same file.
    sy.signal("-HUP");
    assert!(
        sy.wait_stderr("reloaded", 1, Duration::from_secs(10)),
        "{}",
        sy.stderr()
    );
    assert_changed_state(admin, &aa, &ba, &ca, &da, "after SIGHUP");
    // SIGHUP with changed pool definitions: the pools are rebuilt from the file and the
    // overlay is applied again.
    sy.rewrite_config(&file_text(admin, web, json!({ "retries": 0 })));
    sy.signal("-HUP");
    assert!(
        sy.wait_stderr("reloaded", 2, Duration::from_secs(10)),
        "{}",
        sy.stderr()
    );
    assert_changed_state(admin, &aa, &ba, &ca, &da, "after SIGHUP with new pools");
    let counts = served_by(web, "/", 6);
    assert_eq!(counts.get("d"), Some(&6), "after reload: {counts:?}");
    ok(authed(admin, "POST", "/api/v1/reload", ""), 200);
    assert_changed_state(admin, &aa, &ba, &ca, &da, "after POST /api/v1/reload");

    // Stop and start again with the same configuration (fresh ports).
    sy.signal("-TERM");
    assert!(
        wait_exit(&mut sy.child, Duration::from_secs(10)).is_some(),
        "switchyard did not stop on SIGTERM"
    );
    drop(sy);
    let (admin, web) = (listen_port(), listen_port());
    let sy = Switchyard::start(
        &file_text(admin, web, json!({ "retries": 0 })),
        &[admin, web],
    );
    assert_changed_state(admin, &aa, &ba, &ca, &da, "after a restart");
    let counts = served_by(web, "/", 6);
    assert_eq!(counts.get("d"), Some(&6), "after restart: {counts:?}");
    assert_eq!(
        b.count(),
        0,
        "the deleted backend never served after the restart"
    );
    drop(sy);
}

#[test]
fn kill_9_during_state_writes_never_corrupts_the_file() {
    let state_dir = tempfile::tempdir().expect("state dir");
    let state = state_dir.path().join("state.json");
    let [a, b, c] = Backend::start_each(["a", "b", "c"]);
    let extra = Backend::start("extra");
    let [aa, ba, ca] = [a.address(), b.address(), c.address()];
    let file_text = |admin: u16, web: u16| {
        config_text(&config(
            admin_with_state_file(admin, &state),
            web,
            [&aa, &ba, &ca],
            json!({}),
        ))
    };
    let mut writes = 0usize;
    for round in 0..30u64 {
        let (admin, web) = (listen_port(), listen_port());
        let mut sy = Switchyard::start(&file_text(admin, web), &[admin, web]);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let firing: Vec<_> = (0..3)
            .map(|t| {
                let (stop, done) = (stop.clone(), done.clone());
                let (aa, ba, ea) = (aa.clone(), ba.clone(), extra.address());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let status = match (t, i % 2) {
                            (0, _) => try_request(
                                admin,
                                "PATCH",
                                &format!("/api/v1/pools/web/backends/{aa}"),
                                &format!("{{\"weight\":{}}}", 1 + (i * 7 + round) % 1000),
                            ),
                            (1, _) => try_request(
                                admin,
                                "PATCH",
                                &format!("/api/v1/pools/web/backends/{ba}"),
                                &format!("{{\"draining\":{}}}", i % 2 == 0),
                            ),
                            (_, 0) => try_request(
                                admin,
                                "POST",
                                "/api/v1/pools/other/backends",
                                &format!("{{\"address\":\"{ea}\",\"weight\":{}}}", 1 + i % 9),
                            ),
                            _ => try_request(
                                admin,
                                "DELETE",
                                &format!("/api/v1/pools/other/backends/{ea}"),
                                "",
                            ),
                        };
                        match status {
                            Some(200 | 201 | 204) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            // 404/409: the add/delete pair crossing a restart.
                            Some(_) => {}
                            None => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                })
            })
            .collect();
        // Kill at a different moment each round: 5 ms to ~150 ms into the writes.
        std::thread::sleep(Duration::from_millis(5 + (round * 37) % 150));
        let _ = sy.child.kill();
        let _ = sy.child.wait();
        stop.store(true, Ordering::Relaxed);
        for f in firing {
            f.join().expect("request thread");
        }
        writes += done.load(Ordering::Relaxed);
        if state.exists() {
            let text = std::fs::read_to_string(&state).expect("read state");
            let parsed: Result<Value, _> = serde_json::from_str(&text);
            assert!(
                parsed.as_ref().is_ok_and(Value::is_object),
                "round {round}: the state file is not a JSON object after kill -9: {parsed:?}\n{text}"
            );
        }
        drop(sy);
    }
    assert!(
        writes >= 10,
        "too few state writes happened ({writes}) to mean anything"
    );
    assert!(state.exists(), "the state file was written");

    // It starts with whatever the last complete write left, and shows exactly that.
    let (admin, web) = (listen_port(), listen_port());
    let sy = Switchyard::start(&file_text(admin, web), &[admin, web]);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("read state")).expect("JSON");
    let web_pool = {
        let r = authed(admin, "GET", "/api/v1/pools/web", "");
        assert_eq!(r.status, 200, "{r:?}\n{}", sy.stderr());
        json_of(&r)
    };
    let text = saved.to_string();
    if let Some(w) = saved["pools"]["web"]["weights"][&aa].as_u64() {
        assert_eq!(
            backend_in(&web_pool, &aa).expect("a")["weight"],
            w,
            "weight of a as saved: {text}"
        );
    }
    let drained = saved["pools"]["web"]["draining"]
        .as_array()
        .is_some_and(|d| d.iter().any(|x| x == &Value::from(ba.clone())));
    assert_eq!(
        backend_in(&web_pool, &ba).expect("b")["draining"],
        drained,
        "draining of b as saved: {text}"
    );
    let r = get(web, "/");
    assert_eq!(r.status, 200, "{r:?}");
    eprintln!("{writes} acknowledged state writes over 30 kill -9 rounds");
}

// ---------------------------------------------------------------- small things

/// Standard base64 (for a Basic credential).
fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(T[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_helper_matches_the_rfc_examples() {
    assert_eq!(base64("f"), "Zg==");
    assert_eq!(base64("fo"), "Zm8=");
    assert_eq!(base64("foo"), "Zm9v");
    assert_eq!(base64("foob"), "Zm9vYg==");
}

// ---------------------------------------------------------------- live state kept

/// Switchyard with the admin listener in front of pool `p` over `backends` with `keys`
/// (one route to it): the admin and the web port.
fn start_single_pool(backends: &[String], keys: Value) -> (Switchyard, u16, u16) {
    let (admin, web) = (listen_port(), listen_port());
    let config = with(
        config_of(
            json!([listener("web", web)]),
            json!([with(pool("p", backends), keys)]),
            json!([route("all", "p")]),
        ),
        json!({ "admin": admin_section(admin) }),
    );
    (Switchyard::start_config(&config, &[admin, web]), admin, web)
}

/// Waits (10 s at most) until the admin API shows backend `address` of pool `p`
/// unhealthy; `what` names it in the failure.
fn wait_unhealthy(sy: &Switchyard, admin: u16, address: &str, what: &str) {
    let mut last = String::new();
    let down = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let r = authed(admin, "GET", "/api/v1/pools/p", "");
        let down = backend_in(&json_of(&r), address).is_some_and(|b| b["healthy"] == false);
        last = r.body;
        down
    });
    assert!(
        down,
        "{what} never became unhealthy: {last}\n{}",
        sy.stderr()
    );
}

/// Re-weighting a backend changes its weight only: a backend the health check took out
/// stays out (SPEC §4: it gets no new request), it is not handed traffic again.
#[test]
fn changing_the_weight_keeps_a_backend_unhealthy() {
    let ok = Backend::start("ok");
    let dead = format!("127.0.0.1:{}", closed_port());
    let keys = json!({
        "retries": 0,
        "health_check": {
            "interval": "3s",
            "timeout": "500ms",
            "healthy_threshold": 1,
            "unhealthy_threshold": 1,
        },
    });
    let (sy, admin, web) = start_single_pool(&[ok.address(), dead.clone()], keys);
    wait_unhealthy(&sy, admin, &dead, "the closed port");
    let r = authed(
        admin,
        "PATCH",
        &format!("/api/v1/pools/p/backends/{dead}"),
        r#"{"weight":2}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let v = json_of(&r);
    assert_eq!(v["weight"], 2, "{v}");
    assert_eq!(
        v["healthy"], false,
        "the re-weighted backend is still down (its port is closed): {v}"
    );
    // No retries: a request sent to the dead backend would fail.
    for i in 0..6 {
        let r = get(web, "/");
        assert_eq!(
            r.status, 200,
            "request {i} after re-weighting the dead backend: {r:?}"
        );
    }
}

/// Re-weighting keeps the circuit breaker's state: an open circuit stays open.
#[test]
fn changing_the_weight_keeps_an_open_circuit_open() {
    let ok = Backend::start("ok");
    let bad = Backend::start_with("bad", Behaviour::with_status(500));
    let keys = json!({ "circuit_breaker": { "failure_threshold": 2, "open_for": "10m" } });
    let (_sy, admin, web) = start_single_pool(&[ok.address(), bad.address()], keys);
    let mut fails = 0;
    for _ in 0..8 {
        if get(web, "/").status == 500 {
            fails += 1;
        }
    }
    assert_eq!(fails, 2, "two 500s open the circuit");
    let b = backend_in(
        &json_of(&authed(admin, "GET", "/api/v1/pools/p", "")),
        &bad.address(),
    )
    .expect("bad");
    assert_eq!(b["circuit"], "open", "{b}");
    let r = authed(
        admin,
        "PATCH",
        &format!("/api/v1/pools/p/backends/{}", bad.address()),
        r#"{"weight":3}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let v = json_of(&r);
    assert_eq!(v["circuit"], "open", "re-weighting closed the circuit: {v}");
    let before = bad.count();
    for _ in 0..6 {
        assert_eq!(get(web, "/").status, 200);
    }
    assert_eq!(bad.count(), before, "the open circuit keeps traffic away");
}

/// A backend added through the API is health-checked like the file's: on a closed port
/// it is taken out, and no request is sent to it afterwards.
#[test]
fn an_added_backend_is_health_checked() {
    let ok = Backend::start("ok");
    let dead = format!("127.0.0.1:{}", closed_port());
    let keys = json!({
        "retries": 0,
        "health_check": {
            "interval": "200ms",
            "timeout": "200ms",
            "healthy_threshold": 1,
            "unhealthy_threshold": 1,
        },
    });
    let (sy, admin, web) = start_single_pool(&[ok.address()], keys);
    let r = authed(
        admin,
        "POST",
        "/api/v1/pools/p/backends",
        &json!({ "address": dead }).to_string(),
    );
    assert_eq!(r.status, 201, "{r:?}");
    wait_unhealthy(&sy, admin, &dead, "the added backend on a closed port");
    let counts = served_by(web, "/", 6);
    assert_eq!(counts.get("ok"), Some(&6), "{counts:?}");
}

/// Regression: tokens and `allow` were captured at startup, so a reload that rotated a
/// token changed `GET /api/v1/config` but the old token kept working.
#[test]
fn a_reload_applies_new_tokens_and_allow_at_once() {
    let [a, b, c] = Backend::start_each(["a", "b", "c"]);
    let (admin, web) = (listen_port(), listen_port());
    let addrs = [a.address(), b.address(), c.address()];
    let section = |token: &str, allow: &str| {
        with(
            admin_section(admin),
            json!({ "tokens": [token], "allow": [allow] }),
        )
    };
    let file_text = |token: &str, allow: &str| {
        config_text(&config(
            section(token, allow),
            web,
            [&addrs[0], &addrs[1], &addrs[2]],
            json!({}),
        ))
    };
    let sy = Switchyard::start(&file_text("old-t0ken", "127.0.0.0/8"), &[admin, web]);
    let bearer = |t: &str| format!("Bearer {t}");
    let pools = |t: &str| api(admin, "GET", "/api/v1/pools", Some(&bearer(t)), "");
    assert_eq!(pools("old-t0ken").status, 200);
    assert_eq!(pools("new-t0ken").status, 401);

    // Rotate the token; the reload is asked for with the old one, which was valid then.
    sy.rewrite_config(&file_text("new-t0ken", "127.0.0.0/8"));
    let r = api(
        admin,
        "POST",
        "/api/v1/reload",
        Some(&bearer("old-t0ken")),
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = pools("old-t0ken");
    assert_eq!(r.status, 401, "the rotated-out token is refused: {r:?}");
    let r = api(
        admin,
        "POST",
        "/api/v1/reload",
        Some(&bearer("old-t0ken")),
        "",
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(pools("new-t0ken").status, 200);

    // Narrow `allow` to a network the test client is not in (reload by SIGHUP).
    sy.rewrite_config(&file_text("new-t0ken", "10.0.0.0/8"));
    sy.signal("-HUP");
    assert!(
        sy.wait_stderr("reloaded", 2, Duration::from_secs(10)),
        "the SIGHUP reload happened"
    );
    let r = pools("new-t0ken");
    assert_eq!(r.status, 403, "127.0.0.1 is outside the new allow: {r:?}");
    assert_eq!(get(web, "/").status, 200, "the proxy is not concerned");
}

/// One backend, one name: `localhost:P` and `127.000.0.1:P` were accepted beside
/// `127.0.0.1:P` as further backends of the same pool (the same server counted twice or
/// thrice in the balancing).
#[test]
fn another_spelling_of_a_member_address_is_not_a_second_backend() {
    let s = Setup::start();
    let port = s.a.address().rsplit_once(':').map(|(_, p)| p.to_string());
    let port = port.unwrap_or_default();
    let post = "/api/v1/pools/web/backends";
    let r = authed(
        s.admin,
        "POST",
        post,
        &format!(r#"{{"address":"localhost:{port}"}}"#),
    );
    assert_eq!(r.status, 409, "localhost names a member already: {r:?}");
    let r = authed(
        s.admin,
        "POST",
        post,
        &format!(r#"{{"address":"127.000.0.1:{port}"}}"#),
    );
    assert_eq!(r.status, 400, "not a canonical IP address: {r:?}");
    assert_eq!(json_of(&r)["field"], "address");
    s.assert_web_unchanged();
}
