//! `pools[].health_check` and `pools[].circuit_breaker`.

use super::*;

pub(super) fn read_health_check(
    d: &mut Decoder,
    node: &Node,
    path: &str,
) -> Option<HealthCheckConfig> {
    let mut m = d.map(node, path)?;
    let def = HealthCheckConfig::default();
    let kind = get_with(d, &mut m, "kind", |d, n, p| {
        d.parse(n, p, &HealthKind::expected(), HealthKind::from_name)
    });
    let hc_path = opt_string(d, &mut m, "path").unwrap_or(def.path);
    if let Some(e) = validate::health_path(&hc_path) {
        d.error(m.key_pos("path"), &m.child("path"), e);
    }
    let expect_status = get_with(d, &mut m, "expect_status", |d, n, p| {
        d.parse(
            n,
            p,
            "a status \"N\" or range \"N-M\" (100-599)",
            parse_status_range,
        )
    })
    .unwrap_or(def.expect_status);
    let hc = HealthCheckConfig {
        kind,
        path: hc_path,
        host: opt_string(d, &mut m, "host"),
        expect_status,
        user: opt_string(d, &mut m, "user"),
        database: opt_string(d, &mut m, "database"),
        interval: duration_within(d, &mut m, "interval", def.interval, DAY.nonzero()),
        timeout: duration_within(d, &mut m, "timeout", def.timeout, DAY.nonzero()),
        healthy_threshold: bounded(
            d,
            &mut m,
            "healthy_threshold",
            def.healthy_threshold,
            1,
            100,
        ),
        unhealthy_threshold: bounded(
            d,
            &mut m,
            "unhealthy_threshold",
            def.unhealthy_threshold,
            1,
            100,
        ),
    };
    m.finish(d, |_| None);
    Some(hc)
}

pub(super) fn read_circuit_breaker(
    d: &mut Decoder,
    node: &Node,
    path: &str,
) -> Option<CircuitBreakerConfig> {
    let mut m = d.map(node, path)?;
    let def = CircuitBreakerConfig::default();
    let cb = CircuitBreakerConfig {
        failure_threshold: bounded(
            d,
            &mut m,
            "failure_threshold",
            def.failure_threshold,
            1,
            1_000_000,
        ),
        on_5xx: boolean(d, &mut m, "on_5xx", def.on_5xx),
        open_for: duration_within(d, &mut m, "open_for", def.open_for, DAY),
        half_open_requests: bounded(
            d,
            &mut m,
            "half_open_requests",
            def.half_open_requests,
            1,
            1_000_000,
        ),
        max_connections: bounded(
            d,
            &mut m,
            "max_connections",
            def.max_connections,
            0,
            u32::MAX,
        ),
    };
    m.finish(d, |_| None);
    Some(cb)
}
