//! HTTP/2 and upgraded protocols end to end (SPEC §3 listeners.http2 and
//! upstream.protocol, §4): h2c prior knowledge on a plaintext listener, a real gRPC
//! server and client (tonic) through the proxy — unary, server streaming, metadata and
//! trailers — and WebSocket echo through the proxy with a fast and a slow upstream.
use crate::common::config::*;
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A multi-threaded tokio runtime for the test's own servers and clients; dropping it
/// stops every task it runs.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A tokio listener on a free port of 127.0.0.1 (bound before the runtime starts it).
fn bind_local() -> (StdListener, u16) {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

// ---------------------------------------------------------------------------------------
// h2c
// ---------------------------------------------------------------------------------------

#[test]
fn h2c_prior_knowledge_works_on_a_plaintext_listener_with_http2() {
    let backend = Backend::start("a");
    let (h2c, plain) = (listen_port(), listen_port());
    let listeners = json!([
        with(listener("h2c", h2c), json!({ "http2": true })),
        listener("plain", plain),
    ]);
    let config = config_of(
        listeners,
        json!([pool("p", &[backend.address()])]),
        json!([route("r", "p")]),
    );
    let _sy = Switchyard::start_config(&config, &[h2c, plain]);

    let url = format!("http://127.0.0.1:{h2c}/h2c?x=1");
    let (ok, out, err) = curl(&[
        "-sS",
        "--http2-prior-knowledge",
        "-H",
        "X-Test: yes",
        "-w",
        "\n%{http_version} %{http_code}",
        &url,
    ]);
    assert!(ok, "curl --http2-prior-knowledge failed: {err}");
    assert_eq!(out, "backend a\n\n2 200", "HTTP/2 over cleartext: {out:?}");
    let seen = backend.last().expect("backend saw the h2c request");
    assert_eq!(seen.path, "/h2c?x=1");
    assert_eq!(seen.header("x-test"), Some("yes"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));

    // HTTP/1.1 still works on the same listener.
    let r = get(h2c, "/h1");
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().expect("h1").path, "/h1");

    // Many concurrent streams on one connection (h2load, from nghttp2-client; curl 7.88
    // cannot reuse an h2c prior-knowledge connection, whatever the server).
    let url = format!("http://127.0.0.1:{h2c}/multi");
    let out = h2load(&["-n", "40", "-c", "1", "-m", "10", &url]);
    assert!(
        out.contains("40 succeeded, 0 failed, 0 errored"),
        "h2load over h2c: {out}"
    );
    assert!(out.contains("status codes: 40 2xx"), "{out}");
    assert!(out.contains("Application protocol: h2c"), "{out}");

    // Without `http2: true` a plaintext listener does not speak h2c.
    let url = format!("http://127.0.0.1:{plain}/nope");
    let (_ok, out, _err) = curl(&[
        "-sS",
        "--max-time",
        "5",
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version} %{http_code}",
        &url,
    ]);
    assert!(
        !out.ends_with("2 200"),
        "h2c on a listener without http2: {out:?}"
    );
}

// ---------------------------------------------------------------------------------------
// gRPC (tonic): messages derived with prost, a hand-written service, no protoc.
// ---------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoRequest {
    #[prost(string, tag = "1")]
    pub(crate) message: String,
    /// Server streaming: how many replies.
    #[prost(uint32, tag = "2")]
    pub(crate) count: u32,
    /// Server streaming: end with this error status after the replies (0 = OK).
    #[prost(int32, tag = "3")]
    pub(crate) fail_with: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoReply {
    #[prost(string, tag = "1")]
    pub(crate) message: String,
    #[prost(uint32, tag = "2")]
    pub(crate) index: u32,
    /// The `x-tenant` metadata the server received.
    #[prost(string, tag = "3")]
    pub(crate) tenant: String,
}

const UNARY: &str = "/test.Echo/Unary";
const STREAM: &str = "/test.Echo/Stream";

fn tenant_of<T>(req: &tonic::Request<T>) -> String {
    req.metadata()
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

struct UnarySvc(Arc<AtomicUsize>);

impl tonic::server::UnaryService<EchoRequest> for UnarySvc {
    type Response = EchoReply;
    type Future = tonic::codegen::BoxFuture<tonic::Response<EchoReply>, tonic::Status>;
    fn call(&mut self, req: tonic::Request<EchoRequest>) -> Self::Future {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let tenant = tenant_of(&req);
            let msg = req.into_inner();
            if msg.message == "not-found" {
                return Err(tonic::Status::not_found("no such echo"));
            }
            let mut resp = tonic::Response::new(EchoReply {
                message: msg.message.to_uppercase(),
                index: 0,
                tenant,
            });
            resp.metadata_mut()
                .insert("x-server", "tonic".parse().expect("metadata"));
            Ok(resp)
        })
    }
}

type ReplyStream = tonic::codegen::BoxStream<EchoReply>;

struct StreamSvc(Arc<AtomicUsize>);

impl tonic::server::ServerStreamingService<EchoRequest> for StreamSvc {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = tonic::codegen::BoxFuture<tonic::Response<ReplyStream>, tonic::Status>;
    fn call(&mut self, req: tonic::Request<EchoRequest>) -> Self::Future {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let tenant = tenant_of(&req);
            let msg = req.into_inner();
            let mut items: Vec<Result<EchoReply, tonic::Status>> = (0..msg.count)
                .map(|i| {
                    Ok(EchoReply {
                        message: format!("{} #{i}", msg.message),
                        index: i,
                        tenant: tenant.clone(),
                    })
                })
                .collect();
            if msg.fail_with != 0 {
                let mut trailers = tonic::metadata::MetadataMap::new();
                trailers.insert("x-trailer", "after-the-stream".parse().expect("metadata"));
                items.push(Err(tonic::Status::with_metadata(
                    tonic::Code::from_i32(msg.fail_with),
                    "stream stopped on purpose",
                    trailers,
                )));
            }
            // Spread the messages out in time, so they cross the proxy as separate frames.
            let stream = futures_util::stream::iter(items).then(|item| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                item
            });
            Ok(tonic::Response::new(Box::pin(stream) as ReplyStream))
        })
    }
}

/// The hand-written equivalent of tonic-build's generated server for service `test.Echo`.
#[derive(Clone, Default)]
struct EchoServer {
    calls: Arc<AtomicUsize>,
}

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "test.Echo";
}

impl<B> tonic::codegen::Service<http::Request<B>> for EchoServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let calls = self.calls.clone();
        match req.uri().path() {
            UNARY => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(UnarySvc(calls), req).await)
            }),
            STREAM => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.server_streaming(StreamSvc(calls), req).await)
            }),
            _ => Box::pin(
                async move { Ok(tonic::Status::unimplemented("no such method").into_http()) },
            ),
        }
    }
}

/// A tonic gRPC server (HTTP/2 cleartext) on 127.0.0.1, stopped when dropped (also used
/// by `http3`).
pub(crate) struct GrpcBackend {
    pub(crate) port: u16,
    calls: Arc<AtomicUsize>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl GrpcBackend {
    pub(crate) fn start() -> GrpcBackend {
        let rt = runtime();
        let (listener, port) = bind_local();
        let server = EchoServer::default();
        let calls = server.calls.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let incoming =
                tokio_stream::wrappers::TcpListenerStream::new(listener).inspect(move |_| {
                    accepted.fetch_add(1, Ordering::Relaxed);
                });
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(incoming)
                .await
            {
                eprintln!("gRPC server stopped: {e}");
            }
        });
        GrpcBackend {
            port,
            calls,
            connections,
            rt: Some(rt),
        }
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// A server-side TLS stream tonic can serve (tonic needs `Connected`).
struct TlsIo(pingora::tls::tokio_ssl::SslStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for TlsIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl GrpcBackend {
    /// The same gRPC service over TLS with ALPN h2 only (certificate `cert`/`key`).
    fn start_tls(
        cert: &openssl::x509::X509,
        key: &openssl::pkey::PKey<openssl::pkey::Private>,
    ) -> GrpcBackend {
        use openssl::ssl::{AlpnError, SslAcceptor, SslMethod};
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        b.set_certificate(cert).expect("cert");
        b.set_private_key(key).expect("key");
        b.set_alpn_select_callback(|_, offered| {
            openssl::ssl::select_next_proto(b"\x02h2", offered).ok_or(AlpnError::ALERT_FATAL)
        });
        let acceptor = Arc::new(b.build());
        let rt = runtime();
        let (listener, port) = bind_local();
        let server = EchoServer::default();
        let calls = server.calls.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<TlsIo>(16);
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            while let Ok((tcp, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut s) = pingora::tls::tokio_ssl::SslStream::new(ssl, tcp) else {
                        return;
                    };
                    if std::pin::Pin::new(&mut s).accept().await.is_ok() {
                        let _ = tx.send(TlsIo(s)).await;
                    }
                });
            }
        });
        rt.spawn(async move {
            let incoming = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|io| (Ok::<_, std::io::Error>(io), rx))
            });
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(incoming)
                .await
            {
                eprintln!("gRPC TLS server stopped: {e}");
            }
        });
        GrpcBackend {
            port,
            calls,
            connections,
            rt: Some(rt),
        }
    }
}

type GrpcClient = tonic::client::Grpc<tonic::transport::Channel>;

async fn grpc_client(port: u16) -> GrpcClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect to switchyard over h2c");
    tonic::client::Grpc::new(channel)
}

fn request(message: &str, count: u32, fail_with: tonic::Code) -> tonic::Request<EchoRequest> {
    let mut req = tonic::Request::new(EchoRequest {
        message: message.to_string(),
        count,
        fail_with: fail_with as i32,
    });
    req.metadata_mut()
        .insert("x-tenant", "t-42".parse().expect("metadata"));
    req
}

async fn unary(
    client: &mut GrpcClient,
    req: tonic::Request<EchoRequest>,
) -> Result<tonic::Response<EchoReply>, tonic::Status> {
    client.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::from_static(UNARY);
    client
        .unary(req, path, tonic_prost::ProstCodec::default())
        .await
}

async fn server_streaming(
    client: &mut GrpcClient,
    req: tonic::Request<EchoRequest>,
) -> Result<tonic::Response<tonic::codec::Streaming<EchoReply>>, tonic::Status> {
    client.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::from_static(STREAM);
    client
        .server_streaming(req, path, tonic_prost::ProstCodec::default())
        .await
}

/// Switchyard with an `http2: true` plaintext listener in front of one h2c pool.
fn grpc_proxy(backend: &GrpcBackend) -> (Switchyard, u16) {
    grpc_proxy_with(backend, json!({ "protocol": "h2c" }))
}

/// Like `grpc_proxy` with the pool's `upstream` given.
fn grpc_proxy_with(backend: &GrpcBackend, upstream: Value) -> (Switchyard, u16) {
    let port = listen_port();
    let grpc = with(
        pool("grpc", &[format!("127.0.0.1:{}", backend.port)]),
        json!({ "upstream": upstream }),
    );
    let config = config_of(
        json!([with(listener("grpc", port), json!({ "http2": true }))]),
        json!([grpc]),
        json!([{ "name": "echo", "path_prefix": "/test.Echo", "pool": "grpc" }]),
    );
    (Switchyard::start_config(&config, &[port]), port)
}

#[test]
fn grpc_unary_passes_through_with_metadata_and_status() {
    let backend = GrpcBackend::start();
    let (_sy, port) = grpc_proxy(&backend);
    let rt = runtime();
    rt.block_on(async {
        let mut client = grpc_client(port).await;
        for i in 0..3 {
            let resp = unary(
                &mut client,
                request(&format!("hello {i}"), 0, tonic::Code::Ok),
            )
            .await
            .unwrap_or_else(|s| panic!("unary call {i} through the proxy: {s:?}"));
            assert_eq!(
                resp.metadata()
                    .get("x-server")
                    .and_then(|v| v.to_str().ok()),
                Some("tonic"),
                "response metadata (headers) pass through"
            );
            let reply = resp.into_inner();
            assert_eq!(reply.message, format!("HELLO {i}"));
            assert_eq!(reply.tenant, "t-42", "request metadata reaches the server");
        }
        // An error status (a trailers-only response) reaches the client intact.
        let status = unary(&mut client, request("not-found", 0, tonic::Code::Ok))
            .await
            .expect_err("the server answers NOT_FOUND");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        assert_eq!(status.message(), "no such echo");
    });
    assert_eq!(backend.calls.load(Ordering::Relaxed), 4);
}

#[test]
fn grpc_server_streaming_passes_through_with_trailers() {
    let backend = GrpcBackend::start();
    let (_sy, port) = grpc_proxy(&backend);
    let rt = runtime();
    rt.block_on(async {
        let mut client = grpc_client(port).await;

        // A complete stream, then an OK status in the trailers.
        let resp = server_streaming(&mut client, request("tick", 10, tonic::Code::Ok))
            .await
            .expect("server-streaming call through the proxy");
        let mut stream = resp.into_inner();
        let mut got = Vec::new();
        while let Some(reply) = stream.message().await.expect("stream message") {
            got.push(reply);
        }
        assert_eq!(got.len(), 10, "every streamed message arrives");
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.index, i as u32, "in order");
            assert_eq!(r.message, format!("tick #{i}"));
            assert_eq!(r.tenant, "t-42");
        }
        let trailers = stream.trailers().await.expect("trailers");
        assert!(trailers.is_some(), "the stream ends with trailers");

        // Messages, then an error status with custom metadata carried in the trailers.
        let resp = server_streaming(
            &mut client,
            request("boom", 3, tonic::Code::ResourceExhausted),
        )
        .await
        .expect("server-streaming call");
        let mut stream = resp.into_inner();
        let mut n = 0;
        let status = loop {
            match stream.message().await {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("the stream ended without its error status"),
                Err(status) => break status,
            }
        };
        assert_eq!(n, 3, "the messages before the error arrive");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert_eq!(status.message(), "stream stopped on purpose");
        assert_eq!(
            status
                .metadata()
                .get("x-trailer")
                .and_then(|v| v.to_str().ok()),
            Some("after-the-stream"),
            "custom trailer metadata passes through: {status:?}"
        );
    });
}

#[test]
fn grpc_calls_run_concurrently_over_one_connection() {
    let backend = GrpcBackend::start();
    let (_sy, port) = grpc_proxy(&backend);
    let rt = runtime();
    rt.block_on(async {
        let client = grpc_client(port).await;
        // One call first, so that the backend connection exists before the others start.
        unary(&mut client.clone(), request("first", 1, tonic::Code::Ok))
            .await
            .expect("first call");
        let mut tasks = Vec::new();
        for i in 0..8u32 {
            let mut c = client.clone();
            tasks.push(tokio::spawn(async move {
                let resp = server_streaming(&mut c, request(&format!("s{i}"), 5, tonic::Code::Ok))
                    .await
                    .expect("stream call");
                let mut stream = resp.into_inner();
                let mut n = 0;
                while let Some(r) = stream.message().await.expect("message") {
                    assert_eq!(r.message, format!("s{i} #{n}"));
                    n += 1;
                }
                n
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task"), 5);
        }
    });
    assert_eq!(backend.calls.load(Ordering::Relaxed), 9);
    // The eight calls (100 ms each) overlap; over one stream per backend connection
    // (Pingora's default) they would need about eight connections.
    let connections = backend.connections.load(Ordering::Relaxed);
    assert!(
        connections <= 2,
        "the calls share the backend connection as h2 streams: {connections} connections"
    );
}

#[test]
fn grpc_passes_through_to_an_h2_upstream_over_verified_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("Switchyard Test Root CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (cert, key) = ca.issue(&[("CN", "localhost")], &["DNS:localhost"], CertUse::Server);
    let backend = GrpcBackend::start_tls(&cert, &key);
    let upstream = json!({ "protocol": "h2", "tls": { "sni": "localhost", "ca_file": ca_file } });
    let (_sy, port) = grpc_proxy_with(&backend, upstream);
    let rt = runtime();
    rt.block_on(async {
        let mut client = grpc_client(port).await;
        let reply = unary(&mut client, request("secure", 0, tonic::Code::Ok))
            .await
            .unwrap_or_else(|s| panic!("unary call to an h2 TLS upstream: {s:?}"))
            .into_inner();
        assert_eq!(reply.message, "SECURE");
        let resp = server_streaming(&mut client, request("tls", 4, tonic::Code::Ok))
            .await
            .expect("server streaming to an h2 TLS upstream");
        let mut stream = resp.into_inner();
        let mut n = 0;
        while let Some(r) = stream.message().await.expect("message") {
            assert_eq!(r.message, format!("tls #{n}"));
            n += 1;
        }
        assert_eq!(n, 4);
    });
    assert_eq!(backend.calls.load(Ordering::Relaxed), 2);
}

// ---------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------

/// Each upgrade request's headers, in arrival order.
type Upgrades = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A WebSocket echo server (tokio-tungstenite) that waits `delay` before answering the
/// upgrade; records each upgrade request's headers. Stopped when dropped.
struct WsBackend {
    port: u16,
    upgrades: Upgrades,
    rt: Option<tokio::runtime::Runtime>,
}

impl WsBackend {
    fn start(delay: Duration) -> WsBackend {
        let rt = runtime();
        let (listener, port) = bind_local();
        let upgrades: Upgrades = Arc::default();
        let record = upgrades.clone();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            while let Ok((tcp, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    // The signature is tungstenite's `Callback`.
                    #[allow(clippy::result_large_err)]
                    let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                                    mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(n, v)| {
                                (n.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect();
                        if let Ok(mut u) = record.lock() {
                            u.push(headers);
                        }
                        resp.headers_mut()
                            .insert("x-echo-server", "tungstenite".parse().expect("header"));
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                        return;
                    };
                    // The server speaks first: upstream-to-client before any client data.
                    let hello = tokio_tungstenite::tungstenite::Message::text("welcome");
                    if ws.send(hello).await.is_err() {
                        return;
                    }
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            if ws.send(msg).await.is_err() {
                                return;
                            }
                        } else if msg.is_close() {
                            return;
                        }
                    }
                });
            }
        });
        WsBackend {
            port,
            upgrades,
            rt: Some(rt),
        }
    }

    fn upgrade_count(&self) -> usize {
        self.upgrades.lock().map(|u| u.len()).unwrap_or(0)
    }

    fn last_upgrade_header(&self, name: &str) -> Option<String> {
        let u = self.upgrades.lock().ok()?;
        u.last()?
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Switchyard in front of one WebSocket backend; the `*_extra` keys go into the
/// listener and the pool.
fn ws_proxy(backend: &WsBackend, listener_extra: Value, pool_extra: Value) -> (Switchyard, u16) {
    ws_proxy_with(backend, listener_extra, pool_extra, json!({}))
}

fn ws_proxy_with(
    backend: &WsBackend,
    listener_extra: Value,
    pool_extra: Value,
    route_extra: Value,
) -> (Switchyard, u16) {
    let port = listen_port();
    let ws_route = json!({
        "name": "ws",
        "path_prefix": "/ws",
        "pool": "ws",
        "request_headers": { "set": { "X-Route": "ws-route" } },
        "response_headers": { "set": { "X-Route-Response": "ws-route" } },
    });
    let config = config_of(
        json!([with(listener("web", port), listener_extra)]),
        json!([with(
            pool("ws", &[format!("127.0.0.1:{}", backend.port)]),
            pool_extra
        )]),
        json!([with(ws_route, route_extra)]),
    );
    (Switchyard::start_config(&config, &[port]), port)
}

/// Opens a WebSocket through the proxy and round-trips several text and binary
/// messages (every wait bounded). Returns the upgrade response's headers.
async fn ws_echo_session(port: u16, tag: String) -> http::HeaderMap {
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://127.0.0.1:{port}/ws/{tag}");
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    .unwrap_or_else(|_| panic!("{tag}: upgrade timed out"))
    .unwrap_or_else(|e| panic!("{tag}: upgrade failed: {e}"));
    assert_eq!(resp.status(), 101, "{tag}");
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap_or_else(|_| panic!("{tag}: no greeting within 5 s (tunnel hung)"));
    match first {
        Some(Ok(m)) => assert_eq!(m, Message::text("welcome"), "{tag}: the server's greeting"),
        other => panic!("{tag}: the tunnel broke before the greeting: {other:?}"),
    }
    let big = "x".repeat(100_000);
    let mut messages: Vec<Message> = (0..5)
        .map(|i| Message::text(format!("{tag} message {i}")))
        .collect();
    messages.push(Message::binary(vec![0u8, 1, 2, 255, 254]));
    messages.push(Message::text(big));
    for m in messages {
        ws.send(m.clone())
            .await
            .unwrap_or_else(|e| panic!("{tag}: send: {e}"));
        let echoed = loop {
            let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap_or_else(|_| panic!("{tag}: no echo within 5 s (tunnel hung)"));
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(msg)) => break msg,
                Some(Err(e)) => panic!("{tag}: the tunnel broke: {e}"),
                None => panic!("{tag}: the tunnel was closed after the upgrade"),
            }
        };
        assert_eq!(echoed, m, "{tag}: echo");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    resp.headers().clone()
}

#[test]
fn websocket_echo_through_the_proxy_with_a_fast_upstream() {
    let backend = WsBackend::start(Duration::ZERO);
    let (_sy, port) = ws_proxy(&backend, json!({}), json!({}));
    let rt = runtime();
    // Many sessions: a fast upstream answers the upgrade before the proxy has handled the
    // request's (empty) body, the ordering in which a tunnel can be torn down at once.
    rt.block_on(async {
        for i in 0..20 {
            let headers = ws_echo_session(port, format!("fast{i}")).await;
            assert_eq!(
                headers.get("x-echo-server").and_then(|v| v.to_str().ok()),
                Some("tungstenite")
            );
            assert_eq!(
                headers
                    .get("x-route-response")
                    .and_then(|v| v.to_str().ok()),
                Some("ws-route"),
                "the route's response headers apply to the 101"
            );
        }
    });
    assert_eq!(backend.upgrade_count(), 20);
    assert_eq!(
        backend.last_upgrade_header("x-route").as_deref(),
        Some("ws-route")
    );
    assert_eq!(
        backend.last_upgrade_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        backend.last_upgrade_header("upgrade").as_deref(),
        Some("websocket")
    );
}

#[test]
fn websocket_echo_through_the_proxy_with_a_slow_upstream() {
    // The upstream answers the upgrade only after a second.
    let backend = WsBackend::start(Duration::from_secs(1));
    let (_sy, port) = ws_proxy(&backend, json!({}), json!({}));
    let rt = runtime();
    rt.block_on(async {
        let sessions: Vec<_> = (0..3)
            .map(|i| tokio::spawn(ws_echo_session(port, format!("slow{i}"))))
            .collect();
        for s in sessions {
            s.await.expect("session");
        }
    });
    assert_eq!(backend.upgrade_count(), 3);
}

#[test]
fn websocket_upgrades_use_http1_even_for_an_h2c_pool_on_an_h2c_listener() {
    // The pool speaks h2c for ordinary requests; an upgrade must still go out as HTTP/1.1.
    let backend = WsBackend::start(Duration::ZERO);
    let (_sy, port) = ws_proxy(
        &backend,
        json!({ "http2": true }),
        json!({ "upstream": { "protocol": "h2c" } }),
    );
    let rt = runtime();
    rt.block_on(async {
        for i in 0..3 {
            ws_echo_session(port, format!("h2cpool{i}")).await;
        }
    });
    assert_eq!(backend.upgrade_count(), 3);
}

#[test]
fn a_route_acl_applies_to_websocket_upgrades() {
    let backend = WsBackend::start(Duration::ZERO);
    let (_sy, port) = ws_proxy_with(
        &backend,
        json!({}),
        json!({}),
        json!({ "deny": ["127.0.0.0/8"] }),
    );
    let rt = runtime();
    rt.block_on(async {
        let url = format!("ws://127.0.0.1:{port}/ws/denied");
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .expect("the refusal is prompt");
        match res {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403)
            }
            Err(e) => panic!("expected a 403 answer to the upgrade, got {e}"),
            Ok(_) => panic!("a denied client was upgraded"),
        }
    });
    assert_eq!(
        backend.upgrade_count(),
        0,
        "the backend never saw the upgrade"
    );
}
