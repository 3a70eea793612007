//! `server`, `log`, `admin`, `metrics` and `cluster`: the process-wide sections.

use super::*;

/// The most worker threads a service may ask for (0 = one per CPU).
pub const MAX_THREADS: usize = 1024;

pub(super) fn read_server(d: &mut Decoder, node: &Node) -> Option<ServerConfig> {
    let mut m = d.map(node, "server")?;
    let def = ServerConfig::default();
    let threads = get_with(d, &mut m, "threads", |d, n, p| {
        d.parse(
            n,
            p,
            &format!("a whole number from 0 (one per CPU) to {MAX_THREADS}"),
            |s| s.parse::<usize>().ok().filter(|t| *t <= MAX_THREADS),
        )
    })
    .unwrap_or(0);
    let s = ServerConfig {
        threads,
        pid_file: opt_path(d, &mut m, "pid_file").unwrap_or(def.pid_file),
        upgrade_sock: opt_path(d, &mut m, "upgrade_sock").unwrap_or(def.upgrade_sock),
        user: opt_string(d, &mut m, "user"),
        group: opt_string(d, &mut m, "group"),
        grace_period: duration_within(d, &mut m, "grace_period", def.grace_period, DAY),
        shutdown_timeout: duration_within(d, &mut m, "shutdown_timeout", def.shutdown_timeout, DAY),
        trusted_proxies: cidr_list(d, &mut m, "trusted_proxies"),
        deny: cidr_list(d, &mut m, "deny"),
        geoip: super::traffic::read_geoip(d, &mut m),
    };
    m.finish(d, |_| None);
    Some(s)
}

pub(super) fn read_log(d: &mut Decoder, node: &Node) -> Option<LogConfig> {
    let mut m = d.map(node, "log")?;
    let level = get_with(d, &mut m, "level", |d, n, p| {
        d.parse(n, p, &LogLevel::expected(), parse_level)
    })
    .unwrap_or(log::LevelFilter::Info);
    let access_log = get_with(d, &mut m, "access_log", |d, n, p| {
        let s = d.string(n, p)?;
        if s.is_empty() {
            let expected = AccessLogKeyword::NAMES.join(" | ");
            d.error(
                Pos::default(),
                p,
                format!("expected {expected} | a file path"),
            );
            return None;
        }
        Some(AccessLogTarget::from_text(&s))
    })
    .unwrap_or(AccessLogTarget::Stdout);
    m.finish(d, |_| None);
    Some(LogConfig { level, access_log })
}

pub(super) fn read_admin(d: &mut Decoder, node: &Node) -> Option<AdminConfig> {
    let mut m = d.map(node, "admin")?;
    let pos = m.pos;
    d.spans.set("admin", pos);
    let listen = listen_addr(d, &mut m, "listen");
    let tokens = name_list(d, &mut m, "tokens", false);
    let allow_given = m.get("allow").is_some();
    let mut allow = cidr_list(d, &mut m, "allow");
    if !allow_given {
        allow = vec!["127.0.0.0/8".parse().ok()?, "::1/128".parse().ok()?];
    }
    let state_file = opt_path(d, &mut m, "state_file")
        .unwrap_or_else(|| "/var/lib/switchyard/state.json".into());
    let read_only_tokens = name_list(d, &mut m, "read_only_tokens", false);
    let jwt = m
        .get("jwt")
        .and_then(|n| super::admin_roles::read_jwt(d, n));
    let audit_log = opt_path(d, &mut m, "audit_log");
    if let Some((addr, lpos)) = listen {
        let any = !tokens.is_empty() || !read_only_tokens.is_empty() || jwt.is_some();
        if let Some(e) = validate::admin_tokens(&addr, any) {
            d.error(lpos, "admin.tokens", e);
        }
    }
    for (key, list) in [("tokens", &tokens), ("read_only_tokens", &read_only_tokens)] {
        for (i, t) in list.iter().enumerate() {
            if let Some(e) = validate::admin_token(t) {
                d.error(pos, &format!("admin.{key}[{i}]"), e);
            }
        }
    }
    m.finish(d, |_| None);
    Some(AdminConfig {
        listen: listen?.0,
        tokens,
        allow,
        state_file,
        read_only_tokens,
        jwt,
        audit_log,
    })
}

pub(super) fn read_metrics(d: &mut Decoder, node: &Node) -> Option<MetricsConfig> {
    let mut m = d.map(node, "metrics")?;
    d.spans.set("metrics", m.pos);
    let listen = listen_addr(d, &mut m, "listen");
    m.finish(d, |_| None);
    Some(MetricsConfig { listen: listen?.0 })
}

pub(super) fn read_cluster(d: &mut Decoder, node: &Node) -> Option<ClusterConfig> {
    let mut m = d.map(node, "cluster")?;
    d.spans.set("cluster", m.pos);
    let redis = required(d, &mut m, "redis", |d, n, p| {
        d.parse(n, p, "a redis://host:port/db URL", |s| {
            (s.starts_with("redis://") || s.starts_with("rediss://") || s.starts_with("unix://"))
                .then(|| s.to_string())
        })
    });
    let timeout = duration(d, &mut m, "timeout", Duration::from_millis(20));
    if let Some(e) = validate::cluster_timeout(timeout) {
        d.error(m.key_pos("timeout"), "cluster.timeout", e);
    }
    m.finish(d, |_| None);
    Some(ClusterConfig {
        redis: redis?,
        timeout,
    })
}
