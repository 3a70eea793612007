//! `GET /api/v1/stats` (SPEC §14): the one-minute windows of every route and backend
//! of the running configuration, open connections per listener and sessions per
//! tcp_service.

use crate::observe::stats::{open_connections, Side, WINDOW};
use crate::runtime::Runtime;
use serde_json::{json, Value};

pub fn stats(rt: &Runtime) -> Value {
    let routes: Vec<Value> = rt
        .routes
        .iter()
        .map(|r| with(json!({"name": r.name}), r.metrics.stats.summary()))
        .collect();
    let mut backends = Vec::new();
    for pool in rt.pools.iter() {
        for b in pool.members().backends.iter() {
            let id = json!({"pool": pool.name, "address": b.address});
            backends.push(with(id, b.stats.summary()));
        }
    }
    let listeners: Vec<Value> = open_connections(Side::Listener)
        .into_iter()
        .map(|(name, open)| json!({"name": name, "open_connections": open}))
        .collect();
    let tcp_services: Vec<Value> = open_connections(Side::TcpService)
        .into_iter()
        .map(|(name, open)| json!({"name": name, "sessions": open}))
        .collect();
    json!({
        "window_seconds": WINDOW.as_secs(),
        "routes": routes,
        "backends": backends,
        "listeners": listeners,
        "tcp_services": tcp_services,
    })
}

/// `id`'s fields followed by the summary's.
fn with(mut id: Value, summary: impl serde::Serialize) -> Value {
    if let (Some(map), Ok(Value::Object(s))) = (id.as_object_mut(), serde_json::to_value(summary)) {
        map.extend(s);
    }
    id
}
