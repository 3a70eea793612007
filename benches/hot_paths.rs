//! Micro-benchmarks of the per-request hot paths: route matching and backend selection.
//! Run with `cargo bench`; the side-by-side proxy comparison is ../shared/bench/run.sh.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};
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

criterion_group!(benches, bench_routing, bench_selection);
criterion_main!(benches);
