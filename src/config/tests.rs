//! Parse-from-string checks: each malformed input is refused at FILE:LINE:COL with its
//! key path and reason (SPEC §1).

use super::parse_str;

const POOL: &str = "pools:\n  - name: web\n    backends:\n      - address: 127.0.0.1:18081\n";

/// The error lines for `yaml` (panics when it is accepted).
pub(super) fn errors(yaml: &str) -> Vec<String> {
    match parse_str("t.yaml", yaml, &|_| None, false) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.iter().map(|d| d.to_string()).collect(),
    }
}

pub(super) fn accepted(yaml: &str) -> super::Config {
    match parse_str("t.yaml", yaml, &|_| None, false) {
        Ok(l) => l.config,
        Err(e) => panic!("refused:\n{yaml}\n{e:#?}"),
    }
}

/// Exactly one error, equal to `expected`.
fn refused(yaml: &str, expected: &str) {
    assert_eq!(errors(yaml), vec![expected.to_string()], "{yaml}");
}

#[test]
fn a_second_document_is_refused() {
    let yaml = format!("{POOL}---\nserver: {{ threads: 2 }}\n");
    refused(&yaml, "t.yaml:5:1: only one YAML document is allowed");
    // Even when what follows would not parse.
    let yaml = format!("{POOL}---\n: : [\n");
    refused(&yaml, "t.yaml:5:1: only one YAML document is allowed");
    let yaml = format!("{POOL}...\nserver: {{}}\n");
    refused(&yaml, "t.yaml:6:1: only one YAML document is allowed");
}

#[test]
fn one_document_may_be_marked() {
    accepted(&format!(
        "# header\n%YAML 1.2\n---\n{POOL}...\n# trailing comment\n"
    ));
    accepted(&format!("{POOL}    # --- not a marker\n"));
}

#[test]
fn threads_are_bounded() {
    refused(
        &format!("server:\n  threads: 1000000\n{POOL}"),
        "t.yaml:2:12: server.threads: \"1000000\" is not a whole number from 0 (one per CPU) to 1024",
    );
    assert_eq!(
        accepted(&format!("server:\n  threads: 1024\n{POOL}"))
            .server
            .threads,
        1024
    );
}

#[test]
fn drain_periods_are_at_most_a_day() {
    refused(
        &format!("server:\n  grace_period: 99999999999999h\n{POOL}"),
        "t.yaml:2:17: server.grace_period: must be at most 24h",
    );
    refused(
        &format!("server:\n  shutdown_timeout: 25h\n{POOL}"),
        "t.yaml:2:21: server.shutdown_timeout: must be at most 24h",
    );
    let c = accepted(&format!(
        "server:\n  grace_period: 24h\n  shutdown_timeout: 0s\n{POOL}"
    ));
    assert_eq!(c.server.grace_period.as_secs(), 86_400);
}

#[test]
fn every_duration_is_bounded() {
    refused(
        &format!("{POOL}    circuit_breaker: {{ open_for: 2d }}\n"),
        "t.yaml:5:34: pools[0].circuit_breaker.open_for: must be at most 24h",
    );
    let yaml = format!(
        "{POOL}tcp_services:\n  - {{ name: db, listen: 127.0.0.1:15432, pool: web, idle_timeout: 366d }}\n"
    );
    refused(
        &yaml,
        "t.yaml:6:67: tcp_services[0].idle_timeout: must be at most 365d",
    );
}

#[test]
fn zero_timeouts_are_refused() {
    for key in ["connect", "read", "write"] {
        refused(
            &format!("{POOL}    timeouts:\n      {key}: 0s\n"),
            &format!(
                "t.yaml:6:{}: pools[0].timeouts.{key}: must be greater than 0",
                9 + key.len()
            ),
        );
    }
    // idle 0 stays allowed (no idle keep-alive).
    accepted(&format!("{POOL}    timeouts: {{ idle: 0s }}\n"));
}

#[test]
fn zero_health_check_periods_are_refused() {
    refused(
        &format!("{POOL}    health_check:\n      interval: 0ms\n"),
        "t.yaml:6:17: pools[0].health_check.interval: must be greater than 0",
    );
    refused(
        &format!("{POOL}    health_check:\n      timeout: 0s\n"),
        "t.yaml:6:16: pools[0].health_check.timeout: must be greater than 0",
    );
    refused(
        &format!(
            "{POOL}    discovery:\n      dns: {{ name: web.internal, port: 80, interval: 0s }}\n"
        ),
        "t.yaml:6:54: pools[0].discovery.dns.interval: must be greater than 0",
    );
}

#[test]
fn sticky_cookie_names_are_tokens() {
    refused(
        &format!("{POOL}    sticky:\n      cookie: ''\n"),
        "t.yaml:6:15: pools[0].sticky.cookie: must not be empty",
    );
    refused(
        &format!("{POOL}    sticky: {{ cookie: \"a b\" }}\n"),
        "t.yaml:5:23: pools[0].sticky.cookie: \"a b\" is not a valid cookie name (an RFC 6265 token: letters, digits and !#$%&'*+-.^_`|~)",
    );
    refused(
        &format!("{POOL}    sticky: {{ cookie: \"a;b\" }}\n"),
        "t.yaml:5:23: pools[0].sticky.cookie: \"a;b\" is not a valid cookie name (an RFC 6265 token: letters, digits and !#$%&'*+-.^_`|~)",
    );
    refused(
        &format!("{POOL}    sticky: {{ cookie: ~ }}\n"),
        "t.yaml:5:23: pools[0].sticky.cookie: must not be empty",
    );
    let c = accepted(&format!("{POOL}    sticky: {{ cookie: sid }}\n"));
    assert_eq!(
        c.pools[0].sticky.as_ref().map(|s| s.cookie.as_str()),
        Some("sid")
    );
}

const TWO: &str =
    "pools:\n  - name: web\n    backends:\n      - address: 127.0.0.1:18081\n      - address: ";

#[test]
fn backends_reaching_one_address_are_refused() {
    refused(
        &format!("{TWO}localhost:18081\n"),
        "t.yaml:5:18: pools[0].backends[1].address: same address as backends[0] (\"127.0.0.1:18081\" and \"localhost:18081\" are both 127.0.0.1:18081)",
    );
    refused(
        &format!("{TWO}127.0.0.1:18081\n"),
        "t.yaml:5:18: pools[0].backends[1].address: duplicate backend \"127.0.0.1:18081\" (same as backends[0])",
    );
    // Another port is another backend.
    accepted(&format!("{TWO}localhost:18082\n"));
}

#[test]
fn backend_ip_literals_are_canonical() {
    refused(
        &format!("{TWO}127.000.0.1:18081\n"),
        "t.yaml:5:18: pools[0].backends[1].address: \"127.000.0.1:18081\" is not a canonical IP address (four numbers 0-255 without leading zeros, e.g. 127.0.0.1)",
    );
    let c = accepted("pools:\n  - name: web\n    backends:\n      - address: \"[0:0::1]:80\"\n      - address: LocalHost:81\n");
    let names: Vec<&str> = c.pools[0]
        .backends
        .iter()
        .map(|b| b.address.as_str())
        .collect();
    assert_eq!(names, ["[::1]:80", "localhost:81"]);
}

#[test]
fn a_moved_pool_keeps_its_definition() {
    let a = accepted(&format!("{POOL}routes:\n  - {{ name: r, pool: web }}\n"));
    let b = accepted(&format!(
        "# moved\n\nroutes:\n  - {{ name: r, pool: web }}\n{POOL}"
    ));
    assert_eq!(a.pools, b.pools);
    assert_eq!(a, b);
    let c = accepted(&POOL.replace("18081", "18082"));
    assert_ne!(a.pools, c.pools);
}

#[test]
fn references_name_the_entry_as_written_even_after_a_bad_one() {
    // pools[0] does not read, so the model's first pool is pools[1].
    let yaml = "pools:\n  - name: broken\n  - name: web\n    backends: [{ address: 127.0.0.1:1 }]\n  - name: web\n    backends: [{ address: 127.0.0.1:2 }]\n";
    let errs = errors(yaml);
    assert!(
        errs.contains(
            &"t.yaml:5:11: pools[2].name: duplicate name \"web\" (first used by pools[1])"
                .to_string()
        ),
        "{errs:#?}"
    );
}

#[test]
fn unknown_keys_list_each_known_key_once() {
    let yaml = format!(
        "{POOL}routes:\n  - name: r\n    pool: web\n    rate_limit: {{ rate: 5, rat: 1 }}\n"
    );
    refused(
        &yaml,
        "t.yaml:8:28: routes[0].rate_limit.rat: unknown key \"rat\" (expected one of: rate, burst, key, algorithm, scope)",
    );
}

#[test]
fn missing_required_keys_are_reported_at_their_mapping() {
    refused(
        &format!("{POOL}routes:\n  - name: r\n    pool: web\n    rate_limit: {{ burst: 5 }}\n"),
        "t.yaml:8:17: routes[0].rate_limit.rate: is required",
    );
    refused(
        &format!("{POOL}cluster:\n  timeout: 5ms\n"),
        "t.yaml:6:10: cluster.redis: is required",
    );
}

const LISTENER: &str = "listeners:\n  - name: web\n    listen: 127.0.0.1:18080\n";

#[test]
fn a_listener_without_limits_gets_the_spec_defaults() {
    let c = accepted(&format!("{LISTENER}{POOL}"));
    let l = &c.listeners[0];
    assert_eq!(l.limits, super::ListenerLimits::default());
    assert_eq!(l.limits.header_timeout, std::time::Duration::from_secs(10));
    assert_eq!(l.limits.max_header_bytes, 65536);
    assert_eq!(l.limits.h2_max_concurrent_streams, 100);
    assert!(!l.proxy_protocol);
}

#[test]
fn listener_limits_are_bounded() {
    refused(
        &format!("{LISTENER}    limits: {{ header_timeout: 0s }}\n{POOL}"),
        "t.yaml:4:31: listeners[0].limits.header_timeout: must be greater than 0",
    );
    refused(
        &format!("{LISTENER}    limits: {{ max_headers: 1000 }}\n{POOL}"),
        "t.yaml:4:28: listeners[0].limits.max_headers: \"1000\" is not a whole number from 1 to 256",
    );
    refused(
        &format!("{LISTENER}    limits: {{ max_body_bytes: 10MB }}\n{POOL}"),
        "t.yaml:4:31: listeners[0].limits.max_body_bytes: \"10MB\" is not a whole number of bytes (0 = unlimited)",
    );
    let c = accepted(&format!(
        "{LISTENER}    limits: {{ keepalive_timeout: 0s, max_body_bytes: 5000000000 }}\n{POOL}"
    ));
    assert!(c.listeners[0].limits.keepalive_timeout.is_zero());
    assert_eq!(c.listeners[0].limits.max_body_bytes, 5_000_000_000);
}

#[test]
fn proxy_protocol_needs_trusted_proxies() {
    refused(
        &format!("{LISTENER}    proxy_protocol: true\n{POOL}"),
        "t.yaml:2:11: listeners[0].proxy_protocol: needs server.trusted_proxies: a PROXY header is accepted only from those addresses",
    );
    let c = accepted(&format!(
        "server: {{ trusted_proxies: [127.0.0.1] }}\n{LISTENER}    proxy_protocol: true\n{POOL}"
    ));
    assert!(c.listeners[0].proxy_protocol);
}

#[test]
fn upstream_proxy_protocol_is_a_keyword() {
    refused(
        &format!("{POOL}    upstream: {{ proxy_protocol: v3 }}\n"),
        "t.yaml:5:33: pools[0].upstream.proxy_protocol: \"v3\" is not one of none | v1 | v2",
    );
}

const TLS_LISTENER: &str = "listeners:\n  - name: web\n    listen: 127.0.0.1:18443\n    tls:\n      certificates:\n        - { cert_file: /c.pem, key_file: /k.pem }\n";

#[test]
fn http3_is_a_tls_listener_key() {
    let on = accepted(&format!("{TLS_LISTENER}    http3: true\n{POOL}"));
    assert!(on.listeners[0].http3);
    let off = accepted(&format!("{TLS_LISTENER}{POOL}"));
    assert!(!off.listeners[0].http3, "http3 is off by default");
    let plain = errors(&format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:18080\n    http3: true\n{POOL}"
    ));
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert!(
        plain[0].contains("listeners[0].http3") && plain[0].contains("needs TLS"),
        "{plain:?}"
    );
    let proxied = errors(&format!(
        "{TLS_LISTENER}    proxy_protocol: true\n    http3: true\n{POOL}"
    ));
    assert!(
        proxied[0].contains("listeners[0].http3") && proxied[0].contains("PROXY header"),
        "{proxied:?}"
    );
    let quic = errors(&format!("{TLS_LISTENER}    quic: true\n{POOL}"));
    assert!(quic[0].contains("http3: true"), "{quic:?}");
}
