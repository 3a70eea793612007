//! [`Gate`]: the admission of one client connection to a listener or tcp_service
//! (descriptor budget, then the caps); [`EarlyGate`]: the same check without taking a
//! count, run by Pingora's accept loop before TLS; [`EdgeApp`]: the service's app
//! wrapped so every connection holds its counts until it closes.

use super::caps::{Caps, ConnectionCounts, Hold};
use super::fd_budget::{self, FdHold};
use super::header_clock::HeaderClock;
use super::stream::EdgeStream;
use crate::config::ListenerLimits;
use crate::net::canonical;
use crate::observe::refusal::{self, Reason};
use crate::runtime::{Runtime, SharedRuntime};
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora_core::listeners::ConnectionFilter;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// What a gate admits connections to.
#[derive(Debug, Clone)]
pub enum Side {
    /// An HTTP listener, by its index in `listeners`.
    Listener(usize),
    /// A tcp_service, by name.
    Service(String),
}

pub struct Gate {
    name: String,
    side: Side,
    runtime: SharedRuntime,
    counts: Arc<ConnectionCounts>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("name", &self.name)
            .field("open", &self.counts.open())
            .finish()
    }
}

/// A connection's counts, given back when it closes.
#[derive(Debug)]
pub struct Admitted {
    _fd: FdHold,
    _caps: Hold,
}

impl Gate {
    pub fn new(name: &str, side: Side, runtime: SharedRuntime) -> Arc<Gate> {
        match &side {
            Side::Listener(_) => refusal::register_http(name),
            Side::Service(_) => refusal::register_tcp(name),
        }
        Arc::new(Gate {
            name: name.to_string(),
            side,
            runtime,
            counts: Arc::default(),
        })
    }

    /// The caps and PROXY-protocol setting in the running configuration.
    fn settings(&self, rt: &Runtime) -> (Caps, bool) {
        match &self.side {
            Side::Listener(i) => rt
                .config
                .listeners
                .get(*i)
                .map_or_else(Default::default, |l| {
                    (
                        Caps {
                            max: l.limits.max_connections,
                            per_ip: l.limits.max_connections_per_ip,
                        },
                        l.proxy_protocol,
                    )
                }),
            Side::Service(name) => rt
                .config
                .tcp_services
                .iter()
                .find(|t| &t.name == name)
                .map_or_else(Default::default, |t| {
                    (
                        Caps {
                            max: t.max_connections,
                            per_ip: t.max_connections_per_ip,
                        },
                        t.proxy_protocol,
                    )
                }),
        }
    }

    pub fn refuse(&self, reason: Reason, client: Option<IpAddr>) {
        let who = match client {
            Some(ip) => format!("client {ip}"),
            None => "a client".to_string(),
        };
        match self.side {
            Side::Listener(_) => refusal::http(&self.name, reason, &who),
            Side::Service(_) => refusal::tcp(&self.name, reason, &who),
        }
    }

    /// Counts the connection from `client` (its address after any PROXY header), or
    /// refuses it (counted and logged) when the budget or a cap is spent.
    pub fn admit(&self, client: Option<IpAddr>) -> Option<Admitted> {
        let (caps, _) = self.settings(&self.runtime.load());
        let Some(fd) = fd_budget::admit() else {
            self.refuse(Reason::ConnectionLimit, client);
            return None;
        };
        match self.counts.admit(client, caps) {
            Ok(hold) => Some(Admitted {
                _fd: fd,
                _caps: hold,
            }),
            Err(reason) => {
                self.refuse(reason, client);
                None
            }
        }
    }

    /// The running limits of an HTTP listener (None for a tcp_service).
    fn listener_limits(&self) -> Option<ListenerLimits> {
        let Side::Listener(i) = self.side else {
            return None;
        };
        let rt = self.runtime.load();
        rt.listeners.get(i).map(|l| l.limits.clone())
    }

    /// The check before TLS: refuses what `admit` would refuse, without counting. The
    /// per-IP cap is left to `admit` when a PROXY header will name the real client.
    fn early_refusal(&self, peer: Option<IpAddr>) -> Option<Reason> {
        if fd_budget::exhausted() {
            return Some(Reason::ConnectionLimit);
        }
        let (caps, proxy_protocol) = self.settings(&self.runtime.load());
        let peer = if proxy_protocol { None } else { peer };
        self.counts.would_refuse(peer, caps)
    }
}

pub fn client_ip(stream: &Stream) -> Option<IpAddr> {
    stream.get_socket_digest().and_then(|d| {
        d.peer_addr()
            .and_then(|a| a.as_inet())
            .map(|a| canonical(a.ip()))
    })
}

/// Pingora's connection filter for one listener or tcp_service.
#[derive(Debug)]
pub struct EarlyGate(pub Arc<Gate>);

#[async_trait]
impl ConnectionFilter for EarlyGate {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        let peer = addr.map(|a| canonical(a.ip()));
        match self.0.early_refusal(peer) {
            None => true,
            Some(reason) => {
                self.0.refuse(reason, peer);
                false
            }
        }
    }
}

/// A service's app behind its gate.
pub struct EdgeApp<A> {
    pub gate: Arc<Gate>,
    pub inner: Arc<A>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for EdgeApp<A> {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let client = client_ip(&io);
        let _admitted = self.gate.admit(client)?;
        // The connection is served to its end here, so the counts are held for its life;
        // nothing is handed back for reuse.
        let Some(limits) = self.gate.listener_limits() else {
            self.serve(io, shutdown).await;
            return None;
        };
        let name: Arc<str> = Arc::from(self.gate.name.as_str());
        if io.selected_alpn_proto() == Some(ALPN::H2) {
            let io: Stream = Box::new(EdgeStream::h2(io, name));
            self.serve(io, shutdown).await;
        } else {
            let clock = HeaderClock::new(limits.header_timeout);
            let io: Stream = Box::new(EdgeStream::http1(io, name, clock.clone()));
            clock.scope(self.serve(io, shutdown)).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

impl<A: ServerApp + Send + Sync + 'static> EdgeApp<A> {
    async fn serve(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) {
        let mut io = Some(io);
        while let Some(stream) = io.take() {
            io = self.inner.process_new(stream, shutdown).await;
        }
    }
}
