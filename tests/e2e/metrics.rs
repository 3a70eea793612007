//! Prometheus metrics end to end (SPEC §6): after real traffic every metric appears with
//! exactly its labels, counters and gauges move as the traffic and the pools say, label
//! values stay bounded (no path, no client IP), `promtool check metrics` accepts a real
//! scrape and a real Prometheus server scrapes the target as up.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package; when they are
//! missing the tests that need them print SKIP and return.
use crate::common::config::*;
use crate::common::*;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- exposition parsing

/// One sample line of the text exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape: `# TYPE` per family and every sample.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("TYPE line");
                e.types.insert(name.to_string(), ty.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                e.helps.insert(name.to_string(), help.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            e.samples.push(parse_sample(line));
        }
        e
    }

    /// The family a sample belongs to (`_bucket`, `_sum`, `_count` of a histogram).
    fn family_of(&self, sample: &str) -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.strip_suffix(suffix) {
                if self.types.get(base).map(String::as_str) == Some("histogram") {
                    return base.to_string();
                }
            }
        }
        sample.to_string()
    }

    /// Every sample of `family` (for a histogram: its buckets, sum and count).
    fn family(&self, family: &str) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| self.family_of(&s.name) == family)
            .collect()
    }

    /// The value of the sample `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("sample line without value: {line:?}"));
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut end = None;
        loop {
            // label name
            let mut key = String::new();
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                if c == '}' {
                    end = Some(i);
                    break;
                }
                if c != ',' {
                    key.push(c);
                }
            }
            if end.is_some() {
                break;
            }
            assert_eq!(
                chars.next().map(|x| x.1),
                Some('"'),
                "bad label in {line:?}"
            );
            let mut value = String::new();
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|x| x.1) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => panic!("bad escape in {line:?}"),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key.trim().to_string(), value);
            match chars.next() {
                Some((_, ',')) => {
                    if let Some(&(i, '}')) = chars.peek() {
                        end = Some(i);
                        break;
                    }
                }
                Some((i, '}')) => {
                    end = Some(i);
                    break;
                }
                other => panic!("bad label list in {line:?} at {other:?}"),
            }
        }
        let end = end.expect("closing brace");
        rest = &inner[end + 1..];
    }
    let value_text = rest.split_whitespace().next().unwrap_or("");
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
    };
    Sample {
        name,
        labels,
        value,
    }
}

// ---------------------------------------------------------------- helpers

/// Kills (SIGKILL) and reaps a helper process on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scrape(metrics_port: u16) -> String {
    let r = get(metrics_port, "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {r:?}");
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "Prometheus text format expected, got Content-Type {ct:?}"
    );
    r.body
}

/// Scrapes until `ready` holds for the parsed exposition (10 s at most).
fn scrape_until(metrics_port: u16, what: &str, ready: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(metrics_port);
        let e = Exposition::parse(&text);
        if ready(&e) {
            return e;
        }
        if Instant::now() > deadline {
            panic!("metrics never showed {what}; last scrape:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The path of `tool` when it is installed.
fn tool(name: &str) -> Option<String> {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = format!("{dir}/{name}");
        if std::path::Path::new(&p).exists() {
            return Some(p);
        }
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then_some(p)
}

/// Removes HTTP/1.1 chunked framing.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    out
}

/// GET of a JSON document (a Prometheus API), `None` when nothing answers yet.
fn get_json(port: u16, path: &str) -> Option<Value> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let r = get(port, path);
    let body = if r
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(&r.body)
    } else {
        r.body
    };
    serde_json::from_str(&body).ok()
}

// ---------------------------------------------------------------- the traffic fixture

const SECRET_PATH: &str = "/site/users/8675309?session=opaque-sess-4e1d";
const FORWARDED_CLIENT: &str = "198.51.100.237";

/// A switchyard with four pools and routes, a metrics listener and an admin listener.
struct Fixture {
    sy: Switchyard,
    web: u16,
    metrics: u16,
    ok1: Backend,
    ok2: Backend,
    bad: Backend,
    err: Backend,
    spare: Backend,
    down: String,
}

/// The fixture's configuration, with `extra_pools` after its own four.
fn fixture_config(f: &FixtureAddrs, extra_pools: &[Value]) -> Value {
    let mut pools = vec![
        pool("web", &[f.ok1.clone(), f.ok2.clone()]),
        with(
            pool("flaky", std::slice::from_ref(&f.bad)),
            json!({ "circuit_breaker": { "failure_threshold": 3, "open_for": "10m" } }),
        ),
        pool("plain5xx", std::slice::from_ref(&f.err)),
        json!({
            "name": "idle",
            "health_check": {
                "interval": "200ms",
                "timeout": "200ms",
                "healthy_threshold": 1,
                "unhealthy_threshold": 1,
            },
            "backends": [{ "address": f.spare }, { "address": f.down, "backup": true }],
        }),
    ];
    pools.extend_from_slice(extra_pools);
    let routes = json!([
        { "name": "site", "path_prefix": "/site", "pool": "web" },
        { "name": "fail", "path_prefix": "/fail", "pool": "flaky" },
        { "name": "err", "path_prefix": "/err", "pool": "plain5xx" },
    ]);
    let config = web_config(f.web, Value::from(pools), routes);
    // Trust 127.0.0.1 as a proxy so the client IP becomes the X-Forwarded-For entry,
    // an address that must never show up in a label.
    with(
        config,
        json!({
            "server": { "trusted_proxies": ["127.0.0.0/8"] },
            "metrics": { "listen": format!("127.0.0.1:{}", f.metrics) },
        }),
    )
}

struct FixtureAddrs {
    web: u16,
    metrics: u16,
    ok1: String,
    ok2: String,
    bad: String,
    err: String,
    spare: String,
    down: String,
}

impl Fixture {
    fn start() -> Fixture {
        let five_hundred = Behaviour::with_status(500);
        let ok1 = Backend::start("ok1");
        let ok2 = Backend::start("ok2");
        let bad = Backend::start_with("bad", five_hundred.clone());
        let err = Backend::start_with("err", five_hundred);
        let spare = Backend::start("spare");
        let down = format!("127.0.0.1:{}", closed_port());
        let (web, metrics) = (listen_port(), listen_port());
        let addrs = self::FixtureAddrs {
            web,
            metrics,
            ok1: ok1.address(),
            ok2: ok2.address(),
            bad: bad.address(),
            err: err.address(),
            spare: spare.address(),
            down: down.clone(),
        };
        let sy = Switchyard::start_config(&fixture_config(&addrs, &[]), &[web, metrics]);
        Fixture {
            sy,
            web,
            metrics,
            ok1,
            ok2,
            bad,
            err,
            spare,
            down,
        }
    }

    fn addrs(&self) -> FixtureAddrs {
        FixtureAddrs {
            web: self.web,
            metrics: self.metrics,
            ok1: self.ok1.address(),
            ok2: self.ok2.address(),
            bad: self.bad.address(),
            err: self.err.address(),
            spare: self.spare.address(),
            down: self.down.clone(),
        }
    }

    /// Every (pool, backend) pair of the configuration.
    fn backends(&self) -> Vec<(&'static str, String)> {
        vec![
            ("web", self.ok1.address()),
            ("web", self.ok2.address()),
            ("flaky", self.bad.address()),
            ("plain5xx", self.err.address()),
            ("idle", self.spare.address()),
            ("idle", self.down.clone()),
        ]
    }

    /// Known traffic: 6 GET + 2 POST to `site`, 3 GETs that trip `flaky`'s breaker and
    /// one more answered 503, 2 GETs of a backend 500 without a breaker, 1 unrouted.
    fn traffic(&self) {
        let xff = [("X-Forwarded-For", FORWARDED_CLIENT)];
        for i in 0..6 {
            let r = request(self.web, "GET", SECRET_PATH, &xff, b"");
            assert_eq!(r.status, 200, "GET {i} to site: {r:?}");
        }
        for i in 0..2 {
            let r = request(self.web, "POST", "/site/form/42", &xff, b"a=1");
            assert_eq!(r.status, 200, "POST {i} to site: {r:?}");
        }
        for i in 0..3 {
            let r = request(self.web, "GET", "/fail/item/777", &xff, b"");
            assert_eq!(r.status, 500, "GET {i} to the failing backend: {r:?}");
        }
        let r = request(self.web, "GET", "/fail/item/777", &xff, b"");
        assert_eq!(r.status, 503, "the circuit is open after 3 failures: {r:?}");
        for i in 0..2 {
            let r = request(self.web, "GET", "/err/x", &xff, b"");
            assert_eq!(r.status, 500, "GET {i} to the 500 backend: {r:?}");
        }
        let r = request(self.web, "GET", "/no/such/route/31337", &xff, b"");
        assert_eq!(r.status, 404, "{r:?}");
    }
}

/// (family, TYPE, label names) for every metric SPEC §6 names that this traffic makes.
const EXPECTED: &[(&str, &str, &[&str])] = &[
    (
        "switchyard_http_requests_total",
        "counter",
        &["route", "pool", "method", "code"],
    ),
    (
        "switchyard_http_request_duration_seconds",
        "histogram",
        &["route", "pool"],
    ),
    ("switchyard_backend_up", "gauge", &["pool", "backend"]),
    (
        "switchyard_backend_active_requests",
        "gauge",
        &["pool", "backend"],
    ),
    (
        "switchyard_backend_requests_total",
        "counter",
        &["pool", "backend", "outcome"],
    ),
    (
        "switchyard_circuit_breaker_state",
        "gauge",
        &["pool", "backend"],
    ),
    ("switchyard_config_reloads_total", "counter", &["result"]),
    ("switchyard_build_info", "gauge", &["version"]),
    ("process_cpu_seconds_total", "counter", &[]),
    ("process_resident_memory_bytes", "gauge", &[]),
    ("process_start_time_seconds", "gauge", &[]),
];

// ---------------------------------------------------------------- tests

#[test]
fn every_metric_appears_with_exactly_its_labels() {
    let f = Fixture::start();
    f.traffic();
    let e = scrape_until(f.metrics, "the unhealthy backup down", |e| {
        e.value(
            "switchyard_backend_up",
            &[("pool", "idle"), ("backend", &f.down)],
        ) == Some(0.0)
    });

    for (family, ty, labels) in EXPECTED {
        assert_eq!(
            e.types.get(*family).map(String::as_str),
            Some(*ty),
            "# TYPE of {family}"
        );
        assert!(
            e.helps.get(*family).is_some_and(|h| !h.is_empty()),
            "{family} has a # HELP text"
        );
        let samples = e.family(family);
        assert!(!samples.is_empty(), "no sample of {family}");
        let want: BTreeSet<&str> = labels.iter().copied().collect();
        for s in samples {
            let mut have: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
            if s.name.ends_with("_bucket") && *ty == "histogram" {
                assert!(have.remove("le"), "a bucket without le: {s:?}");
            }
            assert_eq!(have, want, "labels of {s:?}");
        }
    }

    // The histogram has its buckets, sum and count per (route, pool).
    for (route, pool, n) in [("site", "web", 8.0), ("fail", "flaky", 4.0), ("", "", 1.0)] {
        let labels = [("route", route), ("pool", pool)];
        assert_eq!(
            e.value("switchyard_http_request_duration_seconds_count", &labels),
            Some(n),
            "histogram count of route {route:?}"
        );
        assert!(
            e.value("switchyard_http_request_duration_seconds_sum", &labels)
                .is_some(),
            "histogram sum of route {route:?}"
        );
        let inf = [("route", route), ("pool", pool), ("le", "+Inf")];
        assert_eq!(
            e.value("switchyard_http_request_duration_seconds_bucket", &inf),
            Some(n),
            "+Inf bucket of route {route:?}"
        );
    }

    assert_eq!(
        e.value(
            "switchyard_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    let start = e
        .value("process_start_time_seconds", &[])
        .expect("process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    assert!(
        start > now - 3600.0 && start <= now + 1.0,
        "process_start_time_seconds {start} vs now {now}"
    );
    assert!(e.value("process_resident_memory_bytes", &[]).unwrap_or(0.0) > 0.0);
}

#[test]
fn counters_follow_the_traffic() {
    let f = Fixture::start();
    f.traffic();
    let e = Exposition::parse(&scrape(f.metrics));
    let req = |route: &str, pool: &str, method: &str, code: &str| {
        e.value(
            "switchyard_http_requests_total",
            &[
                ("route", route),
                ("pool", pool),
                ("method", method),
                ("code", code),
            ],
        )
    };
    assert_eq!(req("site", "web", "GET", "200"), Some(6.0));
    assert_eq!(req("site", "web", "POST", "200"), Some(2.0));
    assert_eq!(
        req("fail", "flaky", "GET", "500"),
        Some(3.0),
        "a backend's 500 is counted with its exact code"
    );
    assert_eq!(req("fail", "flaky", "GET", "503"), Some(1.0));
    assert_eq!(req("err", "plain5xx", "GET", "500"), Some(2.0));
    assert_eq!(
        req("", "", "GET", "404"),
        Some(1.0),
        "a request that matched no route has route=\"\" and pool=\"\""
    );
    let total: f64 = e
        .family("switchyard_http_requests_total")
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(total, 15.0, "every request counted once");

    let backend = |pool: &str, addr: &str, outcome: &str| {
        e.value(
            "switchyard_backend_requests_total",
            &[("pool", pool), ("backend", addr), ("outcome", outcome)],
        )
    };
    let (a1, a2) = (f.ok1.address(), f.ok2.address());
    assert_eq!(
        backend("web", &a1, "success").unwrap_or(0.0)
            + backend("web", &a2, "success").unwrap_or(0.0),
        8.0,
        "the 8 answered requests of pool web"
    );
    assert_eq!(backend("web", &a1, "success"), Some(4.0), "round robin");
    assert_eq!(backend("web", &a1, "failure"), Some(0.0));
    assert_eq!(
        backend("flaky", &f.bad.address(), "failure"),
        Some(3.0),
        "a 5xx answer is a failure (breaker with on_5xx)"
    );
    assert_eq!(backend("flaky", &f.bad.address(), "success"), Some(0.0));
    assert_eq!(
        f.bad.count(),
        3,
        "the open circuit kept the 4th request away"
    );

    let circuit = |pool: &str, addr: &str| {
        e.value(
            "switchyard_circuit_breaker_state",
            &[("pool", pool), ("backend", addr)],
        )
    };
    assert_eq!(
        circuit("flaky", &f.bad.address()),
        Some(1.0),
        "the opened circuit shows state 1"
    );

    // Every backend of every pool has its gauges, breaker or not (state 0 without one).
    for (pool, addr) in f.backends() {
        let labels = [("pool", pool), ("backend", addr.as_str())];
        assert!(
            e.value("switchyard_backend_up", &labels).is_some(),
            "switchyard_backend_up of {pool}/{addr}"
        );
        assert_eq!(
            e.value("switchyard_backend_active_requests", &labels),
            Some(0.0),
            "nothing in flight to {pool}/{addr}"
        );
        if addr != f.bad.address() {
            assert_eq!(circuit(pool, &addr), Some(0.0), "closed: {pool}/{addr}");
        }
        for outcome in ["success", "failure"] {
            assert!(
                backend(pool, &addr, outcome).is_some(),
                "switchyard_backend_requests_total of {pool}/{addr}/{outcome}"
            );
        }
    }
    let pairs: BTreeSet<(String, String)> = e
        .family("switchyard_backend_up")
        .iter()
        .map(|s| (s.labels["pool"].clone(), s.labels["backend"].clone()))
        .collect();
    let want: BTreeSet<(String, String)> = f
        .backends()
        .into_iter()
        .map(|(p, a)| (p.to_string(), a))
        .collect();
    assert_eq!(pairs, want, "one switchyard_backend_up per backend");
    assert_eq!(
        e.value(
            "switchyard_backend_up",
            &[("pool", "web"), ("backend", &a1)]
        ),
        Some(1.0)
    );
    // The backup on a closed port goes down after its first failed check.
    scrape_until(f.metrics, "the backend on a closed port down", |e| {
        e.value(
            "switchyard_backend_up",
            &[("pool", "idle"), ("backend", &f.down)],
        ) == Some(0.0)
    });
}

/// SPEC §6 does not say whether a 5xx answer from a pool *without* a circuit breaker
/// counts as a failure; a 5xx is a failed request everywhere else in the SPEC
/// (`on_5xx` defaults to true), so the outcome must be `failure`.
#[test]
fn a_backend_500_is_a_failure_even_without_a_breaker() {
    let f = Fixture::start();
    for i in 0..2 {
        let r = get(f.web, "/err/x");
        assert_eq!(r.status, 500, "GET {i}: {r:?}");
    }
    let e = Exposition::parse(&scrape(f.metrics));
    let addr = f.err.address();
    assert_eq!(
        e.value(
            "switchyard_http_requests_total",
            &[
                ("route", "err"),
                ("pool", "plain5xx"),
                ("method", "GET"),
                ("code", "500")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        e.value(
            "switchyard_backend_requests_total",
            &[
                ("pool", "plain5xx"),
                ("backend", &addr),
                ("outcome", "failure")
            ]
        ),
        Some(2.0),
        "two 500 answers from {addr}: outcome=\"failure\" expected"
    );
}

#[test]
fn label_values_are_bounded() {
    let f = Fixture::start();
    f.traffic();
    // A few more distinct paths and a strange method must not create new series.
    for i in 0..20 {
        let r = request(
            f.web,
            "GET",
            &format!("/site/unique/{i}-zq{i}"),
            &[("X-Forwarded-For", &format!("203.0.113.{i}"))],
            b"",
        );
        assert_eq!(r.status, 200);
    }
    let r = request(f.web, "BREW", "/site/pot", &[], b"");
    assert!(r.status < 600, "{r:?}");
    let text = scrape(f.metrics);
    for needle in [
        "8675309",
        "session",
        "opaque-sess",
        "/site",
        "/fail",
        "/no/such",
        "31337",
        "users",
        "zq1",
        "unique",
        FORWARDED_CLIENT,
        "203.0.113.",
        "BREW",
    ] {
        assert!(
            !text.contains(needle),
            "{needle:?} leaked into the exposition:\n{text}"
        );
    }
    // 127.0.0.1 (the peer) appears only inside the backend addresses.
    let mut rest = text.clone();
    for (_, addr) in f.backends() {
        rest = rest.replace(&format!("backend=\"{addr}\""), "backend=\"B\"");
    }
    assert!(
        !rest.contains("127.0.0.1"),
        "the client address leaked into a label:\n{text}"
    );
    let e = Exposition::parse(&text);
    let methods: BTreeSet<&str> = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE", "OTHER",
    ]
    .into_iter()
    .collect();
    let routes: BTreeSet<&str> = ["site", "fail", "err", ""].into_iter().collect();
    for s in e.family("switchyard_http_requests_total") {
        assert!(
            methods.contains(s.labels["method"].as_str()),
            "method label {s:?}"
        );
        let code = &s.labels["code"];
        assert!(
            code.len() == 3 && code.chars().all(|c| c.is_ascii_digit()),
            "code label is the exact status: {s:?}"
        );
        assert!(routes.contains(s.labels["route"].as_str()), "route {s:?}");
    }
    for s in e.family("switchyard_http_request_duration_seconds") {
        assert!(routes.contains(s.labels["route"].as_str()), "route {s:?}");
    }
}

#[test]
fn reloads_are_counted_by_result_and_new_pools_get_gauges() {
    let f = Fixture::start();
    let reloads = |e: &Exposition, result: &str| {
        e.value("switchyard_config_reloads_total", &[("result", result)])
    };
    let e = Exposition::parse(&scrape(f.metrics));
    assert_eq!(reloads(&e, "success"), Some(0.0), "exists from the start");
    assert_eq!(reloads(&e, "failure"), Some(0.0), "exists from the start");

    // A valid reload that adds a pool.
    let extra = Backend::start("extra");
    let extra_pool = pool("added", &[extra.address()]);
    f.sy.rewrite_config(&config_text(&fixture_config(&f.addrs(), &[extra_pool])));
    f.sy.signal("-HUP");
    let labels = [("pool", "added"), ("backend", &*extra.address())];
    // The new pool's members are built by the pool tasks once the reload is announced,
    // a moment after the counter moves.
    let e = scrape_until(f.metrics, "config_reloads_total{result=success} 1", |e| {
        reloads(e, "success") == Some(1.0) && e.value("switchyard_backend_up", &labels).is_some()
    });
    assert_eq!(reloads(&e, "failure"), Some(0.0));
    assert_eq!(e.value("switchyard_backend_up", &labels), Some(1.0));
    assert_eq!(
        e.value("switchyard_circuit_breaker_state", &labels),
        Some(0.0)
    );
    assert_eq!(
        e.value("switchyard_backend_active_requests", &labels),
        Some(0.0)
    );

    // An invalid file is rejected and counted; the old configuration keeps serving.
    let mut invalid = fixture_config(&f.addrs(), &[]);
    invalid["routes"][0]["no_such_key"] = json!(1);
    f.sy.rewrite_config(&config_text(&invalid));
    f.sy.signal("-HUP");
    let e = scrape_until(f.metrics, "config_reloads_total{result=failure} 1", |e| {
        reloads(e, "failure") == Some(1.0)
    });
    assert_eq!(reloads(&e, "success"), Some(1.0));
    assert_eq!(get(f.web, "/site/x").status, 200, "the old config serves");
    assert!(
        e.value("switchyard_backend_up", &labels).is_some(),
        "the rejected file did not remove pool `added`"
    );
}

#[test]
fn promtool_accepts_a_real_scrape() {
    let Some(promtool) = tool("promtool") else {
        eprintln!("SKIP promtool_accepts_a_real_scrape: promtool not installed (Debian package `prometheus`)");
        return;
    };
    let f = Fixture::start();
    f.traffic();
    // Let the health check of the closed port run, so every kind of series is there.
    scrape_until(f.metrics, "the backend on a closed port down", |e| {
        e.value(
            "switchyard_backend_up",
            &[("pool", "idle"), ("backend", &f.down)],
        ) == Some(0.0)
    });
    let text = scrape(f.metrics);
    let out = output_with_stdin(
        Command::new(&promtool).args(["check", "metrics"]),
        text.as_bytes(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics: {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nexposition:\n{text}",
        out.status
    );
}

#[test]
fn a_real_prometheus_scrapes_the_target_up() {
    let Some(prometheus) = tool("prometheus") else {
        eprintln!("SKIP a_real_prometheus_scrapes_the_target_up: prometheus not installed (Debian package `prometheus`)");
        return;
    };
    let f = Fixture::start();
    f.traffic();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    // Prometheus reads JSON as the YAML it is, like Switchyard.
    let prometheus_yml = json!({
        "global": { "scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s" },
        "scrape_configs": [{
            "job_name": "switchyard",
            "static_configs": [{ "targets": [format!("127.0.0.1:{}", f.metrics)] }],
        }],
    });
    std::fs::write(&config, config_text(&prometheus_yml)).expect("write prometheus.yml");
    let port = listen_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let _prometheus = Proc(child);
    let log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    let up = loop {
        if let Some(v) = get_json(port, "/api/v1/query?query=up") {
            let found = v["data"]["result"].as_array().and_then(|r| {
                r.iter()
                    .find(|s| s["metric"]["job"] == "switchyard")
                    .map(|s| s["value"][1].clone())
            });
            if found == Some(Value::from("1")) {
                break true;
            }
            last = v;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let targets = get_json(port, "/api/v1/targets").unwrap_or(Value::Null);
    assert!(
        up,
        "Prometheus never saw up == 1 for the switchyard target; last answer {last}\ntargets: {targets}\nprometheus log:\n{}",
        log()
    );
    let target = targets["data"]["activeTargets"]
        .as_array()
        .and_then(|t| t.first().cloned())
        .unwrap_or(Value::Null);
    assert_eq!(target["health"], "up", "{targets}");
    assert_eq!(target["lastError"], "", "{targets}");
    // The series were ingested, labels and all.
    let q = get_json(
        port,
        "/api/v1/query?query=switchyard_http_requests_total%7Broute%3D%22site%22%7D",
    )
    .unwrap_or(Value::Null);
    let series = q["data"]["result"].as_array().cloned().unwrap_or_default();
    assert!(
        series
            .iter()
            .any(|s| s["metric"]["pool"] == "web" && s["metric"]["method"] == "GET"),
        "switchyard_http_requests_total{{route=\"site\"}} in Prometheus: {q}"
    );
}

#[test]
fn tls_certificate_expiry_is_exported() {
    let (_certs, cert, key) = tls_test_cert_files();
    let backend = Backend::start("a");
    let (web, metrics) = (listen_port(), listen_port());
    let config = with(
        config_of(
            json!([tls_listener("websecure", web, &cert, &key)]),
            json!([pool("p", &[backend.address()])]),
            json!([route("all", "p")]),
        ),
        metrics_on(metrics),
    );
    let _sy = Switchyard::start_config(&config, &[web, metrics]);
    assert_eq!(tls_request(web, "GET", "/", &[]).status, 200);
    let text = scrape(metrics);
    let e = Exposition::parse(&text);
    assert_eq!(
        e.types
            .get("switchyard_tls_certificate_expiry_timestamp_seconds")
            .map(String::as_str),
        Some("gauge"),
        "SPEC §6 switchyard_tls_certificate_expiry_timestamp_seconds is missing:\n{text}"
    );
    // notAfter of the test certificate: 2126-10-30 12:50:00 UTC; first DNS name localhost.
    assert_eq!(
        e.value(
            "switchyard_tls_certificate_expiry_timestamp_seconds",
            &[("listener", "websecure"), ("name", "localhost")]
        ),
        Some(4_949_038_200.0),
        "{text}"
    );
}
