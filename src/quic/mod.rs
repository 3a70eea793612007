//! HTTP/3 over QUIC beside a TLS listener's TCP one (SPEC §15, `listeners[].http3`).
//! Pingora 0.9 has no QUIC, so this is a Pingora service of its own ([`QuicListener`])
//! on the listener's UDP port: quinn (QUIC, rustls/ring) and the h3 crate (framing,
//! QPACK) accept connections and request streams, and each request stream is handed to
//! the listener's own `HttpProxy` as a Pingora session (`session::H3Session`). So an
//! HTTP/3 request takes exactly the path an HTTP/1.1 or HTTP/2 one takes: admission
//! (routing, ACLs, limits, rate limits, redirects), the pools and Pingora's connectors,
//! headers, cache, retries, metrics and the access log (`protocol: "HTTP/3"`).
//!
//! Connections count against the listener's connection caps (the same [`Gate`] as its
//! TCP side); streams, idle time and header size follow its `limits` (see
//! [`transport`]). Certificates come from the listener's SNI store (`tls`). The UDP
//! socket is kept in Pingora's descriptor table under [`fd_key`], so a zero-downtime
//! upgrade hands it to the new process with the TCP sockets (`socket`); `handover`
//! routes each datagram to the process whose connection it belongs to while both run.

mod conn;
pub mod handover;
pub mod request;
pub mod session;
pub mod socket;
mod stream;
pub mod tls;

use crate::config::ListenerLimits;
use crate::edge::Gate;
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use conn::{admit, Shared};
use pingora::apps::HttpServerApp;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::time::timeout;

/// Connection attempts quinn keeps queued before refusing more.
const MAX_INCOMING: usize = 4096;

/// Client-initiated unidirectional streams (control, QPACK encoder and decoder, and a
/// few for grease): HTTP/3 needs three.
const MAX_UNI_STREAMS: u32 = 8;

/// The key of a listener's UDP socket in Pingora's descriptor table (no spaces: the
/// upgrade socket carries the keys space-separated).
pub fn fd_key(addr: &SocketAddr) -> String {
    format!("udp://{addr}")
}

/// `Alt-Svc` for the TCP responses of a listener serving HTTP/3 on `port`.
pub fn alt_svc(port: u16) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
        .unwrap_or_else(|_| http::HeaderValue::from_static("clear"))
}

/// QUIC transport settings from a listener's limits: streams per connection
/// (`h2_max_concurrent_streams`, the same cap as HTTP/2), idle timeout
/// (`keepalive_timeout`, at least a second, as for HTTP/2).
pub fn transport(limits: &ListenerLimits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.h2_max_concurrent_streams));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(MAX_UNI_STREAMS));
    let idle = limits.keepalive_timeout.max(Duration::from_secs(1));
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    t
}

/// The listener's QUIC service.
pub struct QuicListener<A> {
    pub name: String,
    pub addr: SocketAddr,
    /// Index of the listener in the configuration (its running limits).
    pub listener: usize,
    pub app: Arc<A>,
    pub gate: Arc<Gate>,
    pub runtime: SharedRuntime,
    pub crypto: Arc<quinn::crypto::rustls::QuicServerConfig>,
    /// How long open connections may take to finish after shutdown starts.
    pub grace: Duration,
    /// `server.upgrade_sock`: the relays of `handover` are named after it.
    pub upgrade_sock: std::path::PathBuf,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> Service for QuicListener<A> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let socket = match socket::bind(&self.addr, fds.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                log::error!(
                    "listener {}: cannot serve HTTP/3 on udp {}: {e}",
                    self.name,
                    self.addr
                );
                return;
            }
        };
        let limits = {
            let rt = self.runtime.load();
            rt.listeners
                .get(self.listener)
                .map(|l| l.limits.clone())
                .unwrap_or_default()
        };
        let mut server = quinn::ServerConfig::with_crypto(self.crypto.clone());
        server.transport_config(Arc::new(transport(&limits)));
        server.max_incoming(MAX_INCOMING);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let tag = handover::new_tag();
        let socket = match handover::HandoverSocket::new(socket, &self.upgrade_sock, tag) {
            Ok(s) => s,
            Err(e) => {
                log::error!(
                    "listener {}: cannot open the QUIC relay next to {}: {e}",
                    self.name,
                    self.upgrade_sock.display()
                );
                return;
            }
        };
        let mut config = quinn::EndpointConfig::default();
        config.cid_generator(move || Box::new(handover::TaggedCids(tag)));
        let endpoint = match quinn::Endpoint::new_with_abstract_socket(
            config,
            Some(server),
            socket.clone(),
            Arc::new(quinn::TokioRuntime),
        ) {
            Ok(e) => e,
            Err(e) => {
                log::error!("listener {}: cannot start QUIC: {e}", self.name);
                return;
            }
        };
        log::info!("listener {}: HTTP/3 on udp {}", self.name, self.addr);
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            listener: self.listener,
            local: self.addr,
            fd,
            app: self.app.clone(),
            gate: self.gate.clone(),
            runtime: self.runtime.clone(),
            handshakes: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            closed: Notify::new(),
        });
        let mut watch = shutdown.clone();
        loop {
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    admit(incoming, &shared, &shutdown);
                }
                _ = watch.changed() => break,
            }
        }
        if socket.successor_listening() {
            // A newer process reads the UDP socket now and relays our connections'
            // datagrams here: new connections all go to it.
            socket.read_relay_only();
            log::info!(
                "listener {}: HTTP/3 handed to the new process; finishing {} connection(s)",
                self.name,
                shared.open.load(Ordering::Acquire)
            );
        }
        drain(&endpoint, &shared, self.grace).await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(vec![fd_key(&self.addr)])
    }
}

/// After shutdown: new connection attempts are ignored (their retransmissions reach
/// the new process after an upgrade), open connections were told GOAWAY by their
/// tasks and get until `grace` to finish their requests; then the endpoint closes.
async fn drain<A>(endpoint: &quinn::Endpoint, shared: &Shared<A>, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        if shared.open.load(Ordering::Acquire) == 0 {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(i) => i.ignore(),
                None => break,
            },
            _ = shared.closed.notified() => {}
            _ = tokio::time::sleep(left.min(Duration::from_millis(250))) => {}
        }
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"shutting down");
    let _ = timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    log::info!("listener {}: HTTP/3 stopped", shared.name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_follows_the_listener_limits() {
        let limits = ListenerLimits {
            keepalive_timeout: Duration::ZERO,
            ..ListenerLimits::default()
        };
        // Builds without panicking for a zero keep-alive (clamped to a second).
        let _ = transport(&limits);
        assert_eq!(alt_svc(8443), "h3=\":8443\"; ma=86400");
        assert_eq!(fd_key(&"0.0.0.0:443".parse().unwrap()), "udp://0.0.0.0:443");
    }
}
