//! HTTP caching end to end (SPEC §11): what is stored and for how long, `Vary`, `Age`,
//! `Authorization`, HEAD from a GET entry, revalidation, stale-while-revalidate,
//! stale-if-error, coalescing, keys, streaming and `max_object`, against an origin
//! (`origin`) whose behaviour each test sets and whose requests each test counts.
//! Purge, sync, reload, metrics and the memory bound are in `cache_ops`.
use crate::common::config::*;
use crate::common::*;

pub mod origin;

use origin::{Origin, Resource};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Switchyard in front of `origin` with `top` (extra top-level sections, laid over the
/// test configuration) and one route `static` whose `cache:` keys are `route_cache`
/// (`{}` = defaults), plus a route `plain` under `/plain` that does not cache.
pub struct Cached {
    pub sy: Switchyard,
    pub port: u16,
}

pub fn cached(origin: &Origin, top: Value, route_cache: Value) -> Cached {
    let port = listen_port();
    let routes = json!([
        { "name": "plain", "path_prefix": "/plain", "pool": "p" },
        { "name": "static", "pool": "p", "cache": route_cache },
    ]);
    let config = with(
        config_of(
            json!([listener("web", port)]),
            json!([pool("p", &[origin.address()])]),
            routes,
        ),
        top,
    );
    let sy = Switchyard::start_config(&config, &[port]);
    Cached { sy, port }
}

/// The storage section (64 MiB of memory) with objects up to `max_object`.
fn storage(max_object: &str) -> Value {
    json!({ "cache": { "memory": "64MiB", "max_object": max_object } })
}

/// The default storage section (objects up to 8 MiB).
pub fn default_storage() -> Value {
    storage("8MiB")
}

pub fn get_h(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(port, "GET", path, headers, b"")
}

pub fn x_cache(r: &Reply) -> &str {
    r.header("x-cache").unwrap_or("(none)")
}

fn pause(d: Duration) {
    std::thread::sleep(d);
}

#[test]
fn a_fresh_response_is_served_from_the_cache_with_age_until_it_expires() {
    let o = Origin::start();
    o.set(
        "/a",
        Resource::new(&[("Cache-Control", "max-age=1")], "alpha"),
    );
    let c = cached(&o, default_storage(), json!({}));
    let first = get(c.port, "/a");
    assert_eq!(
        (first.status, first.body.as_str(), x_cache(&first)),
        (200, "alpha", "MISS")
    );
    let second = get(c.port, "/a");
    assert_eq!((second.body.as_str(), x_cache(&second)), ("alpha", "HIT"));
    assert!(
        second.header("age").is_some(),
        "a hit carries Age: {second:?}"
    );
    assert_eq!(o.hits("/a"), 1, "the hit did not reach the origin");
    pause(Duration::from_millis(2100));
    let later = get(c.port, "/a");
    assert_eq!(x_cache(&later), "EXPIRED", "{later:?}");
    assert_eq!(o.hits("/a"), 2);
    // The route without cache settings carries no X-Cache.
    o.set(
        "/plain/x",
        Resource::new(&[("Cache-Control", "max-age=60")], "p"),
    );
    assert_eq!(get(c.port, "/plain/x").header("x-cache"), None);
}

#[test]
fn no_store_private_set_cookie_vary_star_and_no_freshness_are_never_stored() {
    let o = Origin::start();
    let cases = [
        ("/no-store", vec![("Cache-Control", "no-store, max-age=60")]),
        ("/private", vec![("Cache-Control", "private, max-age=60")]),
        (
            "/cookie",
            vec![("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")],
        ),
        (
            "/vary-star",
            vec![("Cache-Control", "max-age=60"), ("Vary", "*")],
        ),
        ("/no-freshness", vec![]),
        ("/error", vec![("Cache-Control", "max-age=60")]),
    ];
    for (path, headers) in &cases {
        let r = Resource::new(headers, "x");
        o.set(path, if *path == "/error" { r.status(500) } else { r });
    }
    let c = cached(&o, default_storage(), json!({}));
    for (path, _) in &cases {
        let a = get(c.port, path);
        let b = get(c.port, path);
        assert_eq!(x_cache(&a), "MISS", "{path}: {a:?}");
        assert_eq!(x_cache(&b), "MISS", "{path} is not stored: {b:?}");
        assert_eq!(o.hits(path), 2, "{path} reached the origin both times");
    }
}

#[test]
fn expires_and_s_maxage_give_freshness_and_default_and_max_ttl_apply() {
    let o = Origin::start();
    let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(600));
    o.set(
        "/expires",
        Resource::new(&[("Expires", soon.as_str())], "e"),
    );
    o.set(
        "/shared",
        Resource::new(&[("Cache-Control", "max-age=0, s-maxage=600")], "s"),
    );
    o.set("/bare", Resource::new(&[], "b"));
    o.set(
        "/long",
        Resource::new(&[("Cache-Control", "max-age=86400")], "l"),
    );
    let c = cached(
        &o,
        default_storage(),
        json!({ "default_ttl": "60s", "max_ttl": "1s" }),
    );
    for path in ["/expires", "/shared", "/bare", "/long"] {
        assert_eq!(x_cache(&get(c.port, path)), "MISS", "{path}");
        assert_eq!(x_cache(&get(c.port, path)), "HIT", "{path} stored");
    }
    pause(Duration::from_millis(2100));
    // max_ttl (1s) caps every freshness, the response's and default_ttl's alike.
    for path in ["/expires", "/shared", "/bare", "/long"] {
        assert_eq!(
            x_cache(&get(c.port, path)),
            "EXPIRED",
            "{path} capped by max_ttl"
        );
    }
}

#[test]
fn vary_keeps_one_entry_per_value_of_the_named_headers() {
    let o = Origin::start();
    o.set(
        "/v",
        Resource::new(
            &[("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")],
            "v",
        ),
    );
    let c = cached(&o, default_storage(), json!({}));
    let de = [("Accept-Language", "de")];
    let en = [("Accept-Language", "en")];
    assert_eq!(x_cache(&get_h(c.port, "/v", &de)), "MISS");
    assert_eq!(x_cache(&get_h(c.port, "/v", &en)), "MISS");
    assert_eq!(x_cache(&get_h(c.port, "/v", &de)), "HIT");
    assert_eq!(x_cache(&get_h(c.port, "/v", &en)), "HIT");
    assert_eq!(o.hits("/v"), 2, "one origin request per language");
    let langs: Vec<_> = o
        .seen("/v")
        .iter()
        .map(|s| s.header("accept-language").unwrap_or("").to_string())
        .collect();
    assert_eq!(langs, vec!["de", "en"]);
}

#[test]
fn authorization_is_answered_from_the_cache_only_by_public_or_s_maxage_responses() {
    let o = Origin::start();
    o.set(
        "/mine",
        Resource::new(&[("Cache-Control", "max-age=60")], "mine"),
    );
    o.set(
        "/pub",
        Resource::new(&[("Cache-Control", "public, max-age=60")], "pub"),
    );
    let c = cached(&o, default_storage(), json!({}));
    let auth = [("Authorization", "Bearer t")];
    // Not stored for an authorized request...
    get_h(c.port, "/mine", &auth);
    get_h(c.port, "/mine", &auth);
    assert_eq!(o.hits("/mine"), 2);
    // ...and a copy stored for anonymous requests is not given to one either.
    assert_eq!(x_cache(&get(c.port, "/mine")), "MISS");
    assert_eq!(x_cache(&get(c.port, "/mine")), "HIT");
    let r = get_h(c.port, "/mine", &auth);
    assert_eq!(r.body, "mine");
    assert_eq!(
        o.hits("/mine"),
        4,
        "the authorized request went to the origin"
    );
    // A public response is shared.
    get_h(c.port, "/pub", &auth);
    assert_eq!(x_cache(&get_h(c.port, "/pub", &auth)), "HIT");
    assert_eq!(o.hits("/pub"), 1);
}

#[test]
fn head_is_answered_from_a_get_entry_and_a_head_miss_fills_it() {
    let o = Origin::start();
    o.set(
        "/g",
        Resource::new(&[("Cache-Control", "max-age=60")], "get body"),
    );
    o.set(
        "/h",
        Resource::new(&[("Cache-Control", "max-age=60")], "head first"),
    );
    let c = cached(&o, default_storage(), json!({}));
    assert_eq!(get(c.port, "/g").body, "get body");
    let head = request(c.port, "HEAD", "/g", &[], b"");
    assert_eq!(
        (head.status, x_cache(&head), head.body.as_str()),
        (200, "HIT", "")
    );
    assert_eq!(head.header("content-length"), Some("8"));
    assert_eq!(o.hits("/g"), 1);

    let head = request(c.port, "HEAD", "/h", &[], b"");
    assert_eq!(
        (head.status, x_cache(&head), head.body.as_str()),
        (200, "MISS", "")
    );
    let r = get(c.port, "/h");
    assert_eq!((x_cache(&r), r.body.as_str()), ("HIT", "head first"));
    let seen = o.seen("/h");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].method, "GET",
        "the HEAD miss fetched the whole response"
    );
}

#[test]
fn an_expired_entry_with_an_etag_is_revalidated_and_a_304_refreshes_it() {
    let o = Origin::start();
    o.set(
        "/e",
        Resource::new(
            &[("Cache-Control", "max-age=1"), ("ETag", "\"v1\"")],
            "stored body",
        ),
    );
    let c = cached(&o, default_storage(), json!({}));
    assert_eq!(x_cache(&get(c.port, "/e")), "MISS");
    pause(Duration::from_millis(2100));
    let r = get(c.port, "/e");
    assert_eq!(
        (x_cache(&r), r.body.as_str()),
        ("REVALIDATED", "stored body")
    );
    let seen = o.seen("/e");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("if-none-match"), Some("\"v1\""));
    assert!(seen[1].not_modified, "the origin answered 304");
    assert_eq!(
        x_cache(&get(c.port, "/e")),
        "HIT",
        "the 304 made it fresh again"
    );
    assert_eq!(o.hits("/e"), 2);
    // A client's own conditional request is answered 304 from the entry.
    let r = get_h(c.port, "/e", &[("If-None-Match", "\"v1\"")]);
    assert_eq!((r.status, x_cache(&r)), (304, "HIT"));
}

#[test]
fn stale_while_revalidate_serves_the_old_body_while_one_background_refresh_runs() {
    let o = Origin::start();
    o.set(
        "/s",
        Resource::new(&[("Cache-Control", "max-age=1")], "old"),
    );
    let c = cached(
        &o,
        default_storage(),
        json!({ "stale_while_revalidate": "30s" }),
    );
    assert_eq!(get(c.port, "/s").body, "old");
    pause(Duration::from_millis(2100));
    o.set(
        "/s",
        Resource::new(&[("Cache-Control", "max-age=60")], "new").delay(Duration::from_millis(300)),
    );
    let mut stale = Vec::new();
    for _ in 0..3 {
        let r = get(c.port, "/s");
        stale.push((x_cache(&r).to_string(), r.body.clone()));
    }
    assert_eq!(stale[0], ("STALE".to_string(), "old".to_string()));
    assert!(
        o.wait_hits("/s", 2, Duration::from_secs(5)),
        "a background refresh ran"
    );
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || { get(c.port, "/s").body == "new" }
    ));
    assert_eq!(o.hits("/s"), 2, "one refresh for all the stale answers");
    assert_eq!(x_cache(&get(c.port, "/s")), "HIT");
}

#[test]
fn stale_if_error_serves_the_old_body_on_a_5xx_and_with_the_origin_stopped() {
    let mut o = Origin::start();
    o.set(
        "/f",
        Resource::new(&[("Cache-Control", "max-age=1")], "kept"),
    );
    let c = cached(&o, default_storage(), json!({ "stale_if_error": "60s" }));
    assert_eq!(get(c.port, "/f").body, "kept");
    pause(Duration::from_millis(2100));
    o.set("/f", Resource::new(&[], "broken").status(503));
    let r = get(c.port, "/f");
    assert_eq!(
        (r.status, x_cache(&r), r.body.as_str()),
        (200, "STALE", "kept")
    );
    o.stop();
    let r = get(c.port, "/f");
    assert_eq!(
        (r.status, x_cache(&r), r.body.as_str()),
        (200, "STALE", "kept")
    );
    // Without a stale window a stopped origin is an error.
    let e = get(c.port, "/never-stored");
    assert!(e.status >= 500, "{e:?}");
    assert_eq!(x_cache(&e), "MISS", "error answers carry X-Cache too");
}

fn concurrent_gets(port: u16, path: &str, n: usize) -> Vec<Reply> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || get(port, &path))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn fifty_concurrent_misses_make_one_origin_request_and_the_wait_is_logged() {
    let o = Origin::start();
    o.set(
        "/slow",
        Resource::new(&[("Cache-Control", "max-age=60")], "slow body")
            .delay(Duration::from_millis(500)),
    );
    let c = cached(&o, default_storage(), json!({}));
    let replies = concurrent_gets(c.port, "/slow", 50);
    for r in &replies {
        assert_eq!((r.status, r.body.as_str()), (200, "slow body"), "{r:?}");
    }
    assert_eq!(o.hits("/slow"), 1, "one backend request in all");
    let entries = c.sy.access_entries(50);
    let slow: Vec<_> = entries.iter().filter(|e| e["path"] == "/slow").collect();
    assert_eq!(slow.len(), 50);
    let misses = slow.iter().filter(|e| e["cache"] == "MISS").count();
    assert_eq!(misses, 1, "{slow:?}");
    let waited = slow
        .iter()
        .filter(|e| e["cache_wait_ms"].as_f64().is_some_and(|w| w > 0.0))
        .count();
    assert!(
        waited >= 1,
        "the coalescing wait shows in the log: {slow:?}"
    );
}

#[test]
fn a_failed_fetch_releases_the_waiters_to_fetch_themselves() {
    let o = Origin::start();
    o.set(
        "/fails",
        Resource::new(&[], "down")
            .status(500)
            .delay(Duration::from_millis(300)),
    );
    let c = cached(&o, default_storage(), json!({}));
    let replies = concurrent_gets(c.port, "/fails", 8);
    assert!(replies.iter().all(|r| r.status == 500), "{replies:?}");
    assert_eq!(o.hits("/fails"), 8, "every waiter fetched for itself");
}

#[test]
fn other_methods_bypass_the_cache() {
    let o = Origin::start();
    o.set(
        "/form",
        Resource::new(&[("Cache-Control", "max-age=60")], "posted"),
    );
    let c = cached(&o, default_storage(), json!({}));
    let r = request(c.port, "POST", "/form", &[], b"a=1");
    assert_eq!((r.status, x_cache(&r)), (200, "BYPASS"));
    let r = request(c.port, "POST", "/form", &[], b"a=1");
    assert_eq!(x_cache(&r), "BYPASS");
    assert_eq!(o.hits("/form"), 2);
    let entries = c.sy.access_entries(2);
    assert!(
        entries.iter().all(|e| e["cache"] == "BYPASS"),
        "{entries:?}"
    );
}

#[test]
fn the_key_holds_the_configured_parts_only() {
    let o = Origin::start();
    o.set("/k", Resource::new(&[("Cache-Control", "max-age=60")], "k"));
    let c = cached(
        &o,
        default_storage(),
        json!({ "key": ["path", "header:X-Tenant", "cookie:tier"] }),
    );
    let a = [("X-Tenant", "a"), ("Cookie", "x=1; tier=gold")];
    assert_eq!(x_cache(&get_h(c.port, "/k?v=1", &a)), "MISS");
    // Query and host are not in this key.
    let a_other = [
        ("X-Tenant", "a"),
        ("Cookie", "tier=gold"),
        ("Host", "other.test"),
    ];
    assert_eq!(x_cache(&get_h(c.port, "/k?v=2", &a_other)), "HIT");
    assert_eq!(
        x_cache(&get_h(
            c.port,
            "/k",
            &[("X-Tenant", "b"), ("Cookie", "tier=gold")]
        )),
        "MISS"
    );
    assert_eq!(
        x_cache(&get_h(
            c.port,
            "/k",
            &[("X-Tenant", "a"), ("Cookie", "tier=free")]
        )),
        "MISS"
    );
    assert_eq!(o.hits("/k"), 3);
}

/// Sends a GET and returns the stream after the response header and `n` body bytes.
fn read_some(port: u16, path: &str, n: usize) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    while got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .is_none_or(|i| got.len() < i + 4 + n)
    {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    (s, got)
}

/// The body of `r`, with chunked framing removed when the response used it.
fn body_of(r: &Reply) -> Vec<u8> {
    let raw = r.body.as_bytes();
    if r.header("transfer-encoding") != Some("chunked") {
        return raw.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = raw;
    for _ in 0..1_000_000 {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
    out
}

fn big_body(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

#[test]
fn a_large_miss_streams_to_the_client_before_the_origin_finished_and_is_then_stored() {
    let o = Origin::start();
    let body = big_body(4 << 20);
    o.set(
        "/big",
        Resource::new(&[("Cache-Control", "max-age=60")], "")
            .bytes(body.clone())
            .gated(256 * 1024),
    );
    let c = cached(&o, default_storage(), json!({}));
    let (mut s, got) = read_some(c.port, "/big", 1000);
    assert!(got.len() > 1000, "the first bytes arrived");
    assert_eq!(
        o.finished("/big"),
        0,
        "...while the origin still held the rest"
    );
    o.open_gate();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let r = request(c.port, "GET", "/big", &[], b"");
    assert_eq!(x_cache(&r), "HIT");
    let got = body_of(&r);
    assert_eq!(got.len(), body.len());
    assert!(got == body, "the stored body is whole");
    assert_eq!(o.hits("/big"), 1);
}

#[test]
fn an_object_over_max_object_passes_through_uncached() {
    let o = Origin::start();
    let body = big_body(2 << 20);
    o.set(
        "/huge",
        Resource::new(&[("Cache-Control", "max-age=60")], "").bytes(body.clone()),
    );
    o.set(
        "/huge-chunked",
        Resource::new(&[("Cache-Control", "max-age=60")], "")
            .bytes(body.clone())
            .gated(1024),
    );
    o.open_gate();
    let c = cached(&o, storage("1MiB"), json!({}));
    for path in ["/huge", "/huge-chunked"] {
        for _ in 0..2 {
            let r = get(c.port, path);
            let got = body_of(&r);
            assert_eq!(
                (r.status, got.len(), x_cache(&r)),
                (200, body.len(), "MISS"),
                "{path}"
            );
        }
        assert_eq!(o.hits(path), 2, "{path} was not stored");
    }
}

#[test]
fn a_client_that_goes_away_mid_miss_does_not_poison_the_entry() {
    let o = Origin::start();
    let body = big_body(1 << 20);
    o.set(
        "/gone",
        Resource::new(&[("Cache-Control", "max-age=60")], "")
            .bytes(body.clone())
            .gated(100 * 1024),
    );
    let c = cached(&o, default_storage(), json!({}));
    let (s, got) = read_some(c.port, "/gone", 1000);
    assert!(got.len() > 1000);
    drop(s);
    o.open_gate();
    // Whatever happened to the fill, every later answer is the whole body.
    for _ in 0..3 {
        let r = get(c.port, "/gone");
        let got = body_of(&r);
        assert_eq!((r.status, got.len()), (200, body.len()), "{}", x_cache(&r));
        assert!(got == body);
    }
}

/// A configuration on port 18080 with one route `r` to pool `p` carrying `route_cache`
/// as its `cache:` keys, and `top` laid over it.
fn checked(top: Value, route_cache: Value) -> Value {
    let r = with(route("r", "p"), json!({ "cache": route_cache }));
    with(
        config_of(
            json!([listener("web", 18080)]),
            json!([pool("p", &["127.0.0.1:1".to_string()])]),
            json!([r]),
        ),
        top,
    )
}

#[test]
fn cache_settings_are_checked_before_start() {
    let config = checked(json!({}), json!({ "default_ttl": "10s" }));
    let (out, _, _dir) = check_config(&config_text(&config));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("routes[0].cache") && err.contains("top-level cache"),
        "{err}"
    );
    let config = checked(
        json!({ "cache": { "memory": "lots", "max_object": "2GiB" } }),
        json!({ "key": ["path", "scheme"], "lock_timeout": "forever" }),
    );
    let (out, _, _dir) = check_config(&config_text(&config));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for needle in [
        "cache.memory",
        "cache.max_object",
        "cache.key[1]",
        "lock_timeout",
    ] {
        assert!(err.contains(needle), "{needle} reported: {err}");
    }
}
