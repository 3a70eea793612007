//! Pins the JSON shape of `GET /api/v1/config`: `config` must render exactly what the
//! hand-written serializer it replaced rendered (kept below as `legacy`), for the
//! shipped configurations and one that sets every key.

use super::config;
use crate::config::*;
use serde_json::{json, Value};

const REDACTED: &str = "<redacted>";

fn secs(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn edits(e: &HeaderEdits) -> Value {
    let pairs = |v: &[(http::HeaderName, http::HeaderValue)]| -> Value {
        v.iter()
            .map(|(n, v)| (n.to_string(), Value::from(v.to_str().unwrap_or(""))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "set": pairs(&e.set),
        "add": pairs(&e.add),
        "remove": e.remove.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
    })
}

fn strings<T: ToString>(v: &[T]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn legacy(c: &Config) -> Value {
    json!({
        "server": {
            "threads": c.server.threads,
            "pid_file": c.server.pid_file,
            "upgrade_sock": c.server.upgrade_sock,
            "user": c.server.user,
            "group": c.server.group,
            "grace_period": secs(c.server.grace_period),
            "shutdown_timeout": secs(c.server.shutdown_timeout),
            "trusted_proxies": strings(&c.server.trusted_proxies),
            "deny": strings(&c.server.deny),
            "geoip": c.server.geoip.as_ref().map(|g| json!({"database": g.database})),
        },
        "log": {
            "level": c.log.level.to_string().to_lowercase(),
            "access_log": match &c.log.access_log {
                AccessLogTarget::Stdout => "stdout".to_string(),
                AccessLogTarget::Stderr => "stderr".to_string(),
                AccessLogTarget::Off => "off".to_string(),
                AccessLogTarget::File(p) => p.display().to_string(),
            },
        },
        "admin": c.admin.as_ref().map(|a| json!({
            "listen": a.listen.to_string(),
            "tokens": a.tokens.iter().map(|_| REDACTED).collect::<Vec<_>>(),
            "allow": strings(&a.allow),
            "state_file": a.state_file,
            "read_only_tokens": a.read_only_tokens.iter().map(|_| REDACTED).collect::<Vec<_>>(),
            "jwt": a.jwt.as_ref().map(|j| {
                let mut v = json!({
                    "issuer": j.issuer, "audience": j.audience, "role_claim": j.role_claim,
                });
                match &j.jwks {
                    JwksSource::File(f) => v["jwks_file"] = json!(f),
                    JwksSource::Url(u) => v["jwks_url"] = json!(u),
                }
                v
            }),
            "audit_log": a.audit_log,
        })),
        "metrics": c.metrics.as_ref().map(|m| json!({"listen": m.listen.to_string()})),
        "listeners": c.listeners.iter().map(|l| json!({
            "name": l.name,
            "listen": l.listen.to_string(),
            "http2": l.http2,
            "http3": l.http3,
            "tls": l.tls.as_ref().map(|t| json!({
                "certificates": t.certificates.iter().map(|c| json!({
                    "cert_file": c.cert_file,
                    "key_file": REDACTED,
                })).collect::<Vec<_>>(),
                "acme": t.acme.as_ref().map(|a| json!({
                    "email": a.email, "directory": a.directory, "domains": a.domains,
                    "storage": a.storage, "ca_file": a.ca_file,
                })),
                "client_ca_file": t.client_ca_file,
                "client_auth": format!("{:?}", t.client_auth).to_lowercase(),
                "min_version": match t.min_version { TlsVersion::Tls12 => "1.2", TlsVersion::Tls13 => "1.3" },
            })),
            "limits": {
                "header_timeout": secs(l.limits.header_timeout),
                "keepalive_timeout": secs(l.limits.keepalive_timeout),
                "body_timeout": secs(l.limits.body_timeout),
                "max_header_bytes": l.limits.max_header_bytes,
                "max_headers": l.limits.max_headers,
                "max_body_bytes": l.limits.max_body_bytes,
                "max_connections": l.limits.max_connections,
                "max_connections_per_ip": l.limits.max_connections_per_ip,
                "max_requests_per_connection": l.limits.max_requests_per_connection,
                "h2_max_concurrent_streams": l.limits.h2_max_concurrent_streams,
            },
            "proxy_protocol": l.proxy_protocol,
        })).collect::<Vec<_>>(),
        "pools": c.pools.iter().map(|p| json!({
            "name": p.name,
            "algorithm": p.algorithm.as_str(),
            "hash_key": match &p.hash_key {
                HashKey::ClientIp => "client_ip".to_string(),
                HashKey::Uri => "uri".to_string(),
                HashKey::Path => "path".to_string(),
                HashKey::Header(h) => format!("header:{h}"),
                HashKey::Cookie(c) => format!("cookie:{c}"),
            },
            "backends": p.backends.iter().map(|b| json!({
                "address": b.address, "weight": b.weight, "backup": b.backup,
            })).collect::<Vec<_>>(),
            "discovery": (!p.discovery.is_empty()).then(|| {
                let d = &p.discovery;
                let mut m = serde_json::Map::new();
                if let Some(x) = &d.dns {
                    m.insert("dns".into(), json!({"name": x.name, "port": x.port, "interval": secs(x.interval)}));
                }
                if let Some(x) = &d.dns_srv {
                    m.insert("dns_srv".into(), json!({"name": x.name, "interval": secs(x.interval)}));
                }
                if let Some(x) = &d.docker {
                    m.insert("docker".into(), json!({
                        "socket": x.socket, "label": x.label, "port_label": x.port_label,
                        "weight_label": x.weight_label, "network": x.network,
                    }));
                }
                if let Some(k) = &d.kubernetes {
                    m.insert("kubernetes".into(), json!({
                        "namespace": k.namespace, "service": k.service,
                        "port": k.port.as_ref().map(|p| match p {
                            SlicePort::Name(n) => json!(n),
                            SlicePort::Number(n) => json!(n),
                        }),
                        "kubeconfig": k.kubeconfig,
                    }));
                }
                Value::Object(m)
            }),
            "health_check": p.health_check.as_ref().map(|h| json!({
                "kind": h.kind.map(|k| format!("{k:?}").to_lowercase()),
                "path": h.path, "host": h.host,
                "expect_status": format!("{}-{}", h.expect_status.0, h.expect_status.1),
                "user": h.user, "database": h.database,
                "interval": secs(h.interval), "timeout": secs(h.timeout),
                "healthy_threshold": h.healthy_threshold, "unhealthy_threshold": h.unhealthy_threshold,
            })),
            "circuit_breaker": p.circuit_breaker.as_ref().map(|b| json!({
                "failure_threshold": b.failure_threshold, "on_5xx": b.on_5xx,
                "open_for": secs(b.open_for), "half_open_requests": b.half_open_requests,
                "max_connections": b.max_connections,
            })),
            "sticky": p.sticky.as_ref().map(|s| json!({
                "cookie": s.cookie, "ttl": s.ttl.map(secs),
            })),
            "retries": p.retries,
            "timeouts": {
                "connect": secs(p.timeouts.connect), "read": secs(p.timeouts.read),
                "write": secs(p.timeouts.write), "idle": secs(p.timeouts.idle),
            },
            "upstream": {
                "protocol": format!("{:?}", p.upstream.protocol).to_lowercase(),
                "tls": p.upstream.tls.as_ref().map(|t| json!({
                    "sni": t.sni, "verify": t.verify, "ca_file": t.ca_file,
                })),
                "proxy_protocol": p.upstream.proxy_protocol.as_str(),
            },
            "outlier_detection": p.traffic.outlier_detection.as_ref().map(|o| json!({
                "consecutive_5xx": o.consecutive_5xx,
                "consecutive_gateway_failures": o.consecutive_gateway_failures,
                "base_ejection_time": secs(o.base_ejection_time),
                "max_ejection_time": secs(o.max_ejection_time),
                "max_ejection_percent": o.max_ejection_percent,
            })),
            "panic_threshold": p.traffic.panic_threshold,
            "slow_start": secs(p.traffic.slow_start),
            "queue": {"max": p.traffic.queue.max, "timeout": secs(p.traffic.queue.timeout)},
            "try_duration": secs(p.traffic.try_duration),
            "retry_on": strings(&p.traffic.retry_on),
            "retry_budget": p.traffic.retry_budget,
        })).collect::<Vec<_>>(),
        "routes": c.routes.iter().map(|r| json!({
            "name": r.name,
            "listeners": r.listeners,
            "host": r.hosts,
            "path_prefix": r.path_prefix,
            "methods": strings(&r.methods),
            "headers": r.headers.iter().map(|(n, v)| (n.to_string(), Value::from(v.as_str()))).collect::<serde_json::Map<_, _>>(),
            "pool": r.pool,
            "strip_prefix": r.strip_prefix,
            "redirect_https": r.redirect_https,
            "allow": strings(&r.allow),
            "deny": strings(&r.deny),
            "rate_limit": r.rate_limit.as_ref().map(|l| json!({
                "rate": l.rate, "burst": l.burst,
                "key": match &l.key {
                    RateLimitKey::ClientIp => "client_ip".to_string(),
                    RateLimitKey::Route => "route".to_string(),
                    RateLimitKey::Header(h) => format!("header:{h}"),
                },
                "algorithm": match l.algorithm { RateLimitAlgorithm::TokenBucket => "token_bucket", RateLimitAlgorithm::SlidingWindow => "sliding_window" },
                "scope": match l.scope { Scope::Local => "local", Scope::Cluster => "cluster" },
            })),
            "request_headers": edits(&r.request_headers),
            "response_headers": edits(&r.response_headers),
            "security_headers": r.security_headers,
            "max_body_bytes": r.max_body_bytes,
            "mirror": r.traffic.mirror.as_ref().map(|m| json!({"pool": m.pool, "percent": m.percent})),
            "geo": r.traffic.geo.as_ref().map(|g| json!({"countries": g.countries})),
            "cache": r.cache.as_ref().map(|k| json!({
                "default_ttl": secs(k.default_ttl),
                "max_ttl": secs(k.max_ttl),
                "stale_while_revalidate": secs(k.stale_while_revalidate),
                "stale_if_error": secs(k.stale_if_error),
                "key": strings(&k.key),
                "lock_timeout": secs(k.lock_timeout),
            })),
        })).collect::<Vec<_>>(),
        "tcp_services": c.tcp_services.iter().map(|t| json!({
            "name": t.name,
            "listen": t.listen.to_string(),
            "protocol": format!("{:?}", t.protocol).to_lowercase(),
            "pool": t.pool,
            "idle_timeout": secs(t.idle_timeout),
            "max_connections": t.max_connections,
            "max_connections_per_ip": t.max_connections_per_ip,
            "proxy_protocol": t.proxy_protocol,
        })).collect::<Vec<_>>(),
        "cluster": c.cluster.as_ref().map(|cl| json!({"redis": REDACTED, "timeout": secs(cl.timeout)})),
        "tracing": c.tracing.as_ref().map(|t| json!({
            "otlp_endpoint": t.otlp_endpoint,
            "sample_ratio": t.sample_ratio.as_f64(),
            "service_name": t.service_name,
        })),
        "cache": c.cache.as_ref().map(|k| json!({"memory": k.memory, "max_object": k.max_object})),
    })
}

/// Sets every key the model has, with non-default values where it can.
const EVERYTHING: &str = r#"
server:
  threads: 3
  pid_file: /tmp/sy.pid
  upgrade_sock: /tmp/sy.sock
  user: nobody
  group: nogroup
  grace_period: 1m 30s
  shutdown_timeout: 250ms
  trusted_proxies: [10.0.0.0/8, "::1"]
  deny: [192.0.2.7]
  geoip: { database: /var/lib/GeoIP/GeoLite2-Country.mmdb }
log:
  level: debug
  access_log: /var/log/sy/access.log
admin:
  listen: 127.0.0.1:19000
  tokens: [secret-one, secret-two]
  allow: [127.0.0.0/8]
  state_file: /tmp/state.json
  read_only_tokens: [secret-three]
  jwt:
    jwks_file: /etc/switchyard/jwks.json
    issuer: https://id.example.com
    audience: switchyard
  audit_log: /var/log/sy/audit.log
metrics:
  listen: 127.0.0.1:19100
listeners:
  - name: web
    listen: 127.0.0.1:18080
    proxy_protocol: true
    limits:
      header_timeout: 5s
      keepalive_timeout: 0s
      body_timeout: 7s
      max_header_bytes: 8192
      max_headers: 50
      max_body_bytes: 1048576
      max_connections: 1000
      max_connections_per_ip: 10
      max_requests_per_connection: 100
      h2_max_concurrent_streams: 20
  - name: tls
    listen: 127.0.0.1:18443
    http2: false
    tls:
      certificates:
        - { cert_file: /etc/a.pem, key_file: /etc/a.key }
      acme: { email: ops@example.com, domains: [Example.com], storage: /tmp/acme, ca_file: /etc/ca.pem }
      client_ca_file: /etc/clients.pem
      client_auth: optional
      min_version: "1.3"
pools:
  - name: web
    algorithm: consistent_hash
    hash_key: header:X-User
    backends:
      - { address: 127.0.0.1:18081, weight: 3 }
      - { address: "[::1]:18082", backup: true }
    health_check:
      kind: http
      path: /healthz
      host: web.example
      expect_status: 200-204
      interval: 2s
      timeout: 1s
      healthy_threshold: 4
      unhealthy_threshold: 5
    circuit_breaker: { failure_threshold: 7, on_5xx: false, open_for: 45s, half_open_requests: 2, max_connections: 100 }
    sticky: { cookie: SID, ttl: 2h }
    retries: 2
    timeouts: { connect: 1s, read: 2m, write: 30s, idle: 0s }
    upstream:
      protocol: h2
      tls: { sni: web.example, verify: false, ca_file: /etc/up.pem }
      proxy_protocol: v2
    outlier_detection: { consecutive_5xx: 4, consecutive_gateway_failures: 2, base_ejection_time: 10s, max_ejection_time: 2m, max_ejection_percent: 30 }
    panic_threshold: 40
    slow_start: 20s
    queue: { max: 10, timeout: 2s }
    try_duration: 3s
    retry_on: [connect_failure, reset, 502, 503, 504]
    retry_budget: 25
  - name: db
    algorithm: least_conn
    backends: [{ address: 127.0.0.1:15433 }]
    health_check: { kind: postgres, user: health, database: postgres }
    discovery:
      dns: { name: db.internal, port: 5432, interval: 10s }
      dns_srv: { name: _pg._tcp.db.internal, interval: 20s }
      docker: { socket: /run/podman.sock, label: app.pool, port_label: app.port, weight_label: app.weight, network: backend }
      kubernetes: { namespace: data, service: pg, port: 5432, kubeconfig: /etc/kube.yaml }
  - name: named-port
    backends: [{ address: 127.0.0.1:15434 }]
    discovery:
      kubernetes: { service: web, port: http }
  - name: h2c
    algorithm: random
    hash_key: cookie:sid
    backends: [{ address: 127.0.0.1:18083 }]
    upstream: { protocol: h2c }
routes:
  - name: api
    listeners: [web, tls]
    host: ["*.Example.com", api.example.com]
    path_prefix: /api/
    methods: [get, POST]
    headers: { X-Env: prod }
    pool: web
    strip_prefix: true
    allow: [10.0.0.0/8]
    deny: [10.9.0.0/16]
    rate_limit: { rate: 10, burst: 20, key: "header:X-Key", algorithm: sliding_window, scope: cluster }
    request_headers: { set: { X-A: "1" }, add: { X-B: "2" }, remove: [X-C] }
    response_headers: { set: { X-D: "3" } }
    security_headers: true
    max_body_bytes: 10485760
    mirror: { pool: h2c, percent: 10 }
    geo: { countries: [de, FR] }
    cache: { default_ttl: 10m, max_ttl: 1h, stale_while_revalidate: 30s, stale_if_error: 5m, key: [method, path, "header:Accept-Language", "cookie:tier"], lock_timeout: 2s }
  - name: redirect
    redirect_https: true
  - name: limited
    pool: h2c
    rate_limit: { rate: 5, key: route }
tcp_services:
  - { name: pg, listen: 127.0.0.1:15432, protocol: postgres, pool: db, idle_timeout: 10m, max_connections: 50, max_connections_per_ip: 5, proxy_protocol: true }
cluster:
  redis: redis://:password@127.0.0.1:6379/0
  timeout: 50ms
cache:
  memory: 128MiB
  max_object: 4MiB
tracing:
  otlp_endpoint: http://127.0.0.1:4318/v1/traces
  sample_ratio: 0.25
  service_name: edge-lb
"#;

fn assert_same(name: &str, yaml: &str) {
    let env = |n: &str| (n == "SWITCHYARD_ADMIN_TOKEN").then(|| "t0k3n".to_string());
    let loaded = match parse_str(name, yaml, &env, false) {
        Ok(l) => l,
        Err(e) => panic!("{name}: {e:#?}"),
    };
    let (new, old) = (config(&loaded.config), legacy(&loaded.config));
    assert_eq!(
        serde_json::to_string_pretty(&new).unwrap_or_default(),
        serde_json::to_string_pretty(&old).unwrap_or_default(),
        "{name}"
    );
}

#[test]
fn every_key_renders_as_before() {
    assert_same("everything", EVERYTHING);
}

#[test]
fn shipped_configurations_render_as_before() {
    for file in ["conf/switchyard.yaml", "conf/demo.yaml"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_same(file, &text);
    }
}
