//! Test configurations built as typed values rather than glued YAML text: `serde_json`
//! values, written out as JSON, which Switchyard reads as the YAML it is (JSON is YAML).
//! `{dir}` in a string is the test's temporary directory.

use serde_json::{json, Value};

/// The tests' `server:` and `log:` sections (files in `{dir}`, access log to a file),
/// with empty `listeners`, `pools` and `routes` to push entries onto.
pub fn test_config() -> Value {
    json!({
        "server": {
            "threads": 1,
            "pid_file": "{dir}/switchyard.pid",
            "upgrade_sock": "{dir}/upgrade.sock",
            "grace_period": "1s",
            "shutdown_timeout": "1s",
        },
        "log": { "level": "info", "access_log": "{dir}/access.log" },
        "listeners": [],
        "pools": [],
        "routes": [],
    })
}

/// The test configuration with these `listeners`, `pools` and `routes` (JSON lists).
pub fn config_of(listeners: Value, pools: Value, routes: Value) -> Value {
    with(
        test_config(),
        json!({ "listeners": listeners, "pools": pools, "routes": routes }),
    )
}

/// The test configuration with one plaintext listener `web` on 127.0.0.1:`port`.
pub fn web_config(port: u16, pools: Value, routes: Value) -> Value {
    config_of(json!([listener("web", port)]), pools, routes)
}

/// `listeners`, one pool `p` over `backend` and one route `r` (with `route_keys`) to it.
pub fn one_pool_config(listeners: Value, backend: &str, route_keys: Value) -> Value {
    config_of(
        listeners,
        json!([pool("p", &[backend.to_string()])]),
        json!([with(route("r", "p"), route_keys)]),
    )
}

/// A plaintext listener `name` on 127.0.0.1:`port`.
pub fn listener(name: &str, port: u16) -> Value {
    json!({ "name": name, "listen": format!("127.0.0.1:{port}") })
}

/// A TLS listener `name` on 127.0.0.1:`port` serving one certificate (file paths).
pub fn tls_listener(name: &str, port: u16, cert_file: &str, key_file: &str) -> Value {
    let mut l = listener(name, port);
    l["tls"] = json!({ "certificates": [certificate(cert_file, key_file)] });
    l
}

/// A `tls.certificates` entry (file paths).
pub fn certificate(cert_file: &str, key_file: &str) -> Value {
    json!({ "cert_file": cert_file, "key_file": key_file })
}

/// A pool `name` with one backend per address.
pub fn pool(name: &str, addresses: &[String]) -> Value {
    let backends: Vec<Value> = addresses.iter().map(|a| json!({ "address": a })).collect();
    json!({ "name": name, "backends": backends })
}

/// Pool `name` over one backend per address, with `keys`.
pub fn pool_with(name: &str, keys: Value, addresses: &[String]) -> Value {
    with(pool(name, addresses), keys)
}

/// Pool keys that turn active health checks off.
pub fn no_health_check() -> Value {
    json!({ "health_check": { "kind": "none" } })
}

/// `admin:` on 127.0.0.1:`port` with its state in `{dir}` and these `tokens` (the key is
/// left out when there are none).
pub fn admin_on(port: u16, tokens: &[&str]) -> Value {
    let mut admin = json!({
        "listen": format!("127.0.0.1:{port}"),
        "state_file": "{dir}/state.json",
    });
    if !tokens.is_empty() {
        admin["tokens"] = json!(tokens);
    }
    json!({ "admin": admin })
}

/// `metrics:` on 127.0.0.1:`port`.
pub fn metrics_on(port: u16) -> Value {
    json!({ "metrics": { "listen": format!("127.0.0.1:{port}") } })
}

/// A route `name` to pool `pool`.
pub fn route(name: &str, pool: &str) -> Value {
    json!({ "name": name, "pool": pool })
}

/// `base` with the keys of `patch` laid over it: objects merge key by key, anything else
/// (lists included) is replaced.
pub fn with(mut base: Value, patch: Value) -> Value {
    merge(&mut base, patch);
    base
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// The configuration file's text.
pub fn config_text(config: &Value) -> String {
    serde_json::to_string_pretty(config).expect("a JSON value serialises")
}
