//! Local rate limits end to end (SPEC §3 `routes[].rate_limit`, §6
//! `switchyard_rate_limited_total`, §9 "Rate limits"): token-bucket and sliding-window
//! counts, the 429 answer, each key kind, the ACL running first, the metric, state kept
//! across an unrelated reload, and memory under a flood of distinct keys.
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Server keys trusting 127.0.0.1 as a proxy, so X-Forwarded-For names the client.
fn trusting_localhost() -> Value {
    json!({ "trusted_proxies": ["127.0.0.1/32"] })
}

/// One plaintext listener `web` on `port`, an optional metrics listener, one pool `p`
/// with backend `b`, and `routes` (every route on pool `p`); `server_keys` are added to
/// the test `server:` section.
fn config(
    server_keys: Value,
    port: u16,
    metrics: Option<u16>,
    b: &Backend,
    routes: Value,
) -> Value {
    let mut c = with(
        config_of(
            json!([listener("web", port)]),
            json!([pool("p", &[b.address()])]),
            routes,
        ),
        json!({ "server": server_keys }),
    );
    if let Some(m) = metrics {
        c["metrics"] = json!({ "listen": format!("127.0.0.1:{m}") });
    }
    c
}

/// Backend `a` behind switchyard on a new port with one catch-all route `lim`:
/// `rate_limit: limit` and `extra` route keys.
fn start_limited(server_keys: Value, limit: Value, extra: Value) -> (Backend, Switchyard, u16) {
    let b = Backend::start("a");
    let port = listen_port();
    let routes = json!([with(limited("lim", None, limit), extra)]);
    let sy = Switchyard::start_config(&config(server_keys, port, None, &b, routes), &[port]);
    (b, sy, port)
}

/// One route `name` on pool `p` (catch-all unless `prefix` is given) with `rate_limit:
/// limit`.
fn limited(name: &str, prefix: Option<&str>, limit: Value) -> Value {
    let mut r = with(route(name, "p"), json!({ "rate_limit": limit }));
    if let Some(p) = prefix {
        r["path_prefix"] = json!(p);
    }
    r
}

/// Sends `n` GETs of `path` back to back on one keep-alive connection; the statuses.
fn burst(port: u16, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut c = HttpConn::new(port);
    (0..n)
        .map(|i| {
            c.get(path, headers)
                .unwrap_or_else(|e| panic!("request {i} of {path} {headers:?}: {e}"))
                .status
        })
        .collect()
}

fn count(statuses: &[u16], code: u16) -> usize {
    statuses.iter().filter(|s| **s == code).count()
}

/// `n` × 200 followed by only 429s.
fn assert_admits_then_refuses(statuses: &[u16], n: usize, what: &str) {
    let want: Vec<u16> = (0..statuses.len())
        .map(|i| if i < n { 200 } else { 429 })
        .collect();
    assert_eq!(statuses, want.as_slice(), "{what}");
}

/// Sleeps until `at` (no-op if it has passed).
fn sleep_until(at: Instant) {
    if let Some(d) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

// ---------------------------------------------------------------------------------------
// Algorithms

#[test]
fn token_bucket_admits_the_burst_then_answers_429_with_retry_after() {
    let (b, _sy, port) = start_limited(json!({}), json!({ "rate": 1, "burst": 5 }), json!({}));

    // Ten requests in well under a second: the bucket of 5, nothing refilled yet.
    let mut c = HttpConn::new(port);
    let replies: Vec<Reply> = (0..10)
        .map(|i| {
            c.get("/x", &[])
                .unwrap_or_else(|e| panic!("request {i}: {e}"))
        })
        .collect();
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_admits_then_refuses(&statuses, 5, "rate 1, burst 5: exactly 5 admitted");
    assert_eq!(b.count(), 5, "a refused request never reaches the backend");
    let last_refused = Instant::now();

    for r in &replies[5..] {
        let ct = r.header("content-type").unwrap_or("");
        assert!(ct.starts_with("text/plain"), "429 Content-Type: {r:?}");
        assert!(r.body.len() < 1024, "429 body under 1 KiB: {r:?}");
        let id = r.header("x-request-id").unwrap_or("");
        assert!(!id.is_empty(), "429 carries X-Request-Id: {r:?}");
        let retry = r
            .header("retry-after")
            .unwrap_or_else(|| panic!("429 without Retry-After: {r:?}"));
        let secs: u64 = retry
            .parse()
            .unwrap_or_else(|_| panic!("Retry-After {retry:?} is not whole seconds"));
        // The next token is at most 1 s away at 1 request/s.
        assert_eq!(secs, 1, "Retry-After at rate 1/s: {r:?}");
    }
    // A client-sent request id is kept on a 429 too.
    let r = c
        .get("/x", &[("X-Request-Id", "limit-check-1")])
        .expect("request with an id");
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.header("x-request-id"), Some("limit-check-1"), "{r:?}");

    // ~1.1 s later one token has come back: exactly one more request is admitted.
    sleep_until(last_refused + Duration::from_millis(1100));
    let statuses = burst(port, "/x", &[], 4);
    assert_admits_then_refuses(&statuses, 1, "one token refilled after ~1.1 s");
    assert_eq!(b.count(), 6);
}

#[test]
fn burst_defaults_to_rate() {
    let (_b, _sy, port) = start_limited(json!({}), json!({ "rate": 3 }), json!({}));
    let statuses = burst(port, "/", &[], 8);
    assert_admits_then_refuses(&statuses, 3, "rate 3 without burst: a bucket of 3");
}

#[test]
fn sliding_window_admits_at_most_rate_in_any_rolling_second() {
    let (b, _sy, port) = start_limited(
        json!({}),
        json!({ "rate": 3, "algorithm": "sliding_window" }),
        json!({}),
    );
    let mut c = HttpConn::new(port);
    let mut get = |what: &str| {
        let r = c
            .get("/", &[])
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
        if r.status == 429 {
            assert_eq!(r.header("retry-after"), Some("1"), "{what}: {r:?}");
        }
        r.status
    };

    // t=0: one admission; t=0.5: two more (the window is full); any further one is 429.
    let t0 = Instant::now();
    assert_eq!(get("t=0"), 200);
    sleep_until(t0 + Duration::from_millis(500));
    let t1 = Instant::now();
    let s: Vec<u16> = (0..4).map(|_| get("t=0.5")).collect();
    assert_eq!(s, [200, 200, 429, 429], "3 in the first rolling second");

    // t≈1.2: only the t=0 admission has left the window → exactly one more.
    // (A fixed window would admit 3 here, a token bucket of 3 at 3/s about 2.)
    sleep_until(t0 + Duration::from_millis(1200));
    assert!(
        Instant::now() < t1 + Duration::from_millis(950),
        "the test itself ran too slowly to judge the window"
    );
    let s: Vec<u16> = (0..3).map(|_| get("t=1.2")).collect();
    assert_eq!(
        s,
        [200, 429, 429],
        "the window rolls: one slot freed at t≈1.2"
    );

    // t≈1.8: the two t=0.5 admissions have left too; the t=1.2 one has not → two more.
    sleep_until(t1 + Duration::from_millis(1300));
    let s: Vec<u16> = (0..4).map(|_| get("t=1.8")).collect();
    assert_eq!(s, [200, 200, 429, 429], "two slots freed at t≈1.8");
    assert_eq!(b.count(), 6);
}

// ---------------------------------------------------------------------------------------
// Keys

#[test]
fn client_ip_key_gives_each_client_behind_a_trusted_proxy_its_own_bucket() {
    let (b, _sy, port) = start_limited(
        trusting_localhost(),
        json!({ "rate": 1, "burst": 2, "key": "client_ip" }),
        json!({}),
    );

    let one = [("X-Forwarded-For", "203.0.113.1")];
    let two = [("X-Forwarded-For", "203.0.113.2")];
    assert_admits_then_refuses(&burst(port, "/", &one, 4), 2, "client 203.0.113.1");
    assert_admits_then_refuses(&burst(port, "/", &two, 4), 2, "client 203.0.113.2");
    // The proxy itself (no X-Forwarded-For) is a third client.
    assert_admits_then_refuses(&burst(port, "/", &[], 4), 2, "client 127.0.0.1");
    // An untrusted hop in front of a client decides nothing: the right-most
    // untrusted entry is the client, so this is 203.0.113.1 again.
    let via = [("X-Forwarded-For", "198.51.100.9, 203.0.113.1")];
    assert_eq!(
        burst(port, "/", &via, 1),
        [429],
        "still 203.0.113.1's bucket"
    );
    assert_eq!(b.count(), 6);
}

#[test]
fn client_ip_key_without_trusted_proxies_ignores_x_forwarded_for() {
    let (_b, _sy, port) = start_limited(json!({}), json!({ "rate": 1, "burst": 2 }), json!({}));
    // Forged X-Forwarded-For values from an untrusted peer are one client: 127.0.0.1.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let xff = format!("192.0.2.{i}");
        statuses.extend(burst(port, "/", &[("X-Forwarded-For", &xff)], 1));
    }
    assert_admits_then_refuses(&statuses, 2, "X-Forwarded-For of an untrusted peer");
}

#[test]
fn header_key_gives_each_value_its_own_bucket_and_falls_back_to_the_client_ip() {
    let (_b, _sy, port) = start_limited(
        trusting_localhost(),
        json!({ "rate": 1, "burst": 2, "key": "header:X-Api-Key" }),
        json!({}),
    );

    let a = [("X-Api-Key", "key-a")];
    let b_key = [("X-Api-Key", "key-b")];
    assert_admits_then_refuses(&burst(port, "/", &a, 4), 2, "X-Api-Key key-a");
    assert_admits_then_refuses(&burst(port, "/", &b_key, 4), 2, "X-Api-Key key-b");
    // The key follows the header, not the connection or the client IP.
    let a_elsewhere = [("X-Api-Key", "key-a"), ("X-Forwarded-For", "203.0.113.50")];
    assert_eq!(
        burst(port, "/", &a_elsewhere, 1),
        [429],
        "key-a from another IP"
    );
    // The header name is case-insensitive.
    assert_eq!(burst(port, "/", &[("x-api-key", "key-b")], 1), [429]);

    // Absent header: each client IP has its own bucket.
    let ip1 = [("X-Forwarded-For", "203.0.113.1")];
    let ip2 = [("X-Forwarded-For", "203.0.113.2")];
    assert_admits_then_refuses(&burst(port, "/", &ip1, 4), 2, "no key, client .1");
    assert_admits_then_refuses(&burst(port, "/", &ip2, 4), 2, "no key, client .2");
    // ...and a client whose IP bucket is empty can still use its key's bucket...
    let ip1_keyed = [("X-Forwarded-For", "203.0.113.1"), ("X-Api-Key", "key-c")];
    assert_eq!(
        burst(port, "/", &ip1_keyed, 1),
        [200],
        "key-c from client .1"
    );
    // ...while a key that looks like an IP is not that IP's bucket.
    let ip_like = [("X-Api-Key", "203.0.113.2")];
    assert_admits_then_refuses(&burst(port, "/", &ip_like, 3), 2, "key \"203.0.113.2\"");
}

#[test]
fn route_key_shares_one_bucket_between_all_clients_and_routes_are_separate() {
    let b = Backend::start("a");
    let port = listen_port();
    let routes = json!([
        limited(
            "one",
            Some("/one"),
            json!({ "rate": 1, "burst": 3, "key": "route" })
        ),
        limited(
            "two",
            Some("/two"),
            json!({ "rate": 1, "burst": 2, "key": "route" })
        ),
    ]);
    let _sy = Switchyard::start_config(
        &config(trusting_localhost(), port, None, &b, routes),
        &[port],
    );

    let clients: [&[(&str, &str)]; 4] = [
        &[("X-Forwarded-For", "203.0.113.1")],
        &[("X-Forwarded-For", "203.0.113.2")],
        &[("X-Api-Key", "k")],
        &[],
    ];
    let mut statuses = Vec::new();
    for _ in 0..2 {
        for h in clients {
            statuses.extend(burst(port, "/one", h, 1));
        }
    }
    assert_admits_then_refuses(&statuses, 3, "route key: 3 in all, whoever asks");
    // Another route's bucket is untouched.
    assert_admits_then_refuses(&burst(port, "/two", clients[0], 3), 2, "route two");
}

// ---------------------------------------------------------------------------------------
// ACL before the limit

#[test]
fn requests_denied_by_the_acl_are_403_and_take_no_token() {
    let (b, _sy, port) = start_limited(
        trusting_localhost(),
        json!({ "rate": 1, "burst": 3, "key": "route" }),
        json!({ "deny": ["198.51.100.0/24"] }),
    );

    let denied = [("X-Forwarded-For", "198.51.100.7")];
    let ok = [("X-Forwarded-For", "203.0.113.1")];
    // Denied clients first: 403 every time, however many.
    let mut c = HttpConn::new(port);
    for i in 0..6 {
        let r = c.get("/", &denied).expect("denied request");
        assert_eq!(r.status, 403, "denied request {i}: {r:?}");
        assert!(r.header("retry-after").is_none(), "{r:?}");
        assert!(r.header("x-request-id").is_some(), "{r:?}");
    }
    // The shared bucket is still full.
    assert_admits_then_refuses(&burst(port, "/", &ok, 5), 3, "after 6 denied requests");
    // With the bucket empty a denied client still gets 403, not 429: the ACL runs first.
    assert_eq!(burst(port, "/", &denied, 2), [403, 403]);
    assert_eq!(b.count(), 3);
}

// ---------------------------------------------------------------------------------------
// Metrics

#[test]
fn rate_limited_total_counts_the_429s_per_route() {
    let b = Backend::start("a");
    let port = listen_port();
    let mport = listen_port();
    let routes = json!([
        limited("lim_a", Some("/a"), json!({ "rate": 1, "burst": 2 })),
        limited(
            "lim_b",
            Some("/b"),
            json!({ "rate": 1, "burst": 1, "algorithm": "sliding_window" }),
        ),
        route("free", "p"),
    ]);
    let config = config(json!({}), port, Some(mport), &b, routes);
    let _sy = Switchyard::start_config(&config, &[port, mport]);

    assert_admits_then_refuses(&burst(port, "/a", &[], 7), 2, "/a");
    assert_admits_then_refuses(&burst(port, "/b", &[], 3), 1, "/b");
    assert_eq!(count(&burst(port, "/free", &[], 5), 200), 5);

    let name = "switchyard_rate_limited_total";
    assert_eq!(wait_metric(mport, name, &[("route", "lim_a")], 5.0), 5.0);
    assert_eq!(wait_metric(mport, name, &[("route", "lim_b")], 2.0), 2.0);
    assert_eq!(
        metric(mport, name, &[("route", "free")]).unwrap_or(0.0),
        0.0,
        "no 429 on an unlimited route"
    );
    // The 429s are requests like any other in switchyard_http_requests_total.
    let req = "switchyard_http_requests_total";
    assert_eq!(
        wait_metric(mport, req, &[("route", "lim_a"), ("code", "429")], 5.0),
        5.0
    );
    assert_eq!(
        wait_metric(mport, req, &[("route", "lim_a"), ("code", "200")], 2.0),
        2.0
    );
}

// ---------------------------------------------------------------------------------------
// Reload

#[test]
fn a_limit_keeps_its_state_across_an_unrelated_reload() {
    let b = Backend::start("a");
    let port = listen_port();
    let mport = listen_port();
    // rate 1, burst 10: a fresh bucket would admit 10 at once, the kept one ~1 per
    // second since it was emptied.
    let lim = limited("lim", None, json!({ "rate": 1, "burst": 10 }));
    let first = config(json!({}), port, Some(mport), &b, json!([lim.clone()]));
    let sy = Switchyard::start_config(&first, &[port, mport]);

    assert_admits_then_refuses(&burst(port, "/", &[], 12), 10, "before the reload");
    let emptied = Instant::now();

    // Reload with a new route in front of `lim` (its index changes, its name does not).
    let other = json!({ "name": "other", "pool": "p", "path_prefix": "/other" });
    let second = config(json!({}), port, Some(mport), &b, json!([other, lim]));
    sy.rewrite_config(&config_text(&second));
    sy.reload_counted(mport);
    // Until the new route answers, `/other/x` is `lim`'s (and refused).
    let mut refused_while_waiting = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(port, "/other/x").status == 429 {
        refused_while_waiting += 1;
        assert!(Instant::now() < deadline, "the new route never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(port, "/other/x").status, 200, "new route serves");

    let statuses = burst(port, "/", &[], 12);
    let elapsed = emptied.elapsed();
    let admitted = count(&statuses, 200);
    assert!(
        admitted <= elapsed.as_secs_f64().ceil() as usize && admitted < 10,
        "bucket state lost on reload: {admitted} admitted {elapsed:?} after it was emptied \
         ({statuses:?})"
    );
    if elapsed < Duration::from_millis(900) {
        assert_eq!(statuses[0], 429, "still limited right after the reload");
    }
    // The counter carries on under the same label.
    let limited = metric(mport, "switchyard_rate_limited_total", &[("route", "lim")]);
    assert_eq!(
        limited,
        Some((2 + refused_while_waiting + 12 - admitted) as f64)
    );
}

// ---------------------------------------------------------------------------------------
// Key flood

/// Floods a `header:X-Api-Key` route (rate 100, burst 100, `algorithm`) with 20,000
/// requests carrying distinct keys from several keep-alive connections while a regular
/// client with its own key sends 20 requests a second; every request must be answered,
/// the regular client always served, and RSS must grow by less than 100 MiB.
fn key_flood(algorithm: &str) {
    const FLOOD: usize = 20_000;
    const THREADS: usize = 4;
    let limit =
        json!({ "rate": 100, "burst": 100, "key": "header:X-Api-Key", "algorithm": algorithm });
    let (_b, sy, port) = start_limited(json!({}), limit, json!({}));
    let pid = sy.pid();

    // Warm up (connections, buffers, the backend pool) before the baseline.
    assert_eq!(
        count(&burst(port, "/", &[("X-Api-Key", "warm")], 50), 200),
        50
    );
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid).expect("VmRSS of switchyard");

    let deadline = Instant::now() + Duration::from_secs(180);
    let done = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(before as usize));

    // The regular client: 20 requests a second with its own key, well under its limit.
    let regular = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut c = HttpConn::new(port);
            let mut statuses = Vec::new();
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let s = c
                    .get("/", &[("X-Api-Key", "regular-client")])
                    .map(|r| r.status)
                    .unwrap_or(0);
                statuses.push(s);
                std::thread::sleep(Duration::from_millis(50));
            }
            statuses
        })
    };
    // RSS sampler.
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib as usize, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let flooders: Vec<_> = (0..THREADS)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                let mut c = HttpConn::new(port);
                let mut bad: Vec<String> = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= FLOOD || Instant::now() > deadline {
                        break;
                    }
                    let key = format!("flood-{i:06}");
                    match c.get("/", &[("X-Api-Key", &key)]) {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => bad.push(format!("{key}: {}", r.status)),
                        Err(e) => bad.push(format!("{key}: {e}")),
                    }
                }
                bad
            })
        })
        .collect();
    let bad: Vec<String> = flooders
        .into_iter()
        .flat_map(|t| t.join().expect("flood thread"))
        .collect();
    let flood_time = started.elapsed();
    let sent = next.load(Ordering::Relaxed).min(FLOOD);
    // Keep the regular client going a little after the flood too.
    std::thread::sleep(Duration::from_millis(1500));
    done.store(true, Ordering::Relaxed);
    let regular = regular.join().expect("regular client");
    sampler.join().expect("sampler");
    let after = rss_kib(pid).expect("VmRSS after the flood");
    let peak = (peak.load(Ordering::Relaxed) as u64).max(after);

    let growth_mib = |kib: u64| kib.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "key flood ({algorithm}): {sent} requests with distinct keys in {flood_time:.2?}; \
         RSS before {before} KiB, peak {peak} KiB (+{:.1} MiB), after {after} KiB (+{:.1} MiB)",
        growth_mib(peak),
        growth_mib(after)
    );
    assert_eq!(
        sent, FLOOD,
        "the flood did not finish within the time limit"
    );
    assert!(
        bad.is_empty(),
        "{} flood requests not answered 200, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert!(regular.len() >= 10, "regular client sent {}", regular.len());
    assert!(
        regular.iter().all(|s| *s == 200),
        "the regular client was not served normally during the flood: {regular:?}"
    );
    assert!(
        growth_mib(peak) < 100.0,
        "RSS grew by {:.1} MiB under the key flood",
        growth_mib(peak)
    );
    // Still serving normally afterwards.
    assert_eq!(
        count(&burst(port, "/", &[("X-Api-Key", "after-flood")], 20), 200),
        20
    );
}

#[test]
fn token_bucket_key_flood_is_served_and_memory_stays_bounded() {
    key_flood("token_bucket");
}

#[test]
fn sliding_window_key_flood_is_served_and_memory_stays_bounded() {
    key_flood("sliding_window");
}
