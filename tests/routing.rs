//! Routing end to end (SPEC §3 routes, §4, §9): listeners, hosts, path prefixes,
//! methods, headers, file order, strip_prefix, allow/deny, the global `server.deny` and
//! redirect_https.
mod common;
use common::*;

/// `pools:` with one pool per backend, each pool named after its backend.
fn pools_of(backends: &[&Backend]) -> String {
    let mut s = String::from("pools:\n");
    for b in backends {
        s.push_str(&format!(
            "  - name: {}\n    backends:\n      - address: {}\n",
            b.name,
            b.address()
        ));
    }
    s
}

/// A config with one plaintext listener `web` on `port`, a pool per backend and `routes`.
fn config(port: u16, backends: &[&Backend], routes: &str) -> String {
    format!(
        "{TEST_SERVER}
listeners:
  - name: web
    listen: 127.0.0.1:{port}
{}
routes:
{routes}",
        pools_of(backends)
    )
}

/// GET `path` with the given Host; returns (status, X-Backend or "").
fn hit(port: u16, host: &str, path: &str) -> (u16, String) {
    let r = request(port, "GET", path, &[("Host", host)], b"");
    (r.status, r.header("x-backend").unwrap_or("").to_string())
}

#[test]
fn route_restricted_to_a_listener_is_404_on_the_other() {
    let a = Backend::start("a");
    let (one, two) = (listen_port(), listen_port());
    let yaml = format!(
        "{TEST_SERVER}
listeners:
  - name: one
    listen: 127.0.0.1:{one}
  - name: two
    listen: 127.0.0.1:{two}
{}
routes:
  - name: only-one
    listeners: [one]
    pool: a
",
        pools_of(&[&a])
    );
    let _sy = Switchyard::start(&yaml, &[one, two]);
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
    let (one, two) = (listen_port(), listen_port());
    let yaml = format!(
        "{TEST_SERVER}
listeners:
  - name: one
    listen: 127.0.0.1:{one}
  - name: two
    listen: 127.0.0.1:{two}
{}
routes:
  - name: everywhere
    pool: a
",
        pools_of(&[&a])
    );
    let _sy = Switchyard::start(&yaml, &[one, two]);
    assert_eq!(get(one, "/").status, 200);
    assert_eq!(get(two, "/").status, 200);
    assert_eq!(a.count(), 2);
}

#[test]
fn exact_host_is_case_insensitive_and_ignores_the_port() {
    let a = Backend::start("a");
    let port = listen_port();
    let routes = "  - name: api
    host: api.example.com
    pool: a
";
    let _sy = Switchyard::start(&config(port, &[&a], routes), &[port]);
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
    let port = listen_port();
    let routes = "  - name: wild
    host: \"*.example.com\"
    pool: a
";
    let _sy = Switchyard::start(&config(port, &[&a], routes), &[port]);
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
    let port = listen_port();
    let routes = "  - name: listed
    host: [one.test, \"*.two.test\"]
    pool: a
  - name: rest
    pool: b
";
    let _sy = Switchyard::start(&config(port, &[&a, &b], routes), &[port]);
    assert_eq!(hit(port, "one.test", "/"), (200, "a".into()));
    assert_eq!(hit(port, "x.two.test", "/"), (200, "a".into()));
    assert_eq!(hit(port, "three.test", "/"), (200, "b".into()));
    assert_eq!(hit(port, "two.test", "/"), (200, "b".into()));
}

#[test]
fn path_prefix_matches_on_segment_boundaries() {
    let a = Backend::start("a");
    let port = listen_port();
    let routes = "  - name: v1
    path_prefix: /v1
    pool: a
";
    let _sy = Switchyard::start(&config(port, &[&a], routes), &[port]);
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
    let port = listen_port();
    let routes = "  - name: rw
    methods: [GET, POST]
    pool: a
";
    let _sy = Switchyard::start(&config(port, &[&a], routes), &[port]);
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
    let port = listen_port();
    let routes = "  - name: canary
    headers: { X-Canary: \"1\", X-Team: blue }
    pool: canary
  - name: stable
    pool: stable
";
    let _sy = Switchyard::start(&config(port, &[&a, &b], routes), &[port]);
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
    let port = listen_port();
    // The broad /api route comes first, so the /api/v2 route below it never matches.
    let routes = "  - name: api
    path_prefix: /api
    pool: a
  - name: api-v2
    path_prefix: /api/v2
    pool: b
  - name: catch-all
    pool: c
";
    let _sy = Switchyard::start(&config(port, &[&a, &b, &c], routes), &[port]);
    assert_eq!(hit(port, "localhost", "/api/v2/x"), (200, "a".into()));
    assert_eq!(hit(port, "localhost", "/api"), (200, "a".into()));
    assert_eq!(hit(port, "localhost", "/other"), (200, "c".into()));
    assert_eq!(b.count(), 0);
}

#[test]
fn specific_route_first_takes_its_requests() {
    let [a, b] = Backend::start_each(["a", "b"]);
    let port = listen_port();
    let routes = "  - name: api-v2
    path_prefix: /api/v2
    pool: b
  - name: api
    path_prefix: /api
    pool: a
";
    let _sy = Switchyard::start(&config(port, &[&a, &b], routes), &[port]);
    assert_eq!(hit(port, "localhost", "/api/v2/x"), (200, "b".into()));
    assert_eq!(hit(port, "localhost", "/api/v1"), (200, "a".into()));
    assert_eq!(hit(port, "localhost", "/api/v2x"), (200, "a".into()));
    assert_eq!(hit(port, "localhost", "/nothing").0, 404);
}

#[test]
fn no_matching_route_is_404_and_no_backend_is_contacted() {
    let a = Backend::start("a");
    let port = listen_port();
    let routes = "  - name: only
    host: only.test
    path_prefix: /only
    pool: a
";
    let _sy = Switchyard::start(&config(port, &[&a], routes), &[port]);
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
    let port = listen_port();
    let routes = "  - name: api
    path_prefix: /api
    strip_prefix: true
    pool: a
  - name: plain
    path_prefix: /keep
    pool: b
";
    let _sy = Switchyard::start(&config(port, &[&a, &b], routes), &[port]);
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

fn acl_config(port: u16, a: &Backend, acl: &str) -> String {
    // Trust 127.0.0.1, so the `X-Forwarded-For` the test sends decides the client IP.
    let server = TEST_SERVER.replace(
        "  shutdown_timeout: 1s\n",
        "  shutdown_timeout: 1s\n  trusted_proxies: [127.0.0.1/32]\n",
    );
    assert!(
        server.contains("trusted_proxies"),
        "TEST_SERVER changed shape"
    );
    format!(
        "{server}
listeners:
  - name: web
    listen: 127.0.0.1:{port}
{}
routes:
  - name: guarded
    pool: a
{acl}",
        pools_of(&[a])
    )
}

fn from_ip(port: u16, ip: &str) -> u16 {
    request(port, "GET", "/", &[("X-Forwarded-For", ip)], b"").status
}

#[test]
fn deny_list_answers_403() {
    let a = Backend::start("a");
    let port = listen_port();
    let yaml = acl_config(port, &a, "    deny: [203.0.113.0/24]\n");
    let _sy = Switchyard::start(&yaml, &[port]);
    assert_eq!(from_ip(port, "203.0.113.9"), 403);
    assert_eq!(from_ip(port, "198.51.100.7"), 200);
    assert_eq!(get(port, "/").status, 200, "127.0.0.1 itself is not denied");
    assert_eq!(a.count(), 2, "a denied request never reaches the backend");
}

#[test]
fn allow_list_answers_403_to_everyone_else() {
    let a = Backend::start("a");
    let port = listen_port();
    let yaml = acl_config(port, &a, "    allow: [198.51.100.0/24]\n");
    let _sy = Switchyard::start(&yaml, &[port]);
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
    let port = listen_port();
    let yaml = acl_config(
        port,
        &a,
        "    allow: [203.0.113.0/24]\n    deny: [203.0.113.9/32]\n",
    );
    let _sy = Switchyard::start(&yaml, &[port]);
    assert_eq!(from_ip(port, "203.0.113.9"), 403);
    assert_eq!(from_ip(port, "203.0.113.10"), 200);
    assert_eq!(from_ip(port, "192.0.2.1"), 403);
    assert_eq!(a.count(), 1);
}

#[test]
fn acl_uses_the_peer_when_it_is_not_a_trusted_proxy() {
    let a = Backend::start("a");
    let port = listen_port();
    // No trusted_proxies: X-Forwarded-For is the client's claim and must not count.
    let routes = "  - name: guarded
    pool: a
    deny: [203.0.113.0/24]
";
    let _sy = Switchyard::start(&config(port, &[&a], routes), &[port]);
    assert_eq!(from_ip(port, "203.0.113.9"), 200);

    let b = Backend::start("b");
    let port2 = listen_port();
    let routes = "  - name: local-denied
    pool: b
    deny: [127.0.0.0/8]
";
    let _sy2 = Switchyard::start(&config(port2, &[&b], routes), &[port2]);
    assert_eq!(get(port2, "/").status, 403);
    assert_eq!(
        from_ip(port2, "198.51.100.7"),
        403,
        "XFF must not unlock a denied peer"
    );
    assert_eq!(b.count(), 0);
}

/// A config with `server.deny: [deny]` and one route on `/app` to pool `a`.
fn server_deny_config(port: u16, a: &Backend, deny: &str) -> String {
    let yaml = config(
        port,
        &[a],
        "  - name: app\n    pool: a\n    path_prefix: /app\n",
    );
    let with_deny = yaml.replacen(
        "  shutdown_timeout: 1s\n",
        &format!("  shutdown_timeout: 1s\n  deny: [{deny}]\n"),
        1,
    );
    assert!(with_deny.contains("  deny: ["), "TEST_SERVER changed shape");
    with_deny
}

#[test]
fn server_deny_answers_403_on_every_path_before_routing() {
    let a = Backend::start("a");
    let port = listen_port();
    let _sy = Switchyard::start(&server_deny_config(port, &a, "127.0.0.0/8"), &[port]);
    let r = get(port, "/app/x");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("forbidden"), "{r:?}");
    assert!(r.header("x-request-id").is_some(), "{r:?}");
    // Refused before routing: a path no route matches is 403 too, not 404.
    assert_eq!(get(port, "/nowhere").status, 403);
    assert_eq!(a.count(), 0, "a denied client never reaches a backend");

    // A list the client is not in changes nothing.
    let b = Backend::start("a");
    let port2 = listen_port();
    let _sy2 = Switchyard::start(
        &server_deny_config(port2, &b, "10.0.0.0/8, \"2001:db8::/32\""),
        &[port2],
    );
    assert_eq!(get(port2, "/app/x").status, 200);
    assert_eq!(get(port2, "/nowhere").status, 404);
    assert_eq!(b.count(), 1);
}

#[test]
fn redirect_https_without_tls_listener_uses_port_443() {
    let a = Backend::start("a");
    let port = listen_port();
    let routes = "  - name: secure
    redirect_https: true
    pool: a
";
    let _sy = Switchyard::start(&config(port, &[&a], routes), &[port]);
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
    let yaml = format!(
        "{TEST_SERVER}
listeners:
  - name: web
    listen: 127.0.0.1:{web}
  - name: secure1
    listen: 127.0.0.1:{tls1}
    tls:
      certificates:
        - cert_file: {cert}
          key_file: {key}
  - name: secure2
    listen: 127.0.0.1:{tls2}
    tls:
      certificates:
        - cert_file: {cert}
          key_file: {key}
{}
routes:
  - name: secure
    redirect_https: true
    pool: a
",
        pools_of(&[&a])
    );
    let _sy = Switchyard::start(&yaml, &[web, tls1, tls2]);
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
    let yaml = format!(
        "{TEST_SERVER}
listeners:
  - name: web
    listen: 127.0.0.1:{web}
  - name: secure
    listen: 127.0.0.1:{secure}
    tls:
      certificates:
        - cert_file: {cert}
          key_file: {key}
{}
routes:
  - name: app
    redirect_https: true
    pool: a
",
        pools_of(&[&a])
    );
    let _sy = Switchyard::start(&yaml, &[web, secure]);
    // Already on HTTPS: no redirect loop, the backend answers.
    let r = tls_request(secure, "GET", "/x?y=1", &[("Host", "example.com")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("a"));
    assert_eq!(a.last().map(|s| s.path), Some("/x?y=1".to_string()));
}
