//! State shared by several instances through `cluster.redis` (SPEC §3, §5):
//! cluster-wide rate limits (two Switchyard instances sharing one private Redis hold
//! one combined limit, also under unequal load, leasing tokens in batches rather than
//! asking Redis once a request; with Redis gone each falls back to its local limit without an
//! error or a hang, and the shared limit resumes once Redis is back) and admin API
//! changes (made on one instance, applied by every other within a second, picked up by
//! an instance that starts later, and not lost while Redis is down). Skipped when
//! redis-server is not installed.
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Redis connections one instance keeps: the rate limits' link (one multiplexed
/// connection for every ask, background lease refresh and give-back), and the admin
/// sync's command and subscription connections.
const CONNECTIONS_PER_INSTANCE: usize = 3;

/// One instance: listener on `port`, `cluster.redis: url` (with `cluster.timeout` when
/// given), pool `p` with backend `b`, and `routes` (a JSON list).
fn config(port: u16, url: &str, timeout: Option<&str>, b: &Backend, routes: &Value) -> Value {
    let mut c = with(
        config_of(
            json!([listener("web", port)]),
            json!([pool("p", &[b.address()])]),
            routes.clone(),
        ),
        json!({ "cluster": { "redis": url } }),
    );
    if let Some(t) = timeout {
        c["cluster"]["timeout"] = json!(t);
    }
    c
}

/// A route `name` on path prefix `prefix` with `rate_limit: limit` and `scope: cluster`.
fn cluster_route(name: &str, prefix: &str, limit: Value) -> Value {
    let limit = with(limit, json!({ "scope": "cluster" }));
    json!({ "name": name, "pool": "p", "path_prefix": prefix, "rate_limit": limit })
}

/// Two instances A and B with the same routes, both connected to `redis`.
fn start_pair(redis: &Redis, b: &Backend, routes: &Value) -> (Switchyard, u16, Switchyard, u16) {
    let pair = start_pair_unchecked(redis, b, routes);
    wait_for_clients(redis, 2, &[&pair.0, &pair.2]);
    pair
}

/// Two instances A and B with the same routes, configured with `redis` (whether it
/// runs or not).
fn start_pair_unchecked(
    redis: &Redis,
    b: &Backend,
    routes: &Value,
) -> (Switchyard, u16, Switchyard, u16) {
    let (pa, pb) = (listen_port(), listen_port());
    // A Redis answer slower than cluster.timeout (20 ms by default) sends an instance to
    // its local limit for a second, which a loaded test machine can cause on its own; the
    // tests here are about a Redis that answers, stops or comes back, not a slow one.
    let slow_machine = Some("250ms");
    let a = Switchyard::start_config(&config(pa, &redis.url(), slow_machine, b, routes), &[pa]);
    let bb = Switchyard::start_config(&config(pb, &redis.url(), slow_machine, b, routes), &[pb]);
    (a, pa, bb, pb)
}

/// How many clients Redis has connected (this test's own included).
fn connected_clients(redis: &Redis) -> usize {
    redis
        .info("clients", "connected_clients")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits (15 s at most) until every connection of `n` instances is open in Redis
/// (besides the one asking).
fn wait_for_clients(redis: &Redis, n: usize, instances: &[&Switchyard]) {
    let want = n * CONNECTIONS_PER_INSTANCE;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let clients = connected_clients(redis);
        if clients > want {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = instances.iter().map(|s| s.stderr()).collect();
            panic!("only {clients} Redis clients (want {want} + this test); stderr:\n{logs:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a paced run of requests saw.
struct Run {
    /// Per instance (A, B): statuses in order.
    statuses: [Vec<u16>; 2],
    /// From the first request sent to the last one answered.
    duration: Duration,
    /// The longest wait for an answer (printed, not asserted).
    slowest: Duration,
}

impl Run {
    fn admitted(&self, i: usize) -> usize {
        self.statuses[i].iter().filter(|s| **s == 200).count()
    }
    fn total_admitted(&self) -> usize {
        self.admitted(0) + self.admitted(1)
    }
}

/// Sends `n` GETs of `path` evenly over `over`, alternating instances A and B (one
/// keep-alive connection each). Every request must be answered (5 s read timeout) with
/// 200 or 429, never anything else.
fn paced(ports: [u16; 2], path: &str, n: usize, over: Duration) -> Run {
    paced_by(ports, path, n, over, |i| i % 2)
}

/// `paced`, request `i` going to instance `which(i)` (0: A, 1: B).
fn paced_by(
    ports: [u16; 2],
    path: &str,
    n: usize,
    over: Duration,
    which: impl Fn(usize) -> usize,
) -> Run {
    let mut conns = [HttpConn::new(ports[0]), HttpConn::new(ports[1])];
    let mut statuses: [Vec<u16>; 2] = [Vec::new(), Vec::new()];
    let step = over / n as u32;
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    for i in 0..n {
        if let Some(d) = (start + step * i as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let which = which(i);
        let sent = Instant::now();
        let r = conns[which]
            .get(path, &[])
            .unwrap_or_else(|e| panic!("request {i} to instance {which} got no answer: {e}"));
        assert!(
            r.status == 200 || r.status == 429,
            "request {i} to instance {which}: {} {:?}",
            r.status,
            r.body
        );
        if r.status == 429 {
            let retry = r.header("retry-after").and_then(|v| v.parse::<u64>().ok());
            assert!(
                retry.is_some_and(|s| s >= 1),
                "429 without Retry-After in whole seconds: {r:?}"
            );
        }
        slowest = slowest.max(sent.elapsed());
        statuses[which].push(r.status);
    }
    Run {
        statuses,
        duration: start.elapsed(),
        slowest,
    }
}

/// `burst + rate × seconds`: what a token bucket admits under steady overload.
fn expected(rate: u32, burst: u32, d: Duration) -> f64 {
    burst as f64 + rate as f64 * d.as_secs_f64()
}

/// 200 requests to `/lim` over 3 s through both instances (`paced`): together they
/// admit one shared limit of rate 10, burst 10, within 10 % (`what` in the failure).
/// Printed under `label`.
fn assert_shared_limit(ports: [u16; 2], label: &str, what: &str) {
    let run = paced(ports, "/lim", 200, Duration::from_secs(3));
    let want = expected(10, 10, run.duration);
    eprintln!(
        "{label}: A admitted {}, B admitted {} in {:.2?} (want {want:.1} in all)",
        run.admitted(0),
        run.admitted(1),
        run.duration
    );
    assert_within_10_percent(run.total_admitted(), want, what);
}

/// `/lim` (rate 10, burst 10, one bucket per route) and `/probe` (rate 1000), cluster-wide.
fn lim_and_probe_routes() -> Value {
    json!([
        cluster_route(
            "lim",
            "/lim",
            json!({ "rate": 10, "burst": 10, "key": "route" })
        ),
        cluster_route("probe", "/probe", json!({ "rate": 1000, "key": "route" })),
    ])
}

fn assert_within_10_percent(got: usize, want: f64, what: &str) {
    let err = (got as f64 - want).abs() / want;
    assert!(
        err <= 0.10,
        "{what}: admitted {got}, want {want:.1} ± 10 % (off by {:.1} %)",
        err * 100.0
    );
}

#[test]
fn two_instances_sharing_redis_hold_one_combined_limit() {
    let Some(redis) = Redis::start() else { return };
    let b = Backend::start("a");
    let routes = json!([
        cluster_route(
            "lim",
            "/lim",
            json!({ "rate": 20, "burst": 20, "key": "route" })
        ),
        cluster_route(
            "keyed",
            "/keyed",
            json!({ "rate": 5, "key": "header:X-Api-Key", "algorithm": "sliding_window" }),
        ),
    ]);
    let (a, pa, bb, pb) = start_pair(&redis, &b, &routes);

    // 200 requests in 3 s alternating A and B: one bucket of 20 refilled at 20/s in all,
    // not one per instance (which would admit about twice as many).
    let run = paced([pa, pb], "/lim", 200, Duration::from_secs(3));
    let want = expected(20, 20, run.duration);
    eprintln!(
        "combined: A admitted {}, B admitted {} in {:.2?} (want {want:.1} in all)",
        run.admitted(0),
        run.admitted(1),
        run.duration
    );
    assert_within_10_percent(run.total_admitted(), want, "two instances, one limit");
    assert!(
        run.admitted(0) > 0 && run.admitted(1) > 0,
        "both instances admit their share"
    );
    assert_eq!(
        b.count(),
        run.total_admitted(),
        "only admitted requests are proxied"
    );

    // Per-key sliding window across instances: exactly `rate` per key in a second.
    for key in ["key-1", "key-2"] {
        let mut conns = [HttpConn::new(pa), HttpConn::new(pb)];
        let statuses: Vec<u16> = (0..10)
            .map(|i| {
                conns[i % 2]
                    .get("/keyed", &[("X-Api-Key", key)])
                    .unwrap_or_else(|e| panic!("{key} request {i}: {e}"))
                    .status
            })
            .collect();
        let admitted = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(
            admitted, 5,
            "{key}: 5 per rolling second over A and B: {statuses:?}"
        );
        assert!(
            statuses[5..].iter().all(|s| *s == 429),
            "{key}: {statuses:?}"
        );
    }
    drop((a, bb));
}

/// Redis's count of script calls (EVALSHA and EVAL) so far.
fn script_calls(redis: &Redis) -> usize {
    ["cmdstat_evalsha", "cmdstat_eval"]
        .iter()
        .filter_map(|c| redis.info("commandstats", c))
        .filter_map(|v| {
            v.split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|n| n.parse::<usize>().ok())
        })
        .sum()
}

#[test]
fn two_instances_under_unequal_load_admit_one_shared_rate() {
    let Some(redis) = Redis::start() else { return };
    let b = Backend::start("a");
    // burst defaults to rate: a bucket of one second's worth.
    let routes = json!([cluster_route(
        "lim",
        "/lim",
        json!({ "rate": 100, "key": "route" })
    )]);
    let (a, pa, bb, pb) = start_pair(&redis, &b, &routes);

    // 200 requests a second for 10 s, 70 % through A and 30 % through B: twice the
    // shared rate. Together they admit burst + rate × T (the bound in
    // docs/OPERATIONS.md), not one limit each and not less because of leases held.
    let run = paced_by([pa, pb], "/lim", 2000, Duration::from_secs(10), |i| {
        usize::from(i % 10 >= 7)
    });
    let want = expected(100, 100, run.duration);
    eprintln!(
        "70/30: A admitted {} of {}, B admitted {} of {} in {:.2?} (want {want:.1} in all), \
         slowest answer {:.2?}",
        run.admitted(0),
        run.statuses[0].len(),
        run.admitted(1),
        run.statuses[1].len(),
        run.duration,
        run.slowest
    );
    assert_within_10_percent(run.total_admitted(), want, "70/30 over two instances");
    assert!(
        run.admitted(0) > 0 && run.admitted(1) > 0,
        "both instances admit their share"
    );
    assert_eq!(
        b.count(),
        run.total_admitted(),
        "only admitted requests are proxied"
    );
    drop((a, bb));
}

#[test]
fn a_limit_far_from_its_end_is_not_asked_of_redis_per_request() {
    let Some(redis) = Redis::start() else { return };
    let b = Backend::start("a");
    let routes = json!([cluster_route(
        "big",
        "/big",
        json!({ "rate": 100000, "key": "route" })
    )]);
    let (a, pa, bb, pb) = start_pair(&redis, &b, &routes);
    let before = script_calls(&redis);

    // 2 000 requests through both instances, as fast as one client sends them: all
    // admitted, and each instance asks Redis for batches of tokens, not once a request.
    let mut conns = [HttpConn::new(pa), HttpConn::new(pb)];
    let n = 2000;
    for i in 0..n {
        let r = conns[i % 2]
            .get("/big", &[])
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(
            r.status, 200,
            "request {i} under a limit of 100 000/s: {r:?}"
        );
    }
    let calls = script_calls(&redis) - before;
    eprintln!("{n} requests, {calls} Redis script calls");
    assert!(
        calls <= n / 4,
        "{calls} Redis calls for {n} requests: the instances do not lease tokens in batches"
    );
    let log = format!("{}{}", a.stderr(), bb.stderr());
    assert!(!log.contains("rate limits are local"), "{log}");
    assert!(
        redis
            .command(&["EXISTS", "switchyard:rl:big:route"])
            .as_deref()
            == Ok(":1"),
        "the limit is kept in Redis"
    );
}

#[test]
fn redis_down_falls_back_to_local_limits_and_recovers() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let b = Backend::start("a");
    let routes = lim_and_probe_routes();
    let (a, pa, bb, pb) = start_pair(&redis, &b, &routes);
    let ports = [pa, pb];

    // Shared while Redis is up.
    let run = paced(ports, "/lim", 100, Duration::from_secs(2));
    let shared = expected(10, 10, run.duration);
    assert_within_10_percent(run.total_admitted(), shared, "Redis up");

    // Redis dies: every request is still answered (200 or 429, checked in `paced`),
    // each instance now limiting on its own.
    redis.stop();
    let run = paced(ports, "/lim", 200, Duration::from_secs(3));
    let local = expected(10, 10, run.duration);
    eprintln!(
        "Redis down: A admitted {}, B admitted {} in {:.2?} (local limit {local:.1} each)",
        run.admitted(0),
        run.admitted(1),
        run.duration
    );
    assert_local_limits(&run, local, "Redis down");
    // The loss of Redis is logged.
    for (s, name) in [(&a, "A"), (&bb, "B")] {
        let log = s.stderr();
        assert!(
            log.lines()
                .any(|l| l.contains(&redis.port.to_string()) && l.contains("WARN")),
            "instance {name} logged no warning about Redis; stderr:\n{log}"
        );
    }

    // Redis is back (empty, same port): once both instances use it again the limit is
    // shared again. Probe traffic on another route drives the reconnection.
    redis.launch();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        probe_for(ports, Duration::from_millis(200));
        let clients = connected_clients(&redis);
        if clients > 2 * CONNECTIONS_PER_INSTANCE {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the instances did not reconnect to Redis within 20 s; stderr A:\n{}\nB:\n{}",
            a.stderr(),
            bb.stderr()
        );
    }
    // Past the fallback backoff, with the probe still going through both instances.
    probe_for(ports, Duration::from_millis(1500));
    assert_shared_limit(ports, "Redis back", "Redis restarted");
}

/// Sends `/probe` through both instances every 100 ms for `d` (drives reconnection and
/// lets the fallback backoff pass without touching the measured route).
fn probe_for(ports: [u16; 2], d: Duration) {
    let mut probes = [HttpConn::new(ports[0]), HttpConn::new(ports[1])];
    let until = Instant::now() + d;
    while Instant::now() < until {
        for c in probes.iter_mut() {
            let r = c.get("/probe", &[]).expect("probe request answered");
            assert_eq!(r.status, 200, "probe: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Per instance: admitted about its own local limit `local` (requests kept flowing, the
/// local limit applied).
fn assert_local_limits(run: &Run, local: f64, what: &str) {
    for (i, name) in ["A", "B"].iter().enumerate() {
        let got = run.admitted(i);
        assert!(
            got as f64 <= local * 1.1 + 1.0,
            "{what}: instance {name} admitted {got}, over its local limit {local:.1}"
        );
        assert!(
            got as f64 >= local * 0.5,
            "{what}: instance {name} admitted only {got} (local limit {local:.1}): \
             requests must keep flowing"
        );
        assert!(
            run.statuses[i].contains(&429),
            "{what}: instance {name}: the local limit applies"
        );
    }
}

#[test]
fn a_frozen_redis_neither_hangs_nor_fails_requests() {
    let Some(redis) = Redis::start() else { return };
    let b = Backend::start("a");
    let routes = lim_and_probe_routes();
    let (_a, pa, _b, pb) = start_pair(&redis, &b, &routes);
    let ports = [pa, pb];

    // SIGSTOP: the connections stay open and nothing answers. Every request is still
    // answered (200 or 429 within the client's 5 s timeout), under the local limits.
    redis.freeze();
    let run = paced(ports, "/lim", 200, Duration::from_secs(3));
    let local = expected(10, 10, run.duration);
    eprintln!(
        "Redis frozen: A admitted {}, B admitted {} in {:.2?}, slowest answer {:.2?}",
        run.admitted(0),
        run.admitted(1),
        run.duration,
        run.slowest
    );
    assert_local_limits(&run, local, "Redis frozen");

    redis.thaw();
    probe_for(ports, Duration::from_millis(2500));
    assert_shared_limit(ports, "Redis thawed", "Redis thawed");
}

#[test]
fn instances_started_while_redis_is_down_share_the_limit_once_it_is_up() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    redis.stop();
    let b = Backend::start("a");
    let routes = lim_and_probe_routes();
    let (a, pa, bb, pb) = start_pair_unchecked(&redis, &b, &routes);
    let ports = [pa, pb];

    let run = paced(ports, "/lim", 100, Duration::from_secs(2));
    assert_local_limits(&run, expected(10, 10, run.duration), "no Redis yet");

    redis.launch();
    wait_for_clients(&redis, 2, &[&a, &bb]);
    probe_for(ports, Duration::from_millis(1500));
    assert_shared_limit(ports, "Redis up late", "Redis came up after the start");
}

#[test]
fn a_reload_that_changes_cluster_redis_is_applied_or_logged() {
    let Some(r1) = Redis::start() else { return };
    let Some(r2) = Redis::start() else { return };
    let b = Backend::start("a");
    let (port, mport) = (listen_port(), listen_port());
    let routes = json!([cluster_route(
        "lim",
        "/lim",
        json!({ "rate": 100, "key": "route" })
    )]);
    let metrics = metrics_on(mport);
    let with_metrics = |url: &str| with(config(port, url, None, &b, &routes), metrics.clone());
    let sy = Switchyard::start_config(&with_metrics(&r1.url()), &[port, mport]);
    wait_for_clients(&r1, 1, &[&sy]);
    let key = "switchyard:rl:lim:route";
    assert_eq!(get(port, "/lim").status, 200);
    assert_eq!(
        r1.command(&["EXISTS", key]).as_deref(),
        Ok(":1"),
        "limit kept in Redis 1"
    );

    let logged_before = sy.stderr().len();
    sy.rewrite_config(&config_text(&with_metrics(&r2.url())));
    sy.reload_counted(mport);

    // Either the new Redis is used from now on (allowing a few seconds to connect)...
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut applied = false;
    while Instant::now() < deadline && !applied {
        let _ = get(port, "/lim");
        applied = r2.command(&["EXISTS", key]).as_deref() == Ok(":1");
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...or the reload says that the change needs a restart or an upgrade, as a
    // listener address change does (SPEC §2).
    let log = sy.stderr();
    let after = &log[logged_before.min(log.len())..];
    let logged = after.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        (l.contains("cluster") || l.contains("redis"))
            && (l.contains("restart") || l.contains("upgrade"))
    });
    assert!(
        applied || logged,
        "cluster.redis changed from {} to {} on SIGHUP: the new Redis is not used and \
         nothing says the change needs a restart; stderr after the reload:\n{after}",
        r1.url(),
        r2.url()
    );
}

// ------------------------------------------------------------ admin API changes

/// The longest an admin change may take to reach another instance (issue #9).
const PROPAGATION: Duration = Duration::from_secs(1);

/// One instance for the admin-sync tests: listener `port`, admin API on loopback
/// `admin` (no token needed there) with its own state file, pool `p` over `backends`.
fn sync_config(port: u16, admin: u16, url: &str, backends: &[&Backend]) -> Value {
    let addresses: Vec<String> = backends.iter().map(|b| b.address()).collect();
    let config = web_config(
        port,
        json!([pool("p", &addresses)]),
        json!([route("all", "p")]),
    );
    let cluster = with(admin_on(admin, &[]), json!({ "cluster": { "redis": url } }));
    with(config, cluster)
}

/// A running instance with its listener and admin ports.
struct Instance {
    sy: Switchyard,
    port: u16,
    admin: u16,
}

impl Instance {
    /// Starts an instance (ports up); does not wait for Redis.
    fn start(redis: &Redis, backends: &[&Backend]) -> Instance {
        let (port, admin) = (listen_port(), listen_port());
        let sy = Switchyard::start_config(
            &sync_config(port, admin, &redis.url(), backends),
            &[port, admin],
        );
        Instance { sy, port, admin }
    }

    /// Waits (10 s at most) until the admin sync has connected `times` times in all.
    fn wait_synced(&self, times: usize) {
        assert!(
            self.sy.wait_stderr(
                "admin sync: connected to Redis",
                times,
                Duration::from_secs(10)
            ),
            "the admin sync did not connect; stderr:\n{}",
            self.sy.stderr()
        );
    }

    fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("Content-Type", "application/json")]
        };
        request(self.admin, method, path, headers, body.as_bytes())
    }

    /// `GET /api/v1/pools/p` as JSON.
    fn pool(&self) -> Value {
        let r = self.admin("GET", "/api/v1/pools/p", "");
        assert_eq!(r.status, 200, "GET pool p: {r:?}");
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
    }

    /// Polls the pool every 50 ms (3 s at most) until `ready` holds; returns how long
    /// that took, `None` if it never did.
    fn wait_pool(&self, ready: impl Fn(&Value) -> bool) -> Option<Duration> {
        let start = Instant::now();
        for _ in 0..60 {
            if ready(&self.pool()) {
                return Some(start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(3) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `X-Backend` of `n` requests through the listener (each asserted 200).
    fn served_by(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let r = get(self.port, "/");
                assert_eq!(r.status, 200, "request {i}: {r:?}");
                r.header("x-backend").unwrap_or("none").to_string()
            })
            .collect()
    }
}

fn is_draining(pool: &Value, address: &str) -> bool {
    backend_in(pool, address).is_some_and(|b| b["draining"] == true)
}

fn drain(i: &Instance, address: &str) {
    let r = i.admin(
        "PATCH",
        &format!("/api/v1/pools/p/backends/{address}"),
        r#"{"draining":true}"#,
    );
    assert_eq!(r.status, 200, "drain {address}: {r:?}");
}

#[test]
fn a_drain_on_one_instance_reaches_the_others_within_a_second() {
    let Some(redis) = Redis::start() else { return };
    let [b1, b2] = Backend::start_each(["b1", "b2"]);
    let a = Instance::start(&redis, &[&b1, &b2]);
    let b = Instance::start(&redis, &[&b1, &b2]);
    a.wait_synced(1);
    b.wait_synced(1);
    let target = b1.address();
    assert!(!is_draining(&b.pool(), &target), "nothing drained yet");
    let mut before = b.served_by(4);
    before.sort();
    before.dedup();
    assert_eq!(before, ["b1", "b2"], "B balances over both backends");

    drain(&a, &target);
    let seen = b.wait_pool(|p| is_draining(p, &target));
    let Some(delay) = seen else {
        panic!(
            "B never showed {target} draining; A stderr:\n{}\nB stderr:\n{}",
            a.sy.stderr(),
            b.sy.stderr()
        );
    };
    eprintln!("drain made on A seen on B after {delay:?}");
    assert!(
        delay <= PROPAGATION,
        "B showed the drain after {delay:?}, more than {PROPAGATION:?}"
    );
    // B's traffic follows: nothing new reaches the drained backend.
    let b1_before = b1.count();
    assert!(
        b.served_by(10).iter().all(|n| n == "b2"),
        "B still sends traffic to the drained backend"
    );
    assert_eq!(
        b1.count(),
        b1_before,
        "the drained backend got new requests"
    );
    // B keeps the change in its own state file, as for its own API changes.
    let state = std::fs::read_to_string(b.sy.dir.path().join("state.json")).unwrap_or_default();
    assert!(
        state.contains(&target),
        "B's state file does not hold the drain: {state:?}"
    );

    // An instance started after the change has it as soon as it is up.
    let c = Instance::start(&redis, &[&b1, &b2]);
    let up = Instant::now();
    let seen = c.wait_pool(|p| is_draining(p, &target));
    assert!(
        seen.is_some(),
        "C never showed {target} draining; stderr:\n{}",
        c.sy.stderr()
    );
    let delay = up.elapsed();
    eprintln!("C, started after the drain, showed it {delay:?} after its ports were up");
    assert!(
        delay <= PROPAGATION,
        "C showed the drain {delay:?} after starting, more than {PROPAGATION:?}"
    );
    assert!(
        c.served_by(6).iter().all(|n| n == "b2"),
        "C sends traffic to the drained backend"
    );
    drop((a, b, c));
}

#[test]
fn a_backend_added_and_deleted_on_one_instance_is_added_and_deleted_on_another() {
    let Some(redis) = Redis::start() else { return };
    let [b1, extra] = Backend::start_each(["b1", "extra"]);
    let a = Instance::start(&redis, &[&b1]);
    let b = Instance::start(&redis, &[&b1]);
    a.wait_synced(1);
    b.wait_synced(1);
    let address = extra.address();

    let r = b.admin(
        "POST",
        "/api/v1/pools/p/backends",
        &format!(r#"{{"address":"{address}","weight":1}}"#),
    );
    assert_eq!(r.status, 201, "add on B: {r:?}");
    let added = a.wait_pool(|p| backend_in(p, &address).is_some());
    let Some(delay) = added else {
        panic!(
            "A never showed the backend added on B; stderr A:\n{}\nB:\n{}",
            a.sy.stderr(),
            b.sy.stderr()
        );
    };
    assert!(delay <= PROPAGATION, "added on A after {delay:?}");
    assert_eq!(
        backend_in(&a.pool(), &address).map(|b| b["weight"].clone()),
        Some(Value::from(1)),
        "the weight given on B"
    );
    let mut names = a.served_by(6);
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        ["b1", "extra"],
        "A sends traffic to the added backend"
    );

    let r = b.admin("DELETE", &format!("/api/v1/pools/p/backends/{address}"), "");
    assert_eq!(r.status, 204, "delete on B: {r:?}");
    let gone = a.wait_pool(|p| backend_in(p, &address).is_none());
    let Some(delay) = gone else {
        panic!(
            "A still shows the backend deleted on B; stderr A:\n{}",
            a.sy.stderr()
        );
    };
    assert!(delay <= PROPAGATION, "deleted on A after {delay:?}");
    let extra_before = extra.count();
    assert!(a.served_by(6).iter().all(|n| n == "b1"));
    assert_eq!(
        extra.count(),
        extra_before,
        "the deleted backend got requests"
    );
    drop((a, b));
}

#[test]
fn a_change_made_while_redis_is_down_is_shared_once_it_is_back() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let [b1, b2] = Backend::start_each(["b1", "b2"]);
    let a = Instance::start(&redis, &[&b1, &b2]);
    let b = Instance::start(&redis, &[&b1, &b2]);
    a.wait_synced(1);
    b.wait_synced(1);
    let target = b1.address();

    redis.stop();
    let lost = "admin sync: Redis at";
    for i in [&a, &b] {
        assert!(
            i.sy.wait_stderr(lost, 1, Duration::from_secs(5)),
            "no warning that Redis went away; stderr:\n{}",
            i.sy.stderr()
        );
    }
    // The API keeps working on its own instance.
    drain(&a, &target);
    assert!(is_draining(&a.pool(), &target));
    // Several reconnection attempts pass; the loss is logged once.
    std::thread::sleep(Duration::from_millis(2500));

    // Redis comes back empty: A's change is not overwritten by B's older state, and B
    // gets it.
    redis.launch();
    a.wait_synced(2);
    b.wait_synced(2);
    let seen = b.wait_pool(|p| is_draining(p, &target));
    assert!(
        seen.is_some(),
        "B never got the drain made on A while Redis was down; stderr A:\n{}\nB:\n{}",
        a.sy.stderr(),
        b.sy.stderr()
    );
    assert!(
        is_draining(&a.pool(), &target),
        "A lost its own change when Redis came back; stderr:\n{}",
        a.sy.stderr()
    );
    for (i, name) in [(&a, "A"), (&b, "B")] {
        let log = i.sy.stderr();
        let warnings = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(lost))
            .count();
        assert_eq!(warnings, 1, "{name}: one warning for one outage:\n{log}");
    }
    drop((a, b));
}

// ------------------------------------------------------------ TLS to Redis

/// A private redis-server speaking only TLS on `port`, with a certificate for 127.0.0.1
/// from a test CA (written to `ca_file`); stopped on drop.
struct TlsRedis {
    port: u16,
    ca_file: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start() -> Option<TlsRedis> {
        let bin = find_program(&["redis-server"], &["/usr/bin", "/usr/local/bin"])?;
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("Redis Test CA");
        let ca_file = ca.write(dir.path(), "ca.pem");
        let (cert, key) = ca.issue(&[("CN", "redis")], &["IP:127.0.0.1"], CertUse::Server);
        let (cert_file, key_file) = write_pair(dir.path(), "redis", &cert, &[], &key);
        let port = listen_port();
        let child = std::process::Command::new(bin)
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &cert_file, "--tls-key-file", &key_file])
            .args(["--tls-ca-cert-file", &ca_file, "--tls-auth-clients", "no"])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server with TLS");
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "TLS redis on {port}"
        );
        Some(TlsRedis {
            port,
            ca_file,
            child,
            _dir: dir,
        })
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_rediss_url_shares_limits_over_tls() {
    let Some(redis) = TlsRedis::start() else {
        eprintln!("SKIP: redis-server not found");
        return;
    };
    let b = Backend::start("a");
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    // Three requests in all, refilled at one a second: shared, A and B together get 3.
    let routes = json!([cluster_route(
        "tls",
        "/tls",
        json!({ "rate": 1, "burst": 3, "key": "route" }),
    )]);
    let env = [("SSL_CERT_FILE", redis.ca_file.as_str())];
    let (pa, pb) = (listen_port(), listen_port());
    let text = |port| config_text(&config(port, &url, Some("500ms"), &b, &routes));
    let a = Switchyard::start_with_env(&text(pa), &[pa], &env);
    let bb = Switchyard::start_with_env(&text(pb), &[pb], &env);
    for (name, sy) in [("A", &a), ("B", &bb)] {
        assert!(
            sy.wait_stderr(
                "cluster: connected to Redis at 127.0.0.1",
                1,
                Duration::from_secs(10)
            ),
            "instance {name} connects to Redis over TLS:\n{}",
            sy.stderr()
        );
    }
    let admitted = (0..6)
        .map(|i| get(if i % 2 == 0 { pa } else { pb }, "/tls/x").status)
        .filter(|s| *s == 200)
        .count();
    // Local limits would admit 3 on each instance (6 in all).
    assert!(
        (3..=4).contains(&admitted),
        "one shared allowance of 3 (plus at most one refill): admitted {admitted}"
    );
    let log = format!("{}{}", a.stderr(), bb.stderr());
    assert!(!log.contains("rate limits are local"), "{log}");
}
