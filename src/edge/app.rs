//! [`Gate`]: the admission of one client connection to a listener or tcp_service
//! (descriptor budget, then the caps); [`EarlyGate`]: the same check without taking a
//! count, run by Pingora's accept loop before TLS; [`EdgeApp`]: the service's app
//! wrapped so every connection holds its counts until it closes; [`PreTlsHeader`]: the
//! PROXY header of a TLS listener, read before the handshake.

use super::caps::{Caps, ConnectionCounts, Hold};
use super::fd_budget::{self, FdHold};
use super::header_clock::HeaderClock;
use super::keepalive::ServeHttp1;
use super::proxy_header::{self, Header};
use super::stream::{EdgeStream, HeaderLog};
use crate::config::ListenerLimits;
use crate::net::{canonical, contains_any};
use crate::observe::refusal::{self, Reason};
use crate::observe::stats;
use crate::runtime::{Runtime, SharedRuntime};
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{GetSocketDigest, Stream, UniqueID, ALPN};
use pingora::server::ShutdownWatch;
use pingora_core::listeners::{ConnectionFilter, PreTlsProcess};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncRead;

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
        let counts: Arc<ConnectionCounts> = Arc::default();
        let weak = Arc::downgrade(&counts);
        let open_side = match side {
            Side::Listener(_) => stats::Side::Listener,
            Side::Service(_) => stats::Side::TcpService,
        };
        stats::register_open(
            open_side,
            name,
            Arc::new(move || weak.upgrade().map(|c| c.open())),
        );
        Arc::new(Gate {
            name: name.to_string(),
            side,
            runtime,
            counts,
        })
    }

    /// The caps and PROXY-protocol setting in the running configuration.
    fn settings(&self, rt: &Runtime) -> (Caps, bool) {
        match &self.side {
            Side::Listener(i) => rt.listeners.get(*i).map_or_else(Default::default, |l| {
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

    /// How long to wait for the PROXY header, when the configuration asks for one:
    /// the listener's `limits.header_timeout`, a fixed bound for a tcp_service.
    fn proxy_deadline(&self, rt: &Runtime) -> Option<Duration> {
        match &self.side {
            Side::Listener(i) => rt
                .listeners
                .get(*i)
                .filter(|l| l.proxy_protocol)
                .map(|l| l.limits.header_timeout),
            Side::Service(_) => self
                .settings(rt)
                .1
                .then_some(proxy_header::TCP_HEADER_TIMEOUT),
        }
    }

    /// Reads the PROXY header when the configuration asks for one and makes the stream's
    /// digest name the client it gives. `Err` (already counted and logged) closes the
    /// connection: a peer outside `server.trusted_proxies`, no header, a malformed one,
    /// or none within the deadline.
    async fn take_proxy_header<S>(&self, io: &mut S) -> Result<(), ()>
    where
        S: AsyncRead + GetSocketDigest + UniqueID + Unpin + ?Sized,
    {
        let rt = self.runtime.load();
        let Some(deadline) = self.proxy_deadline(&rt) else {
            return Ok(());
        };
        let peer = peer_ip(io.get_socket_digest().as_deref());
        // What a header is accepted as: HTTP counts it as a malformed request, a
        // tcp_service as a denied connection.
        let reason = match self.side {
            Side::Listener(_) => Reason::Malformed,
            Side::Service(_) => Reason::Denied,
        };
        let who = peer.map_or_else(|| "a client".to_string(), |ip| format!("client {ip}"));
        if !peer.is_some_and(|ip| contains_any(&rt.trusted_proxies, ip)) {
            self.refuse_with(
                reason,
                &format_args!("{who}: not in server.trusted_proxies, no PROXY header accepted"),
            );
            return Err(());
        }
        drop(rt);
        match proxy_header::read(io, deadline).await {
            Ok(header) => {
                proxy_header::apply(io, header);
                if let Header::Proxied { source, .. } = header {
                    log::debug!("{}: {who} proxies for {source}", self.name);
                }
                Ok(())
            }
            Err(e) => {
                self.refuse_with(reason, &format_args!("{who}: {e}"));
                Err(())
            }
        }
    }

    fn refuse_with(&self, reason: Reason, what: &dyn fmt::Display) {
        match self.side {
            Side::Listener(_) => refusal::http(&self.name, reason, what),
            Side::Service(_) => refusal::tcp(&self.name, reason, what),
        }
    }

    /// A refused connection; the log text is formatted only when the flood guard lets
    /// a line through (a connection flood refuses thousands a second).
    pub fn refuse(&self, reason: Reason, client: Option<IpAddr>) {
        match client {
            Some(ip) => self.refuse_with(reason, &format_args!("client {ip}")),
            None => self.refuse_with(reason, &"a client"),
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

    /// The running keep-alive timeout of an HTTP listener, in Pingora's whole seconds
    /// (None: close after each response).
    fn keepalive(&self) -> Option<Duration> {
        let Side::Listener(i) = self.side else {
            return None;
        };
        let rt = self.runtime.load();
        let limits = &rt.listeners.get(i)?.limits;
        limits.keepalive_seconds().map(Duration::from_secs)
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
    peer_ip(stream.get_socket_digest().as_deref())
}

fn peer_ip(digest: Option<&pingora::protocols::SocketDigest>) -> Option<IpAddr> {
    digest.and_then(|d| {
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

/// The PROXY header of a TLS listener: it comes before the TLS handshake, so it is read
/// by Pingora's pre-TLS hook (the digest it sets is the one the TLS stream reports).
#[derive(Debug)]
pub struct PreTlsHeader(pub Arc<Gate>);

#[async_trait]
impl PreTlsProcess for PreTlsHeader {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        self.0.take_proxy_header(stream).await.map_err(|()| {
            pingora::Error::explain(pingora::ErrorType::AcceptError, "PROXY header refused")
        })
    }
}

/// A service's app behind its gate.
pub struct EdgeApp<A> {
    pub gate: Arc<Gate>,
    pub inner: Arc<A>,
    /// Whether a PROXY header is read by [`PreTlsHeader`] (TLS listeners) rather than
    /// here.
    pub header_before_tls: bool,
}

#[async_trait]
impl<A: ServeHttp1> ServerApp for EdgeApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut io: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // The header comes first so the caps below count the real client.
        if !self.header_before_tls {
            self.gate.take_proxy_header(&mut *io).await.ok()?;
        }
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
            let log = HeaderLog {
                runtime: self.gate.runtime.clone(),
                tls: io.get_ssl().is_some(),
            };
            let io: Stream = Box::new(EdgeStream::http1(io, name, clock.clone(), log));
            let keepalive = || self.gate.keepalive();
            clock
                .scope(self.inner.serve_http1(io, shutdown, &keepalive))
                .await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

impl<A: ServeHttp1> EdgeApp<A> {
    async fn serve(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) {
        let mut io = Some(io);
        while let Some(stream) = io.take() {
            io = self.inner.process_new(stream, shutdown).await;
        }
    }
}
