//! The running state built from a `Config`: compiled routes, pools with live backend
//! state, per-route actions. Held in an `ArcSwap` so a reload swaps it atomically and
//! every request works on one consistent snapshot.

use crate::config::{Config, HeaderEdits};
use crate::limits::Acl;
use crate::pool::Pool;
use crate::routing::RouteTable;
use arc_swap::ArcSwap;
use ipnet::IpNet;
use std::sync::Arc;

/// What a matched route does with a request.
pub struct Route {
    pub name: String,
    pub pool: Option<usize>,
    /// The normalized prefix to strip, when `strip_prefix` is on.
    pub strip: Option<String>,
    pub redirect_https: bool,
    pub acl: Acl,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub security_headers: bool,
}

pub struct ListenerInfo {
    pub name: String,
    pub tls: bool,
}

pub struct Runtime {
    pub table: RouteTable,
    pub routes: Vec<Route>,
    pub pools: Vec<Arc<Pool>>,
    pub listeners: Vec<ListenerInfo>,
    pub trusted_proxies: Vec<IpNet>,
    /// Port for `redirect_https`: the first TLS listener's, or 443.
    pub https_port: u16,
}

impl Runtime {
    pub fn build(config: &Config) -> Runtime {
        let listener_index = |name: &str| config.listeners.iter().position(|l| l.name == name);
        let pool_index = |name: &str| config.pools.iter().position(|p| p.name == name);
        let routes = config
            .routes
            .iter()
            .map(|r| Route {
                name: r.name.clone(),
                pool: r.pool.as_deref().and_then(pool_index),
                strip: r.path_prefix.clone().filter(|p| r.strip_prefix && p != "/"),
                redirect_https: r.redirect_https,
                acl: Acl::new(&r.allow, &r.deny),
                request_headers: r.request_headers.clone(),
                response_headers: r.response_headers.clone(),
                security_headers: r.security_headers,
            })
            .collect();
        Runtime {
            table: RouteTable::compile(&config.routes, listener_index),
            routes,
            pools: config
                .pools
                .iter()
                .map(|p| Arc::new(Pool::new(p)))
                .collect(),
            listeners: config
                .listeners
                .iter()
                .map(|l| ListenerInfo {
                    name: l.name.clone(),
                    tls: l.tls.is_some(),
                })
                .collect(),
            trusted_proxies: config.server.trusted_proxies.clone(),
            https_port: config
                .listeners
                .iter()
                .find(|l| l.tls.is_some())
                .map(|l| l.listen.port())
                .unwrap_or(443),
        }
    }
}

/// Shared by every service; `load()` per request, `store()` on reload.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

pub fn shared(runtime: Runtime) -> SharedRuntime {
    Arc::new(ArcSwap::from_pointee(runtime))
}
