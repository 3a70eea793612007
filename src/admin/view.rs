//! The JSON shapes of the admin API: POOL, BACKEND (SPEC §5) and the effective
//! configuration with secrets redacted.

use crate::config::*;
use crate::pool::{Backend, Pool};
use serde_json::{json, Value};

pub fn backend(b: &Backend) -> Value {
    let (ok, failed) = b.outcomes();
    json!({
        "address": b.address,
        "weight": b.weight(),
        "backup": b.backup,
        "healthy": b.healthy(),
        "circuit": b.circuit().as_str(),
        "active": b.in_flight(),
        "draining": b.draining(),
        "requests": ok + failed,
    })
}

pub fn pool(p: &Pool) -> Value {
    json!({
        "name": p.name,
        "algorithm": p.algorithm.as_str(),
        "backends": p.members().backends.iter().map(|b| backend(b)).collect::<Vec<_>>(),
    })
}

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

/// The configuration as running, defaults included; tokens, keys and the Redis URL
/// (which may hold a password) are redacted.
pub fn config(c: &Config) -> Value {
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
        },
        "log": {
            "level": LogLevel::of(c.log.level).as_str(),
            "access_log": c.log.access_log.to_string(),
        },
        "admin": c.admin.as_ref().map(|a| json!({
            "listen": a.listen.to_string(),
            "tokens": a.tokens.iter().map(|_| REDACTED).collect::<Vec<_>>(),
            "allow": strings(&a.allow),
            "state_file": a.state_file,
        })),
        "metrics": c.metrics.as_ref().map(|m| json!({"listen": m.listen.to_string()})),
        "listeners": c.listeners.iter().map(|l| json!({
            "name": l.name,
            "listen": l.listen.to_string(),
            "http2": l.http2,
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
                "client_auth": t.client_auth.as_str(),
                "min_version": t.min_version.as_str(),
            })),
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
            "discovery": p.discovery.as_ref().map(|d| json!({
                "dns": {"name": d.name, "port": d.port, "interval": secs(d.interval)},
            })),
            "health_check": p.health_check.as_ref().map(|h| json!({
                "kind": h.kind.map(HealthKind::as_str),
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
                "protocol": p.upstream.protocol.as_str(),
                "tls": p.upstream.tls.as_ref().map(|t| json!({
                    "sni": t.sni, "verify": t.verify, "ca_file": t.ca_file,
                })),
            },
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
                "algorithm": l.algorithm.as_str(),
                "scope": l.scope.as_str(),
            })),
            "request_headers": edits(&r.request_headers),
            "response_headers": edits(&r.response_headers),
            "security_headers": r.security_headers,
        })).collect::<Vec<_>>(),
        "tcp_services": c.tcp_services.iter().map(|t| json!({
            "name": t.name,
            "listen": t.listen.to_string(),
            "protocol": t.protocol.as_str(),
            "pool": t.pool,
            "idle_timeout": secs(t.idle_timeout),
        })).collect::<Vec<_>>(),
        "cluster": c.cluster.as_ref().map(|cl| json!({"redis": REDACTED, "timeout": secs(cl.timeout)})),
    })
}

#[cfg(test)]
#[path = "view_shape.rs"]
mod shape;
