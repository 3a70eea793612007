//! Choosing the backend for a request and describing the connection to it (with the
//! PROXY header sent first on it when the pool's `upstream.proxy_protocol` asks).

use super::ctx::Upstream;
use crate::config::{HashKey, ProxyProtocolSend, UpstreamProtocol};
use crate::net::ip_key;
use crate::pool::outlier::{self, Outcome};
use crate::pool::proxy_out::{self, SendProxy};
use crate::pool::{Backend, Claim, Pool};
use once_cell::sync::Lazy;
use pingora::protocols::tls::{HandshakeCompleteHook, TlsRef};
use pingora::protocols::{Digest, ALPN};
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorType};
use pingora_proxy::Session;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The bytes the pool hashes: client IP for ip_hash, the configured key for
/// consistent_hash (a missing header or cookie falls back to the client IP).
fn hash_input<'a>(
    pool: &Pool,
    session: &'a Session,
    ip_buf: &'a mut [u8; 16],
    client: Option<IpAddr>,
) -> &'a [u8] {
    let ip_bytes = |buf: &'a mut [u8; 16]| ip_key(client, buf);
    let req = session.req_header();
    match (&pool.algorithm, &pool.hash_key) {
        (crate::config::Algorithm::ConsistentHash, HashKey::Uri) => req
            .uri
            .path_and_query()
            .map(|p| p.as_str().as_bytes())
            .unwrap_or(b"/"),
        (crate::config::Algorithm::ConsistentHash, HashKey::Path) => req.uri.path().as_bytes(),
        (crate::config::Algorithm::ConsistentHash, HashKey::Header(name)) => {
            match req.headers.get(name) {
                Some(v) => v.as_bytes(),
                None => ip_bytes(ip_buf),
            }
        }
        (crate::config::Algorithm::ConsistentHash, HashKey::Cookie(name)) => {
            match cookie_value(req.headers.get_all(http::header::COOKIE).iter(), name) {
                Some(v) => v,
                None => ip_bytes(ip_buf),
            }
        }
        _ => ip_bytes(ip_buf),
    }
}

/// The value of cookie `name` across all Cookie header lines.
pub fn cookie_value<'a>(
    lines: impl Iterator<Item = &'a http::HeaderValue>,
    name: &str,
) -> Option<&'a [u8]> {
    lines
        .flat_map(|line| line.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// Selects a backend not tried yet (the sticky one when the cookie names a usable
/// backend), claims an in-flight slot on it and records it in the context.
pub fn choose(
    pool: &Pool,
    session: &Session,
    up: &mut Upstream,
    client_ip: Option<IpAddr>,
    tls: bool,
) -> Option<Arc<Backend>> {
    let mut ip_buf = [0u8; 16];
    let key = hash_input(pool, session, &mut ip_buf, client_ip);
    // Borrowed field by field (no `Arc` clone): the snapshot stays in `up.members`
    // while the attempt fields below change.
    let members = up.members.get_or_insert_with(|| pool.members());
    let cookie = pool.sticky.as_ref().and_then(|s| {
        cookie_value(
            session
                .req_header()
                .headers
                .get_all(http::header::COOKIE)
                .iter(),
            &s.cookie,
        )
    });
    // The previous (failed) attempt's slot is released before the next claim.
    up.in_flight = None;
    // A slot can fill between selection and claim: try the next candidate, boundedly.
    let bound = members.backends.len().max(1);
    let Claim { idx, guard } = members.claim(key, cookie, &mut up.tried, bound)?;
    up.in_flight = Some(guard);
    up.backend = Some(idx);
    up.outcome_recorded = false;
    up.attempts.start();
    up.set_cookie = match (&pool.sticky, members.sticky_of.get(idx)) {
        (Some(s), Some(value)) if cookie != Some(value.as_bytes()) => {
            Some(s.set_cookie(value, tls))
        }
        _ => None,
    };
    members.backends.get(idx).cloned()
}

/// Counts the chosen backend's outcome once per attempt; `breaker_success` is what the
/// circuit breaker sees (a 5xx fails it only with `on_5xx`).
pub fn record_outcome(up: &mut Upstream, success: bool, breaker_success: bool) {
    if up.outcome_recorded {
        return;
    }
    if let (Some(members), Some(idx)) = (&up.members, up.backend) {
        members.backends[idx].record(success, breaker_success);
        let outcome = match up.attempts.status {
            _ if success => Outcome::Success,
            Some(status) if status >= 500 => Outcome::Status(status),
            _ => Outcome::GatewayFailure,
        };
        outlier::observe(members, idx, outcome);
        up.outcome_recorded = true;
    }
}

/// The connection settings for `backend` (timeouts, TLS, HTTP version, the PROXY
/// header) for a request of `session`.
pub fn peer(pool: &Pool, backend: &Backend, websocket: bool, session: &Session) -> HttpPeer {
    let tls = pool.upstream.tls.as_ref();
    // A plaintext connection has no SNI (none is built for it).
    let sni = match tls {
        None => String::new(),
        Some(t) => t.sni.as_deref().unwrap_or(&backend.host).to_string(),
    };
    let mut peer = HttpPeer::new(backend.addr, tls.is_some(), sni);
    peer.group_key = pool.reuse_group;
    let o = &mut peer.options;
    o.connection_timeout = Some(pool.timeouts.connect);
    o.read_timeout = Some(pool.timeouts.read);
    o.write_timeout = Some(pool.timeouts.write);
    o.idle_timeout = Some(pool.timeouts.idle);
    if let Some(t) = tls {
        o.verify_cert = t.verify;
        o.verify_hostname = t.verify;
        o.ca.clone_from(&pool.upstream_ca);
        // Pingora checks the name with OpenSSL's host check, which never matches an IP
        // literal against the IP SANs: for a backend addressed by IP without `sni`, the
        // chain is verified there and the IP by `check_ip_san` once connected.
        if t.verify && t.sni.is_none() && backend.host_is_ip {
            o.verify_hostname = false;
            o.upstream_tls_handshake_complete_hook = Some(RECORD_IP_SANS.clone());
        }
    }
    o.alpn = match (pool.upstream.protocol, websocket) {
        (_, true) | (UpstreamProtocol::Http1, _) => ALPN::H1,
        (UpstreamProtocol::H2 | UpstreamProtocol::H2c, false) => ALPN::H2,
    };
    if o.alpn == ALPN::H2 {
        o.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    if pool.upstream.proxy_protocol != ProxyProtocolSend::None {
        send_proxy_header(&mut peer, pool, session);
    }
    peer
}

/// Concurrent requests on one HTTP/2 backend connection (Pingora's default is 1: a
/// connection per request in flight). The backend's own SETTINGS_MAX_CONCURRENT_STREAMS
/// lowers it; past it Pingora opens another connection. 100 is the common server default
/// (nginx, Go, h2), so a busy pool needs few connections and none waits for a stream.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// The addresses of the client connection behind `session`: the client (after any
/// inbound PROXY header) and the address it connected to.
fn client_addresses(session: &Session) -> Option<(SocketAddr, SocketAddr)> {
    let client = session.client_addr().and_then(|a| a.as_inet()).copied()?;
    let local = session.server_addr().and_then(|a| a.as_inet()).copied()?;
    Some((client, local))
}

/// New connections for this peer start with a PROXY header naming the client. A
/// connection then belongs to that client connection: the reuse group takes in the
/// client's address and port (and the address it connected to), so Pingora's
/// keep-alive pool (and h2 multiplexing) never hands it to another client, while
/// requests of one client connection still reuse it.
fn send_proxy_header(peer: &mut HttpPeer, pool: &Pool, session: &Session) {
    let addresses = client_addresses(session);
    let Some(header) = proxy_out::encode(pool.upstream.proxy_protocol, addresses) else {
        return;
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pool.reuse_group.hash(&mut h);
    addresses.hash(&mut h);
    peer.group_key = h.finish();
    peer.options.custom_l4 = Some(Arc::new(SendProxy {
        header,
        connect_timeout: pool.timeouts.connect,
    }));
}

/// The IP-address SANs of a backend's certificate, recorded at its TLS handshake.
struct IpSans(Vec<IpAddr>);

static RECORD_IP_SANS: Lazy<HandshakeCompleteHook> = Lazy::new(|| {
    Arc::new(|ssl: &TlsRef| {
        let sans = ssl
            .peer_certificate()?
            .subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| match n.ipaddress()? {
                        &[a, b, c, d] => Some(IpAddr::from([a, b, c, d])),
                        v6 => <[u8; 16]>::try_from(v6).ok().map(IpAddr::from),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Arc::new(IpSans(sans)))
    })
});

/// For a backend addressed by IP with TLS verification and no `sni`: its certificate
/// must name that IP (the request fails with 502 otherwise, and the connection closes).
pub fn check_ip_san(peer: &HttpPeer, digest: Option<&Digest>) -> pingora::Result<()> {
    if peer.options.upstream_tls_handshake_complete_hook.is_none() {
        return Ok(());
    }
    let Some(ip) = peer.address().as_inet().map(|a| a.ip()) else {
        return Ok(());
    };
    let sans = digest
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|s| s.extension.get::<IpSans>());
    match sans {
        Some(IpSans(ips)) if ips.contains(&ip) => Ok(()),
        _ => Err(Error::explain(
            ErrorType::HTTPStatus(502),
            format!("the backend's certificate does not name {ip} (set upstream.tls.sni to check a DNS name)"),
        )),
    }
}

/// The request URI with the route's prefix removed (`strip_prefix`).
pub fn stripped_uri(
    prefix: &str,
    req: &pingora::http::RequestHeader,
) -> pingora::Result<http::Uri> {
    let original = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    crate::routing::strip_prefix(prefix, original)
        .parse::<http::Uri>()
        .map_err(|e| Error::because(ErrorType::InternalError, "strip_prefix", e))
}

/// Closes the attempt when the request ends: a timeout or reset after connecting is a
/// failure; a finished exchange whose response header was not seen (e.g. an upgrade)
/// counts as a success. Releases the in-flight slot.
pub fn finish_attempt(up: &mut Upstream, e: Option<&Error>) {
    let upstream_failed = e.is_some_and(|e| e.esource() == &pingora::ErrorSource::Upstream);
    record_outcome(up, !upstream_failed, !upstream_failed);
    up.in_flight = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cookie_lookup() {
        let lines = [
            HeaderValue::from_static("a=1; session=abc"),
            HeaderValue::from_static("b=2"),
        ];
        assert_eq!(cookie_value(lines.iter(), "session"), Some(&b"abc"[..]));
        assert_eq!(cookie_value(lines.iter(), "b"), Some(&b"2"[..]));
        assert_eq!(cookie_value(lines.iter(), "sess"), None);
    }
}
