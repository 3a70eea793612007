//! Load-balancing algorithms with weights, backups and upstream keep-alive
//! (SPEC §3 pools, §4 least_conn / consistent_hash, §9 settled details).
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Switchyard on a new port in front of one pool `p` (every route goes there):
/// `server_keys` are added to the test `server:` section, `pool_keys` to the pool, and
/// `backends` are its `backends:` entries.
fn start(server_keys: Value, pool_keys: Value, backends: Vec<Value>) -> (Switchyard, u16) {
    let port = free_port();
    let mut p = with(pool("p", &[]), pool_keys);
    p["backends"] = Value::Array(backends);
    let config = with(
        config_of(
            json!([listener("web", port)]),
            json!([p]),
            json!([route("all", "p")]),
        ),
        json!({ "server": server_keys }),
    );
    (Switchyard::start_config(&config, &[port]), port)
}

/// A `backends:` entry for `address` with `keys` (e.g. its weight).
fn entry(address: String, keys: Value) -> Value {
    with(json!({ "address": address }), keys)
}

/// The `backends:` entries of each backend, without extra keys.
fn plain(backends: &[&Backend]) -> Vec<Value> {
    backends
        .iter()
        .map(|b| entry(b.address(), json!({})))
        .collect()
}

/// The backend names of `n` sequential GETs, in order.
fn sequence(port: u16, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = get(port, "/");
            assert_eq!(r.status, 200, "{r:?}");
            r.header("x-backend").unwrap_or("none").to_string()
        })
        .collect()
}

fn backend_for(port: u16, path: &str, headers: &[(&str, &str)]) -> String {
    let r = request(port, "GET", path, headers, b"");
    assert_eq!(r.status, 200, "{r:?}");
    r.header("x-backend")
        .unwrap_or_else(|| panic!("no X-Backend: {r:?}"))
        .to_string()
}

#[test]
fn round_robin_weights_3_to_1_are_exact_and_smooth() {
    let [a, b] = Backend::start_each(["a", "b"]);
    let (_sy, port) = start(
        json!({}),
        json!({ "algorithm": "round_robin" }),
        vec![
            entry(a.address(), json!({ "weight": 3 })),
            entry(b.address(), json!({ "weight": 1 })),
        ],
    );
    let seq = sequence(port, 40);
    let count = |n: &str| seq.iter().filter(|s| *s == n).count();
    assert_eq!((count("a"), count("b")), (30, 10), "{seq:?}");
    for (i, w) in seq.windows(4).enumerate() {
        let bs = w.iter().filter(|s| *s == "b").count();
        assert_eq!(bs, 1, "window at {i} has {bs} b's (not smooth): {seq:?}");
        assert!(
            w.iter().any(|s| s != "a"),
            "a four times in a row at {i}: {seq:?}"
        );
    }
}

#[test]
fn round_robin_equal_weights_split_equally() {
    let [a, b] = Backend::start_each(["a", "b"]);
    let (_sy, port) = start(
        json!({}),
        json!({}),
        vec![
            entry(a.address(), json!({ "weight": 5 })),
            entry(b.address(), json!({ "weight": 5 })),
        ],
    );
    let counts = spread(port, "/", 40);
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&20), "{counts:?}");
}

#[test]
fn random_respects_weights() {
    let [a, b] = Backend::start_each(["heavy", "light"]);
    let (_sy, port) = start(
        json!({}),
        json!({ "algorithm": "random" }),
        vec![
            entry(a.address(), json!({ "weight": 3 })),
            entry(b.address(), json!({ "weight": 1 })),
        ],
    );
    let counts = spread(port, "/", 400);
    let heavy = counts.get("heavy").copied().unwrap_or(0);
    let light = counts.get("light").copied().unwrap_or(0);
    assert_eq!(heavy + light, 400, "{counts:?}");
    assert!(
        (240..=360).contains(&heavy),
        "weight 3 of 4 should get 60%..90%: {counts:?}"
    );
    assert!(light > 0, "{counts:?}");
}

#[test]
fn ip_hash_keeps_a_client_on_one_backend() {
    let bs = Backend::start_each(["a", "b", "c"]);
    let (_sy, port) = start(
        json!({}),
        json!({ "algorithm": "ip_hash" }),
        plain(&[&bs[0], &bs[1], &bs[2]]),
    );
    let counts = spread(port, "/", 20);
    assert_eq!(counts.len(), 1, "one client, one backend: {counts:?}");
}

#[test]
fn ip_hash_uses_the_forwarded_client_ip_from_a_trusted_proxy() {
    let bs = Backend::start_each(["a", "b", "c"]);
    let (_sy, port) = start(
        json!({ "trusted_proxies": ["127.0.0.1/32"] }),
        json!({ "algorithm": "ip_hash" }),
        plain(&[&bs[0], &bs[1], &bs[2]]),
    );
    let clients: Vec<String> = (0..30u32)
        .map(|i| {
            format!(
                "{}.{}.{}.{}",
                11 + i * 7 % 200,
                (i * 37) % 256,
                (i * 91) % 256,
                1 + i
            )
        })
        .collect();
    let used = stable_and_spread("client", &clients, |ip| {
        backend_for(port, "/", &[("X-Forwarded-For", ip)])
    });
    assert!(
        used.len() > 1,
        "30 different clients all on one backend: {used:?}"
    );
}

/// Switchyard on a new port in front of a consistent_hash pool on `key` over `backends`.
fn start_hashed(key: &str, backends: &[&Backend]) -> (Switchyard, u16) {
    let keys = json!({ "algorithm": "consistent_hash", "hash_key": key });
    start(json!({}), keys, plain(backends))
}

/// For each of `keys` (`what` names one in the failure), asserts 3 requests built by
/// `req` reach one backend; returns the backends reached over all keys.
fn stable_and_spread(
    what: &str,
    keys: &[String],
    mut req: impl FnMut(&str) -> String,
) -> HashSet<String> {
    let mut used = HashSet::new();
    for k in keys {
        let first = req(k);
        for _ in 0..2 {
            assert_eq!(req(k), first, "{what} {k} moved");
        }
        used.insert(first);
    }
    used
}

/// Backends `a`, `b` and `c` behind a consistent_hash pool on `hash_key`: each of `keys`
/// stays on one backend (requests built by `req(port, key)`); how many backends the
/// keys reached.
fn hashed_spread(
    hash_key: &str,
    keys: &[String],
    mut req: impl FnMut(u16, &str) -> String,
) -> usize {
    let bs = Backend::start_each(["a", "b", "c"]);
    let (_sy, port) = start_hashed(hash_key, &[&bs[0], &bs[1], &bs[2]]);
    stable_and_spread("key", keys, |k| req(port, k)).len()
}

#[test]
fn consistent_hash_on_a_header() {
    let keys: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let used = hashed_spread("header:X-User", &keys, |port, k| {
        backend_for(port, "/", &[("X-User", k)])
    });
    assert_eq!(used, 3, "40 users should reach all 3 backends");
}

#[test]
fn consistent_hash_on_a_cookie() {
    let keys: Vec<String> = (0..40).map(|i| format!("s{i}x")).collect();
    let mut n = 0u32;
    let used = hashed_spread("cookie:session", &keys, |port, k| {
        // Other cookies around it change on every request and must not matter.
        n += 1;
        let cookie = format!("theme=t{n}; session={k}; lang=l{n}");
        backend_for(port, "/", &[("Cookie", &cookie)])
    });
    assert!(used > 1, "40 sessions all on one backend");
}

#[test]
fn consistent_hash_on_the_uri() {
    let keys: Vec<String> = (0..40).map(|i| format!("/item/{i}?v={i}")).collect();
    let used = hashed_spread("uri", &keys, |port, k| backend_for(port, k, &[]));
    assert!(used > 1, "40 URIs all on one backend");
}

#[test]
fn consistent_hash_on_the_path() {
    let keys: Vec<String> = (0..40).map(|i| format!("/doc/{i}")).collect();
    let used = hashed_spread("path", &keys, |port, k| backend_for(port, k, &[]));
    assert!(used > 1, "40 paths all on one backend");
}

#[test]
fn consistent_hash_moves_few_keys_when_a_backend_leaves() {
    let bs = Backend::start_each(["a", "b", "c", "d"]);
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let map = |port: u16| -> HashMap<String, String> {
        keys.iter()
            .map(|k| (k.clone(), backend_for(port, "/", &[("X-User", k)])))
            .collect()
    };

    let before = {
        let (_sy, port) = start_hashed("header:X-User", &[&bs[0], &bs[1], &bs[2], &bs[3]]);
        map(port)
    };
    let on_d = before.values().filter(|v| *v == "d").count();
    assert!(on_d > 0, "no key on the backend that leaves: {before:?}");
    let per_backend: HashSet<&String> = before.values().collect();
    assert_eq!(per_backend.len(), 4, "200 keys should reach all 4 backends");

    let (_sy, port) = start_hashed("header:X-User", &[&bs[0], &bs[1], &bs[2]]);
    let after = map(port);
    let staying: Vec<&String> = keys.iter().filter(|k| before[*k] != "d").collect();
    let kept = staying.iter().filter(|k| after[**k] == before[**k]).count();
    assert!(
        kept * 10 >= staying.len() * 9,
        "only {kept} of {} keys on the remaining backends stayed put",
        staying.len()
    );
    assert!(
        keys.iter().all(|k| after[k] != "d"),
        "a key still maps to the removed backend"
    );
}

#[test]
fn least_conn_prefers_the_backend_with_fewer_requests_in_flight() {
    let slow = Backend::start_with("slow", Behaviour::with_delay(Duration::from_millis(300)));
    let fast = Backend::start("fast");
    let (_sy, port) = start(
        json!({}),
        json!({ "algorithm": "least_conn" }),
        plain(&[&slow, &fast]),
    );
    // 20 overlapping requests, one connection each, started 15 ms apart so that the
    // slow backend's requests are still in flight while the later ones are balanced.
    let handles: Vec<_> = (0..20u64)
        .map(|i| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(15 * i));
                let r = get(port, "/");
                (
                    r.status,
                    r.header("x-backend").unwrap_or("none").to_string(),
                )
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for h in handles {
        let (status, name) = h.join().expect("client thread");
        assert_eq!(status, 200);
        *counts.entry(name).or_insert(0) += 1;
    }
    let s = counts.get("slow").copied().unwrap_or(0);
    let f = counts.get("fast").copied().unwrap_or(0);
    assert_eq!(s + f, 20, "{counts:?}");
    assert!(
        f >= 2 * s,
        "the fast backend should get at least twice the slow one's share: {counts:?}"
    );
}

#[test]
fn backups_get_nothing_while_a_primary_answers() {
    let [p1, p2, backup] = Backend::start_each(["p1", "p2", "backup"]);
    let (_sy, port) = start(
        json!({}),
        json!({}),
        vec![
            entry(p1.address(), json!({})),
            entry(backup.address(), json!({ "backup": true })),
            entry(p2.address(), json!({})),
        ],
    );
    let counts = spread(port, "/", 20);
    assert_eq!(counts.get("backup"), None, "{counts:?}");
    assert_eq!(backup.count(), 0);
    assert_eq!(counts.get("p1"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("p2"), Some(&10), "{counts:?}");
}

#[test]
fn backup_takes_the_traffic_when_every_primary_is_down() {
    let backup = Backend::start("backup");
    let (_sy, port) = start(
        json!({}),
        json!({ "retries": 1 }),
        vec![
            entry(format!("127.0.0.1:{}", closed_port()), json!({})),
            entry(backup.address(), json!({ "backup": true })),
        ],
    );
    for i in 0..5 {
        let r = get(port, "/");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.header("x-backend"), Some("backup"), "request {i}: {r:?}");
    }
}

#[test]
fn upstream_connections_are_kept_alive() {
    let b = Backend::start("a");
    // No health check, so every connection the backend counts is the proxy's.
    let (_sy, port) = start(
        json!({}),
        json!({ "health_check": { "kind": "none" } }),
        plain(&[&b]),
    );
    for _ in 0..20 {
        assert_eq!(get(port, "/").status, 200);
    }
    assert_eq!(b.count(), 20);
    assert!(
        b.connection_count() <= 3,
        "20 sequential requests used {} upstream connections",
        b.connection_count()
    );
}
