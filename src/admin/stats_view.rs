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
        .map(|r| {
            let mut v = with(json!({"name": r.name}), r.metrics.stats.summary());
            if let (Some(map), Some(rc)) = (v.as_object_mut(), r.cache.as_ref()) {
                map.insert("cache".into(), cache_summary(rc));
            }
            v
        })
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
        "certificates": certificates(),
        "window_seconds": WINDOW.as_secs(),
        "routes": routes,
        "backends": backends,
        "listeners": listeners,
        "tcp_services": tcp_services,
    })
}

/// A caching route's answers since start (an extension for the dashboard): requests that
/// could use the cache, those answered from it (HIT, STALE, REVALIDATED) and their ratio.
fn cache_summary(rc: &crate::cache::RouteCache) -> Value {
    use crate::cache::Status;
    let served = [Status::Hit, Status::Stale, Status::Revalidated]
        .iter()
        .map(|s| rc.counted(*s))
        .sum::<u64>();
    let lookups = served + rc.counted(Status::Miss) + rc.counted(Status::Expired);
    let ratio = if lookups == 0 {
        Value::Null
    } else {
        json!(served as f64 / lookups as f64)
    };
    json!({
        "lookups": lookups,
        "served_from_cache": served,
        "bypassed": rc.counted(Status::Bypass),
        "hit_ratio": ratio,
    })
}

/// Every served certificate's expiry, from the same gauges `/metrics` exports (an
/// extension for the dashboard: `listener`, `name`, `expires_at` (Unix s), `days_left`).
fn certificates() -> Vec<Value> {
    use prometheus::core::Collector;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut out = Vec::new();
    for family in crate::observe::metrics::METRICS
        .certificate_expiry
        .collect()
    {
        for m in family.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            let expires = m.get_gauge().get_value();
            out.push(json!({
                "listener": label("listener"),
                "name": label("name"),
                "expires_at": expires as i64,
                "days_left": ((expires - now) / 86_400.0).floor() as i64,
            }));
        }
    }
    out
}

/// `id`'s fields followed by the summary's.
fn with(mut id: Value, summary: impl serde::Serialize) -> Value {
    if let (Some(map), Ok(Value::Object(s))) = (id.as_object_mut(), serde_json::to_value(summary)) {
        map.extend(s);
    }
    id
}
