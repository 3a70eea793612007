//! The shipped Grafana dashboard and Prometheus alert rules (SPEC §14): `promtool check
//! rules` and `promtool test rules` (unit-test series in packaging/prometheus), every
//! metric the dashboard and the rules name is a SPEC metric with the labels they use,
//! every SPEC §6/§10/§11/§13 metric has a panel, and every panel query is evaluated by a
//! real Prometheus scraping a live Switchyard (the main ones must return data).
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (scripts/test).
use crate::common::config::*;
use crate::common::*;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// SPEC §6, §10, §11, §12, §13 metrics and their labels (`le` aside).
const SPEC_METRICS: &[(&str, &[&str])] = &[
    (
        "switchyard_http_requests_total",
        &["route", "pool", "method", "code"],
    ),
    (
        "switchyard_http_request_duration_seconds",
        &["route", "pool"],
    ),
    ("switchyard_backend_up", &["pool", "backend"]),
    ("switchyard_backend_active_requests", &["pool", "backend"]),
    (
        "switchyard_backend_requests_total",
        &["pool", "backend", "outcome"],
    ),
    ("switchyard_circuit_breaker_state", &["pool", "backend"]),
    ("switchyard_rate_limited_total", &["route"]),
    ("switchyard_tcp_connections_total", &["service"]),
    ("switchyard_tcp_active_connections", &["service"]),
    ("switchyard_tcp_bytes_total", &["service", "direction"]),
    ("switchyard_config_reloads_total", &["result"]),
    (
        "switchyard_tls_certificate_expiry_timestamp_seconds",
        &["listener", "name"],
    ),
    ("switchyard_build_info", &["version"]),
    ("switchyard_http_refused_total", &["listener", "reason"]),
    ("switchyard_tcp_refused_total", &["service", "reason"]),
    ("switchyard_cache_requests_total", &["route", "status"]),
    ("switchyard_cache_size_bytes", &[]),
    ("switchyard_cache_objects", &[]),
    ("switchyard_cache_evictions_total", &[]),
    ("switchyard_discovery_errors_total", &["pool", "provider"]),
    ("switchyard_outlier_ejections_total", &["pool", "backend"]),
    ("switchyard_backend_ejected", &["pool", "backend"]),
    ("switchyard_pool_queue_length", &["pool"]),
    ("switchyard_mirror_requests_total", &["route", "outcome"]),
];

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// Panels that must show data once a little traffic went through.
const MUST_HAVE_DATA: &[&str] = &[
    "Request rate",
    "p99 latency",
    "Healthy backends",
    "Requests by route",
    "Responses by status",
    "Latency percentiles by route",
    "Backend health (1 up, 0 down)",
    "Active requests per backend",
    "Circuit breaker (0 closed, 1 open, 2 half open)",
    "Open TCP sessions",
    "New TCP sessions",
    "TCP throughput",
    "Certificate expiry (days)",
    "Versions",
    "Memory",
];

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tool(name: &str) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then_some(p)
}

/// Every (panel title, query) of the dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("packaging/grafana/switchyard.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(d["uid"], "switchyard");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"]
            .as_str()
            .expect("every panel has a title")
            .to_string();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            out.push((title.clone(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// The metric names in a PromQL expression (histogram suffixes folded).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..]
        .find("switchyard_")
        .map(|a| a + i)
        .or_else(|| expr[i..].find("process_").map(|a| a + i))
    {
        let end = expr[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| at + e);
        if at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            let name = &expr[at..end];
            let name = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(name);
            names.insert(name.to_string());
        }
        i = end;
    }
    names
}

/// The label names an expression uses: `by (...)` lists and `{name op "..."}` matchers.
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for part in expr.split("by (").skip(1) {
        let list = part.split(')').next().unwrap_or("");
        labels.extend(
            list.split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        );
    }
    for part in expr.split('{').skip(1) {
        let inner = part.split('}').next().unwrap_or("");
        for m in inner.split(',') {
            let name: String = m
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                labels.insert(name);
            }
        }
    }
    labels.remove("le");
    labels
}

fn spec_labels(name: &str) -> Option<BTreeSet<String>> {
    SPEC_METRICS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, l)| l.iter().map(|s| s.to_string()).collect())
}

/// Every metric `expr` names is a SPEC (or process_*) metric carrying the labels used.
fn check_names_and_labels(what: &str, expr: &str) {
    let names = metric_names(expr);
    assert!(!names.is_empty(), "{what}: no metric in {expr}");
    let mut allowed: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    for name in &names {
        if name.starts_with("process_") {
            continue;
        }
        let labels =
            spec_labels(name).unwrap_or_else(|| panic!("{what}: {name} is not a SPEC metric"));
        allowed.extend(labels);
    }
    for label in label_names(expr) {
        assert!(
            allowed.contains(&label),
            "{what}: label {label} is not on {names:?} ({expr})"
        );
    }
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let Some(promtool) = tool("promtool") else {
        eprintln!("SKIP promtool_checks_and_unit_tests_the_alert_rules: promtool not installed (Debian package `prometheus`)");
        return;
    };
    let rules = repo("packaging/prometheus/switchyard-alerts.yaml");
    let out = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check rules:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
    let out = Command::new(&promtool)
        .arg("test")
        .arg("rules")
        .arg(repo("packaging/prometheus/switchyard-alerts.test.yaml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool test rules:\n{text}");

    // The alerts are all there, each with a unit test, over SPEC metrics only.
    let yaml = std::fs::read_to_string(&rules).unwrap();
    let tests =
        std::fs::read_to_string(repo("packaging/prometheus/switchyard-alerts.test.yaml")).unwrap();
    for alert in [
        "SwitchyardBackendDown",
        "SwitchyardPoolNoHealthyBackend",
        "SwitchyardHighErrorRatio",
        "SwitchyardHighLatencyP99",
        "SwitchyardCertificateExpiringSoon",
        "SwitchyardConfigReloadFailed",
        "SwitchyardRefusedConnectionsSpike",
    ] {
        assert!(yaml.contains(&format!("alert: {alert}")), "{alert} missing");
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no unit test"
        );
    }
    let mut expr = String::new();
    let mut in_expr = false;
    for line in yaml.lines() {
        let t = line.trim();
        if let Some(e) = t.strip_prefix("expr:") {
            expr = e.trim().trim_start_matches('|').to_string();
            in_expr = true;
        } else if in_expr && (t.starts_with("for:") || t.starts_with("labels:")) {
            check_names_and_labels("alert rule", &expr);
            in_expr = false;
        } else if in_expr {
            expr.push(' ');
            expr.push_str(t);
        }
    }
}

#[test]
fn every_spec_metric_has_a_dashboard_panel_with_valid_labels() {
    let queries = dashboard_queries();
    let mut used = BTreeSet::new();
    for (title, expr) in &queries {
        check_names_and_labels(title, expr);
        used.extend(metric_names(expr));
    }
    for (name, _) in SPEC_METRICS {
        assert!(used.contains(*name), "no panel shows {name}");
    }
    for title in MUST_HAVE_DATA {
        assert!(
            queries.iter().any(|(t, _)| t == title),
            "no panel {title:?}"
        );
    }
}

/// A live Switchyard (HTTP, TLS and TCP traffic) scraped every second by Prometheus.
#[test]
fn every_panel_query_runs_in_prometheus_against_a_live_switchyard() {
    let Some(prometheus) = tool("prometheus") else {
        eprintln!("SKIP every_panel_query_runs_in_prometheus_against_a_live_switchyard: prometheus not installed");
        return;
    };
    let (_certs, cert, key) = tls_test_cert_files();
    let backend = Backend::start("a");
    let echo = TcpServer::echo();
    let (web, secure, tcp, metrics) = (listen_port(), listen_port(), listen_port(), listen_port());
    let config = with(
        config_of(
            json!([
                listener("web", web),
                tls_listener("websecure", secure, &cert, &key),
            ]),
            json!([
                pool("web", &[backend.address()]),
                pool("echo", &[echo.address()]),
            ]),
            json!([route("site", "web")]),
        ),
        json!({
            "metrics": { "listen": format!("127.0.0.1:{metrics}") },
            "tcp_services": [
                { "name": "echo", "listen": format!("127.0.0.1:{tcp}"), "pool": "echo" },
            ],
        }),
    );
    let _sy = Switchyard::start_config(&config, &[web, secure, tcp, metrics]);
    let traffic = || {
        for _ in 0..5 {
            assert_eq!(get(web, "/").status, 200);
        }
        assert_eq!(tls_request(secure, "GET", "/", &[]).status, 200);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
    };
    traffic();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        // Prometheus's own configuration, also as a typed value (its YAML reads JSON).
        config_text(&json!({
            "global": { "scrape_interval": "1s", "evaluation_interval": "1s" },
            "scrape_configs": [{
                "job_name": "switchyard",
                "static_configs": [{ "targets": [format!("127.0.0.1:{metrics}")] }],
            }],
        })),
    )
    .unwrap();
    let port = listen_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
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
        .unwrap();
    let _prometheus = ChildGuard(child);
    let query = |expr: &str| -> Option<Value> {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        let q: String = url_encode(expr);
        let r = get(port, &format!("/api/v1/query?query={q}"));
        serde_json::from_str(&r.body).ok()
    };
    // Scrapes over a few seconds, so rate() windows hold at least two samples.
    let ready = wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        traffic();
        query("count_over_time(switchyard_build_info[1m])")
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(|s| s.parse::<f64>().unwrap_or(0.0))
            })
            .is_some_and(|n| n >= 4.0)
    });
    let prom_log =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        ready,
        "Prometheus never scraped Switchyard 4 times:\n{}",
        prom_log()
    );

    let mut empty = BTreeMap::new();
    let start = Instant::now();
    for (title, expr) in dashboard_queries() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$job", ".*")
            .replace("$pool", ".*");
        let v = query(&expr).unwrap_or_else(|| panic!("{title}: no answer from Prometheus"));
        assert_eq!(v["status"], "success", "{title}: {expr}: {v}");
        let rows = v["data"]["result"].as_array().map_or(0, Vec::len);
        if rows == 0 {
            empty.insert(title, expr);
        }
    }
    assert!(start.elapsed() < Duration::from_secs(60));
    for title in MUST_HAVE_DATA {
        assert!(
            !empty.contains_key(*title),
            "panel {title:?} shows no data: {:?}",
            empty.get(*title)
        );
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
