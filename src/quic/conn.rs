//! One QUIC connection of a listener: admission (connection caps through the listener's
//! `Gate`, a Retry for unvalidated clients under load), the handshake, the HTTP/3
//! connection with its request cap and GOAWAY on shutdown, and each request stream
//! handed to the listener's HTTP app with a digest naming the QUIC client.

use super::request;
use super::session;
use crate::config::ListenerLimits;
use crate::edge::Gate;
use crate::net::canonical;
use crate::runtime::SharedRuntime;
use bytes::Bytes;
use h3::server::RequestResolver;
use http::{Response, StatusCode};
use pingora::apps::HttpServerApp;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{Digest, SocketDigest, TimingDigest};
use pingora::server::ShutdownWatch;
use pingora_core::protocols::http::ServerSession;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::timeout;

/// Handshakes in progress above which a client whose address is not yet validated is
/// sent a Retry first (RFC 9000 §8.1.2: it must echo the token, proving its address,
/// before the server spends a handshake on it).
pub const RETRY_ABOVE_HANDSHAKES: usize = 64;

/// What every connection task shares.
pub(super) struct Shared<A> {
    pub(super) name: String,
    pub(super) listener: usize,
    pub(super) local: SocketAddr,
    pub(super) fd: RawFd,
    pub(super) app: Arc<A>,
    pub(super) gate: Arc<Gate>,
    pub(super) runtime: SharedRuntime,
    pub(super) handshakes: AtomicUsize,
    pub(super) open: AtomicUsize,
    pub(super) closed: Notify,
}

impl<A> Shared<A> {
    pub(super) fn limits(&self) -> ListenerLimits {
        let rt = self.runtime.load();
        rt.listeners
            .get(self.listener)
            .map(|l| l.limits.clone())
            .unwrap_or_default()
    }
}

/// Whether a connection attempt is answered with a Retry (address validation) first.
fn needs_retry(handshakes_in_progress: usize, address_validated: bool) -> bool {
    handshakes_in_progress >= RETRY_ABOVE_HANDSHAKES && !address_validated
}

/// Counts the connection against the listener's caps, asks an unvalidated client for a
/// Retry when many handshakes are in progress, then serves it on its own task.
pub(super) fn admit<A: HttpServerApp + Send + Sync + 'static>(
    incoming: quinn::Incoming,
    shared: &Arc<Shared<A>>,
    shutdown: &ShutdownWatch,
) {
    let peer = incoming.remote_address();
    if needs_retry(
        shared.handshakes.load(Ordering::Relaxed),
        incoming.remote_address_validated(),
    ) {
        if let Err(e) = incoming.retry() {
            e.into_incoming().ignore();
        }
        return;
    }
    let Some(admitted) = shared.gate.admit(Some(canonical(peer.ip()))) else {
        incoming.refuse();
        return;
    };
    shared.open.fetch_add(1, Ordering::AcqRel);
    let shared = shared.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        serve(incoming, &shared, shutdown).await;
        drop(admitted);
        shared.open.fetch_sub(1, Ordering::AcqRel);
        shared.closed.notify_waiters();
    });
}

/// One QUIC connection: the handshake (bounded by `header_timeout`), then its request
/// streams, each on its own task, until the client closes, the idle timeout, the
/// request cap (`max_requests_per_connection`) or shutdown (GOAWAY, then the streams
/// already accepted finish).
async fn serve<A: HttpServerApp + Send + Sync + 'static>(
    incoming: quinn::Incoming,
    shared: &Arc<Shared<A>>,
    mut shutdown: ShutdownWatch,
) {
    let peer = incoming.remote_address();
    let limits = shared.limits();
    shared.handshakes.fetch_add(1, Ordering::Relaxed);
    let handshake = timeout(limits.header_timeout, async { incoming.accept()?.await }).await;
    shared.handshakes.fetch_sub(1, Ordering::Relaxed);
    let conn = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            log::debug!("{}: QUIC handshake with {peer} failed: {e}", shared.name);
            return;
        }
        Err(_) => {
            log::debug!("{}: QUIC handshake with {peer} timed out", shared.name);
            return;
        }
    };
    let built = h3::server::builder()
        .max_field_section_size(u64::from(limits.max_header_bytes))
        .build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await;
    let mut h3conn = match built {
        Ok(c) => c,
        Err(e) => {
            log::debug!("{}: HTTP/3 setup with {peer} failed: {e}", shared.name);
            return;
        }
    };
    let digest = digest(peer, shared.local, shared.fd);
    let max_requests = limits.max_requests_per_connection;
    let mut served = 0u32;
    let mut closing = false;
    loop {
        if !closing && (*shutdown.borrow() || (max_requests > 0 && served >= max_requests)) {
            closing = true;
            if let Err(e) = h3conn.shutdown(0).await {
                log::debug!("{}: GOAWAY to {peer}: {e}", shared.name);
                break;
            }
        }
        tokio::select! {
            accepted = h3conn.accept() => match accepted {
                Ok(Some(resolver)) => {
                    served = served.saturating_add(1);
                    let task = request(resolver, shared.clone(), conn.clone(), digest.clone(), shutdown.clone(), limits.header_timeout);
                    tokio::spawn(task);
                }
                Ok(None) => break,
                Err(e) => {
                    log::debug!("{}: HTTP/3 connection from {peer} ended: {e}", shared.name);
                    break;
                }
            },
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
}

/// One request stream: the head (bounded by `header_timeout`), checked, then the
/// listener's HTTP app serves it like any other request.
async fn request<A: HttpServerApp + Send + Sync + 'static>(
    resolver: RequestResolver<h3_quinn::Connection, Bytes>,
    shared: Arc<Shared<A>>,
    conn: quinn::Connection,
    digest: Digest,
    shutdown: ShutdownWatch,
    header_timeout: Duration,
) {
    let (req, mut stream) = match timeout(header_timeout, resolver.resolve_request()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            log::debug!("{}: HTTP/3 request refused: {e}", shared.name);
            return;
        }
        Err(_) => return,
    };
    let header = match request::header(req) {
        Ok(h) => h,
        Err(why) => {
            log::debug!("{}: malformed HTTP/3 request: {why:?}", shared.name);
            let mut resp = Response::new(());
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            if stream.send_response(resp).await.is_ok() {
                let _ = stream.finish().await;
            }
            return;
        }
    };
    let session = session::H3Session::new(header, stream, conn, digest);
    shared
        .app
        .process_new_http(ServerSession::new_custom(Box::new(session)), &shutdown)
        .await;
}

/// The connection's digest as Pingora's hooks read it: the QUIC client's address (so
/// client IP, ACLs and rate limits see the real client), the local address, TLS 1.3.
fn digest(peer: SocketAddr, local: SocketAddr, fd: RawFd) -> Digest {
    let socket = SocketDigest::from_raw_fd(fd);
    let _ = socket.peer_addr.set(Some(PingoraAddr::Inet(peer)));
    let _ = socket.local_addr.set(Some(PingoraAddr::Inet(local)));
    Digest {
        ssl_digest: Some(Arc::new(SslDigest::new(
            "QUIC",
            "TLSv1.3",
            None,
            None,
            Vec::new(),
        ))),
        timing_digest: vec![Some(TimingDigest {
            established_ts: SystemTime::now(),
            ..Default::default()
        })],
        proxy_digest: None,
        socket_digest: Some(Arc::new(socket)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_only_under_load_and_only_for_unvalidated_addresses() {
        assert!(!needs_retry(0, false));
        assert!(!needs_retry(RETRY_ABOVE_HANDSHAKES - 1, false));
        assert!(needs_retry(RETRY_ABOVE_HANDSHAKES, false));
        // A client that echoed a Retry token is validated: never asked twice.
        assert!(!needs_retry(RETRY_ABOVE_HANDSHAKES * 10, true));
    }
}
