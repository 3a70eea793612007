//! Load-balancing algorithms with weights, backups and upstream keep-alive
//! (SPEC §3 pools, §4 least_conn / consistent_hash, §9 settled details).
mod common;
use common::*;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// A config with one listener on `port` and one pool `p` (every route goes there).
/// `pool_extra` is indented pool keys; `backends` are (address, extra backend keys).
fn config(port: u16, server_extra: &str, pool_extra: &str, backends: &[(String, &str)]) -> String {
    let mut b = String::new();
    for (addr, extra) in backends {
        b.push_str(&format!("      - address: {addr}\n"));
        for line in extra.lines().filter(|l| !l.trim().is_empty()) {
            b.push_str(&format!("        {}\n", line.trim()));
        }
    }
    let server = if server_extra.is_empty() {
        TEST_SERVER.to_string()
    } else {
        TEST_SERVER.replacen("server:\n", &format!("server:\n{server_extra}\n"), 1)
    };
    format!(
        "{server}
listeners:
  - name: web
    listen: 127.0.0.1:{port}
pools:
  - name: p
{pool_extra}
    backends:
{b}routes:
  - name: all
    pool: p
"
    )
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
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let port = free_port();
    let yaml = config(
        port,
        "",
        "    algorithm: round_robin",
        &[(a.address(), "weight: 3"), (b.address(), "weight: 1")],
    );
    let _sy = Switchyard::start(&yaml, &[port]);
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
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let port = free_port();
    let yaml = config(
        port,
        "",
        "",
        &[(a.address(), "weight: 5"), (b.address(), "weight: 5")],
    );
    let _sy = Switchyard::start(&yaml, &[port]);
    let counts = spread(port, "/", 40);
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&20), "{counts:?}");
}

#[test]
fn random_respects_weights() {
    let (a, b) = (Backend::start("heavy"), Backend::start("light"));
    let port = free_port();
    let yaml = config(
        port,
        "",
        "    algorithm: random",
        &[(a.address(), "weight: 3"), (b.address(), "weight: 1")],
    );
    let _sy = Switchyard::start(&yaml, &[port]);
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
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let port = free_port();
    let yaml = config(
        port,
        "",
        "    algorithm: ip_hash",
        &[(a.address(), ""), (b.address(), ""), (c.address(), "")],
    );
    let _sy = Switchyard::start(&yaml, &[port]);
    let counts = spread(port, "/", 20);
    assert_eq!(counts.len(), 1, "one client, one backend: {counts:?}");
}

#[test]
fn ip_hash_uses_the_forwarded_client_ip_from_a_trusted_proxy() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let port = free_port();
    let yaml = config(
        port,
        "  trusted_proxies: [127.0.0.1/32]",
        "    algorithm: ip_hash",
        &[(a.address(), ""), (b.address(), ""), (c.address(), "")],
    );
    let _sy = Switchyard::start(&yaml, &[port]);
    let mut used = HashSet::new();
    for i in 0..30u32 {
        let ip = format!(
            "{}.{}.{}.{}",
            11 + i * 7 % 200,
            (i * 37) % 256,
            (i * 91) % 256,
            1 + i
        );
        let first = backend_for(port, "/", &[("X-Forwarded-For", &ip)]);
        for _ in 0..2 {
            assert_eq!(
                backend_for(port, "/", &[("X-Forwarded-For", &ip)]),
                first,
                "client {ip} moved"
            );
        }
        used.insert(first);
    }
    assert!(
        used.len() > 1,
        "30 different clients all on one backend: {used:?}"
    );
}

fn hash_pool(port: u16, key: &str, backends: &[&Backend]) -> String {
    let list: Vec<(String, &str)> = backends.iter().map(|b| (b.address(), "")).collect();
    config(
        port,
        "",
        &format!("    algorithm: consistent_hash\n    hash_key: \"{key}\""),
        &list,
    )
}

/// For each of `keys`, asserts 3 requests built by `req` reach one backend; returns the
/// number of distinct backends over all keys.
fn stable_and_spread(keys: &[String], mut req: impl FnMut(&str) -> String) -> usize {
    let mut used = HashSet::new();
    for k in keys {
        let first = req(k);
        for _ in 0..2 {
            assert_eq!(req(k), first, "key {k} moved");
        }
        used.insert(first);
    }
    used.len()
}

#[test]
fn consistent_hash_on_a_header() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let port = free_port();
    let _sy = Switchyard::start(
        &hash_pool(port, "header:X-User", &[&bs[0], &bs[1], &bs[2]]),
        &[port],
    );
    let keys: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let used = stable_and_spread(&keys, |k| backend_for(port, "/", &[("X-User", k)]));
    assert_eq!(used, 3, "40 users should reach all 3 backends");
}

#[test]
fn consistent_hash_on_a_cookie() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let port = free_port();
    let _sy = Switchyard::start(
        &hash_pool(port, "cookie:session", &[&bs[0], &bs[1], &bs[2]]),
        &[port],
    );
    let keys: Vec<String> = (0..40).map(|i| format!("s{i}x")).collect();
    let mut n = 0u32;
    let used = stable_and_spread(&keys, |k| {
        // Other cookies around it change on every request and must not matter.
        n += 1;
        let cookie = format!("theme=t{n}; session={k}; lang=l{n}");
        backend_for(port, "/", &[("Cookie", &cookie)])
    });
    assert!(used > 1, "40 sessions all on one backend");
}

#[test]
fn consistent_hash_on_the_uri() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let port = free_port();
    let _sy = Switchyard::start(&hash_pool(port, "uri", &[&bs[0], &bs[1], &bs[2]]), &[port]);
    let keys: Vec<String> = (0..40).map(|i| format!("/item/{i}?v={i}")).collect();
    let used = stable_and_spread(&keys, |k| backend_for(port, k, &[]));
    assert!(used > 1, "40 URIs all on one backend");
}

#[test]
fn consistent_hash_on_the_path() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let port = free_port();
    let _sy = Switchyard::start(&hash_pool(port, "path", &[&bs[0], &bs[1], &bs[2]]), &[port]);
    let keys: Vec<String> = (0..40).map(|i| format!("/doc/{i}")).collect();
    let used = stable_and_spread(&keys, |k| backend_for(port, k, &[]));
    assert!(used > 1, "40 paths all on one backend");
}

#[test]
fn consistent_hash_moves_few_keys_when_a_backend_leaves() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
        Backend::start("d"),
    ];
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let map = |port: u16| -> HashMap<String, String> {
        keys.iter()
            .map(|k| (k.clone(), backend_for(port, "/", &[("X-User", k)])))
            .collect()
    };

    let port = free_port();
    let before = {
        let _sy = Switchyard::start(
            &hash_pool(port, "header:X-User", &[&bs[0], &bs[1], &bs[2], &bs[3]]),
            &[port],
        );
        map(port)
    };
    let on_d = before.values().filter(|v| *v == "d").count();
    assert!(on_d > 0, "no key on the backend that leaves: {before:?}");
    let per_backend: HashSet<&String> = before.values().collect();
    assert_eq!(per_backend.len(), 4, "200 keys should reach all 4 backends");

    let port = free_port();
    let _sy = Switchyard::start(
        &hash_pool(port, "header:X-User", &[&bs[0], &bs[1], &bs[2]]),
        &[port],
    );
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
    let port = free_port();
    let yaml = config(
        port,
        "",
        "    algorithm: least_conn",
        &[(slow.address(), ""), (fast.address(), "")],
    );
    let _sy = Switchyard::start(&yaml, &[port]);
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
    let (p1, p2, backup) = (
        Backend::start("p1"),
        Backend::start("p2"),
        Backend::start("backup"),
    );
    let port = free_port();
    let yaml = config(
        port,
        "",
        "",
        &[
            (p1.address(), ""),
            (backup.address(), "backup: true"),
            (p2.address(), ""),
        ],
    );
    let _sy = Switchyard::start(&yaml, &[port]);
    let counts = spread(port, "/", 20);
    assert_eq!(counts.get("backup"), None, "{counts:?}");
    assert_eq!(backup.count(), 0);
    assert_eq!(counts.get("p1"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("p2"), Some(&10), "{counts:?}");
}

#[test]
fn backup_takes_the_traffic_when_every_primary_is_down() {
    let backup = Backend::start("backup");
    let port = free_port();
    let yaml = config(
        port,
        "",
        "    retries: 1",
        &[
            (format!("127.0.0.1:{}", closed_port()), ""),
            (backup.address(), "backup: true"),
        ],
    );
    let _sy = Switchyard::start(&yaml, &[port]);
    for i in 0..5 {
        let r = get(port, "/");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.header("x-backend"), Some("backup"), "request {i}: {r:?}");
    }
}

#[test]
fn upstream_connections_are_kept_alive() {
    let b = Backend::start("a");
    let port = free_port();
    // No health check, so every connection the backend counts is the proxy's.
    let yaml = config(
        port,
        "",
        "    health_check: {kind: none}",
        &[(b.address(), "")],
    );
    let _sy = Switchyard::start(&yaml, &[port]);
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
