//! QUIC across a zero-downtime upgrade. The UDP socket is handed to the new process
//! with the TCP ones (`socket`), but unlike a TCP listener a UDP socket is shared: while
//! both processes read it, either may receive a packet of the other's connections. So
//! every connection ID this process issues starts with a random 4-byte tag of its
//! own ([`TaggedCids`]), and [`HandoverSocket`], the socket quinn reads through, sends
//! a datagram addressed to another tag to that process's relay (a Unix datagram
//! socket next to `server.upgrade_sock`, named after the port and the tag), which
//! feeds it to that process's endpoint as if read from the UDP socket. Once shutdown
//! starts and a newer process is listening, the old one stops reading the UDP socket
//! (new connections all reach the new process) and lives on its relay until its
//! connections finish or `grace_period` ends. A datagram for a tag nobody answers for
//! any more is left to quinn (a stateless reset, as for any unknown connection).

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, ConnectionId, ConnectionIdGenerator, UdpPoller};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::unix::net::UnixDatagram as StdUnixDatagram;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::ReadBuf;
use tokio::net::UnixDatagram;

/// Length of the connection IDs this server issues: the tag, then 8 random bytes.
pub const CID_LEN: usize = 12;
const TAG_LEN: usize = 4;
/// A relayed datagram: the client's address (16-byte IPv6, v4-mapped; 2-byte port),
/// the ECN bits, the local address it was sent to (a flag byte, 16 bytes: replies must
/// leave from it on a multi-homed host), then the datagram.
const RELAY_HEADER: usize = 36;

pub type Tag = [u8; TAG_LEN];

fn random(buf: &mut [u8]) {
    let provider = rustls::crypto::ring::default_provider();
    if provider.secure_random.fill(buf).is_err() {
        fastrand::fill(buf);
    }
}

/// A new random tag for one endpoint.
pub fn new_tag() -> Tag {
    let mut tag = [0; TAG_LEN];
    random(&mut tag);
    tag
}

/// Connection IDs carrying this endpoint's tag.
pub struct TaggedCids(pub Tag);

impl ConnectionIdGenerator for TaggedCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut id = [0; CID_LEN];
        id[..TAG_LEN].copy_from_slice(&self.0);
        random(&mut id[TAG_LEN..]);
        ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The tag of the connection ID a datagram is addressed to, when that ID has the
/// length this server issues (short header: always read at that length; long header:
/// its stated length must match).
pub fn dcid_tag(datagram: &[u8]) -> Option<Tag> {
    let first = *datagram.first()?;
    let dcid = if first & 0x80 == 0 {
        datagram.get(1..1 + CID_LEN)?
    } else {
        if usize::from(*datagram.get(5)?) != CID_LEN {
            return None;
        }
        datagram.get(6..6 + CID_LEN)?
    };
    dcid.get(..TAG_LEN)?.try_into().ok()
}

/// The relay of the endpoint with `tag` on `port`: `<upgrade_sock>.quic<port>-<tag>`.
pub fn relay_path(upgrade_sock: &Path, port: u16, tag: &Tag) -> PathBuf {
    let mut name = upgrade_sock.as_os_str().to_owned();
    name.push(format!(".quic{port}-{}", hex(tag)));
    PathBuf::from(name)
}

fn hex(tag: &Tag) -> String {
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(s: &str) -> Option<Tag> {
    let mut tag = [0; TAG_LEN];
    if s.len() != TAG_LEN * 2 {
        return None;
    }
    for (i, b) in tag.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(tag)
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn ip(octets: &[u8]) -> Option<IpAddr> {
    let octets: [u8; 16] = octets.try_into().ok()?;
    let v6 = Ipv6Addr::from(octets);
    Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
}

/// What a relayed datagram carries besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin {
    from: SocketAddr,
    ecn: Option<EcnCodepoint>,
    to: Option<IpAddr>,
}

fn encode(o: Origin, datagram: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RELAY_HEADER + datagram.len());
    out.extend_from_slice(&v6(o.from.ip()).octets());
    out.extend_from_slice(&o.from.port().to_be_bytes());
    out.push(o.ecn.map_or(0, |e| e as u8));
    out.push(u8::from(o.to.is_some()));
    out.extend_from_slice(&o.to.map_or([0; 16], |t| v6(t).octets()));
    out.extend_from_slice(datagram);
    out
}

fn decode(header: &[u8]) -> Option<Origin> {
    let from = SocketAddr::new(
        ip(header.get(..16)?)?,
        u16::from_be_bytes(header.get(16..18)?.try_into().ok()?),
    );
    let ecn = EcnCodepoint::from_bits(*header.get(18)?);
    let to = match header.get(19)? {
        0 => None,
        _ => Some(ip(header.get(20..36)?)?),
    };
    Some(Origin { from, ecn, to })
}

/// The UDP socket as this endpoint reads it: datagrams for other tags go to their
/// relays, datagrams relayed here are read as if from the UDP socket.
pub struct HandoverSocket {
    udp: Arc<dyn AsyncUdpSocket>,
    relay: UnixDatagram,
    relay_path: PathBuf,
    out: StdUnixDatagram,
    upgrade_sock: PathBuf,
    port: u16,
    tag: Tag,
    /// Set once a newer process reads the UDP socket: only the relay is read.
    relay_only: AtomicBool,
}

impl fmt::Debug for HandoverSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandoverSocket")
            .field("relay", &self.relay_path)
            .finish()
    }
}

impl HandoverSocket {
    /// Wraps `socket` and opens this endpoint's relay (inside a Tokio runtime).
    pub fn new(
        socket: std::net::UdpSocket,
        upgrade_sock: &Path,
        tag: Tag,
    ) -> io::Result<Arc<HandoverSocket>> {
        use quinn::Runtime;
        let port = socket.local_addr()?.port();
        let udp = quinn::TokioRuntime.wrap_udp_socket(socket)?;
        let relay_path = relay_path(upgrade_sock, port, &tag);
        let _ = std::fs::remove_file(&relay_path);
        let relay = UnixDatagram::bind(&relay_path)?;
        let out = StdUnixDatagram::unbound()?;
        out.set_nonblocking(true)?;
        Ok(Arc::new(HandoverSocket {
            udp,
            relay,
            relay_path,
            out,
            upgrade_sock: upgrade_sock.to_path_buf(),
            port,
            tag,
            relay_only: AtomicBool::new(false),
        }))
    }

    /// Whether another live process has a relay for this port (a stale relay file,
    /// whose process is gone, is removed).
    pub fn successor_listening(&self) -> bool {
        let Some(stem) = self.upgrade_sock.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        // A relative `upgrade_sock` ("upgrade.sock") lives in the working directory.
        let dir = self
            .upgrade_sock
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let prefix = format!("{stem}.quic{}-", self.port);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        let mut live = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(tag) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(parse_hex)
            else {
                continue;
            };
            if tag == self.tag {
                continue;
            }
            match self.out.send_to(&[], entry.path()) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    let _ = std::fs::remove_file(entry.path());
                }
                _ => live = true,
            }
        }
        live
    }

    /// From now on only relayed datagrams are read (a newer process reads the socket).
    pub fn read_relay_only(&self) {
        self.relay_only.store(true, Ordering::Release);
    }

    /// Sends one datagram (all segments of `meta`) to the relay for `tag`; false when
    /// no process answers there.
    fn relay_to(&self, tag: &Tag, data: &[u8], meta: &RecvMeta) -> bool {
        let path = relay_path(&self.upgrade_sock, self.port, tag);
        let stride = meta.stride.max(1);
        for segment in data.chunks(stride) {
            let origin = Origin {
                from: meta.addr,
                ecn: meta.ecn,
                to: meta.dst_ip,
            };
            let relayed = encode(origin, segment);
            match self.out.send_to(&relayed, &path) {
                Ok(_) => {}
                // A full relay queue drops the datagram like a full socket buffer
                // would; QUIC retransmits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Relays what belongs to other endpoints; returns how many entries are left (moved
    /// to the front).
    fn keep_own(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta], n: usize) -> usize {
        let mut kept = 0;
        for i in 0..n {
            let len = meta[i].len;
            let foreign = bufs[i]
                .get(..len)
                .and_then(dcid_tag)
                .filter(|t| *t != self.tag);
            if let Some(tag) = foreign {
                if self.relay_to(&tag, &bufs[i][..len], &meta[i]) {
                    continue;
                }
            }
            if kept != i {
                let (front, back) = bufs.split_at_mut(i);
                front[kept][..len].copy_from_slice(&back[0][..len]);
                meta[kept] = meta[i];
            }
            kept += 1;
        }
        kept
    }

    fn poll_relay(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        loop {
            let mut read = ReadBuf::new(buf);
            match self.relay.poll_recv(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let got = read.filled().len();
            // Empty datagrams are another process's liveness probes.
            if got <= RELAY_HEADER {
                continue;
            }
            let Some(origin) = decode(&buf[..RELAY_HEADER]) else {
                continue;
            };
            buf.copy_within(RELAY_HEADER..got, 0);
            let len = got - RELAY_HEADER;
            *m = RecvMeta {
                addr: origin.from,
                len,
                stride: len,
                ecn: origin.ecn,
                dst_ip: origin.to,
            };
            return Poll::Ready(Ok(1));
        }
    }
}

impl Drop for HandoverSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.relay_path);
    }
}

impl AsyncUdpSocket for HandoverSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.udp.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.udp.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        if !self.relay_only.load(Ordering::Acquire) {
            loop {
                match self.udp.poll_recv(cx, bufs, meta) {
                    Poll::Ready(Ok(n)) => {
                        let kept = self.keep_own(bufs, meta, n);
                        if kept > 0 {
                            return Poll::Ready(Ok(kept));
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
        }
        self.poll_relay(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.udp.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.udp.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.udp.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_is_read_from_short_and_long_headers() {
        let mut gen = TaggedCids([1, 2, 3, 4]);
        let cid = gen.generate_cid();
        assert_eq!(cid.len(), CID_LEN);
        let mut short = vec![0x40];
        short.extend_from_slice(&cid);
        short.extend_from_slice(&[0; 20]);
        assert_eq!(dcid_tag(&short), Some([1, 2, 3, 4]));
        let mut long = vec![0xc0, 0, 0, 0, 1, CID_LEN as u8];
        long.extend_from_slice(&cid);
        assert_eq!(dcid_tag(&long), Some([1, 2, 3, 4]));
        // A client's own 8-byte Initial DCID carries no tag.
        let mut initial = vec![0xc0, 0, 0, 0, 1, 8];
        initial.extend_from_slice(&[9; 8]);
        assert_eq!(dcid_tag(&initial), None);
        assert_eq!(dcid_tag(&[0x40, 1, 2]), None);
        assert_eq!(dcid_tag(&[]), None);
    }

    #[test]
    fn relayed_datagrams_keep_their_source_and_destination() {
        for (from, to) in [
            ("192.0.2.7:4433", Some("198.51.100.1")),
            ("[2001:db8::1]:9", None),
        ] {
            let o = Origin {
                from: from.parse().unwrap(),
                ecn: Some(EcnCodepoint::Ect0),
                to: to.map(|t| t.parse().unwrap()),
            };
            let wire = encode(o, b"payload");
            assert_eq!(&wire[RELAY_HEADER..], b"payload");
            assert_eq!(decode(&wire[..RELAY_HEADER]), Some(o));
        }
    }

    #[test]
    fn relay_names_carry_port_and_tag() {
        let p = relay_path(Path::new("/run/sy/upgrade.sock"), 443, &[0xab, 0, 1, 0xff]);
        assert_eq!(p, PathBuf::from("/run/sy/upgrade.sock.quic443-ab0001ff"));
        assert_eq!(parse_hex("ab0001ff"), Some([0xab, 0, 1, 0xff]));
        assert_eq!(parse_hex("ab0001f"), None);
    }
}
