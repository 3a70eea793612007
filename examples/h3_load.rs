//! A load generator for benches/proxy/h3-bench.sh: GET requests over HTTP/3 (quinn + h3)
//! or HTTP/2 over TLS (h2 on rustls) with the same shape for both: C connections, M
//! requests in flight on each, N requests in all; prints `requests seconds req_per_s
//! failed`. Certificates are not verified (a benchmark against our own listener).
//! Debian's h2load has no QUIC, hence this.
//!
//! Usage: h3_load h3|h2 HOST:PORT CONNECTIONS IN_FLIGHT REQUESTS

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Buf, Bytes};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls(alpn: &[u8]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    c.alpn_protocols = vec![alpn.to_vec()];
    c
}

/// Takes one request from the budget; false when it is spent.
fn take(left: &AtomicUsize) -> bool {
    left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

async fn h3_connection(
    addr: SocketAddr,
    in_flight: usize,
    left: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls(b"h3")).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint.connect(addr, "bench.test").unwrap().await.unwrap();
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (mut send, left, failed) = (send.clone(), left.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while take(&left) {
                let req = http::Request::get(format!("https://bench.test:{}/", addr.port()))
                    .body(())
                    .unwrap();
                let ok = async {
                    let mut s = send.send_request(req).await.ok()?;
                    s.finish().await.ok()?;
                    let resp = s.recv_response().await.ok()?;
                    while let Some(mut chunk) = s.recv_data().await.ok()? {
                        chunk.advance(chunk.remaining());
                    }
                    resp.status().is_success().then_some(())
                }
                .await;
                if ok.is_none() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn h2_connection(
    addr: SocketAddr,
    in_flight: usize,
    left: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls(b"h2")));
    let name = rustls::pki_types::ServerName::try_from("bench.test").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let (send, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (send, left, failed) = (send.clone(), left.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while take(&left) {
                let req = http::Request::get(format!("https://bench.test:{}/", addr.port()))
                    .body(())
                    .unwrap();
                let ok = async {
                    let mut send = send.clone().ready().await.ok()?;
                    let (resp, _) = send.send_request(req, true).ok()?;
                    let resp = resp.await.ok()?;
                    let status = resp.status();
                    let mut body = resp.into_body();
                    while let Some(chunk) = body.data().await {
                        let chunk: Bytes = chunk.ok()?;
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    status.is_success().then_some(())
                }
                .await;
                if ok.is_none() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        eprintln!("usage: h3_load h3|h2 HOST:PORT CONNECTIONS IN_FLIGHT REQUESTS");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("HOST:PORT");
    let (conns, in_flight, total): (usize, usize, usize) = (
        args[2].parse().unwrap(),
        args[3].parse().unwrap(),
        args[4].parse().unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let left = Arc::new(AtomicUsize::new(total));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (left, failed) = (left.clone(), failed.clone());
            tasks.push(match args[0].as_str() {
                "h3" => tokio::spawn(h3_connection(addr, in_flight, left, failed)),
                _ => tokio::spawn(h2_connection(addr, in_flight, left, failed)),
            });
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "{total} {secs:.3} {:.0} {failed}",
        (total - failed) as f64 / secs
    );
}
