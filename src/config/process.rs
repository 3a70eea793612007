//! The part of a configuration fixed when the process starts: the sockets it binds,
//! threads and identity, the admin and metrics listeners, the Redis link, and the
//! options Pingora takes once per listener (TLS handshake settings, HTTP/2 and
//! keep-alive counters). A reload applies everything else; `changes` names each fixed
//! setting a new file would change, so the reload can say what waits for an upgrade.

use super::model::{AcmeConfig, ClientAuth, Config, TlsVersion, TracingConfig};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What only a restart or an upgrade (`switchyard -u`, then SIGQUIT) can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    pub threads: usize,
    pub user: Option<String>,
    pub group: Option<String>,
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    /// In the order they were bound: a listener's index in the running process.
    pub listeners: Vec<BoundListener>,
    pub tcp_services: Vec<(String, SocketAddr)>,
    pub admin_listen: Option<SocketAddr>,
    pub state_file: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub cluster_redis: Option<String>,
    /// The span exporter starts once per process.
    pub tracing: Option<TracingConfig>,
}

/// One listener's settings that Pingora takes when the listener is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    pub name: String,
    pub listen: SocketAddr,
    pub http2: bool,
    /// The QUIC endpoint is bound at start (SPEC §15).
    pub http3: bool,
    pub tls: Option<BoundTls>,
    pub max_requests_per_connection: u32,
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2's header-list bound (HTTP/1's `max_header_bytes` check reloads).
    pub h2_max_header_bytes: u32,
    /// HTTP/2's idle timeout (HTTP/1's keep-alive reloads).
    pub h2_idle: Duration,
}

/// The handshake settings of a TLS listener (certificates reload; these do not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundTls {
    pub min_version: TlsVersion,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    /// The ACME service starts with its listener.
    pub acme: Option<AcmeConfig>,
}

impl ProcessConfig {
    pub fn of(c: &Config) -> ProcessConfig {
        ProcessConfig {
            threads: c.server.threads,
            user: c.server.user.clone(),
            group: c.server.group.clone(),
            pid_file: c.server.pid_file.clone(),
            upgrade_sock: c.server.upgrade_sock.clone(),
            grace_period: c.server.grace_period,
            shutdown_timeout: c.server.shutdown_timeout,
            listeners: c
                .listeners
                .iter()
                .map(|l| BoundListener {
                    name: l.name.clone(),
                    listen: l.listen,
                    http2: l.http2,
                    http3: l.http3,
                    tls: l.tls.as_ref().map(|t| BoundTls {
                        min_version: t.min_version,
                        client_auth: t.client_auth,
                        client_ca_file: t.client_ca_file.clone(),
                        acme: t.acme.clone(),
                    }),
                    max_requests_per_connection: l.limits.max_requests_per_connection,
                    h2_max_concurrent_streams: l.limits.h2_max_concurrent_streams,
                    h2_max_header_bytes: l.limits.max_header_bytes,
                    h2_idle: l.limits.keepalive_timeout,
                })
                .collect(),
            tcp_services: c
                .tcp_services
                .iter()
                .map(|t| (t.name.clone(), t.listen))
                .collect(),
            admin_listen: c.admin.as_ref().map(|a| a.listen),
            state_file: c.admin.as_ref().map(|a| a.state_file.clone()),
            metrics_listen: c.metrics.as_ref().map(|m| m.listen),
            cluster_redis: c.cluster.as_ref().map(|k| k.redis.clone()),
            tracing: c.tracing.clone(),
        }
    }

    /// The running index of the listener `name`, if the process bound it.
    pub fn listener_index(&self, name: &str) -> Option<usize> {
        self.listeners.iter().position(|l| l.name == name)
    }
}

/// One fixed setting a reload would change: the running process keeps `running` until an
/// upgrade; `meanwhile` says what that means for traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    pub key: String,
    pub running: String,
    pub wanted: String,
    pub meanwhile: &'static str,
}

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reload: {} changes from {} to {}: this needs an upgrade (switchyard -u, then SIGQUIT); {}",
            self.key, self.running, self.wanted, self.meanwhile
        )
    }
}

/// How a Redis URL is shown in a log line (it may carry a password).
pub type ShowSecret<'a> = &'a dyn Fn(&str) -> String;

/// Every fixed setting that differs between the running process and `wanted`, in file
/// order. Empty when the reload applies the whole file.
pub fn changes(running: &ProcessConfig, wanted: &ProcessConfig, redis: ShowSecret) -> Vec<Fixed> {
    let mut out = Changes(Vec::new());
    let (r, w) = (running, wanted);
    out.check(
        "server.threads",
        &r.threads,
        &w.threads,
        "the old thread count serves",
    );
    out.check_opt(
        "server.user",
        &r.user,
        &w.user,
        "the process keeps its identity",
    );
    out.check_opt(
        "server.group",
        &r.group,
        &w.group,
        "the process keeps its identity",
    );
    out.check_path(
        "server.pid_file",
        &r.pid_file,
        &w.pid_file,
        "the old pid file is kept",
    );
    out.check_path(
        "server.upgrade_sock",
        &r.upgrade_sock,
        &w.upgrade_sock,
        "an upgrade must still use the old socket",
    );
    let kept = "the process keeps the old value";
    out.check_duration("server.grace_period", r.grace_period, w.grace_period, kept);
    out.check_duration(
        "server.shutdown_timeout",
        r.shutdown_timeout,
        w.shutdown_timeout,
        kept,
    );
    for l in &w.listeners {
        let Some(old) = r.listeners.iter().find(|o| o.name == l.name) else {
            out.push(
                format!("listener {}", l.name),
                "none".into(),
                l.listen.to_string(),
                "the new listener does not serve before it",
            );
            continue;
        };
        out.listener(old, l);
    }
    for old in &r.listeners {
        if !w.listeners.iter().any(|l| l.name == old.name) {
            out.push(
                format!("listener {}", old.name),
                old.listen.to_string(),
                "none".into(),
                "it keeps serving with its last settings, matched by routes for every listener",
            );
        }
    }
    for (name, listen) in &w.tcp_services {
        let old = r
            .tcp_services
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a);
        if old != Some(*listen) {
            out.push(
                format!("tcp_services.{name}.listen"),
                old.map_or("none".into(), |a| a.to_string()),
                listen.to_string(),
                "the service keeps its old address (or does not serve yet)",
            );
        }
    }
    out.check_opt(
        "admin.listen",
        &r.admin_listen,
        &w.admin_listen,
        if w.admin_listen.is_none() {
            "the admin listener stays where it is and refuses every request"
        } else {
            "the admin listener stays where it is, with the new tokens and allow"
        },
    );
    out.check_opt(
        "admin.state_file",
        &r.state_file.as_deref().map(shown),
        &w.state_file.as_deref().map(shown),
        "admin changes keep going to the old file",
    );
    out.check_opt(
        "metrics.listen",
        &r.metrics_listen,
        &w.metrics_listen,
        "/metrics stays where it is",
    );
    if r.cluster_redis != w.cluster_redis {
        let show = |u: &Option<String>| u.as_deref().map_or("none".into(), redis);
        out.push(
            "cluster.redis".into(),
            show(&r.cluster_redis),
            show(&w.cluster_redis),
            "rate limits and admin sync keep using the old setting (a restart applies it too)",
        );
    }
    if r.tracing != w.tracing {
        let show = |t: &Option<TracingConfig>| {
            t.as_ref().map_or("off".into(), |t| {
                format!("{} at {}", t.otlp_endpoint, t.sample_ratio.as_f64())
            })
        };
        out.push(
            "tracing".into(),
            show(&r.tracing),
            show(&w.tracing),
            "spans keep going where they went",
        );
    }
    out.0
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

struct Changes(Vec<Fixed>);

impl Changes {
    fn push(&mut self, key: String, running: String, wanted: String, meanwhile: &'static str) {
        self.0.push(Fixed {
            key,
            running,
            wanted,
            meanwhile,
        });
    }

    fn check<T: PartialEq + fmt::Display>(&mut self, key: &str, r: &T, w: &T, why: &'static str) {
        if r != w {
            self.push(key.into(), r.to_string(), w.to_string(), why);
        }
    }

    fn check_opt<T: PartialEq + fmt::Display>(
        &mut self,
        key: &str,
        r: &Option<T>,
        w: &Option<T>,
        why: &'static str,
    ) {
        if r != w {
            let show = |v: &Option<T>| v.as_ref().map_or("none".to_string(), T::to_string);
            self.push(key.into(), show(r), show(w), why);
        }
    }

    fn check_path(&mut self, key: &str, r: &Path, w: &Path, why: &'static str) {
        if r != w {
            self.push(key.into(), shown(r), shown(w), why);
        }
    }

    fn check_duration(&mut self, key: &str, r: Duration, w: Duration, why: &'static str) {
        if r != w {
            let show = |d| humantime::format_duration(d).to_string();
            self.push(key.into(), show(r), show(w), why);
        }
    }

    fn listener(&mut self, old: &BoundListener, new: &BoundListener) {
        let at = |key: &str| format!("listeners.{}.{key}", new.name);
        self.check(
            &at("listen"),
            &old.listen,
            &new.listen,
            "it keeps serving on the old address",
        );
        self.check(
            &at("http2"),
            &old.http2,
            &new.http2,
            "ALPN and h2c keep the old setting",
        );
        self.check(
            &at("http3"),
            &old.http3,
            &new.http3,
            "the QUIC endpoint is bound at start (HTTP/3 keeps the old setting)",
        );
        let same = "connections keep the old setting";
        self.check(
            &at("limits.max_requests_per_connection"),
            &old.max_requests_per_connection,
            &new.max_requests_per_connection,
            same,
        );
        self.check(
            &at("limits.h2_max_concurrent_streams"),
            &old.h2_max_concurrent_streams,
            &new.h2_max_concurrent_streams,
            same,
        );
        self.check(
            &at("limits.max_header_bytes"),
            &old.h2_max_header_bytes,
            &new.h2_max_header_bytes,
            "HTTP/2 connections keep the old bound (HTTP/1 uses the new one)",
        );
        self.check_duration(
            &at("limits.keepalive_timeout"),
            old.h2_idle,
            new.h2_idle,
            "HTTP/2 connections keep the old idle timeout (HTTP/1 uses the new one)",
        );
        match (&old.tls, &new.tls) {
            (Some(o), Some(n)) => {
                let same = "handshakes keep the old setting";
                self.check(
                    &at("tls.min_version"),
                    &o.min_version.as_str(),
                    &n.min_version.as_str(),
                    same,
                );
                self.check(
                    &at("tls.client_auth"),
                    &o.client_auth.as_str(),
                    &n.client_auth.as_str(),
                    same,
                );
                self.check_opt(
                    &at("tls.client_ca_file"),
                    &o.client_ca_file.as_deref().map(shown),
                    &n.client_ca_file.as_deref().map(shown),
                    same,
                );
                if o.acme != n.acme {
                    self.push(
                        at("tls.acme"),
                        "the running settings".into(),
                        "new ones".into(),
                        "ACME keeps its old settings",
                    );
                }
            }
            (o, n) if o.is_some() != n.is_some() => {
                let show = |t: &Option<BoundTls>| if t.is_some() { "TLS" } else { "plaintext" };
                self.push(
                    at("tls"),
                    show(o).into(),
                    show(n).into(),
                    "it keeps serving as before",
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
