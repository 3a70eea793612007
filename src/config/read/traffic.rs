//! The traffic-management keys (SPEC §13) of `pools[]`, `routes[]` and `server`.

use super::*;

/// `try_duration` holds a request at most this long (Pingora's retry loop is bounded).
const TRY_LIMIT: Limit = Limit {
    max: Duration::from_secs(300),
    text: "5m",
    nonzero: false,
};

/// The §13 keys of one pool, read from its mapping.
pub(super) fn read_pool_traffic(d: &mut Decoder, m: &mut Map) -> PoolTraffic {
    let def = PoolTraffic::default();
    let outlier_detection = get_with(d, m, "outlier_detection", read_outlier);
    let panic_threshold = bounded(d, m, "panic_threshold", 0, 0, 100);
    let slow_start = duration_within(d, m, "slow_start", def.slow_start, DAY);
    let queue = get_with(d, m, "queue", |d, n, p| {
        let mut q = d.map(n, p)?;
        let qd = QueueConfig::default();
        let v = QueueConfig {
            max: bounded(d, &mut q, "max", qd.max, 0, 1_000_000),
            timeout: duration_within(d, &mut q, "timeout", qd.timeout, DAY.nonzero()),
        };
        q.finish(d, |_| None);
        Some(v)
    })
    .unwrap_or_default();
    let try_duration = duration_within(d, m, "try_duration", def.try_duration, TRY_LIMIT);
    let retry_on = match m.get("retry_on") {
        None => def.retry_on,
        Some(n) => {
            let path = m.child("retry_on");
            let mut list = d.list(n, &path, true, |d, n, p| {
                d.parse(n, p, &RetryOn::expected(), RetryOn::from_name)
            });
            list.dedup();
            list
        }
    };
    let retry_budget = bounded(d, m, "retry_budget", def.retry_budget, 0, 100);
    PoolTraffic {
        outlier_detection,
        panic_threshold,
        slow_start,
        queue,
        try_duration,
        retry_on,
        retry_budget,
    }
}

fn read_outlier(d: &mut Decoder, node: &Node, path: &str) -> Option<OutlierConfig> {
    let mut m = d.map(node, path)?;
    let def = OutlierConfig::default();
    let base = duration_within(
        d,
        &mut m,
        "base_ejection_time",
        def.base_ejection_time,
        DAY.nonzero(),
    );
    let max_pos = m.value_pos("max_ejection_time");
    let max = duration_within(
        d,
        &mut m,
        "max_ejection_time",
        def.max_ejection_time.max(base),
        DAY.nonzero(),
    );
    if max < base {
        d.error(
            max_pos,
            &m.child("max_ejection_time"),
            "must be at least base_ejection_time",
        );
    }
    let v = OutlierConfig {
        consecutive_5xx: bounded(d, &mut m, "consecutive_5xx", def.consecutive_5xx, 0, 10_000),
        consecutive_gateway_failures: bounded(
            d,
            &mut m,
            "consecutive_gateway_failures",
            def.consecutive_gateway_failures,
            0,
            10_000,
        ),
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_percent: bounded(
            d,
            &mut m,
            "max_ejection_percent",
            def.max_ejection_percent,
            0,
            100,
        ),
    };
    m.finish(d, |_| None);
    Some(v)
}

/// The §13 keys of one route, read from its mapping.
pub(super) fn read_route_traffic(d: &mut Decoder, m: &mut Map) -> RouteTraffic {
    let mirror = get_with(d, m, "mirror", |d, n, p| {
        let mut mm = d.map(n, p)?;
        d.spans.set(p, mm.pos);
        let pool = required_string(d, &mut mm, "pool");
        let percent = bounded(d, &mut mm, "percent", 100, 0, 100);
        mm.finish(d, |_| None);
        Some(MirrorConfig {
            pool: pool?,
            percent,
        })
    });
    let geo = get_with(d, m, "geo", |d, n, p| {
        let mut g = d.map(n, p)?;
        d.spans.set(p, g.pos);
        let path = g.child("countries");
        let countries = required(d, &mut g, "countries", |d, n, _| {
            Some(d.list(n, &path, true, |d, n, p| {
                d.parse(n, p, "a two-letter ISO 3166 country code such as DE", |s| {
                    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()))
                        .then(|| s.to_ascii_uppercase())
                })
            }))
        });
        g.finish(d, |_| None);
        Some(GeoConfig {
            countries: countries?,
        })
    });
    RouteTraffic { mirror, geo }
}

/// `server.geoip`.
pub(super) fn read_geoip(d: &mut Decoder, m: &mut Map) -> Option<GeoIpConfig> {
    get_with(d, m, "geoip", |d, n, p| {
        let mut g = d.map(n, p)?;
        d.spans.set(p, g.pos);
        let database = required(d, &mut g, "database", |d, n, p| d.string(n, p));
        g.finish(d, |_| None);
        Some(GeoIpConfig {
            database: database?.into(),
        })
    })
}
