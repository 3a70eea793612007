//! Routing end to end (SPEC §3 routes, §4, §9): listeners, hosts, path prefixes,
//! methods, headers, file order, strip_prefix, allow/deny, the global `server.deny` and
//! redirect_https.
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};

/// One pool per backend, each named after its backend.
fn pools_of(backends: &[&Backend]) -> Value {
    backends
        .iter()
        .map(|b| pool(&b.name, &[b.address()]))
        .collect()
}

/// Switchyard on `ports` with the test configuration, `listeners`, a pool per backend
/// and `routes`; `server_keys` are added to its `server:` section.
fn start_with(
    server_keys: Value,
    listeners: Value,
    backends: &[&Backend],
    routes: Value,
    ports: &[u16],
) -> Switchyard {
    let config = with(
        test_config(),
        json!({
            "server": server_keys,
            "listeners": listeners,
            "pools": pools_of(backends),
            "routes": routes,
        }),
    );
    Switchyard::start_config(&config, ports)
}

/// Switchyard on a new port: one plaintext listener `web`, a pool per backend and
/// `routes`; `server_keys` are added to the test `server:` section.
fn start(server_keys: Value, backends: &[&Backend], routes: Value) -> (Switchyard, u16) {
    let port = listen_port();
    let listeners = json!([listener("web", port)]);
    let sy = start_with(server_keys, listeners, backends, routes, &[port]);
    (sy, port)
}

/// Backend `a` behind two plaintext listeners, `one` and `two`, with `routes`.
fn start_two_listeners(a: &Backend, routes: Value) -> (Switchyard, u16, u16) {
    let (one, two) = (listen_port(), listen_port());
    let listeners = json!([listener("one", one), listener("two", two)]);
    let sy = start_with(json!({}), listeners, &[a], routes, &[one, two]);
    (sy, one, two)
}

/// GET `path` with the given Host; returns (status, X-Backend or "").
fn hit(port: u16, host: &str, path: &str) -> (u16, String) {
    let r = request(port, "GET", path, &[("Host", host)], b"");
    (r.status, r.header("x-backend").unwrap_or("").to_string())
}

#[test]
fn route_restricted_to_a_listener_is_404_on_the_other() {
    let a = Backend::start("a");
    let routes = json!([{ "name": "only-one", "listeners": ["one"], "pool": "a" }]);
    let (_sy, one, two) = start_two_listeners(&a, routes);
    let r = get(one, "/x");
    assert_eq!(r.status, 200, "listener one: {r:?}");
    assert_eq!(r.header("x-backend"), Some("a"));
    let r = get(two, "/x");
    assert_eq!(r.status, 404, "listener two must not match: {r:?}");
    assert_eq!(
        a.count(),
        1,
        "only the request on listener one reaches the backend"
    );
}

#[test]
fn route_without_listeners_serves_every_listener() {
    let a = Backend::start("a");
    let (_sy, one, two) = start_two_listeners(&a, json!([route("everywhere", "a")]));
    assert_eq!(get(one, "/").status, 200);
    assert_eq!(get(two, "/").status, 200);
    assert_eq!(a.count(), 2);
}

#[test]
fn exact_host_is_case_insensitive_and_ignores_the_port() {
    let a = Backend::start("a");
    let routes = json!([{ "name": "api", "host": "api.example.com", "pool": "a" }]);
    let (_sy, port) = start(json!({}), &[&a], routes);
    assert_eq!(hit(port, "api.example.com", "/"), (200, "a".into()));
    assert_eq!(hit(port, "API.Example.COM", "/"), (200, "a".into()));
    assert_eq!(hit(port, "api.example.com:8080", "/"), (200, "a".into()));
    assert_eq!(hit(port, "Api.Example.Com:443", "/"), (200, "a".into()));
    assert_eq!(hit(port, "other.example.com", "/").0, 404);
    assert_eq!(hit(port, "example.com", "/").0, 404);
    assert_eq!(hit(port, "x.api.example.com", "/").0, 404);
    assert_eq!(hit(port, "api.example.com.evil", "/").0, 404);
    assert_eq!(a.count(), 4);
}

#[test]
fn wildcard_host_matches_any_subdomain_depth_but_not_the_apex() {
    let a = Backend::start("a");
    let routes = json!([{ "name": "wild", "host": "*.example.com", "pool": "a" }]);
    let (_sy, port) = start(json!({}), &[&a], routes);
    assert_eq!(hit(port, "a.example.com", "/"), (200, "a".into()));
    assert_eq!(hit(port, "a.b.example.com", "/"), (200, "a".into()));
    assert_eq!(hit(port, "A.B.C.Example.Com:8443", "/"), (200, "a".into()));
    assert_eq!(
        hit(port, "example.com", "/").0,
        404,
        "apex is not a subdomain"
    );
    assert_eq!(hit(port, "badexample.com", "/").0, 404);
    assert_eq!(hit(port, "a.example.org", "/").0, 404);
    assert_eq!(a.count(), 3);
}

#[test]
fn host_given_as_a_list_matches_any_entry() {
    let [a, b] = Backend::start_each(["a", "b"]);
    let routes = json!([
        { "name": "listed", "host": ["one.test", "*.two.test"], "pool": "a" },
        route("rest", "b"),
    ]);
    let (_sy, port) = start(json!({}), &[&a, &b], routes);
    assert_eq!(hit(port, "one.test", "/"), (200, "a".into()));
    assert_eq!(hit(port, "x.two.test", "/"), (200, "a".into()));
    assert_eq!(hit(port, "three.test", "/"), (200, "b".into()));
    assert_eq!(hit(port, "two.test", "/"), (200, "b".into()));
}

#[test]
fn path_prefix_matches_on_segment_boundaries() {
    let a = Backend::start("a");
    let routes = json!([{ "name": "v1", "path_prefix": "/v1", "pool": "a" }]);
    let (_sy, port) = start(json!({}), &[&a], routes);
    for path in ["/v1", "/v1/", "/v1/x", "/v1/x/y", "/v1?q=1"] {
        let r = get(port, path);
        assert_eq!(r.status, 200, "{path} must match /v1: {r:?}");
        assert_eq!(a.last().map(|s| s.path), Some(path.to_string()));
    }
    for path in ["/v1x", "/v10", "/v", "/", "/v2/v1", "/x/v1/"] {
        assert_eq!(get(port, path).status, 404, "{path} must not match /v1");
    }
    assert_eq!(a.count(), 5);
}

#[test]
fn methods_restrict_the_route() {
    let a = Backend::start("a");
    let routes = json!([{ "name": "rw", "methods": ["GET", "POST"], "pool": "a" }]);
    let (_sy, port) = start(json!({}), &[&a], routes);
    assert_eq!(request(port, "GET", "/", &[], b"").status, 200);
    assert_eq!(request(port, "POST", "/", &[], b"data").status, 200);
    assert_eq!(a.last().map(|s| s.method), Some("POST".to_string()));
    assert_eq!(request(port, "DELETE", "/", &[], b"").status, 404);
    assert_eq!(request(port, "PUT", "/", &[], b"data").status, 404);
    assert_eq!(a.count(), 2);
}

#[test]
fn header_match_needs_every_header_exactly() {
    let [a, b] = Backend::start_each(["canary", "stable"]);
    let routes = json!([
        { "name": "canary", "headers": { "X-Canary": "1", "X-Team": "blue" }, "pool": "canary" },
        route("stable", "stable"),
    ]);
    let (_sy, port) = start(json!({}), &[&a, &b], routes);
    let with = |h: &[(&str, &str)]| {
        request(port, "GET", "/", h, b"")
            .header("x-backend")
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(with(&[("X-Canary", "1"), ("X-Team", "blue")]), "canary");
    // header names are case-insensitive
    assert_eq!(with(&[("x-canary", "1"), ("x-team", "blue")]), "canary");
    assert_eq!(
        with(&[("X-Canary", "1")]),
        "stable",
        "all headers must match"
    );
    assert_eq!(with(&[("X-Team", "blue")]), "stable");
    assert_eq!(with(&[("X-Canary", "2"), ("X-Team", "blue")]), "stable");
    assert_eq!(with(&[("X-Canary", "1"), ("X-Team", "Blue")]), "stable");
    assert_eq!(with(&[("X-Canary", "10"), ("X-Team", "blue")]), "stable");
    assert_eq!(with(&[]), "stable");
}

#[test]
fn first_matching_route_in_file_order_wins() {
    let [a, b, c] = Backend::start_each(["a", "b", "c"]);
    // The broad /api route comes first, so the /api/v2 route below it never matches.
    let routes = json!([
        { "name": "api", "path_prefix": "/api", "pool": "a" },
        { "name": "api-v2", "path_prefix": "/api/v2", "pool": "b" },
        route("catch-all", "c"),
    ]);
    let (_sy, port) = start(json!({}), &[&a, &b, &c], routes);
    assert_eq!(hit(port, "localhost", "/api/v2/x"), (200, "a".into()));
    assert_eq!(hit(port, "localhost", "/api"), (200, "a".into()));
    assert_eq!(hit(port, "localhost", "/other"), (200, "c".into()));
    assert_eq!(b.count(), 0);
}

#[test]
fn specific_route_first_takes_its_requests() {
    let [a, b] = Backend::start_each(["a", "b"]);
    let routes = json!([
        { "name": "api-v2", "path_prefix": "/api/v2", "pool": "b" },
        { "name": "api", "path_prefix": "/api", "pool": "a" },
    ]);
    let (_sy, port) = start(json!({}), &[&a, &b], routes);
    assert_eq!(hit(port, "localhost", "/api/v2/x"), (200, "b".into()));
    assert_eq!(hit(port, "localhost", "/api/v1"), (200, "a".into()));
    assert_eq!(hit(port, "localhost", "/api/v2x"), (200, "a".into()));
    assert_eq!(hit(port, "localhost", "/nothing").0, 404);
}

#[test]
fn no_matching_route_is_404_and_no_backend_is_contacted() {
    let a = Backend::start("a");
    let routes = json!([
        { "name": "only", "host": "only.test", "path_prefix": "/only", "pool": "a" },
    ]);
    let (_sy, port) = start(json!({}), &[&a], routes);
    assert_eq!(hit(port, "only.test", "/elsewhere").0, 404);
    assert_eq!(hit(port, "other.test", "/only").0, 404);
    assert_eq!(hit(port, "localhost", "/").0, 404);
    // No request reached the backend (its TCP health check may connect, but sends none).
    assert_eq!(a.count(), 0);
    assert_eq!(hit(port, "only.test", "/only/x").0, 200);
}

#[test]
fn strip_prefix_removes_the_prefix_and_keeps_the_query() {
    let [a, b] = Backend::start_each(["a", "b"]);
    let routes = json!([
        { "name": "api", "path_prefix": "/api", "strip_prefix": true, "pool": "a" },
        { "name": "plain", "path_prefix": "/keep", "pool": "b" },
    ]);
    let (_sy, port) = start(json!({}), &[&a, &b], routes);
    for (sent, seen) in [
        ("/api/users?x=1", "/users?x=1"),
        ("/api/users/7", "/users/7"),
        ("/api", "/"),
        ("/api?x=1&y=2", "/?x=1&y=2"),
        ("/api/", "/"),
    ] {
        let r = get(port, sent);
        assert_eq!(r.status, 200, "{sent}: {r:?}");
        assert_eq!(
            a.last().map(|s| s.path),
            Some(seen.to_string()),
            "{sent} must reach the backend as {seen}"
        );
    }
    // Without strip_prefix the path and query pass unchanged.
    assert_eq!(get(port, "/keep/this?y=2").status, 200);
    assert_eq!(b.last().map(|s| s.path), Some("/keep/this?y=2".to_string()));
}

/// Backend `a` behind route `guarded` with `acl` keys, trusting 127.0.0.1 as a proxy, so
/// the `X-Forwarded-For` the test sends decides the client IP.
fn start_acl(a: &Backend, acl: Value) -> (Switchyard, u16) {
    start(
        json!({ "trusted_proxies": ["127.0.0.1/32"] }),
        &[a],
        json!([with(route("guarded", "a"), acl)]),
    )
}

fn from_ip(port: u16, ip: &str) -> u16 {
    request(port, "GET", "/", &[("X-Forwarded-For", ip)], b"").status
}

#[test]
fn deny_list_answers_403() {
    let a = Backend::start("a");
    let (_sy, port) = start_acl(&a, json!({ "deny": ["203.0.113.0/24"] }));
    assert_eq!(from_ip(port, "203.0.113.9"), 403);
    assert_eq!(from_ip(port, "198.51.100.7"), 200);
    assert_eq!(get(port, "/").status, 200, "127.0.0.1 itself is not denied");
    assert_eq!(a.count(), 2, "a denied request never reaches the backend");
}

#[test]
fn allow_list_answers_403_to_everyone_else() {
    let a = Backend::start("a");
    let (_sy, port) = start_acl(&a, json!({ "allow": ["198.51.100.0/24"] }));
    assert_eq!(from_ip(port, "198.51.100.7"), 200);
    assert_eq!(from_ip(port, "203.0.113.9"), 403);
    assert_eq!(
        get(port, "/").status,
        403,
        "127.0.0.1 is not in the allow list"
    );
    assert_eq!(a.count(), 1);
}

#[test]
fn deny_is_checked_before_allow() {
    let a = Backend::start("a");
    let (_sy, port) = start_acl(
        &a,
        json!({ "allow": ["203.0.113.0/24"], "deny": ["203.0.113.9/32"] }),
    );
    assert_eq!(from_ip(port, "203.0.113.9"), 403);
    assert_eq!(from_ip(port, "203.0.113.10"), 200);
    assert_eq!(from_ip(port, "192.0.2.1"), 403);
    assert_eq!(a.count(), 1);
}

#[test]
fn acl_uses_the_peer_when_it_is_not_a_trusted_proxy() {
    let a = Backend::start("a");
    // No trusted_proxies: X-Forwarded-For is the client's claim and must not count.
    let routes = json!([{ "name": "guarded", "pool": "a", "deny": ["203.0.113.0/24"] }]);
    let (_sy, port) = start(json!({}), &[&a], routes);
    assert_eq!(from_ip(port, "203.0.113.9"), 200);

    let b = Backend::start("b");
    let routes = json!([{ "name": "local-denied", "pool": "b", "deny": ["127.0.0.0/8"] }]);
    let (_sy2, port2) = start(json!({}), &[&b], routes);
    assert_eq!(get(port2, "/").status, 403);
    assert_eq!(
        from_ip(port2, "198.51.100.7"),
        403,
        "XFF must not unlock a denied peer"
    );
    assert_eq!(b.count(), 0);
}

/// Backend `a` behind one route on `/app`, with `server.deny: deny`.
fn start_server_deny(a: &Backend, deny: &[&str]) -> (Switchyard, u16) {
    start(
        json!({ "deny": deny }),
        &[a],
        json!([{ "name": "app", "pool": "a", "path_prefix": "/app" }]),
    )
}

#[test]
fn server_deny_answers_403_on_every_path_before_routing() {
    let a = Backend::start("a");
    let (_sy, port) = start_server_deny(&a, &["127.0.0.0/8"]);
    let r = get(port, "/app/x");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("forbidden"), "{r:?}");
    assert!(r.header("x-request-id").is_some(), "{r:?}");
    // Refused before routing: a path no route matches is 403 too, not 404.
    assert_eq!(get(port, "/nowhere").status, 403);
    assert_eq!(a.count(), 0, "a denied client never reaches a backend");

    // A list the client is not in changes nothing.
    let b = Backend::start("a");
    let (_sy2, port2) = start_server_deny(&b, &["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(get(port2, "/app/x").status, 200);
    assert_eq!(get(port2, "/nowhere").status, 404);
    assert_eq!(b.count(), 1);
}

#[test]
fn redirect_https_without_tls_listener_uses_port_443() {
    let a = Backend::start("a");
    let routes = json!([{ "name": "secure", "redirect_https": true, "pool": "a" }]);
    let (_sy, port) = start(json!({}), &[&a], routes);
    let r = request(port, "GET", "/a/b?x=1&y=2", &[("Host", "example.com")], b"");
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://example.com/a/b?x=1&y=2")
    );
    let r = request(port, "POST", "/form", &[("Host", "example.com")], b"k=v");
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(r.header("location"), Some("https://example.com/form"));
    assert_eq!(a.count(), 0, "a redirect never contacts the backend");
}

#[test]
fn redirect_https_uses_the_first_tls_listener_port() {
    let a = Backend::start("a");
    let (web, tls1, tls2) = (listen_port(), listen_port(), listen_port());
    let (_certs, cert, key) = tls_test_cert_files();
    let listeners = json!([
        listener("web", web),
        tls_listener("secure1", tls1, &cert, &key),
        tls_listener("secure2", tls2, &cert, &key),
    ]);
    let routes = json!([{ "name": "secure", "redirect_https": true, "pool": "a" }]);
    let _sy = start_with(json!({}), listeners, &[&a], routes, &[web, tls1, tls2]);
    let r = request(web, "GET", "/p/q?z=9", &[("Host", "example.com")], b"");
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("https://example.com:{tls1}/p/q?z=9").as_str())
    );
    // The port the client used on the plaintext listener is not carried over.
    let r = request(
        web,
        "GET",
        "/",
        &[("Host", &format!("example.com:{web}"))],
        b"",
    );
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("https://example.com:{tls1}/").as_str())
    );
    assert_eq!(a.count(), 0, "a redirect never contacts the backend");
}

#[test]
fn redirect_https_route_is_served_over_tls() {
    let a = Backend::start("a");
    let (web, secure) = (listen_port(), listen_port());
    let (_certs, cert, key) = tls_test_cert_files();
    let listeners = json!([
        listener("web", web),
        tls_listener("secure", secure, &cert, &key),
    ]);
    let routes = json!([{ "name": "app", "redirect_https": true, "pool": "a" }]);
    let _sy = start_with(json!({}), listeners, &[&a], routes, &[web, secure]);
    // Already on HTTPS: no redirect loop, the backend answers.
    let r = tls_request(secure, "GET", "/x?y=1", &[("Host", "example.com")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("a"));
    assert_eq!(a.last().map(|s| s.path), Some("/x?y=1".to_string()));
}
