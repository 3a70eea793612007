//! Traffic management end to end (SPEC §13): the keys in GET /api/v1/config, outlier
//! ejection and panic mode, access-log termination codes and timings, retries, slow
//! start, queueing, mirroring and geo routing, against real backends that fail on
//! command.
use crate::common::*;

mod mmdb;

use serde_json::Value;

const TOKEN: &str = "traffic-token-0123456789";

/// The admin section with the test token.
fn admin_section(port: u16) -> String {
    format!("admin:\n  listen: 127.0.0.1:{port}\n  tokens: [\"{TOKEN}\"]\n  state_file: {{dir}}/state.json\n")
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
    let pools = pool_yaml(
        "p",
        "    outlier_detection: { consecutive_5xx: 4, consecutive_gateway_failures: 2, base_ejection_time: 10s, max_ejection_time: 2m, max_ejection_percent: 30 }\n    panic_threshold: 40\n    slow_start: 20s\n    queue: { max: 10, timeout: 2s }\n    try_duration: 3s\n    retry_on: [connect_failure, reset, 502, 503, 504]\n    retry_budget: 25\n    circuit_breaker: { max_connections: 5 }\n",
        &[a.address()],
    ) + &pool_yaml("shadow", "", &[shadow.address()]);
    let routes = "  - name: all\n    pool: p\n    mirror: { pool: shadow, percent: 10 }\n    geo: { countries: [de, FR] }\n";
    let head = format!(
        "{}{}",
        test_server_with(&format!("  geoip: {{ database: {} }}\n", db.display())),
        admin_section(admin)
    );
    let _sy = Switchyard::start(
        &config_yaml(&head, &listener_yaml("web", web), &pools, routes),
        &[admin, web],
    );
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
    let yaml = config_yaml(
        TEST_SERVER,
        &listener_yaml("web", 18080),
        &pool_yaml("p", "    retry_on: [connect_failure, 500]\n    outlier_detection: { max_ejection_percent: 120 }\n", &["127.0.0.1:18081".into()]),
        "  - name: all\n    pool: p\n    mirror: { pool: nowhere }\n    geo: { countries: [DE] }\n",
    );
    let (out, _, _dir) = check_config(&yaml);
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
