//! Running the HTTP cache (SPEC §11): admin purge by each form, purges reaching another
//! instance over `cluster.redis`, a reload keeping the cache, the four metrics, the
//! per-route hit ratio of `GET /api/v1/stats`, and the memory bound.
use crate::cache::origin::{Origin, Resource};
use crate::cache::{default_storage, get_h, x_cache};
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "cache-token-0123456789";

struct Ops {
    sy: Switchyard,
    port: u16,
    admin: u16,
    metrics: u16,
}

/// The configuration with the sections of `top` (a JSON object), an admin API, metrics,
/// and a cached route `static` to pool `p` over `origin`.
fn config(origin: &Origin, port: u16, admin: u16, metrics: u16, top: Value) -> Value {
    let base = web_config(
        port,
        json!([pool("p", &[origin.address()])]),
        json!([{ "name": "static", "pool": "p", "cache": {} }]),
    );
    let admin = with(
        admin_on(admin, &[TOKEN]),
        json!({ "admin": { "read_only_tokens": [format!("ro-{TOKEN}")] } }),
    );
    with(with(with(base, admin), metrics_on(metrics)), top)
}

fn start(origin: &Origin, top: Value) -> Ops {
    let (port, admin, metrics) = (listen_port(), listen_port(), listen_port());
    let sy = Switchyard::start_config(
        &config(origin, port, admin, metrics, top),
        &[port, admin, metrics],
    );
    Ops {
        sy,
        port,
        admin,
        metrics,
    }
}

fn purge(admin: u16, query: &str) -> (u16, Value) {
    let path = if query.is_empty() {
        "/api/v1/cache".to_string()
    } else {
        format!("/api/v1/cache?{query}")
    };
    let r = request(
        admin,
        "DELETE",
        &path,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    );
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

fn fill(o: &Origin, port: u16, urls: &[(&str, &str)]) {
    for (host, target) in urls {
        let path = target.split('?').next().unwrap();
        o.set(
            path,
            Resource::new(&[("Cache-Control", "max-age=600")], path),
        );
        let r = get_h(port, target, &[("Host", host)]);
        assert_eq!(r.status, 200, "{host}{target}: {r:?}");
        assert_eq!(
            x_cache(&get_h(port, target, &[("Host", host)])),
            "HIT",
            "{host}{target}"
        );
    }
}

#[test]
fn purge_by_url_by_prefix_and_everything_answers_how_many_went() {
    let o = Origin::start();
    let s = start(&o, default_storage());
    let urls = [
        ("a.test", "/page"),
        ("a.test", "/page?v=2"),
        ("a.test", "/img/1.png"),
        ("a.test", "/img/2.png"),
        ("a.test", "/imgx"),
        ("b.test", "/page"),
    ];
    fill(&o, s.port, &urls);

    assert_eq!(
        purge(s.admin, "host=A.test&path=/page"),
        (200, serde_json::json!({"purged": 2}))
    );
    assert_eq!(
        x_cache(&get_h(s.port, "/page", &[("Host", "a.test")])),
        "MISS"
    );
    assert_eq!(
        x_cache(&get_h(s.port, "/page", &[("Host", "b.test")])),
        "HIT",
        "other hosts keep theirs"
    );

    assert_eq!(
        purge(s.admin, "host=a.test&prefix=/img/"),
        (200, serde_json::json!({"purged": 2}))
    );
    assert_eq!(
        x_cache(&get_h(s.port, "/img/1.png", &[("Host", "a.test")])),
        "MISS"
    );
    assert_eq!(
        x_cache(&get_h(s.port, "/imgx", &[("Host", "a.test")])),
        "HIT"
    );

    let (status, body) = purge(s.admin, "");
    assert_eq!(status, 200);
    // /page (refilled), /img/1.png (refilled), /imgx, b.test/page.
    assert_eq!(body["purged"], 4, "{body}");
    assert_eq!(
        x_cache(&get_h(s.port, "/imgx", &[("Host", "a.test")])),
        "MISS"
    );

    let (status, body) = purge(s.admin, "path=/page");
    assert_eq!(status, 400, "{body}");
    let ro = request(
        s.admin,
        "DELETE",
        "/api/v1/cache",
        &[("Authorization", &format!("Bearer ro-{TOKEN}"))],
        b"",
    );
    assert_eq!(ro.status, 403, "a read-only token cannot purge");
}

#[test]
fn a_reload_keeps_the_cache() {
    let o = Origin::start();
    let s = start(&o, default_storage());
    fill(&o, s.port, &[("a.test", "/kept")]);
    s.sy.reload_counted(s.metrics);
    assert_eq!(
        x_cache(&get_h(s.port, "/kept", &[("Host", "a.test")])),
        "HIT"
    );
    assert_eq!(o.hits("/kept"), 1);
}

fn metric(port: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    crate::common::metric(port, name, labels).unwrap_or(0.0)
}

#[test]
fn the_cache_metrics_and_the_hit_ratio_per_route() {
    let o = Origin::start();
    let s = start(&o, default_storage());
    o.set(
        "/m",
        Resource::new(&[("Cache-Control", "max-age=600")], "metered"),
    );
    for _ in 0..4 {
        get_h(s.port, "/m", &[]);
    }
    request(s.port, "POST", "/m", &[], b"x");
    let hit = [("route", "static"), ("status", "hit")];
    assert_eq!(
        wait_metric(s.metrics, "switchyard_cache_requests_total", &hit, 3.0),
        3.0
    );
    let miss = [("route", "static"), ("status", "miss")];
    assert_eq!(
        metric(s.metrics, "switchyard_cache_requests_total", &miss),
        1.0
    );
    let bypass = [("route", "static"), ("status", "bypass")];
    assert_eq!(
        metric(s.metrics, "switchyard_cache_requests_total", &bypass),
        1.0
    );
    assert_eq!(metric(s.metrics, "switchyard_cache_objects", &[]), 1.0);
    let size = metric(s.metrics, "switchyard_cache_size_bytes", &[]);
    assert!(
        (7.0..4096.0).contains(&size),
        "size counts the object: {size}"
    );
    assert!(crate::common::metric(s.metrics, "switchyard_cache_evictions_total", &[]).is_some());

    let r = request(
        s.admin,
        "GET",
        "/api/v1/stats",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    );
    let stats: Value = serde_json::from_str(&r.body).unwrap();
    let route = stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "static")
        .cloned()
        .unwrap();
    assert_eq!(route["cache"]["hit_ratio"], 0.75, "{route}");
    assert_eq!(route["cache"]["bypassed"], 1);
    let dash = request(s.admin, "GET", "/", &[], b"");
    assert!(
        dash.body.contains("Cache hit"),
        "the dashboard has the column"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn filling_three_times_the_memory_bound_evicts_and_rss_stays_near_the_bound() {
    let o = Origin::start();
    let memory: u64 = 32 << 20;
    let s = start(
        &o,
        json!({ "cache": { "memory": memory, "max_object": "1MiB" } }),
    );
    let object = 64 * 1024;
    let body: Vec<u8> = (0..object).map(|i| b'a' + (i % 26) as u8).collect();
    for i in 0..8 {
        let p = format!("/warm{i}");
        o.set(
            &p,
            Resource::new(&[("Cache-Control", "max-age=600")], "").bytes(body.clone()),
        );
        get_h(s.port, &p, &[]);
    }
    let baseline = rss_kib(s.sy.pid());
    let count = (3 * memory as usize) / object;
    for i in 0..count {
        let p = format!("/fill{i}");
        o.set(
            &p,
            Resource::new(&[("Cache-Control", "max-age=600")], "").bytes(body.clone()),
        );
        let mut conn = HttpConn::new(s.port);
        let r = conn.get(&p, &[]).unwrap();
        assert_eq!(r.status, 200);
    }
    let size = metric(s.metrics, "switchyard_cache_size_bytes", &[]);
    assert!(size <= memory as f64, "size {size} within cache.memory");
    assert!(size > memory as f64 * 0.5, "the cache is in use: {size}");
    assert!(metric(s.metrics, "switchyard_cache_evictions_total", &[]) > 0.0);
    let bound = baseline + (memory / 1024) * 13 / 10;
    // Evicted bodies are freed at once, but jemalloc returns their pages to the system
    // only after `dirty_decay_ms` (5 s, src/main.rs): RSS is read until it is within the
    // bound or 8 s have passed.
    let mut rss = rss_kib(s.sy.pid());
    for _ in 0..16 {
        if rss <= bound {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        rss = rss_kib(s.sy.pid());
    }
    assert!(
        rss <= bound,
        "RSS {rss} KiB within baseline {baseline} KiB + 1.3 x {memory} B"
    );
}

#[test]
fn a_purge_reaches_the_other_instance_over_redis() {
    let Some(redis) = Redis::start() else { return };
    let o = Origin::start();
    let top = with(
        default_storage(),
        json!({ "cluster": { "redis": redis.url() } }),
    );
    let a = start(&o, top.clone());
    let b = start(&o, top);
    assert!(b
        .sy
        .wait_stderr("cache sync: connected to Redis", 1, Duration::from_secs(10)));
    assert!(a
        .sy
        .wait_stderr("cache sync: connected to Redis", 1, Duration::from_secs(10)));
    for s in [&a, &b] {
        fill(&o, s.port, &[("a.test", "/shared"), ("a.test", "/other")]);
    }
    assert_eq!(
        purge(a.admin, "host=a.test&path=/shared"),
        (200, serde_json::json!({"purged": 1}))
    );
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            metric(b.metrics, "switchyard_cache_objects", &[]) == 1.0
        }),
        "B dropped its copy; stderr:\n{}",
        b.sy.stderr()
    );
    assert_eq!(
        x_cache(&get_h(b.port, "/shared", &[("Host", "a.test")])),
        "MISS"
    );
    assert_eq!(
        x_cache(&get_h(b.port, "/other", &[("Host", "a.test")])),
        "HIT"
    );
}
