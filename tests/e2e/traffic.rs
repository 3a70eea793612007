//! Traffic management end to end (SPEC §13): the keys in GET /api/v1/config, outlier
//! ejection and panic mode, access-log termination codes and timings, retries, slow
//! start, queueing, mirroring and geo routing, against real backends that fail on
//! command.
use crate::common::config::*;
use crate::common::*;

mod mmdb;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "traffic-token-0123456789";

/// `server.geoip.database: db`.
fn geoip_section(db: &Path) -> Value {
    json!({ "server": { "geoip": { "database": db.display().to_string() } } })
}

/// A route `name` for paths under `prefix`, to pool `pool`.
fn prefixed(name: &str, prefix: &str, pool: &str) -> Value {
    json!({ "name": name, "path_prefix": prefix, "pool": pool })
}

/// `web_config` with the admin API on `admin`.
fn with_admin(port: u16, admin: u16, pools: Value, routes: Value) -> Value {
    with(web_config(port, pools, routes), admin_on(admin, &[TOKEN]))
}

fn admin_get(port: u16, path: &str) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let r = request(port, "GET", path, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{path}: {r:?}");
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {r:?}"))
}

// ---------------------------------------------------------------- configuration

#[test]
fn every_section_13_key_is_shown_in_the_running_config() {
    let [a, shadow] = Backend::start_each(["a", "shadow"]);
    let (admin, web) = (listen_port(), listen_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("country.mmdb");
    std::fs::write(&db, mmdb::country_db(&[("127.0.0.2", "DE")])).expect("write mmdb");
    let keys = json!({
        "outlier_detection": {
            "consecutive_5xx": 4,
            "consecutive_gateway_failures": 2,
            "base_ejection_time": "10s",
            "max_ejection_time": "2m",
            "max_ejection_percent": 30,
        },
        "panic_threshold": 40,
        "slow_start": "20s",
        "queue": { "max": 10, "timeout": "2s" },
        "try_duration": "3s",
        "retry_on": ["connect_failure", "reset", 502, 503, 504],
        "retry_budget": 25,
        "circuit_breaker": { "max_connections": 5 },
    });
    let pools = json!([
        pool_with("p", keys, &[a.address()]),
        pool("shadow", &[shadow.address()]),
    ]);
    let routes = json!([{
        "name": "all",
        "pool": "p",
        "mirror": { "pool": "shadow", "percent": 10 },
        "geo": { "countries": ["de", "FR"] },
    }]);
    let config = with(with_admin(web, admin, pools, routes), geoip_section(&db));
    let _sy = Switchyard::start_config(&config, &[admin, web]);
    let v = admin_get(admin, "/api/v1/config");
    let p = &v["pools"][0];
    assert_eq!(
        p["outlier_detection"],
        serde_json::json!({"consecutive_5xx": 4, "consecutive_gateway_failures": 2, "base_ejection_time": "10s", "max_ejection_time": "2m", "max_ejection_percent": 30}),
        "{p}"
    );
    assert_eq!(p["panic_threshold"], 40, "{p}");
    assert_eq!(p["slow_start"], "20s", "{p}");
    assert_eq!(
        p["queue"],
        serde_json::json!({"max": 10, "timeout": "2s"}),
        "{p}"
    );
    assert_eq!(p["try_duration"], "3s", "{p}");
    assert_eq!(
        p["retry_on"],
        serde_json::json!(["connect_failure", "reset", "502", "503", "504"]),
        "{p}"
    );
    assert_eq!(p["retry_budget"], 25, "{p}");
    let defaults = &v["pools"][1];
    assert_eq!(defaults["outlier_detection"], Value::Null, "{defaults}");
    assert_eq!(defaults["retry_on"], serde_json::json!(["connect_failure"]));
    assert_eq!(defaults["retry_budget"], 20);
    assert_eq!(
        defaults["queue"],
        serde_json::json!({"max": 0, "timeout": "5s"})
    );
    let r = &v["routes"][0];
    assert_eq!(
        r["mirror"],
        serde_json::json!({"pool": "shadow", "percent": 10}),
        "{r}"
    );
    assert_eq!(
        r["geo"],
        serde_json::json!({"countries": ["DE", "FR"]}),
        "{r}"
    );
    assert_eq!(
        v["server"]["geoip"]["database"],
        db.display().to_string(),
        "{}",
        v["server"]
    );
}

#[test]
fn section_13_mistakes_are_refused_with_their_place() {
    let keys = json!({
        "retry_on": ["connect_failure", 500],
        "outlier_detection": { "max_ejection_percent": 120 },
    });
    let routes = json!([{
        "name": "all",
        "pool": "p",
        "mirror": { "pool": "nowhere" },
        "geo": { "countries": ["DE"] },
    }]);
    let config = web_config(
        18080,
        json!([pool_with("p", keys, &["127.0.0.1:18081".into()])]),
        routes,
    );
    let (out, _, _dir) = check_config(&config_text(&config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "pools[0].retry_on[1]: \"500\" is not one of connect_failure | reset | 502 | 503 | 504",
        "pools[0].outlier_detection.max_ejection_percent",
        "routes[0].mirror.pool: no pool named \"nowhere\"",
        "routes[0].geo: needs server.geoip",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

fn route_all() -> Value {
    json!([route("all", "p")])
}

/// Counts which backend (X-Backend) answered each of `n` GETs; Switchyard's own
/// answers count under their status ("503").
fn answered_by(port: u16, path: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = get(port, path);
        let who = r
            .header("x-backend")
            .map(str::to_string)
            .unwrap_or_else(|| r.status.to_string());
        *counts.entry(who).or_insert(0) += 1;
    }
    counts
}

/// One plaintext listener and a metrics listener.
fn with_metrics(port: u16, metrics: u16, pools: Value, routes: Value) -> Value {
    with(web_config(port, pools, routes), metrics_on(metrics))
}

// ---------------------------------------------------------------- outlier detection

#[test]
fn a_backend_answering_5xx_is_ejected_after_the_streak_and_returns_after_its_time() {
    let [good, bad] = Backend::start_each(["good", "bad"]);
    bad.set(Behaviour::with_status(500));
    let (port, metrics) = (listen_port(), listen_port());
    let keys = json!({
        "retries": 0,
        "outlier_detection": {
            "consecutive_5xx": 3,
            "base_ejection_time": "2s",
            "max_ejection_time": "1m",
        },
    });
    let pools = json!([pool_with("p", keys, &[good.address(), bad.address()])]);
    let sy = Switchyard::start_config(
        &with_metrics(port, metrics, pools, route_all()),
        &[port, metrics],
    );
    let labels =
        [("pool", "p"), ("backend", bad.address().as_str())].map(|(k, v)| (k, v.to_string()));
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        metric(metrics, "switchyard_backend_ejected", &labels),
        Some(0.0)
    );

    // Round robin: the bad backend gets every other request until its third 500.
    let counts = answered_by(port, "/", 20);
    assert_eq!(
        bad.count(),
        3,
        "exactly consecutive_5xx requests reach it: {counts:?}"
    );
    assert_eq!(counts.get("good"), Some(&17), "{counts:?}");
    assert!(
        sy.wait_stderr(
            &format!("backend {} ejected for 2s (consecutive 5xx)", bad.address()),
            1,
            Duration::from_secs(5)
        ),
        "{}",
        sy.stderr()
    );
    assert_eq!(
        metric(metrics, "switchyard_backend_ejected", &labels),
        Some(1.0)
    );
    assert_eq!(
        metric(metrics, "switchyard_outlier_ejections_total", &labels),
        Some(1.0)
    );

    // It recovers; after base_ejection_time it gets its share again.
    bad.set(Behaviour::default());
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            metric(metrics, "switchyard_backend_ejected", &labels) == Some(0.0)
        }),
        "the ejection ends after base_ejection_time"
    );
    assert!(sy.wait_stderr("returned after its ejection", 1, Duration::from_secs(5)));
    let counts = answered_by(port, "/", 10);
    assert_eq!(counts.get("bad"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("good"), Some(&5), "{counts:?}");

    // A second ejection lasts twice as long.
    bad.set(Behaviour::with_status(500));
    answered_by(port, "/", 8);
    assert!(
        sy.wait_stderr(
            &format!("backend {} ejected for 4s (consecutive 5xx)", bad.address()),
            1,
            Duration::from_secs(5)
        ),
        "{}",
        sy.stderr()
    );
    assert_eq!(
        metric(metrics, "switchyard_outlier_ejections_total", &labels),
        Some(2.0)
    );
}

#[test]
fn gateway_failures_eject_and_the_admin_api_shows_ejected() {
    let good = Backend::start("good");
    let refused = closed_port();
    let (port, admin) = (listen_port(), listen_port());
    let keys = json!({
        "retries": 0,
        "health_check": { "kind": "none" },
        "outlier_detection": {
            "consecutive_5xx": 0,
            "consecutive_gateway_failures": 2,
            "base_ejection_time": "1m",
        },
    });
    let addresses = [good.address(), format!("127.0.0.1:{refused}")];
    let pools = json!([pool_with("p", keys, &addresses)]);
    let sy = Switchyard::start_config(&with_admin(port, admin, pools, route_all()), &[port, admin]);
    let counts = answered_by(port, "/", 12);
    assert_eq!(
        counts.get("good"),
        Some(&10),
        "two connect failures, then ejected: {counts:?}"
    );
    assert_eq!(counts.get("502"), Some(&2), "{counts:?}");
    assert!(sy.wait_stderr("(consecutive gateway failures)", 1, Duration::from_secs(5)));
    let pool = admin_get(admin, "/api/v1/pools/p");
    let ejected: Vec<(String, bool)> = pool["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap_or("").to_string(),
                b["ejected"] == true,
            )
        })
        .collect();
    assert_eq!(
        ejected,
        vec![
            (good.address(), false),
            (format!("127.0.0.1:{refused}"), true)
        ],
        "{pool}"
    );
}

#[test]
fn max_ejection_percent_keeps_the_rest_of_the_pool_in() {
    let backends = Backend::start_each(["a", "b", "c", "d"]);
    for b in &backends {
        b.set(Behaviour::with_status(503));
    }
    let (port, metrics) = (listen_port(), listen_port());
    let addresses: Vec<String> = backends.iter().map(Backend::address).collect();
    let keys = json!({
        "retries": 0,
        "outlier_detection": {
            "consecutive_5xx": 2,
            "base_ejection_time": "1m",
            "max_ejection_percent": 50,
        },
    });
    let pools = json!([pool_with("p", keys, &addresses)]);
    let sy = Switchyard::start_config(
        &with_metrics(port, metrics, pools, route_all()),
        &[port, metrics],
    );
    let counts = answered_by(port, "/", 40);
    assert!(
        sy.wait_stderr("max_ejection_percent 50 reached", 1, Duration::from_secs(5)),
        "{}",
        sy.stderr()
    );
    let ejected: f64 = addresses
        .iter()
        .map(|a| {
            metric(
                metrics,
                "switchyard_backend_ejected",
                &[("pool", "p"), ("backend", a)],
            )
            .unwrap_or(-1.0)
        })
        .sum();
    assert_eq!(ejected, 2.0, "half of four backends at most: {counts:?}");
    assert_eq!(sy.stderr_count(" ejected for 1m"), 2, "{}", sy.stderr());
    // The two left in keep answering (with their 503s): no request got Switchyard's own.
    assert!(counts.keys().all(|k| k != "503"), "{counts:?}");
}

#[test]
fn panic_threshold_balances_across_every_primary_when_too_few_are_usable() {
    let [a, b] = Backend::start_each(["a", "b"]);
    let [c, d] = Backend::start_each(["c", "d"]);
    for x in [&a, &b, &c, &d] {
        x.set(Behaviour::with_status(500));
    }
    let port = listen_port();
    let keys = |panic: u32| {
        json!({
            "retries": 0,
            "panic_threshold": panic,
            "outlier_detection": {
                "consecutive_5xx": 1,
                "base_ejection_time": "1m",
                "max_ejection_percent": 100,
            },
        })
    };
    let pools = json!([
        pool_with("calm", keys(0), &[a.address(), b.address()]),
        pool_with("panicky", keys(50), &[c.address(), d.address()]),
    ]);
    let routes = json!([
        prefixed("calm", "/calm", "calm"),
        route("panicky", "panicky"),
    ]);
    let _sy = Switchyard::start_config(&web_config(port, pools, routes), &[port]);
    // One 500 each ejects both backends of both pools.
    let calm = answered_by(port, "/calm", 6);
    assert_eq!((a.count(), b.count()), (1, 1), "{calm:?}");
    assert_eq!(
        calm.get("503"),
        Some(&4),
        "no usable backend, no panic: {calm:?}"
    );
    let panicky = answered_by(port, "/", 10);
    assert_eq!(
        (panicky.get("c"), panicky.get("d")),
        (Some(&5), Some(&5)),
        "below panic_threshold every primary takes traffic, ejected or not: {panicky:?}"
    );
}

// ---------------------------------------------------------------- termination codes

/// A backend that reads the request header, sends a response header promising 100
/// bytes and 10 of them, then closes.
fn truncating_backend() -> TcpServer {
    TcpServer::start(|mut s| {
        use std::io::{Read, Write};
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    })
}

#[test]
fn the_access_log_says_who_ended_each_exchange_and_where_the_time_went() {
    let ok = Backend::start_with("ok", Behaviour::with_delay(Duration::from_millis(150)));
    let slow = Backend::start_with("slow", Behaviour::with_delay(Duration::from_secs(3)));
    let truncating = truncating_backend();
    let refused = closed_port();
    let port = listen_port();
    let pools = json!([
        pool("ok", &[ok.address()]),
        pool_with(
            "slow",
            json!({ "timeouts": { "read": "300ms" } }),
            &[slow.address()],
        ),
        pool("cut", &[truncating.address()]),
        pool_with(
            "refused",
            json!({ "retries": 1, "health_check": { "kind": "none" } }),
            &[
                format!("127.0.0.1:{refused}"),
                format!("127.0.0.1:{}", closed_port()),
            ],
        ),
    ]);
    let routes = json!([
        with(
            prefixed("denied", "/denied", "ok"),
            json!({ "deny": ["127.0.0.0/8"] }),
        ),
        prefixed("slow", "/slow", "slow"),
        prefixed("cut", "/cut", "cut"),
        prefixed("refused", "/refused", "refused"),
        route("ok", "ok"),
    ]);
    let web = with(
        listener("web", port),
        json!({ "limits": { "body_timeout": "500ms" } }),
    );
    let sy = Switchyard::start_config(&config_of(json!([web]), pools, routes), &[port]);

    assert_eq!(get(port, "/fine").status, 200);
    assert_eq!(get(port, "/denied").status, 403);
    assert_eq!(get(port, "/slow").status, 504);
    let _ = raw_exchange(
        port,
        b"GET /cut HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(get(port, "/refused").status, 502);
    // A body that stops coming: the client timed out.
    let _ = raw_exchange(
        port,
        b"POST /fine HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\nab",
    );
    let entries = sy.access_entries(6);
    let by_path = |p: &str| -> Value {
        entries
            .iter()
            .find(|e| e["path"] == p && (p != "/fine" || e["method"] == "GET"))
            .cloned()
            .unwrap_or_else(|| panic!("no entry for {p}: {entries:?}"))
    };
    let fine = by_path("/fine");
    assert_eq!(
        (fine["termination"].as_str(), fine["attempts"].as_u64()),
        (Some("-"), Some(1)),
        "{fine}"
    );
    let connect = fine["upstream_connect_ms"].as_f64().expect("connect time");
    let response = fine["upstream_response_ms"]
        .as_f64()
        .expect("response time");
    assert!(
        connect >= 0.0 && response >= 150.0,
        "the backend waited 150 ms before its header: {fine}"
    );
    assert!(
        fine["duration_ms"].as_f64().unwrap_or(0.0) >= response,
        "{fine}"
    );

    let denied = by_path("/denied");
    assert_eq!(
        (denied["termination"].as_str(), denied["attempts"].as_u64()),
        (Some("PR"), Some(0)),
        "{denied}"
    );
    assert_eq!(denied["upstream_connect_ms"], Value::Null, "{denied}");

    let slow_entry = by_path("/slow");
    assert_eq!(slow_entry["termination"], "SH", "{slow_entry}");
    assert!(
        slow_entry["upstream_connect_ms"].is_number()
            && slow_entry["upstream_response_ms"].is_null(),
        "{slow_entry}"
    );

    let cut = by_path("/cut");
    assert_eq!(cut["termination"], "SD", "{cut}");

    let refused_entry = by_path("/refused");
    assert_eq!(
        (
            refused_entry["termination"].as_str(),
            refused_entry["attempts"].as_u64()
        ),
        (Some("SC"), Some(2)),
        "both backends refused (retries: 1): {refused_entry}"
    );
    let post = entries
        .iter()
        .find(|e| e["method"] == "POST")
        .unwrap_or_else(|| panic!("no POST entry: {entries:?}"));
    assert_eq!(post["termination"], "CT", "{post}");
}

#[test]
fn a_client_that_hangs_up_while_waiting_is_logged_as_cd() {
    let slow = Backend::start_with("slow", Behaviour::with_delay(Duration::from_millis(1500)));
    let port = listen_port();
    let pools = json!([pool("p", &[slow.address()])]);
    let sy = Switchyard::start_config(&web_config(port, pools, route_all()), &[port]);
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        assert!(slow.wait_count(1, Duration::from_secs(5)));
    }
    let entries = sy.access_entries(1);
    let e = entries
        .iter()
        .find(|e| e["path"] == "/hang")
        .unwrap_or_else(|| panic!("no entry: {entries:?}"));
    assert_eq!(e["termination"], "CD", "{e}");
    assert_eq!(e["attempts"], 1, "{e}");
}

// ---------------------------------------------------------------- retries

/// A backend that reads the request header and closes without answering.
fn resetting_backend() -> TcpServer {
    TcpServer::start(|mut s| {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// Route `plain` under `/plain` to pool `plain`, and `all` to pool `p`.
fn plain_then_all() -> Value {
    json!([prefixed("plain", "/plain", "plain"), route("all", "p")])
}

#[test]
fn retry_on_statuses_moves_idempotent_requests_to_another_backend() {
    let [bad, good] = Backend::start_each(["bad", "good"]);
    bad.set(Behaviour::with_status(502));
    let port = listen_port();
    let backends = [bad.address(), good.address()];
    let pools = json!([
        pool_with(
            "p",
            json!({ "retries": 1, "retry_on": ["connect_failure", 502] }),
            &backends,
        ),
        pool_with("plain", json!({ "retries": 1 }), &backends),
    ]);
    let routes = plain_then_all();
    let sy = Switchyard::start_config(&web_config(port, pools, routes), &[port]);
    let counts = answered_by(port, "/", 10);
    assert_eq!(
        counts.get("good"),
        Some(&10),
        "every GET ends at the good backend: {counts:?}"
    );
    assert!(
        bad.count() >= 4,
        "the bad backend was asked first about half the time: {}",
        bad.count()
    );
    let entries = sy.access_entries(10);
    assert!(
        entries
            .iter()
            .any(|e| e["attempts"] == 2 && e["status"] == 200),
        "{entries:?}"
    );

    // POST is not idempotent: the backend's 502 goes to the client.
    let posts: Vec<u16> = (0..6)
        .map(|_| request(port, "POST", "/", &[], b"x").status)
        .collect();
    assert!(posts.contains(&502) && posts.contains(&200), "{posts:?}");
    // Without 502 in retry_on, the 502 is the answer too.
    let plain = answered_by(port, "/plain", 6);
    assert_eq!(
        (plain.get("bad"), plain.get("good")),
        (Some(&3), Some(&3)),
        "{plain:?}"
    );
}

#[test]
fn retry_on_reset_hides_a_backend_that_hangs_up() {
    let resetting = resetting_backend();
    let good = Backend::start("good");
    let port = listen_port();
    let backends = [resetting.address(), good.address()];
    let pools = json!([
        pool_with(
            "p",
            json!({ "retries": 1, "retry_on": ["connect_failure", "reset"] }),
            &backends,
        ),
        pool_with("plain", json!({ "retries": 1 }), &backends),
    ]);
    let _sy = Switchyard::start_config(&web_config(port, pools, plain_then_all()), &[port]);
    let counts = answered_by(port, "/", 10);
    assert_eq!(counts.get("good"), Some(&10), "{counts:?}");
    let plain = answered_by(port, "/plain", 10);
    assert_eq!(plain.get("good"), Some(&5), "{plain:?}");
    assert_eq!(
        plain.get("502"),
        Some(&5),
        "no reset retry without retry_on: [reset]: {plain:?}"
    );
}

#[test]
fn a_zero_retry_budget_turns_retries_off() {
    let good = Backend::start("good");
    let refused = format!("127.0.0.1:{}", closed_port());
    let port = listen_port();
    let keys = |budget: u32| json!({ "retries": 1, "retry_budget": budget, "health_check": { "kind": "none" } });
    let pools = json!([
        pool_with("p", keys(20), &[refused.clone(), good.address()]),
        pool_with("none", keys(0), &[refused, good.address()]),
    ]);
    let routes = json!([prefixed("none", "/none", "none"), route("all", "p")]);
    let _sy = Switchyard::start_config(&web_config(port, pools, routes), &[port]);
    let counts = answered_by(port, "/", 10);
    assert_eq!(
        counts.get("good"),
        Some(&10),
        "within the budget: {counts:?}"
    );
    let none = answered_by(port, "/none", 10);
    assert_eq!(
        (none.get("good"), none.get("502")),
        (Some(&5), Some(&5)),
        "{none:?}"
    );
}

#[test]
fn try_duration_holds_requests_while_the_only_backend_restarts() {
    let port = listen_port();
    let backend_port = listen_port();
    let address = format!("127.0.0.1:{backend_port}");
    let no_check = json!({ "health_check": { "kind": "none" } });
    let pools = json!([
        pool_with(
            "p",
            with(no_check.clone(), json!({ "try_duration": "10s" })),
            std::slice::from_ref(&address),
        ),
        pool_with("quick", no_check, &[address]),
    ]);
    let routes = json!([prefixed("quick", "/quick", "quick"), route("all", "p")]);
    let sy = Switchyard::start_config(&web_config(port, pools, routes), &[port]);
    assert_eq!(
        get(port, "/quick").status,
        502,
        "without try_duration: an error at once"
    );
    let waiting: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || get(port, "/held")))
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let backend = Backend::start_on("late", backend_port);
    for w in waiting {
        let r = w.join().expect("request thread");
        assert_eq!(
            (r.status, r.header("x-backend")),
            (200, Some("late")),
            "{r:?}"
        );
    }
    assert_eq!(backend.count(), 3);
    let entries = sy.access_entries(4);
    let held = entries
        .iter()
        .find(|e| e["path"] == "/held")
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert!(
        held["attempts"].as_u64().unwrap_or(0) >= 2,
        "it tried again: {held}"
    );
    assert_eq!(held["termination"], "-", "{held}");
}

// ---------------------------------------------------------------- slow start

fn admin_send(port: u16, method: &str, path: &str, body: &str) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    request(
        port,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

#[test]
fn a_backend_joining_a_running_pool_ramps_up_over_slow_start() {
    let [old, new] = Backend::start_each(["old", "new"]);
    let (port, admin) = (listen_port(), listen_port());
    let pools = json!([pool_with(
        "p",
        json!({ "slow_start": "5s" }),
        &[old.address()]
    )]);
    let _sy =
        Switchyard::start_config(&with_admin(port, admin, pools, route_all()), &[port, admin]);
    // The pool's first members take their full share at once.
    assert_eq!(answered_by(port, "/", 4).get("old"), Some(&4));
    let added = admin_send(
        admin,
        "POST",
        "/api/v1/pools/p/backends",
        &format!("{{\"address\":\"{}\",\"weight\":1}}", new.address()),
    );
    assert_eq!(added.status, 201, "{added:?}");
    let early = answered_by(port, "/", 60);
    let early_new = early.get("new").copied().unwrap_or(0);
    eprintln!("first 60 requests after the join: {early:?}");
    assert!(
        early_new < 20,
        "in its first second a joining backend gets far less than half (10 % of its weight, rising): {early:?}"
    );
    assert_eq!(early.values().sum::<usize>(), 60, "{early:?}");
    // After slow_start it takes its whole share: round robin alternates exactly.
    std::thread::sleep(Duration::from_millis(5200));
    let late = answered_by(port, "/", 40);
    assert_eq!(
        (late.get("old"), late.get("new")),
        (Some(&20), Some(&20)),
        "{late:?}"
    );
}

// ---------------------------------------------------------------- queue

/// `n` GETs of `path` sent at once, each from its own thread; their statuses, sorted.
fn concurrent_statuses(port: u16, path: &str, n: usize) -> Vec<u16> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let path = path.to_string();
            std::thread::spawn(move || {
                // Spread the arrivals a little so the first one holds the slot.
                std::thread::sleep(Duration::from_millis(30 * i as u64));
                get(port, &path).status
            })
        })
        .collect();
    let mut out: Vec<u16> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    out.sort_unstable();
    out
}

#[test]
fn a_full_backend_queues_requests_up_to_queue_max_then_answers_503() {
    let slow = Backend::start_with("slow", Behaviour::with_delay(Duration::from_millis(700)));
    let (port, metrics) = (listen_port(), listen_port());
    let keys = |queue: Value| json!({ "retries": 0, "circuit_breaker": { "max_connections": 1 }, "queue": queue });
    let slow_only = [slow.address()];
    let pools = json!([
        pool_with("p", keys(json!({ "max": 2, "timeout": "5s" })), &slow_only),
        pool_with(
            "short",
            keys(json!({ "max": 5, "timeout": "300ms" })),
            &slow_only,
        ),
        pool_with("none", keys(json!({ "max": 0 })), &slow_only),
    ]);
    let routes = json!([
        prefixed("short", "/short", "short"),
        prefixed("none", "/none", "none"),
        route("all", "p"),
    ]);
    let sy = Switchyard::start_config(
        &with_metrics(port, metrics, pools, routes),
        &[port, metrics],
    );

    // One in flight, two waiting, the fourth finds the queue full.
    let watcher = std::thread::spawn(move || {
        let mut most = 0.0f64;
        for _ in 0..40 {
            most = most.max(
                metric(metrics, "switchyard_pool_queue_length", &[("pool", "p")]).unwrap_or(0.0),
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        most
    });
    assert_eq!(concurrent_statuses(port, "/", 4), vec![200, 200, 200, 503]);
    assert_eq!(
        watcher.join().expect("watcher"),
        2.0,
        "the gauge showed both waiting"
    );
    assert_eq!(
        metric(metrics, "switchyard_pool_queue_length", &[("pool", "p")]),
        Some(0.0)
    );

    // Without a queue the second request is refused at once.
    assert_eq!(concurrent_statuses(port, "/none", 2), vec![200, 503]);
    // A waiter that outlives queue.timeout is answered 503.
    assert_eq!(concurrent_statuses(port, "/short", 2), vec![200, 503]);
    let entries = sy.access_entries(10);
    let timed_out = entries
        .iter()
        .find(|e| e["path"] == "/short" && e["status"] == 503)
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(timed_out["termination"], "SC", "{timed_out}");
    let waited = timed_out["duration_ms"].as_f64().unwrap_or(0.0);
    assert!(waited >= 300.0, "it waited queue.timeout: {timed_out}");
}

// ---------------------------------------------------------------- mirror

/// Request targets and bodies, as a recording backend saw them.
type Recorded = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A mirror backend that records each request's target and body, and answers 204.
fn recording_backend() -> (TcpServer, Recorded) {
    let got: Recorded = Default::default();
    let record = got.clone();
    let server = TcpServer::start(move |mut s| {
        use std::io::{Read, Write};
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        record
            .lock()
            .expect("record")
            .push((target, buf[head_end..head_end + length].to_vec()));
        let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    });
    (server, got)
}

#[test]
fn mirrored_copies_reach_the_shadow_pool_and_never_change_the_answer() {
    let main = Backend::start("main");
    let shadow = Backend::start_with("shadow", Behaviour::with_status(500));
    let sleepy = Backend::start_with("sleepy", Behaviour::with_delay(Duration::from_secs(3)));
    let gone = closed_port();
    let (port, metrics) = (listen_port(), listen_port());
    let pools = json!([
        pool("p", &[main.address()]),
        pool("shadow", &[shadow.address()]),
        pool("sleepy", &[sleepy.address()]),
        pool_with(
            "gone",
            json!({ "health_check": { "kind": "none" } }),
            &[format!("127.0.0.1:{gone}")],
        ),
        pool("half", &[shadow.address()]),
    ]);
    let mirrored = |name: &str, prefix: &str, mirror: Value| {
        with(prefixed(name, prefix, "p"), json!({ "mirror": mirror }))
    };
    let routes = json!([
        mirrored("slow", "/slow", json!({ "pool": "sleepy" })),
        mirrored("gone", "/gone", json!({ "pool": "gone" })),
        mirrored("half", "/half", json!({ "pool": "half", "percent": 50 })),
        with(
            route("all", "p"),
            json!({ "mirror": { "pool": "shadow", "percent": 100 } }),
        ),
    ]);
    let _sy = Switchyard::start_config(
        &with_metrics(port, metrics, pools, routes),
        &[port, metrics],
    );
    let counted = |route: &str, outcome: &str| {
        metric(
            metrics,
            "switchyard_mirror_requests_total",
            &[("route", route), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };

    // Every request is copied; the client sees the main backend's 200.
    for i in 0..5 {
        let body = format!("payload-{i}");
        let r = request(port, "POST", &format!("/items/{i}"), &[], body.as_bytes());
        assert_eq!(
            (r.status, r.header("x-backend")),
            (200, Some("main")),
            "{r:?}"
        );
    }
    assert_eq!(
        wait_metric(
            metrics,
            "switchyard_mirror_requests_total",
            &[("route", "all"), ("outcome", "success")],
            5.0
        ),
        5.0
    );
    let seen = shadow.seen.lock().expect("seen").clone();
    let mut paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        ["/items/0", "/items/1", "/items/2", "/items/3", "/items/4"]
    );
    assert!(seen.iter().all(|s| s.method == "POST"), "{seen:?}");

    // A mirror that answers after 3 s: the client has its answer before the copy is answered.
    let r = get(port, "/slow");
    assert_eq!(r.status, 200);
    assert!(
        sleepy.wait_count(1, Duration::from_secs(5)),
        "the copy arrived"
    );
    assert_eq!(
        counted("slow", "success"),
        0.0,
        "the client did not wait for the mirror"
    );

    // A mirror that refuses connections: the client never notices.
    for _ in 0..3 {
        assert_eq!(get(port, "/gone").status, 200);
    }
    assert_eq!(
        wait_metric(
            metrics,
            "switchyard_mirror_requests_total",
            &[("route", "gone"), ("outcome", "failure")],
            3.0
        ),
        3.0
    );

    // percent: 50 copies about half.
    for _ in 0..100 {
        assert_eq!(get(port, "/half").status, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let half = counted("half", "success");
    assert!(
        (20.0..=80.0).contains(&half),
        "about half of 100 mirrored: {half}"
    );

    // A body over 1 MiB is not mirrored.
    let big = vec![b'x'; 1024 * 1024 + 10];
    let r = request(port, "POST", "/big", &[], &big);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        wait_metric(
            metrics,
            "switchyard_mirror_requests_total",
            &[("route", "all"), ("outcome", "skipped")],
            1.0
        ),
        1.0
    );
}

// ---------------------------------------------------------------- geo routing

/// A GET of `path` from the loopback address `ip`, with `headers`.
fn get_from(ip: &str, port: u16, path: &str, headers: &str) -> Reply {
    use std::io::Write;
    let mut s = connect_from(ip, port);
    let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).expect("send");
    read_reply(&mut s).expect("reply")
}

#[test]
fn geo_routes_by_the_clients_country_and_tells_backends_and_the_log() {
    let [de, rest] = Backend::start_each(["de", "rest"]);
    let (port, metrics) = (listen_port(), listen_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("countries.mmdb");
    std::fs::write(
        &db,
        mmdb::country_db(&[("127.0.0.2", "DE"), ("127.0.0.3", "FR")]),
    )
    .expect("db");
    let pools = json!([pool("de", &[de.address()]), pool("rest", &[rest.address()])]);
    let routes = json!([
        { "name": "dach", "geo": { "countries": ["DE", "AT", "CH"] }, "pool": "de" },
        route("all", "rest"),
    ]);
    let config = with(
        with_metrics(port, metrics, pools, routes),
        geoip_section(&db),
    );
    let sy = Switchyard::start_config(&config, &[port, metrics]);

    let r = get_from("127.0.0.2", port, "/a", "X-Client-Country: US\r\n");
    assert_eq!(
        r.header("x-backend"),
        Some("de"),
        "a German client takes the geo route: {r:?}"
    );
    assert_eq!(
        de.last()
            .and_then(|s| s.header("x-client-country").map(str::to_string))
            .as_deref(),
        Some("DE")
    );
    assert_eq!(
        de.last().map(|s| s.header_all("x-client-country").len()),
        Some(1),
        "the client's own header is gone"
    );
    let r = get_from("127.0.0.3", port, "/b", "");
    assert_eq!(r.header("x-backend"), Some("rest"), "{r:?}");
    assert_eq!(
        rest.last()
            .and_then(|s| s.header("x-client-country").map(str::to_string))
            .as_deref(),
        Some("FR")
    );
    let r = get_from("127.0.0.1", port, "/c", "X-Client-Country: DE\r\n");
    assert_eq!(
        r.header("x-backend"),
        Some("rest"),
        "an unknown client matches no geo route, whatever it claims: {r:?}"
    );
    assert_eq!(
        rest.last()
            .and_then(|s| s.header("x-client-country").map(str::to_string))
            .as_deref(),
        Some("")
    );

    let entries = sy.access_entries(3);
    let countries: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap_or(""),
                e["country"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        countries,
        [("/a", "DE"), ("/b", "FR"), ("/c", "")],
        "{entries:?}"
    );

    // An updated database is read on SIGHUP.
    std::fs::write(&db, mmdb::country_db(&[("127.0.0.3", "AT")])).expect("db");
    sy.reload_counted(metrics);
    let r = get_from("127.0.0.3", port, "/d", "");
    assert_eq!(
        r.header("x-backend"),
        Some("de"),
        "127.0.0.3 is in AT now: {r:?}"
    );
}

#[test]
fn an_unreadable_geoip_database_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("broken.mmdb");
    std::fs::write(&db, b"not a maxmind database").expect("write");
    let config = with(
        web_config(
            18080,
            json!([pool("p", &["127.0.0.1:18081".into()])]),
            route_all(),
        ),
        geoip_section(&db),
    );
    let (out, _, _tmp) = check_config(&config_text(&config));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.geoip.database: cannot open") && err.contains("broken.mmdb"),
        "{err}"
    );
}

// ---------------------------------------------------------------- rollout

/// A health check every 200 ms that moves a backend on one result.
fn quick_check() -> Value {
    json!({ "interval": "200ms", "timeout": "200ms", "healthy_threshold": 1, "unhealthy_threshold": 1 })
}

fn pool_addresses(admin: u16, pool: &str) -> Vec<String> {
    let v = admin_get(admin, &format!("/api/v1/pools/{pool}"));
    let mut out: Vec<String> = v["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .filter_map(|b| b["address"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

#[test]
fn a_rollout_replaces_the_backends_batch_by_batch_without_failing_a_request() {
    let [old1, old2, new1, new2] = Backend::start_each(["old1", "old2", "new1", "new2"]);
    let (port, admin) = (listen_port(), listen_port());
    let keys = json!({ "health_check": quick_check() });
    let pools = json!([pool_with("p", keys, &[old1.address(), old2.address()])]);
    let _sy =
        Switchyard::start_config(&with_admin(port, admin, pools, route_all()), &[port, admin]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut statuses: HashMap<u16, usize> = HashMap::new();
            for _ in 0..2000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                *statuses.entry(get(port, "/").status).or_insert(0) += 1;
            }
            statuses
        })
    };
    let body = format!(
        "{{\"backends\":[{{\"address\":\"{}\",\"weight\":1}},{{\"address\":\"{}\"}}],\"batch\":1,\"interval\":\"400ms\"}}",
        new1.address(),
        new2.address()
    );
    let r = admin_send(admin, "POST", "/api/v1/pools/p/rollout", &body);
    assert_eq!(r.status, 202, "{r:?}");
    let started: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(
        (started["status"].as_str(), started["batches"].as_u64()),
        (Some("running"), Some(2)),
        "{started}"
    );
    let again = admin_send(admin, "POST", "/api/v1/pools/p/rollout", &body);
    assert_eq!(again.status, 409, "one rollout per pool: {again:?}");

    let mut seen_steps = Vec::new();
    let done = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let p = admin_get(admin, "/api/v1/pools/p/rollout");
        seen_steps.push(p["step"].as_u64().unwrap_or(99));
        p["status"] == "done"
    });
    assert!(
        done,
        "the rollout finishes: {}",
        admin_get(admin, "/api/v1/pools/p/rollout")
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = traffic.join().expect("traffic");
    assert!(
        seen_steps.contains(&1),
        "progress was visible batch by batch: {seen_steps:?}"
    );
    let mut want = vec![new1.address(), new2.address()];
    want.sort();
    assert_eq!(pool_addresses(admin, "p"), want);
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "no request failed during the rollout: {statuses:?}"
    );
    let after = answered_by(port, "/", 10);
    assert_eq!(
        (after.get("new1"), after.get("new2")),
        (Some(&5), Some(&5)),
        "{after:?}"
    );
}

#[test]
fn deleting_a_rollout_puts_the_old_backends_back() {
    let [old, new] = Backend::start_each(["old", "new"]);
    let (port, admin) = (listen_port(), listen_port());
    let pools = json!([pool("p", &[old.address()])]);
    let _sy =
        Switchyard::start_config(&with_admin(port, admin, pools, route_all()), &[port, admin]);
    assert_eq!(
        admin_send(admin, "GET", "/api/v1/pools/p/rollout", "").status,
        404
    );
    let body = format!(
        "{{\"backends\":[{{\"address\":\"{}\"}}],\"interval\":\"1m\"}}",
        new.address()
    );
    assert_eq!(
        admin_send(admin, "POST", "/api/v1/pools/p/rollout", &body).status,
        202
    );
    assert!(
        wait_until(
            Duration::from_secs(5),
            Duration::from_millis(50),
            || pool_addresses(admin, "p").len() == 2
        ),
        "the new backend is added first"
    );
    let r = admin_send(admin, "DELETE", "/api/v1/pools/p/rollout", "");
    assert_eq!(r.status, 200, "{r:?}");
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["status"], "aborted", "{v}");
    assert_eq!(pool_addresses(admin, "p"), vec![old.address()]);
    assert_eq!(answered_by(port, "/", 4).get("old"), Some(&4));
    // A new rollout may start once the last one ended; bad input is a 400 naming the field.
    let bad = admin_send(
        admin,
        "POST",
        "/api/v1/pools/p/rollout",
        "{\"backends\":[],\"batch\":1}",
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body.contains("\"field\":\"backends\""), "{bad:?}");
    assert_eq!(
        admin_send(admin, "POST", "/api/v1/pools/p/rollout", &body).status,
        202
    );
}

#[test]
fn mirror_copies_carry_the_request_body_up_to_1_mib() {
    let main = Backend::start("main");
    let (recorder, bodies) = recording_backend();
    let (port, metrics) = (listen_port(), listen_port());
    let pools = json!([
        pool("p", &[main.address()]),
        pool("rec", &[recorder.address()])
    ]);
    let routes = json!([with(
        route("all", "p"),
        json!({ "mirror": { "pool": "rec" } })
    )]);
    let _sy = Switchyard::start_config(
        &with_metrics(port, metrics, pools, routes),
        &[port, metrics],
    );
    let small = b"{\"order\":42}".to_vec();
    let exactly = vec![b'y'; 1024 * 1024];
    assert_eq!(request(port, "PUT", "/small?x=1", &[], &small).status, 200);
    assert_eq!(request(port, "PUT", "/full", &[], &exactly).status, 200);
    let sent = wait_metric(
        metrics,
        "switchyard_mirror_requests_total",
        &[("route", "all"), ("outcome", "success")],
        2.0,
    );
    assert_eq!(sent, 2.0);
    let mut got = bodies.lock().expect("bodies").clone();
    got.sort();
    assert_eq!(
        got.len(),
        2,
        "{:?}",
        got.iter().map(|(t, b)| (t, b.len())).collect::<Vec<_>>()
    );
    assert_eq!(
        got[0],
        ("/full".to_string(), exactly),
        "a 1 MiB body is copied whole"
    );
    assert_eq!(got[1], ("/small?x=1".to_string(), small));
}

#[test]
fn a_backend_that_comes_back_healthy_ramps_up_again() {
    let a = Backend::start("a");
    let b_port = listen_port();
    let b = Backend::start_on("b", b_port);
    let b_addr = b.address();
    let port = listen_port();
    let keys = json!({ "retries": 0, "slow_start": "5s", "health_check": quick_check() });
    let pools = json!([pool_with("p", keys, &[a.address(), b.address()])]);
    let sy = Switchyard::start_config(&web_config(port, pools, route_all()), &[port]);
    let first = answered_by(port, "/", 10);
    assert_eq!(
        first.get("b"),
        Some(&5),
        "the pool's first members start at full share: {first:?}"
    );
    drop(b);
    sy.expect_stderr(&went_down(&b_addr), 1, Duration::from_secs(5));
    let _b = Backend::start_on("b", b_port);
    sy.expect_stderr(&came_up(&b_addr), 1, Duration::from_secs(5));
    let early = answered_by(port, "/", 60);
    eprintln!("first 60 requests after the return: {early:?}");
    assert!(early.get("b").copied().unwrap_or(0) < 20, "{early:?}");
    std::thread::sleep(Duration::from_millis(5200));
    let late = answered_by(port, "/", 40);
    assert_eq!(
        (late.get("a"), late.get("b")),
        (Some(&20), Some(&20)),
        "{late:?}"
    );
}

#[test]
fn the_retry_budget_caps_retries_in_progress_under_load() {
    let bad = Backend::start_with("bad", Behaviour::with_status(503));
    let good = Backend::start_with("good", Behaviour::with_delay(Duration::from_millis(1500)));
    let port = listen_port();
    let keys = |budget: u32| json!({ "retries": 1, "retry_on": ["connect_failure", 503], "retry_budget": budget });
    let backends = [bad.address(), good.address()];
    let pools = json!([
        pool_with("tight", keys(20), &backends),
        pool_with("loose", keys(100), &backends),
    ]);
    let routes = json!([
        prefixed("loose", "/loose", "loose"),
        route("tight", "tight")
    ]);
    let sy = Switchyard::start_config(&web_config(port, pools, routes), &[port]);
    let burst = |path: &'static str| -> Vec<u16> {
        let handles: Vec<_> = (0..24)
            .map(|_| std::thread::spawn(move || get(port, path).status))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    };
    // 24 at once, about half sent to the 503 backend first: 20 % of 24 active is 5
    // retries in progress at most (each holds its slot while the good backend takes
    // 1.5 s), so the rest get the 503.
    let tight = burst("/tight");
    let retried = sy
        .access_entries(24)
        .iter()
        .filter(|e| e["route"] == "tight" && e["attempts"] == 2)
        .count();
    let refused = tight.iter().filter(|s| **s == 503).count();
    assert!(
        retried <= 5,
        "at most 20 % of 24 active requests retried: {retried}, {tight:?}"
    );
    assert!(refused >= 1 && retried >= 1, "{tight:?}");
    eprintln!("tight budget: {retried} retried, {refused} answered 503 of 24");
    // With a budget of 100 % every one of them is retried.
    let loose = burst("/loose");
    assert!(loose.iter().all(|s| *s == 200), "{loose:?}");
}

#[test]
fn a_rollout_to_a_dead_backend_fails_and_rolls_back() {
    let old = Backend::start("old");
    let dead = format!("127.0.0.1:{}", closed_port());
    let (port, admin) = (listen_port(), listen_port());
    let keys = json!({ "retries": 0, "health_check": quick_check() });
    let pools = json!([pool_with("p", keys, &[old.address()])]);
    let sy = Switchyard::start_config(&with_admin(port, admin, pools, route_all()), &[port, admin]);
    let body = format!("{{\"backends\":[{{\"address\":\"{dead}\"}}],\"interval\":\"100ms\"}}");
    assert_eq!(
        admin_send(admin, "POST", "/api/v1/pools/p/rollout", &body).status,
        202
    );
    let mut last = Value::Null;
    let ended = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        last = admin_get(admin, "/api/v1/pools/p/rollout");
        last["status"] != "running"
    });
    assert!(ended, "{last}");
    assert_eq!(last["status"], "failed", "{last}");
    assert!(
        last["message"].as_str().unwrap_or("").contains(&dead),
        "{last}"
    );
    assert_eq!(
        pool_addresses(admin, "p"),
        vec![old.address()],
        "rolled back"
    );
    assert_eq!(old.count(), 0);
    assert_eq!(
        answered_by(port, "/", 4).get("old"),
        Some(&4),
        "the old backend was never drained for good"
    );
    assert!(sy.stderr().contains("rollout failed"), "{}", sy.stderr());
}

#[test]
fn repeated_ejections_double_up_to_max_ejection_time() {
    let [good, bad] = Backend::start_each(["good", "bad"]);
    bad.set(Behaviour::with_status(500));
    let port = listen_port();
    let keys = json!({
        "retries": 0,
        "outlier_detection": {
            "consecutive_5xx": 1,
            "base_ejection_time": "1s",
            "max_ejection_time": "1500ms",
        },
    });
    let pools = json!([pool_with("p", keys, &[good.address(), bad.address()])]);
    let sy = Switchyard::start_config(&web_config(port, pools, route_all()), &[port]);
    let ejected = |n: usize, time: &str| {
        let needle = format!(
            "backend {} ejected for {time} (consecutive 5xx)",
            bad.address()
        );
        wait_until(Duration::from_secs(8), Duration::from_millis(50), || {
            answered_by(port, "/", 2);
            sy.stderr_count(&needle) >= n
        })
    };
    assert!(ejected(1, "1s"), "{}", sy.stderr());
    assert!(
        ejected(1, "1s 500ms"),
        "doubled, capped at 1.5 s: {}",
        sy.stderr()
    );
    assert!(ejected(2, "1s 500ms"), "stays at the cap: {}", sy.stderr());
    assert_eq!(sy.stderr_count(" ejected for 2s"), 0, "{}", sy.stderr());
}
