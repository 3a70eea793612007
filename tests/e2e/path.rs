//! Path normalisation end to end (SPEC §10): a route's `deny` cannot be walked around by
//! spelling the path differently, encoded separators and NUL get 400 without reaching a
//! backend, and the backend receives the normalised path with the query as sent.
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};

/// Switchyard with `/flag` denied to 127.0.0.0/8 ahead of a catch-all route, both to the
/// one backend; `listener_keys` are added to the listener (e.g. `http2: true`).
fn start(app: &Backend, listener_keys: Value) -> (Switchyard, u16) {
    let port = listen_port();
    let config = config_of(
        json!([with(listener("web", port), listener_keys)]),
        json!([pool("app", &[app.address()])]),
        json!([
            { "name": "flag", "path_prefix": "/flag", "deny": ["127.0.0.0/8"], "pool": "app" },
            route("all", "app"),
        ]),
    );
    (Switchyard::start_config(&config, &[port]), port)
}

/// Sends `target` verbatim in a request line (no client-side normalisation).
fn raw_get(port: u16, target: &[u8]) -> Reply {
    let mut bytes = b"GET ".to_vec();
    bytes.extend_from_slice(target);
    bytes.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let text = raw_exchange(port, &bytes);
    parse_reply(&text).unwrap_or_else(|| panic!("no reply for {target:?}: {text:?}"))
}

const BYPASSES: [&str; 9] = [
    "/flag",
    "/fl%61g",
    "//flag",
    "/./flag",
    "/x/../flag",
    "/x/%2e%2e/flag",
    "/x/%2E%2E/flag",
    "/x//../flag",
    "/%66lag/",
];

#[test]
fn a_denied_route_cannot_be_reached_by_another_spelling_of_its_path() {
    let app = Backend::start("app");
    let (sy, port) = start(&app, json!({}));
    // The catch-all works, so a 403 below is the ACL, not a broken backend.
    assert_eq!(raw_get(port, b"/other").status, 200);
    for target in BYPASSES {
        let r = raw_get(port, target.as_bytes());
        assert_eq!(r.status, 403, "{target} must hit the denied route: {r:?}");
    }
    assert_eq!(app.paths(), ["/other"], "no bypass reached the backend");
    // The access log keeps the target as the client sent it.
    let entries = sy.access_entries(1 + BYPASSES.len());
    let logged: Vec<(&str, u64, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap_or(""),
                e["status"].as_u64().unwrap_or(0),
                e["route"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        logged.contains(&("/x/%2e%2e/flag", 403, "flag")),
        "the log shows the original path: {logged:?}"
    );
}

#[test]
fn encoded_slash_backslash_and_nul_get_400_and_reach_no_backend() {
    let app = Backend::start("app");
    let (sy, port) = start(&app, json!({}));
    let targets: [&[u8]; 7] = [
        b"/flag%2fx",
        b"/flag%2Fx",
        b"/x%2f..%2fflag",
        b"/flag%5cx",
        b"/flag%5C..%5Cx",
        b"/flag%00",
        b"/fl\\ag",
    ];
    for target in targets {
        // A pipelined second request: the connection closes after the 400, so it is
        // never answered (and never reaches the backend).
        let mut bytes = b"GET ".to_vec();
        bytes.extend_from_slice(target);
        bytes.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n\r\n");
        bytes.extend_from_slice(b"GET /other HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let text = raw_exchange(port, &bytes);
        let r = parse_reply(&text).unwrap_or_else(|| panic!("no reply: {text:?}"));
        assert_eq!(r.status, 400, "{target:?}: {r:?}");
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "{target:?}: the connection is closed after the 400: {text:?}"
        );
    }
    assert_eq!(app.count(), 0, "the backend saw nothing: {:?}", app.paths());
    let entries = sy.access_entries(targets.len());
    let statuses: Vec<u64> = entries
        .iter()
        .filter_map(|e| e["status"].as_u64())
        .collect();
    assert_eq!(
        statuses,
        vec![400; targets.len()],
        "each refusal is logged: {entries:?}"
    );
}

#[test]
fn the_backend_receives_the_normalised_path_with_the_query_as_sent() {
    let app = Backend::start("app");
    let (_sy, port) = start(&app, json!({}));
    let cases = [
        ("/a/./b/../c?x=/../%2e&y=1", "/a/c?x=/../%2e&y=1"),
        ("//a///b/", "/a/b/"),
        ("/%7euser/%61%62c%3f", "/~user/abc%3F"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/plain/path?q", "/plain/path?q"),
    ];
    for (sent, want) in cases {
        let r = raw_get(port, sent.as_bytes());
        assert_eq!(r.status, 200, "{sent}: {r:?}");
        let seen = app.last().expect("the backend saw the request");
        assert_eq!(seen.path, want, "{sent}");
    }
}

#[test]
fn an_absolute_form_target_is_normalised_too() {
    let app = Backend::start("app");
    let (_sy, port) = start(&app, json!({}));
    let r = raw_get(port, b"http://localhost/x/%2e%2e/flag");
    assert_eq!(r.status, 403, "{r:?}");
    let r = raw_get(port, b"http://localhost/a/../b?q=1");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = app.last().expect("the backend saw the request");
    assert!(
        seen.path.ends_with("/b?q=1") && !seen.path.contains(".."),
        "{seen:?}"
    );
    assert_eq!(app.count(), 1);
}

#[test]
fn http2_requests_are_normalised_the_same_way() {
    let app = Backend::start("app");
    let (_sy, port) = start(&app, json!({ "http2": true }));
    let fetch = |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        let (ok, out, err) = curl(&[
            "-sS",
            "--http2-prior-knowledge",
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &url,
        ]);
        assert!(ok, "curl {url}: {err}");
        out
    };
    for target in ["/x/%2e%2e/flag", "//flag", "/fl%61g"] {
        assert_eq!(fetch(target), "2 403", "{target} over HTTP/2");
    }
    assert_eq!(fetch("/flag%2fx"), "2 400");
    assert_eq!(app.count(), 0, "{:?}", app.paths());
    assert_eq!(fetch("/a/./b/../c?q=%2e"), "2 200");
    assert_eq!(app.last().expect("seen").path, "/a/c?q=%2e");
}
