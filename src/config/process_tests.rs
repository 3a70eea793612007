//! Unit tests of `config::process`.

use super::*;
use crate::config::parse_str;

fn process(yaml: &str) -> ProcessConfig {
    let loaded = parse_str("t.yaml", yaml, &|_| None, false).expect("valid config");
    ProcessConfig::of(&loaded.config)
}

const BASE: &str = "listeners:\n  - name: web\n    listen: 127.0.0.1:8080\n";

#[test]
fn an_unchanged_file_needs_nothing() {
    assert!(changes(&process(BASE), &process(BASE), &|u| u.into()).is_empty());
}

#[test]
fn what_a_reload_applies_is_not_listed() {
    let routes = format!(
        "{BASE}    limits: {{ header_timeout: 3s, max_connections: 9, body_timeout: 1s }}\n"
    );
    assert!(changes(&process(BASE), &process(&routes), &|u| u.into()).is_empty());
}

#[test]
fn each_fixed_setting_is_named_with_both_values() {
    let new = "server:\n  threads: 3\nlisteners:\n  - name: web\n    listen: 127.0.0.1:9090\n    limits: { h2_max_concurrent_streams: 7, max_requests_per_connection: 5 }\n  - name: more\n    listen: 127.0.0.1:9091\nmetrics:\n  listen: 127.0.0.1:9100\n";
    let found = changes(&process(BASE), &process(new), &|u| u.into());
    let keys: Vec<&str> = found.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.threads",
            "listeners.web.listen",
            "listeners.web.limits.max_requests_per_connection",
            "listeners.web.limits.h2_max_concurrent_streams",
            "listener more",
            "metrics.listen"
        ]
    );
    let line = found[1].to_string();
    assert!(
        line.contains("from 127.0.0.1:8080 to 127.0.0.1:9090") && line.contains("needs an upgrade"),
        "{line}"
    );
}

#[test]
fn a_removed_listener_is_named() {
    let two = format!("{BASE}  - name: api\n    listen: 127.0.0.1:8081\n");
    let found = changes(&process(&two), &process(BASE), &|u| u.into());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "listener api");
    assert_eq!(found[0].wanted, "none");
}

#[test]
fn the_redis_url_is_shown_through_the_redaction() {
    let with = |url: &str| format!("{BASE}cluster:\n  redis: {url}\n");
    let found = changes(
        &process(&with("redis://:pw@127.0.0.1:1/")),
        &process(&with("redis://:pw@127.0.0.1:2/")),
        &|_| "hidden".into(),
    );
    assert_eq!(found.len(), 1);
    assert!(!found[0].to_string().contains("pw"), "{}", found[0]);
}

#[test]
fn listener_index_follows_the_bound_order() {
    let two = format!("{BASE}  - name: api\n    listen: 127.0.0.1:8081\n");
    let p = process(&two);
    assert_eq!(p.listener_index("api"), Some(1));
    assert_eq!(p.listener_index("nope"), None);
}
