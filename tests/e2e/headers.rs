//! Headers end to end (SPEC §4, §9): forwarding headers and the client IP, X-Request-Id,
//! per-route request/response `set`/`add`/`remove`, and security headers.
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};

/// Switchyard on a new port with `server_keys` added to the test `server:` section: one
/// listener, pool `p` with backend `b` and route `r` with `route_keys`.
fn start(server_keys: Value, b: &Backend, route_keys: Value) -> (Switchyard, u16) {
    let port = listen_port();
    let mut config = with(test_config(), json!({ "server": server_keys }));
    config["listeners"] = json!([listener("web", port)]);
    config["pools"] = json!([pool("p", &[b.address()])]);
    config["routes"] = json!([with(route("r", "p"), route_keys)]);
    (Switchyard::start_config(&config, &[port]), port)
}

fn is_sane_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

#[test]
fn forwarding_headers_reach_the_backend() {
    let b = Backend::start("a");
    let (_sy, port) = start(json!({}), &b, json!({}));

    let r = request(
        port,
        "GET",
        "/x",
        &[
            ("Host", "App.Example.com:8080"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = b.last().expect("backend saw the request");
    assert_eq!(
        seen.header_all("x-forwarded-for").join(", "),
        "1.2.3.4, 127.0.0.1",
        "client's X-Forwarded-For kept, peer appended"
    );
    assert_eq!(
        seen.header_all("x-real-ip"),
        vec!["127.0.0.1"],
        "X-Real-IP is overwritten with the peer"
    );
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        seen.header_all("x-forwarded-host"),
        vec!["App.Example.com:8080"],
        "X-Forwarded-Host is the Host as received"
    );
    assert_eq!(
        seen.header_all("host"),
        vec!["App.Example.com:8080"],
        "Host passes unchanged"
    );

    // Without a client X-Forwarded-For the backend sees just the peer.
    let r = request(port, "GET", "/y", &[("Host", "plain.test")], b"");
    assert_eq!(r.status, 200);
    let seen = b.last().expect("second request");
    assert_eq!(seen.header_all("x-forwarded-for").join(", "), "127.0.0.1");
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-host"), Some("plain.test"));
    assert_eq!(seen.header("host"), Some("plain.test"));
}

#[test]
fn real_ip_behind_a_trusted_proxy_is_the_rightmost_untrusted_entry() {
    let b = Backend::start("a");
    let trusted = json!({ "trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"] });
    let (_sy, port) = start(trusted, &b, json!({}));

    let xff = "198.51.100.1, 203.0.113.9, 10.1.2.3";
    let r = request(port, "GET", "/", &[("X-Forwarded-For", xff)], b"");
    assert_eq!(r.status, 200);
    let seen = b.last().expect("backend saw the request");
    assert_eq!(seen.header_all("x-real-ip"), vec!["203.0.113.9"]);
    assert_eq!(
        seen.header_all("x-forwarded-for").join(", "),
        format!("{xff}, 127.0.0.1")
    );

    // A trusted peer without X-Forwarded-For is itself the client.
    assert_eq!(get(port, "/").status, 200);
    let seen = b.last().expect("second request");
    assert_eq!(seen.header_all("x-real-ip"), vec!["127.0.0.1"]);
}

#[test]
fn real_ip_ignores_forwarded_for_from_an_untrusted_peer() {
    let b = Backend::start("a");
    // 127.0.0.1 is not trusted here.
    let (_sy, port) = start(json!({ "trusted_proxies": ["10.0.0.0/8"] }), &b, json!({}));
    let r = request(port, "GET", "/", &[("X-Forwarded-For", "203.0.113.9")], b"");
    assert_eq!(r.status, 200);
    let seen = b.last().expect("backend saw the request");
    assert_eq!(seen.header_all("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(
        seen.header_all("x-forwarded-for").join(", "),
        "203.0.113.9, 127.0.0.1"
    );
}

#[test]
fn a_sane_request_id_is_kept_and_echoed() {
    let b = Backend::start("a");
    let (_sy, port) = start(json!({}), &b, json!({}));
    let long = "a".repeat(128);
    for id in ["abc-123_X.y:Z", "7", long.as_str()] {
        let r = request(port, "GET", "/", &[("X-Request-Id", id)], b"");
        assert_eq!(r.status, 200);
        let seen = b.last().expect("backend saw the request");
        assert_eq!(
            seen.header_all("x-request-id"),
            vec![id],
            "backend gets {id}"
        );
        assert_eq!(r.header("x-request-id"), Some(id), "response echoes {id}");
    }
}

#[test]
fn an_insane_request_id_is_replaced_by_a_generated_one() {
    let b = Backend::start("a");
    let (_sy, port) = start(json!({}), &b, json!({}));
    let too_long = "a".repeat(129);
    for id in ["bad id", "bad/id", "x<script>", "a,b", too_long.as_str()] {
        let r = request(port, "GET", "/", &[("X-Request-Id", id)], b"");
        assert_eq!(r.status, 200);
        let seen = b.last().expect("backend saw the request");
        let sent = seen.header_all("x-request-id");
        assert_eq!(
            sent.len(),
            1,
            "exactly one X-Request-Id to the backend: {sent:?}"
        );
        assert_ne!(sent[0], id, "{id:?} must be replaced");
        assert!(
            is_sane_id(sent[0]),
            "generated id {:?} is not sane",
            sent[0]
        );
        assert_eq!(
            r.header("x-request-id"),
            Some(sent[0]),
            "response has the same id"
        );
    }
}

#[test]
fn a_missing_request_id_is_generated_unique_and_echoed() {
    let b = Backend::start("a");
    let (_sy, port) = start(json!({}), &b, json!({}));
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = get(port, "/");
        assert_eq!(r.status, 200);
        let seen = b.last().expect("backend saw the request");
        let id = seen
            .header("x-request-id")
            .expect("generated id")
            .to_string();
        assert!(is_sane_id(&id), "{id:?}");
        assert_eq!(r.header("x-request-id"), Some(id.as_str()));
        assert!(!ids.contains(&id), "ids must differ: {id} twice");
        ids.push(id);
    }
}

#[test]
fn request_headers_set_add_remove() {
    let b = Backend::start("a");
    let extra = json!({ "request_headers": {
        "set": { "X-Env": "prod", "X-New": "1" },
        "add": { "X-Tag": "added" },
        "remove": ["X-Secret"],
    }});
    let (_sy, port) = start(json!({}), &b, extra);
    let r = request(
        port,
        "GET",
        "/",
        &[
            ("X-Env", "dev"),
            ("X-Tag", "client"),
            ("X-Secret", "hunter2"),
            ("X-Other", "kept"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    let seen = b.last().expect("backend saw the request");
    assert_eq!(seen.header_all("x-env"), vec!["prod"], "set replaces");
    assert_eq!(
        seen.header_all("x-new"),
        vec!["1"],
        "set adds a missing header"
    );
    assert_eq!(
        seen.header_all("x-tag"),
        vec!["client", "added"],
        "add appends one more line"
    );
    assert!(seen.header("x-secret").is_none(), "remove drops");
    assert_eq!(seen.header_all("x-other"), vec!["kept"]);

    // add with no client value: exactly the one added line.
    assert_eq!(get(port, "/").status, 200);
    let seen = b.last().expect("second request");
    assert_eq!(seen.header_all("x-tag"), vec!["added"]);
    assert_eq!(seen.header_all("x-env"), vec!["prod"]);
}

#[test]
fn response_headers_set_add_remove() {
    let b = Backend::start_with(
        "a",
        Behaviour::with_headers(&[
            ("X-Powered-By", "php"),
            ("Cache-Control", "private"),
            ("X-Keep", "backend"),
            ("X-Untouched", "yes"),
        ]),
    );
    let extra = json!({ "response_headers": {
        "set": { "Cache-Control": "no-store", "X-Served-By": "switchyard" },
        "add": { "X-Keep": "proxy" },
        "remove": ["X-Powered-By"],
    }});
    let (_sy, port) = start(json!({}), &b, extra);
    let r = get(port, "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header_all("cache-control"),
        vec!["no-store"],
        "set replaces"
    );
    assert_eq!(
        r.header_all("x-served-by"),
        vec!["switchyard"],
        "set adds a missing header"
    );
    assert_eq!(
        r.header_all("x-keep"),
        vec!["backend", "proxy"],
        "add appends one more line"
    );
    assert!(r.header_all("x-powered-by").is_empty(), "remove drops");
    assert_eq!(r.header_all("x-untouched"), vec!["yes"]);
    assert_eq!(r.body, "backend a\n");
}

#[test]
fn security_headers_are_added_without_hsts_on_plaintext() {
    let b = Backend::start("a");
    let (_sy, port) = start(json!({}), &b, json!({ "security_headers": true }));
    let r = get(port, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("x-content-type-options"), vec!["nosniff"]);
    assert_eq!(r.header_all("x-frame-options"), vec!["DENY"]);
    assert_eq!(
        r.header_all("referrer-policy"),
        vec!["strict-origin-when-cross-origin"]
    );
    assert!(
        r.header_all("strict-transport-security").is_empty(),
        "no HSTS over plaintext: {r:?}"
    );
}

#[test]
fn security_headers_do_not_override_the_backend() {
    let b = Backend::start_with(
        "a",
        Behaviour::with_headers(&[
            ("X-Frame-Options", "SAMEORIGIN"),
            ("Referrer-Policy", "no-referrer"),
        ]),
    );
    let (_sy, port) = start(json!({}), &b, json!({ "security_headers": true }));
    let r = get(port, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("x-frame-options"), vec!["SAMEORIGIN"]);
    assert_eq!(r.header_all("referrer-policy"), vec!["no-referrer"]);
    assert_eq!(r.header_all("x-content-type-options"), vec!["nosniff"]);
}

#[test]
fn security_headers_are_off_by_default() {
    let b = Backend::start("a");
    let (_sy, port) = start(json!({}), &b, json!({}));
    let r = get(port, "/");
    assert_eq!(r.status, 200);
    for h in [
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "strict-transport-security",
    ] {
        assert!(r.header(h).is_none(), "{h} without security_headers: {r:?}");
    }
}

#[test]
fn over_tls_proto_is_https_and_security_headers_include_hsts() {
    let b = Backend::start("a");
    let port = listen_port();
    let (_certs, cert, key) = tls_test_cert_files();
    let mut config = test_config();
    config["listeners"] = json!([tls_listener("secure", port, &cert, &key)]);
    config["pools"] = json!([pool("p", &[b.address()])]);
    config["routes"] = json!([with(route("r", "p"), json!({ "security_headers": true }))]);
    let _sy = Switchyard::start_config(&config, &[port]);
    let r = tls_request(port, "GET", "/s", &[("Host", "example.com")]);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = b.last().expect("backend saw the request");
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["https"]);
    assert_eq!(seen.header("x-forwarded-host"), Some("example.com"));
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}
