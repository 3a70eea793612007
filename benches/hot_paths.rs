//! Micro-benchmarks of the per-request hot paths: route matching (host index and the
//! scan it replaces), backend selection, the header edits on request and response, the
//! request id, the raw-header guard and the access-log line. Run with `cargo bench`;
//! the side-by-side proxy comparison is ../shared/bench/run.sh and
//! ../shared/bench/instructions.sh.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;
use std::time::Duration;
use switchyard::benching;
use switchyard::config::{parse_str, Config};
use switchyard::routing::RequestFacts;
use switchyard::runtime::Runtime;
use switchyard::state::store::StateStore;

fn config(yaml: &str) -> Config {
    match parse_str("bench.yaml", yaml, &|_| None, false) {
        Ok(l) => l.config,
        Err(errors) => panic!("bench config invalid: {errors:?}"),
    }
}

/// 50 routes: hosts, wildcards, prefixes and methods; the probe matches the last one.
fn route_yaml() -> String {
    let mut y = String::from(
        "listeners: [{name: web, listen: '127.0.0.1:8080'}]\npools:\n  - name: p\n    backends: [{address: '127.0.0.1:9001'}]\nroutes:\n",
    );
    for i in 0..49 {
        y.push_str(&format!(
            "  - {{name: r{i}, host: ['app{i}.example.com', '*.svc{i}.example.net'], path_prefix: /v{i}, methods: [GET, POST], pool: p}}\n"
        ));
    }
    y.push_str("  - {name: last, host: api.example.com, path_prefix: /api, pool: p}\n");
    y
}

fn bench_routing(c: &mut Criterion) {
    let rt = Runtime::build(
        &config(&route_yaml()),
        None,
        &StateStore::open(None).unwrap_or_else(|e| panic!("{e}")),
    );
    let headers = HeaderMap::new();
    let method = Method::GET;
    let facts = RequestFacts {
        listener: 0,
        host: "API.example.com",
        path: "/api/users/42",
        method: &method,
        headers: &headers,
        country: None,
    };
    c.bench_function("route_match_50_routes_last", |b| {
        b.iter(|| black_box(rt.table.find(black_box(&facts))))
    });
    c.bench_function("route_scan_50_routes_last", |b| {
        b.iter(|| black_box(rt.table.find_by_scan(black_box(&facts))))
    });
}

/// A route with one edit of each kind on the request and on the response.
const EDITS_YAML: &str = "
listeners: [{name: web, listen: '127.0.0.1:8080'}]
pools: [{name: p, backends: [{address: '127.0.0.1:9001'}]}]
routes:
  - name: r
    pool: p
    security_headers: true
    request_headers: {set: {x-env: prod}, add: {x-tag: a}, remove: [x-debug]}
    response_headers: {set: {cache-control: no-store}, add: {x-served-by: switchyard}, remove: [server]}
";

/// As Pingora hands it to the hooks: built for the parsed count, then cloned (the
/// request to the backend is a copy of the client's).
fn request() -> RequestHeader {
    let mut req =
        RequestHeader::build("GET", b"/api/v1/users/42", Some(5)).unwrap_or_else(|e| panic!("{e}"));
    for (n, v) in [
        ("host", "app.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-forwarded-for", "198.51.100.7"),
        ("x-debug", "1"),
    ] {
        req.append_header(n, v).unwrap_or_else(|e| panic!("{e}"));
    }
    req.clone()
}

fn response() -> ResponseHeader {
    let mut resp = ResponseHeader::build(200, Some(3)).unwrap_or_else(|e| panic!("{e}"));
    for (n, v) in [
        ("server", "nginx"),
        ("content-type", "application/json"),
        ("content-length", "5120"),
    ] {
        resp.append_header(n, v).unwrap_or_else(|e| panic!("{e}"));
    }
    resp.clone()
}

fn bench_headers(c: &mut Criterion) {
    let rt = Runtime::build(
        &config(EDITS_YAML),
        None,
        &StateStore::open(None).unwrap_or_else(|e| panic!("{e}")),
    );
    let route = &rt.routes[0];
    let peer: IpAddr = "10.1.2.3".parse().unwrap_or_else(|e| panic!("{e}"));
    let client: IpAddr = "198.51.100.7".parse().unwrap_or_else(|e| panic!("{e}"));
    let id = benching::new_request_id();
    c.bench_function("request_header_edits", |b| {
        b.iter_batched_ref(
            request,
            |req| {
                benching::request_edits(req, peer, client, &id, &route.request_headers)
                    .unwrap_or_else(|e| panic!("{e}"))
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("response_header_edits_security", |b| {
        b.iter_batched_ref(
            response,
            |resp| {
                benching::response_edits(resp, &id, true, &route.response_headers)
                    .unwrap_or_else(|e| panic!("{e}"))
            },
            BatchSize::SmallInput,
        )
    });
    let raw: &[u8] = b"GET /api/v1/users/42 HTTP/1.1\r\nHost: app.example.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) bench/1.0\r\nAccept: */*\r\n\
        Accept-Encoding: gzip, br\r\nCookie: session=0123456789abcdef\r\n\r\n";
    c.bench_function("request_guard_raw_header", |b| {
        b.iter(|| black_box(benching::check_raw_header(black_box(raw))))
    });
    c.bench_function("new_request_id", |b| {
        b.iter(|| black_box(benching::new_request_id()))
    });
}

fn bench_access_log(c: &mut Criterion) {
    let client: IpAddr = "198.51.100.7".parse().unwrap_or_else(|e| panic!("{e}"));
    let id = benching::new_request_id();
    c.bench_function("access_log_line", |b| {
        b.iter(|| {
            black_box(benching::access_log_line(
                black_box(client),
                &id,
                Duration::from_micros(3_619),
            ))
        })
    });
}

fn bench_selection(c: &mut Criterion) {
    for algorithm in [
        "round_robin",
        "least_conn",
        "ip_hash",
        "consistent_hash",
        "random",
    ] {
        let yaml = format!(
            "pools:\n  - name: p\n    algorithm: {algorithm}\n    backends:\n{}",
            (0..10)
                .map(|i| format!(
                    "      - {{address: '127.0.0.1:{}', weight: {}}}\n",
                    9000 + i,
                    1 + i
                ))
                .collect::<String>()
        );
        let rt = Runtime::build(
            &config(&yaml),
            None,
            &StateStore::open(None).unwrap_or_else(|e| panic!("{e}")),
        );
        let members = rt.pools[0].members();
        c.bench_function(&format!("select_{algorithm}_10_backends"), |b| {
            b.iter(|| black_box(members.select(black_box(b"203.0.113.7"), &[])))
        });
    }
}

criterion_group!(
    benches,
    bench_routing,
    bench_selection,
    bench_headers,
    bench_access_log
);
criterion_main!(benches);
