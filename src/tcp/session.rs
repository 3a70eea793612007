//! One L4 session from accept to close: `server.deny`, claiming a backend (up to
//! `retries` + 1 connect attempts on different backends, each new backend connection
//! starting with a PROXY header when the pool's `upstream.proxy_protocol` asks), piping
//! bytes both ways, and the metrics and access-log line at the end.

use super::copy::{self, End, Traffic};
use crate::edge::app::client_ip;
use crate::net::ip_key;
use crate::observe::access_log::{millis, timestamp};
use crate::observe::refusal::{self, Reason};
use crate::ops::shutdown::WorkCount;
use crate::pool::proxy_out;
use crate::pool::{Claim, Members, Pool};
use crate::runtime::{Runtime, TcpService};
use pingora::protocols::Stream;
use prometheus::IntGauge;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The session line written to the access log when a TCP session closes (SPEC §7).
#[derive(Serialize)]
struct TcpEntry<'a> {
    ts: String,
    service: &'a str,
    client_ip: String,
    backend: &'a str,
    duration_ms: f64,
    bytes_rx: u64,
    bytes_tx: u64,
}

/// Serves the connection `io` for the tcp_service `service` of `rt`, counted in `work`.
pub async fn run(rt: Arc<Runtime>, service: &str, work: &WorkCount, io: Stream) {
    let start = Instant::now();
    let Some(svc) = rt.tcp_services.iter().find(|s| s.name == service) else {
        return;
    };
    let client: Option<IpAddr> = client_ip(&io);
    if rt.deny.refuses(client) {
        let who = client.map(|c| c.to_string()).unwrap_or_default();
        refusal::tcp(
            &svc.name,
            Reason::Denied,
            &format_args!("{who} is in server.deny"),
        );
        return;
    }
    let _work = work.start();
    let Some(pool) = rt.pools.get(svc.pool) else {
        return;
    };
    svc.metrics.connections.inc();
    let _active = Active::new(&svc.metrics.active);
    let members = pool.members();
    let client_ip = client.map(|c| c.to_string()).unwrap_or_default();
    // The client (after any inbound PROXY header) and the address it connected to.
    let addresses = io.get_socket_digest().and_then(|d| {
        let peer = d.peer_addr().and_then(|a| a.as_inet()).copied()?;
        let local = d.local_addr().and_then(|a| a.as_inet()).copied()?;
        Some((peer, local))
    });
    let header = proxy_out::encode(pool.upstream.proxy_protocol, addresses);
    let Some((idx, _claim, upstream)) =
        connect(svc, pool, &members, client, header.as_deref()).await
    else {
        log::warn!(
            "tcp {}: no backend could take the connection from {client_ip}; closing it",
            svc.name
        );
        return;
    };
    let Some(backend) = members.backends.get(idx) else {
        return;
    };
    let traffic = Arc::new(Traffic::default());
    let end = copy::bidirectional(io, upstream, svc.idle_timeout, traffic.clone()).await;
    let ok = !matches!(end, End::Error(_));
    backend.record(ok, ok);
    let (rx, tx) = (
        traffic.rx.load(Ordering::Relaxed),
        traffic.tx.load(Ordering::Relaxed),
    );
    svc.metrics.rx.inc_by(rx);
    svc.metrics.tx.inc_by(tx);
    if let End::Error(e) = &end {
        log::debug!(
            "tcp {}: session with {} ended: {e}",
            svc.name,
            backend.address
        );
    }
    if rt.access_log.enabled() {
        rt.access_log.write(&TcpEntry {
            ts: timestamp(),
            service: &svc.name,
            client_ip,
            backend: &backend.address,
            duration_ms: millis(start.elapsed()),
            bytes_rx: rx,
            bytes_tx: tx,
        });
    }
}

/// Connects to a claimed backend: up to `retries` + 1 selections in all (a backend
/// whose slot filled since selection uses one up too), each on a backend not tried yet.
/// `header` (the PROXY header) is written first; failing to write it fails the attempt.
async fn connect(
    svc: &TcpService,
    pool: &Pool,
    members: &Members,
    client: Option<IpAddr>,
    header: Option<&[u8]>,
) -> Option<(usize, Claim, TcpStream)> {
    let mut key_buf = [0u8; 16];
    let key = ip_key(client, &mut key_buf);
    let budget = pool.retries as usize + 1;
    let mut tried: Vec<usize> = Vec::new();
    while tried.len() < budget {
        let left = budget - tried.len();
        let claim = members.claim(key, None, &mut tried, left)?;
        let backend = members.backends.get(claim.idx)?;
        match tokio::time::timeout(pool.timeouts.connect, TcpStream::connect(backend.addr)).await {
            Ok(Ok(mut stream)) => {
                let _ = stream.set_nodelay(true);
                match send_header(&mut stream, header, pool.timeouts.connect).await {
                    Ok(()) => return Some((claim.idx, claim, stream)),
                    Err(e) => {
                        backend.record(false, false);
                        log::warn!(
                            "tcp {}: sending the PROXY header to {} failed: {e}",
                            svc.name,
                            backend.address
                        );
                    }
                }
            }
            Ok(Err(e)) => {
                backend.record(false, false);
                log::warn!(
                    "tcp {}: connect to {} failed: {e}",
                    svc.name,
                    backend.address
                );
            }
            Err(_) => {
                backend.record(false, false);
                log::warn!("tcp {}: connect to {} timed out", svc.name, backend.address);
            }
        }
    }
    None
}

async fn send_header(
    stream: &mut TcpStream,
    header: Option<&[u8]>,
    within: std::time::Duration,
) -> std::io::Result<()> {
    let Some(header) = header else {
        return Ok(());
    };
    tokio::time::timeout(within, stream.write_all(header))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}

/// Holds the active-sessions gauge up for the life of a session, on every exit path.
struct Active(IntGauge);

impl Active {
    fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Active(gauge.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}
