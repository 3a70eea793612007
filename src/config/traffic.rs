//! The traffic-management keys of SPEC §13 as typed values: a pool's outlier
//! detection, panic threshold, slow start, queue, try duration and retry policy; a
//! route's mirror and geo match; `server.geoip`.

use super::keyword::keyword;
use super::ser;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// `pools[].outlier_detection`: passive ejection on live traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierConfig {
    /// 0 = this trigger is off.
    pub consecutive_5xx: u32,
    /// 502, 503, 504, connect failures and timeouts; 0 = off.
    pub consecutive_gateway_failures: u32,
    #[serde(serialize_with = "ser::duration")]
    pub base_ejection_time: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: 5,
            consecutive_gateway_failures: 3,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// `pools[].queue`: requests waiting for a free backend slot (`max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueueConfig {
    /// 0 = no queue (an immediate 503 when every backend is full).
    pub max: u32,
    #[serde(serialize_with = "ser::duration")]
    pub timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max: 0,
            timeout: Duration::from_secs(5),
        }
    }
}

keyword! {
    /// `pools[].retry_on`: what sends a request on to another backend.
    pub enum RetryOn {
        ConnectFailure = "connect_failure",
        Reset = "reset",
        Status502 = "502",
        Status503 = "503",
        Status504 = "504",
    }
}

impl RetryOn {
    /// The retried response status, for the status conditions.
    pub fn status(self) -> Option<u16> {
        match self {
            RetryOn::Status502 => Some(502),
            RetryOn::Status503 => Some(503),
            RetryOn::Status504 => Some(504),
            _ => None,
        }
    }
}

/// The §13 keys of one pool (flattened into the pool's view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolTraffic {
    pub outlier_detection: Option<OutlierConfig>,
    /// Percent; 0 = off.
    pub panic_threshold: u32,
    #[serde(serialize_with = "ser::duration")]
    pub slow_start: Duration,
    pub queue: QueueConfig,
    #[serde(serialize_with = "ser::duration")]
    pub try_duration: Duration,
    pub retry_on: Vec<RetryOn>,
    /// Percent of the pool's active requests that may be retries.
    pub retry_budget: u32,
}

impl Default for PoolTraffic {
    fn default() -> Self {
        PoolTraffic {
            outlier_detection: None,
            panic_threshold: 0,
            slow_start: Duration::ZERO,
            queue: QueueConfig::default(),
            try_duration: Duration::ZERO,
            retry_on: vec![RetryOn::ConnectFailure],
            retry_budget: 20,
        }
    }
}

/// `routes[].mirror`: a copy of some requests to another pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorConfig {
    pub pool: String,
    pub percent: u32,
}

/// `routes[].geo`: matches clients of these countries (ISO 3166-1 alpha-2, upper case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeoConfig {
    pub countries: Vec<String>,
}

/// The §13 keys of one route (flattened into the route's view).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteTraffic {
    pub mirror: Option<MirrorConfig>,
    pub geo: Option<GeoConfig>,
}

/// `server.geoip`: the MaxMind DB country database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeoIpConfig {
    pub database: PathBuf,
}

/// Checks across sections: a mirror names another existing pool (one serving HTTP
/// routes), a geo match needs `server.geoip`, a queue needs `max_connections`.
pub fn check(d: &mut super::raw::Decoder, c: &super::model::Config) {
    for (i, r) in c.routes.iter().enumerate() {
        let route = d.spans.item_path("routes", i);
        if let Some(m) = &r.traffic.mirror {
            let path = format!("{route}.mirror");
            let pos = d.spans.at(&path);
            if !c.pools.iter().any(|p| p.name == m.pool) {
                d.error(
                    pos,
                    &format!("{path}.pool"),
                    format!("no pool named {:?}", m.pool),
                );
            } else if r.pool.as_deref() == Some(m.pool.as_str()) {
                d.error(
                    pos,
                    &format!("{path}.pool"),
                    "mirrors to the route's own pool; name another pool",
                );
            } else if c.tcp_services.iter().any(|t| t.pool == m.pool) {
                d.error(
                    pos,
                    &format!("{path}.pool"),
                    format!("pool {:?} serves a tcp_service, not HTTP", m.pool),
                );
            }
        }
        if r.traffic.geo.is_some() && c.server.geoip.is_none() {
            let path = format!("{route}.geo");
            d.error(
                d.spans.at(&path),
                &path,
                "needs server.geoip (a MaxMind country database) to know the client's country",
            );
        }
    }
    for (i, p) in c.pools.iter().enumerate() {
        let max_connections = p.circuit_breaker.as_ref().map_or(0, |b| b.max_connections);
        if p.traffic.queue.max > 0 && max_connections == 0 {
            let path = d.spans.item_path("pools", i);
            d.warn(
                d.spans.at(&path),
                &format!("{path}.queue"),
                "has no effect without circuit_breaker.max_connections",
            );
        }
    }
}

/// `server.geoip.database` must open as a MaxMind DB.
pub fn check_files(d: &mut super::raw::Decoder, c: &super::model::Config) {
    if let Some(g) = &c.server.geoip {
        if let Err(e) = maxminddb::Reader::open_readfile(&g.database) {
            let path = "server.geoip.database";
            let message = format!("cannot open {} as a MaxMind DB: {e}", g.database.display());
            d.error(d.spans.at("server.geoip"), path, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{accepted, errors};

    const HEAD: &str = "pools:\n  - name: web\n    backends:\n      - address: 127.0.0.1:18081\n";

    fn pool(keys: &str) -> String {
        format!("{HEAD}{keys}")
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = accepted(&pool("    outlier_detection: {}\n"));
        let t = &c.pools[0].traffic;
        assert_eq!(t.outlier_detection, Some(OutlierConfig::default()));
        assert_eq!(t.retry_on, vec![RetryOn::ConnectFailure]);
        assert_eq!((t.retry_budget, t.panic_threshold), (20, 0));
        assert_eq!(t.queue, QueueConfig::default());
        assert!(t.slow_start.is_zero() && t.try_duration.is_zero());
    }

    #[test]
    fn every_key_reads() {
        let c = accepted(&pool(
            "    outlier_detection: { consecutive_5xx: 2, consecutive_gateway_failures: 0, base_ejection_time: 1s, max_ejection_time: 4s, max_ejection_percent: 100 }\n    panic_threshold: 50\n    slow_start: 10s\n    queue: { max: 3, timeout: 1s }\n    try_duration: 2s\n    retry_on: [reset, 503]\n    retry_budget: 0\n    circuit_breaker: { max_connections: 1 }\n",
        ));
        let t = &c.pools[0].traffic;
        let o = t.outlier_detection.clone().unwrap_or_default();
        assert_eq!((o.consecutive_5xx, o.consecutive_gateway_failures), (2, 0));
        assert_eq!(o.max_ejection_time, Duration::from_secs(4));
        assert_eq!(t.retry_on, vec![RetryOn::Reset, RetryOn::Status503]);
        assert_eq!(t.queue.max, 3);
    }

    #[test]
    fn bad_values_are_refused_with_their_place() {
        let e = errors(&pool("    retry_on: [501]\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("pools[0].retry_on[0]")
                && e[0].contains("connect_failure | reset | 502 | 503 | 504"),
            "{e:?}"
        );
        let e = errors(&pool("    panic_threshold: 101\n"));
        assert!(e[0].contains("pools[0].panic_threshold"), "{e:?}");
        let e = errors(&pool(
            "    outlier_detection: { base_ejection_time: 1m, max_ejection_time: 30s }\n",
        ));
        assert!(
            e[0].contains("max_ejection_time: must be at least base_ejection_time"),
            "{e:?}"
        );
        let e = errors(&pool("    queue: { timeout: 0s }\n"));
        assert!(e[0].contains("pools[0].queue.timeout"), "{e:?}");
    }

    #[test]
    fn route_keys_are_checked_against_pools_and_geoip() {
        let routes = "routes:\n  - name: api\n    pool: web\n    mirror: { pool: shadow }\n    geo: { countries: [de, FR] }\n";
        let e = errors(&format!("{HEAD}{routes}"));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("routes[0].mirror.pool: no pool named \"shadow\""),
            "{e:?}"
        );
        assert!(e[1].contains("routes[0].geo: needs server.geoip"), "{e:?}");
        let shadow = "  - name: shadow\n    backends:\n      - address: 127.0.0.1:18082\n";
        let c = accepted(&format!(
            "server:\n  geoip: {{ database: /tmp/x.mmdb }}\n{HEAD}{shadow}{routes}"
        ));
        let r = &c.routes[0].traffic;
        assert_eq!(
            r.mirror,
            Some(MirrorConfig {
                pool: "shadow".into(),
                percent: 100
            })
        );
        assert_eq!(
            r.geo.as_ref().map(|g| g.countries.clone()),
            Some(vec!["DE".into(), "FR".into()])
        );
        let e = errors(&format!(
            "{HEAD}routes:\n  - name: api\n    pool: web\n    geo: {{ countries: [DEU] }}\n"
        ));
        assert!(
            e.iter().any(|l| l.contains("routes[0].geo.countries[0]")),
            "{e:?}"
        );
    }
}
