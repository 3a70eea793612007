//! The PROXY header we send to backends (SPEC §10 `upstream.proxy_protocol`): building
//! it (the `ppp` crate's wire format) and the connect that writes it before anything
//! else, used by proxied HTTP connections and every kind of health check. The TCP proxy
//! writes the same bytes itself after its connect.

use crate::config::ProxyProtocolSend;
use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::{Error, ErrorType};
use ppp::v2;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The header to send first on a new backend connection for a client at `source` that
/// connected to `destination` (`None` when unknown: v1 `UNKNOWN` / v2 `LOCAL`, which
/// tell the backend to use the connection's own addresses). Nothing for `none`.
pub fn encode(
    send: ProxyProtocolSend,
    addresses: Option<(SocketAddr, SocketAddr)>,
) -> Option<Vec<u8>> {
    let addresses = addresses.map(|(s, d)| same_family(s, d));
    match send {
        ProxyProtocolSend::None => None,
        ProxyProtocolSend::V1 => Some(
            match addresses {
                Some(a) => ppp::v1::Addresses::from(a),
                None => ppp::v1::Addresses::Unknown,
            }
            .to_string()
            .into_bytes(),
        ),
        ProxyProtocolSend::V2 => {
            let builder = match addresses {
                Some(a) => v2::Builder::with_addresses(
                    v2::Version::Two | v2::Command::Proxy,
                    v2::Protocol::Stream,
                    a,
                ),
                None => v2::Builder::with_addresses(
                    v2::Version::Two | v2::Command::Local,
                    v2::Protocol::Unspecified,
                    v2::Addresses::Unspecified,
                ),
            };
            // Building only fails for a payload over 64 KiB; two addresses are 36 bytes.
            builder.build().ok()
        }
    }
}

/// Both addresses in one family, as the header needs: IPv4-mapped IPv6 addresses as
/// IPv4, and an IPv4 address beside an IPv6 one as IPv4-mapped.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let source = canonical(source);
    let destination = canonical(destination);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V6(_)) => (
            SocketAddr::new(IpAddr::V6(s.to_ipv6_mapped()), source.port()),
            destination,
        ),
        (IpAddr::V6(_), IpAddr::V4(d)) => (
            source,
            SocketAddr::new(IpAddr::V6(d.to_ipv6_mapped()), destination.port()),
        ),
        _ => (source, destination),
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(crate::net::canonical(a.ip()), a.port())
}

/// Pingora's L4 connect for a pool that sends the PROXY header: connect (within the
/// pool's connect timeout, which Pingora leaves to a custom connect), then write the
/// header before anything else (TLS included) goes out.
#[derive(Debug)]
pub struct SendProxy {
    pub header: Vec<u8>,
    pub connect_timeout: Duration,
}

#[async_trait]
impl L4Connect for SendProxy {
    async fn connect(&self, addr: &PeerAddr) -> pingora::Result<L4Stream> {
        let Some(inet) = addr.as_inet() else {
            return Error::e_explain(ErrorType::ConnectError, "PROXY header to a non-TCP address");
        };
        let mut tcp =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(inet)).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    let kind = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        ErrorType::ConnectRefused
                    } else {
                        ErrorType::ConnectError
                    };
                    return Err(Error::because(kind, format!("connecting to {inet}"), e));
                }
                Err(_) => {
                    return Error::e_explain(
                        ErrorType::ConnectTimedout,
                        format!("timeout {:?} connecting to {inet}", self.connect_timeout),
                    )
                }
            };
        write_header(&mut tcp, &self.header, self.connect_timeout).await?;
        Ok(tcp.into())
    }
}

/// Writes `header` on a fresh connection within `limit`.
pub async fn write_header(
    tcp: &mut TcpStream,
    header: &[u8],
    limit: Duration,
) -> pingora::Result<()> {
    tokio::time::timeout(limit, tcp.write_all(header))
        .await
        .map_err(|_| Error::explain(ErrorType::ConnectTimedout, "writing the PROXY header"))?
        .map_err(|e| Error::because(ErrorType::ConnectError, "writing the PROXY header", e))
}

/// The header a health check sends: v1 `UNKNOWN` / v2 `LOCAL` (no client behind it),
/// so a backend that requires the header (HAProxy's `accept-proxy`) takes the check.
pub fn for_health_check(send: ProxyProtocolSend) -> Option<Vec<u8>> {
    encode(send, None)
}
