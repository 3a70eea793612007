//! The PROXY protocol (v1 text, v2 binary) on the accept side (SPEC §10): reading the
//! header a trusted load balancer puts in front of a client connection (what we send to
//! backends is `pool::proxy_out`). The wire format itself is the `ppp` crate's; this
//! module decides how many bytes to read (exactly the header's, so nothing of the
//! request behind it is consumed), what a header means for the client address, and
//! sets the stream's socket digest so everything downstream sees the real client.

use pingora::protocols::{GetSocketDigest, SocketDigest, UniqueID};
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use ppp::v2;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature, the first 12 bytes of every v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v2: signature, version/command, family/protocol, 2-byte length.
const V2_PREFIX: usize = 16;
/// The longest v1 header, CRLF included (the protocol's own bound).
const V1_MAX: usize = 107;
/// The shortest header of either version (`PROXY UNKNOWN\r\n`): read before deciding,
/// and no more, so a client that sends only that and waits is not left hanging.
const MIN_HEADER: usize = 15;
/// The largest v2 address-and-TLV block accepted. Load balancers' TLVs (AWS's VPC
/// endpoint id, HAProxy's SSL details) are far below it; anything longer is refused
/// rather than buffered.
pub const MAX_V2_PAYLOAD: usize = 2048;
/// How long a tcp_service waits for the header (listeners use `limits.header_timeout`).
pub const TCP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a well-formed header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The client's address and the address it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 `LOCAL` (the balancer's own health check), v2 with an unspecified or unix
    /// family, v1 `UNKNOWN`: the connection's own addresses stand.
    Local,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no PROXY header (the connection starts with other bytes)")]
    NotAHeader,
    #[error("PROXY header longer than the {0} bytes accepted")]
    TooLong(usize),
    #[error("malformed PROXY header: {0}")]
    Invalid(String),
    #[error("the connection closed inside the PROXY header")]
    Truncated,
    #[error("reading the PROXY header: {0}")]
    Io(std::io::Error),
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
}

/// Where reading stands, given the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Read exactly this many more bytes (all of them belong to the header).
    Need(usize),
    /// The header is complete: it is the whole of the bytes given.
    Done(Header),
}

/// Looks at the first bytes of a connection (exactly those read so far) and says how
/// many more belong to the header, or what the complete header says.
pub fn step(buf: &[u8]) -> Result<Step, Error> {
    if buf.len() < MIN_HEADER {
        let seen = buf.len().min(V2_SIGNATURE.len());
        if !b"PROXY ".starts_with(&buf[..buf.len().min(6)]) && buf[..seen] != V2_SIGNATURE[..seen] {
            return Err(Error::NotAHeader);
        }
        return Ok(Step::Need(MIN_HEADER - buf.len()));
    }
    if buf.starts_with(b"PROXY ") {
        return v1_step(buf);
    }
    if buf.starts_with(V2_SIGNATURE) {
        return v2_step(buf);
    }
    Err(Error::NotAHeader)
}

fn v1_step(buf: &[u8]) -> Result<Step, Error> {
    if buf.last() != Some(&b'\n') {
        if buf.len() >= V1_MAX {
            return Err(Error::TooLong(V1_MAX));
        }
        // The line ends at an unknown place: one byte at a time (they come from the
        // stream's buffer, not one system call each).
        return Ok(Step::Need(1));
    }
    let header = ppp::v1::Header::try_from(buf).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(Step::Done(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Header::Proxied {
            source: SocketAddr::new(a.source_address.into(), a.source_port),
            destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
        },
        ppp::v1::Addresses::Tcp6(a) => Header::Proxied {
            source: SocketAddr::new(a.source_address.into(), a.source_port),
            destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
        },
        ppp::v1::Addresses::Unknown => Header::Local,
    }))
}

fn v2_step(buf: &[u8]) -> Result<Step, Error> {
    if buf.len() < V2_PREFIX {
        return Ok(Step::Need(V2_PREFIX - buf.len()));
    }
    let payload = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if payload > MAX_V2_PAYLOAD {
        return Err(Error::TooLong(V2_PREFIX + MAX_V2_PAYLOAD));
    }
    if buf.len() < V2_PREFIX + payload {
        return Ok(Step::Need(V2_PREFIX + payload - buf.len()));
    }
    let header = v2::Header::try_from(buf).map_err(|e| Error::Invalid(e.to_string()))?;
    if header.command == v2::Command::Local {
        return Ok(Step::Done(Header::Local));
    }
    Ok(Step::Done(match header.addresses {
        v2::Addresses::IPv4(a) => Header::Proxied {
            source: SocketAddr::new(a.source_address.into(), a.source_port),
            destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
        },
        v2::Addresses::IPv6(a) => Header::Proxied {
            source: SocketAddr::new(a.source_address.into(), a.source_port),
            destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
        },
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => Header::Local,
    }))
}

/// Reads the header from the start of `io` within `deadline`, consuming exactly its
/// bytes.
pub async fn read<S>(io: &mut S, deadline: Duration) -> Result<Header, Error>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let reading = async {
        let mut buf = Vec::with_capacity(64);
        loop {
            match step(&buf)? {
                Step::Done(header) => return Ok(header),
                Step::Need(n) => {
                    let start = buf.len();
                    buf.resize(start + n, 0);
                    io.read_exact(&mut buf[start..]).await.map_err(|e| {
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            Error::Truncated
                        } else {
                            Error::Io(e)
                        }
                    })?;
                }
            }
        }
    };
    tokio::time::timeout(deadline, reading)
        .await
        .map_err(|_| Error::Timeout(deadline))?
}

/// Makes `io`'s socket digest name the header's addresses (client as peer, the address
/// it connected to as local), so routing, ACLs, limits, forwarding headers and logs see
/// the client. A `Local` header leaves the digest as it is.
pub fn apply<S>(io: &mut S, header: Header)
where
    S: GetSocketDigest + UniqueID + ?Sized,
{
    let Header::Proxied {
        source,
        destination,
    } = header
    else {
        return;
    };
    let digest = SocketDigest::from_raw_fd(io.id());
    // Fresh cells: `set` cannot fail.
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(source)));
    let _ = digest.local_addr.set(Some(PingoraAddr::Inet(destination)));
    io.set_socket_digest(digest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyProtocolSend;
    use crate::pool::proxy_out::encode;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Runs `step` as `read` does, over a buffer holding the connection's bytes; gives
    /// the result and how many bytes were consumed.
    fn parse(stream: &[u8]) -> Result<(Header, usize), Error> {
        let mut len = 0;
        loop {
            match step(&stream[..len])? {
                Step::Done(h) => return Ok((h, len)),
                Step::Need(n) if len + n <= stream.len() => len += n,
                Step::Need(_) => return Err(Error::Truncated),
            }
        }
    }

    fn v2_header(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    #[test]
    fn v1_tcp4_names_the_client_and_leaves_the_request() {
        let bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let (h, used) = parse(bytes).unwrap();
        assert_eq!(
            h,
            Header::Proxied {
                source: addr("192.0.2.7:56324"),
                destination: addr("198.51.100.1:443")
            }
        );
        assert_eq!(&bytes[used..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn v1_tcp6_and_unknown() {
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 80\r\n").unwrap();
        assert_eq!(
            h,
            Header::Proxied {
                source: addr("[2001:db8::1]:1000"),
                destination: addr("[2001:db8::2]:80")
            }
        );
        // UNKNOWN: exactly 15 bytes, read without waiting for a 16th.
        let bytes = b"PROXY UNKNOWN\r\n";
        assert_eq!(parse(bytes).unwrap(), (Header::Local, 15));
    }

    #[test]
    fn v2_proxy_ipv4_and_ipv6_with_tlvs() {
        let mut p = vec![192, 0, 2, 7, 198, 51, 100, 1];
        p.extend_from_slice(&56324u16.to_be_bytes());
        p.extend_from_slice(&443u16.to_be_bytes());
        p.extend_from_slice(&[0x04, 0, 2, 0xAA, 0xBB]); // a NOOP TLV
        let mut bytes = v2_header(1, 0x11, &p);
        let header_len = bytes.len();
        bytes.extend_from_slice(b"\x16\x03\x01"); // a TLS ClientHello follows
        let (h, used) = parse(&bytes).unwrap();
        assert_eq!(
            h,
            Header::Proxied {
                source: addr("192.0.2.7:56324"),
                destination: addr("198.51.100.1:443")
            }
        );
        assert_eq!(used, header_len);

        let mut p = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec();
        p.extend_from_slice(
            &"2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        p.extend_from_slice(&[0x03, 0xE8, 0x00, 0x50]);
        let (h, _) = parse(&v2_header(1, 0x21, &p)).unwrap();
        assert_eq!(
            h,
            Header::Proxied {
                source: addr("[2001:db8::1]:1000"),
                destination: addr("[2001:db8::2]:80")
            }
        );
    }

    #[test]
    fn v2_local_unspec_and_unix_keep_the_peer() {
        let ipv4 = [10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2];
        assert_eq!(parse(&v2_header(0, 0x11, &ipv4)).unwrap().0, Header::Local);
        assert_eq!(parse(&v2_header(1, 0x00, &[])).unwrap().0, Header::Local);
        assert_eq!(
            parse(&v2_header(1, 0x31, &[0; 216])).unwrap().0,
            Header::Local
        );
    }

    #[test]
    fn garbage_is_refused_early() {
        assert!(matches!(
            step(b"GET / HTTP/1.1\r\n"),
            Err(Error::NotAHeader)
        ));
        assert!(matches!(step(b"G"), Err(Error::NotAHeader)));
        assert!(matches!(step(b"\x16\x03\x01"), Err(Error::NotAHeader)));
        assert!(matches!(
            parse(b"PROXY TCP4 not-an-ip 198.51.100.1 1 2\r\n"),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            parse(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"),
            Err(Error::Invalid(_))
        ));
        // a v2 header with version 1 in the version nibble
        let mut bad = v2_header(1, 0x11, &[0; 12]);
        bad[12] = 0x11;
        assert!(matches!(parse(&bad), Err(Error::Invalid(_))));
        // a v2 IPv4 header whose length is too short for the addresses
        assert!(matches!(
            parse(&v2_header(1, 0x11, &[0; 4])),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn truncated_headers_ask_for_exactly_the_rest() {
        assert_eq!(step(b"").unwrap(), Step::Need(15));
        assert_eq!(step(b"PROXY").unwrap(), Step::Need(10));
        assert_eq!(step(b"PROXY TCP4 1.2.").unwrap(), Step::Need(1));
        let full = v2_header(1, 0x11, &[0; 12]);
        assert_eq!(step(&full[..15]).unwrap(), Step::Need(1));
        assert_eq!(step(&full[..16]).unwrap(), Step::Need(12));
        assert_eq!(step(&full[..20]).unwrap(), Step::Need(8));
        assert!(matches!(parse(&full[..27]), Err(Error::Truncated)));
    }

    #[test]
    fn oversized_headers_are_refused() {
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(200, b'1');
        assert!(matches!(parse(&long), Err(Error::TooLong(107))));
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(step(&big), Err(Error::TooLong(_))));
    }

    #[test]
    fn what_we_send_parses_back() {
        let (s, d) = (addr("192.0.2.7:56324"), addr("198.51.100.1:443"));
        let v1 = encode(ProxyProtocolSend::V1, Some((s, d))).unwrap();
        assert_eq!(v1, b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n");
        let v2 = encode(ProxyProtocolSend::V2, Some((s, d))).unwrap();
        let expect = Header::Proxied {
            source: s,
            destination: d,
        };
        assert_eq!(parse(&v2).unwrap(), (expect, v2.len()));
        assert_eq!(parse(&v1).unwrap(), (expect, v1.len()));
        assert!(encode(ProxyProtocolSend::None, Some((s, d))).is_none());
        let local = encode(ProxyProtocolSend::V2, None).unwrap();
        assert_eq!(parse(&local).unwrap().0, Header::Local);
        assert_eq!(
            encode(ProxyProtocolSend::V1, None).unwrap(),
            b"PROXY UNKNOWN\r\n"
        );
        // a dual-stack listener sees IPv4 clients as mapped IPv6: sent as IPv4
        let mapped = addr("[::ffff:192.0.2.7]:56324");
        let v1 = encode(ProxyProtocolSend::V1, Some((mapped, d))).unwrap();
        assert_eq!(v1, b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n");
        // mixed families: both as IPv6
        let v1 = encode(ProxyProtocolSend::V1, Some((s, addr("[2001:db8::2]:80")))).unwrap();
        assert_eq!(
            v1,
            b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::2 56324 80\r\n".to_vec()
        );
    }

    #[tokio::test]
    async fn read_consumes_only_the_header_and_times_out() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        use tokio::io::AsyncWriteExt;
        client
            .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\nHELLO")
            .await
            .unwrap();
        let h = read(&mut server, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(h, Header::Proxied { .. }));
        let mut rest = [0u8; 5];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"HELLO");

        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
        let e = read(&mut server, Duration::from_millis(100)).await;
        assert!(matches!(e, Err(Error::Timeout(_))));
        drop(client);
        let e = read(&mut server, Duration::from_secs(5)).await;
        assert!(matches!(e, Err(Error::Truncated)));
    }
}
