//! A real HTTP/3 client for the tests (quinn + h3 + h3-quinn on rustls, the crates the
//! server uses, but the client halves): trusts one CA, picks the SNI, streams request
//! bodies and reads whole responses, and reports the certificate the server chose.
//! Every call is bounded (10 s).

use bytes::{Buf, Bytes};
use openssl::x509::X509;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Upper bound on one connect or one request.
const LIMIT: Duration = Duration::from_secs(10);

/// One HTTP/3 response.
#[derive(Debug)]
pub struct H3Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<http::HeaderMap>,
}

impl H3Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/3 client with its own runtime and UDP endpoint.
pub struct H3Client {
    pub rt: tokio::runtime::Runtime,
    endpoint: quinn::Endpoint,
}

/// One open HTTP/3 connection.
pub struct H3Conn {
    pub quic: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    authority: String,
    _driver: tokio::task::JoinHandle<()>,
}

impl H3Client {
    /// A client that trusts `ca` only.
    pub fn new(ca: &X509) -> H3Client {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("client runtime");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                ca.to_der().expect("CA DER"),
            ))
            .expect("trust the test CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        // Every handshake is a full one, so each shows the certificate the server picks.
        tls.resumption = rustls::client::Resumption::disabled();
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
        let endpoint = rt.block_on(async {
            let mut e =
                quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client endpoint");
            e.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
            e
        });
        H3Client { rt, endpoint }
    }

    /// Connects to 127.0.0.1:`port` with SNI `sni`.
    pub fn connect(&self, port: u16, sni: &str) -> Result<H3Conn, String> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let endpoint = self.endpoint.clone();
        let sni = sni.to_string();
        self.rt.block_on(async move {
            tokio::time::timeout(LIMIT, async move {
                let quic = endpoint
                    .connect(addr, &sni)
                    .map_err(|e| format!("connect: {e}"))?
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
                    .await
                    .map_err(|e| format!("h3 setup: {e}"))?;
                let driver = tokio::spawn(async move {
                    let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
                });
                Ok(H3Conn {
                    quic,
                    send,
                    authority: format!("{sni}:{port}"),
                    _driver: driver,
                })
            })
            .await
            .map_err(|_| "timed out".to_string())?
        })
    }

    /// One request on `conn`: `body` is sent in 16 KiB chunks, the response read whole.
    pub fn request(
        &self,
        conn: &mut H3Conn,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<H3Reply, String> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", conn.authority));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(()).map_err(|e| e.to_string())?;
        let body = Bytes::copy_from_slice(body);
        let mut send = conn.send.clone();
        self.rt.block_on(async move {
            tokio::time::timeout(LIMIT, async move {
                let mut stream = send
                    .send_request(req)
                    .await
                    .map_err(|e| format!("send request: {e}"))?;
                let mut rest = body;
                while !rest.is_empty() {
                    let n = rest.len().min(16 * 1024);
                    stream
                        .send_data(rest.split_to(n))
                        .await
                        .map_err(|e| format!("send body: {e}"))?;
                }
                stream.finish().await.map_err(|e| format!("finish: {e}"))?;
                let resp = stream
                    .recv_response()
                    .await
                    .map_err(|e| format!("response: {e}"))?;
                let mut body = Vec::new();
                while let Some(mut chunk) = stream
                    .recv_data()
                    .await
                    .map_err(|e| format!("response body: {e}"))?
                {
                    while chunk.has_remaining() {
                        let part = chunk.chunk();
                        body.extend_from_slice(part);
                        let n = part.len();
                        chunk.advance(n);
                    }
                }
                let trailers = stream
                    .recv_trailers()
                    .await
                    .map_err(|e| format!("trailers: {e}"))?;
                Ok(H3Reply {
                    status: resp.status().as_u16(),
                    headers: resp.headers().clone(),
                    body,
                    trailers,
                })
            })
            .await
            .map_err(|_| "timed out".to_string())?
        })
    }

    /// A new connection and one GET.
    pub fn get(&self, port: u16, sni: &str, path: &str) -> Result<H3Reply, String> {
        let mut conn = self.connect(port, sni)?;
        self.request(&mut conn, "GET", path, &[], &[])
    }
}

impl H3Conn {
    /// The leaf certificate the server presented (DER).
    pub fn served_cert(&self) -> Vec<u8> {
        self.quic
            .peer_identity()
            .and_then(|id| {
                id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| chain.first().map(|c| c.to_vec()))
            .unwrap_or_default()
    }
}
