//! L4 services (raw TCP, PostgreSQL, MySQL): a Pingora `ServerApp` per tcp_service, so
//! they take part in the SIGQUIT upgrade and graceful shutdown. Each connection picks a
//! backend from the service's pool (algorithm, weights, backups, health, circuit,
//! max_connections; least_conn counts open connections), connects with retries on other
//! backends, then pipes bytes both ways until both sides close or `idle_timeout`.

pub mod copy;

use crate::net::canonical;
use crate::net::ip_key;
use crate::observe::access_log::{millis, timestamp};
use crate::ops::shutdown::Work;
use crate::pool::InFlight;
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use copy::{End, Traffic};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use prometheus::IntGauge;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
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

pub struct TcpProxy {
    /// The tcp_service's name (its listener is fixed until an upgrade).
    pub service: String,
    pub runtime: SharedRuntime,
}

#[async_trait]
impl ServerApp for TcpProxy {
    async fn process_new(
        self: &Arc<Self>,
        io: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let start = Instant::now();
        // The session keeps the runtime (and pool membership) it started with.
        let rt = self.runtime.load_full();
        let svc = rt.tcp_services.iter().find(|s| s.name == self.service)?;
        let client: Option<IpAddr> = io.get_socket_digest().and_then(|d| {
            d.peer_addr()
                .and_then(|a| a.as_inet())
                .map(|a| canonical(a.ip()))
        });
        if rt.deny.refuses(client) {
            log::debug!(
                "tcp {}: {} is in server.deny; connection closed",
                svc.name,
                client.map(|c| c.to_string()).unwrap_or_default()
            );
            return None;
        }
        let _work = Work::start();
        let pool = rt.pools.get(svc.pool)?;
        svc.metrics.connections.inc();
        let _active = Active::new(&svc.metrics.active);

        let members = pool.members();
        let mut key_buf = [0u8; 16];
        let key = ip_key(client, &mut key_buf);
        let mut tried: Vec<usize> = Vec::new();
        let mut connected = None;
        for _ in 0..=pool.retries {
            let Some(idx) = members.select(key, &tried) else {
                break;
            };
            tried.push(idx);
            let backend = &members.backends[idx];
            let Some(guard) = InFlight::acquire(backend) else {
                continue;
            };
            match tokio::time::timeout(pool.timeouts.connect, TcpStream::connect(backend.addr))
                .await
            {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    connected = Some((idx, guard, stream));
                    break;
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
        let client_ip = client.map(|c| c.to_string()).unwrap_or_default();
        let Some((idx, _guard, upstream)) = connected else {
            log::warn!(
                "tcp {}: no backend could take the connection from {client_ip}; closing it",
                svc.name
            );
            return None;
        };
        let backend = &members.backends[idx];
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
        None
    }
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
