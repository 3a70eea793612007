//! Serving an HTTP/1 connection's requests one after another, as Pingora's own loop does
//! (`impl ServerApp for HttpServerApp`), except that between requests the connection
//! waits for the next request's first bytes in [`EdgeStream::next_request`], before
//! any of Pingora's per-request state exists: an idle keep-alive connection then holds
//! its stream and this loop, not a session, its header buffer and the ~10 KB request
//! future (docs/PERFORMANCE.md, "Idle connections"). Keep-alive timeout, request limit,
//! pipelined requests and shutdown behave as in Pingora's loop.

use super::stream::EdgeStream;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora_core::protocols::http::ServerSession;
use pingora_proxy::{HttpProxy, PipelinedRequest, ProxyHttp};
use std::sync::Arc;
use std::time::Duration;

/// Pingora's keep-alive for a connection's first request (its loop sets the same).
const FIRST_KEEPALIVE: Duration = Duration::from_secs(60);

/// How an app behind an [`super::EdgeApp`] serves an HTTP/1 connection.
#[async_trait]
pub trait ServeHttp1: ServerApp + Send + Sync + 'static {
    /// Serves the connection to its end. `keepalive` gives the idle time allowed
    /// between requests (None: close after the response).
    async fn serve_http1(
        self: &Arc<Self>,
        io: Stream,
        shutdown: &ShutdownWatch,
        keepalive: &(dyn Fn() -> Option<Duration> + Send + Sync),
    ) {
        let _ = keepalive;
        let mut io = Some(io);
        while let Some(stream) = io.take() {
            io = self.process_new(stream, shutdown).await;
        }
    }
}

#[async_trait]
impl<SV> ServeHttp1 for HttpProxy<SV>
where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
    async fn serve_http1(
        self: &Arc<Self>,
        io: Stream,
        shutdown: &ShutdownWatch,
        keepalive: &(dyn Fn() -> Option<Duration> + Send + Sync),
    ) {
        let options = self.server_options();
        let h2c = options.is_some_and(|o| o.h2c) && io.get_ssl_digest().is_none();
        if h2c || options.is_some_and(|o| o.force_custom) {
            // The h2c preface or a custom protocol is told apart by Pingora's own loop.
            let mut io = Some(io);
            while let Some(stream) = io.take() {
                io = self.process_new(stream, shutdown).await;
            }
            return;
        }
        let limit = options.and_then(|o| o.keepalive_request_limit);
        // A connection accepted while shutting down still gets its one request served.
        let io = if *shutdown.borrow() {
            io
        } else {
            match wait_for_request(io, Some(FIRST_KEEPALIVE), shutdown).await {
                Some(io) => io,
                None => return,
            }
        };
        let mut session = ServerSession::new_http1(io);
        // As Pingora's loop: no reuse once the service is shutting down.
        session.set_keepalive((!*shutdown.borrow()).then_some(FIRST_KEEPALIVE.as_secs()));
        session.set_keepalive_reuses_remaining(limit);
        let mut reused = self.process_new_http_in_place(session, shutdown).await;
        while let Some((stream, mut settings)) = reused.map(|r| r.consume()) {
            let stream = if next_request_arrived(&mut settings) {
                stream
            } else {
                match wait_for_request(stream, keepalive(), shutdown).await {
                    Some(stream) => stream,
                    None => return,
                }
            };
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            reused = self.process_new_http_in_place(session, shutdown).await;
        }
    }
}

/// Whether the finished request left the next one behind (pipelined), taking the
/// marker out of the settings; a user context of the app's own keeps the answer
/// unknown, which counts as arrived (nothing is waited for).
fn next_request_arrived(settings: &mut Option<HttpPersistentSettings>) -> bool {
    let Some(s) = settings.as_mut() else {
        return false;
    };
    match s.take_user_context() {
        None => false,
        Some(c) if c.is::<PipelinedRequest>() => true,
        Some(own) => {
            s.set_user_context(own);
            true
        }
    }
}

/// The stream once the next request's first bytes are in, or None (the stream is
/// dropped: closed) when the client closed, the keep-alive timeout passed or the
/// service is shutting down. A stream that is not an [`EdgeStream`] is returned as is
/// (Pingora then waits).
async fn wait_for_request(
    stream: Stream,
    keepalive: Option<Duration>,
    shutdown: &ShutdownWatch,
) -> Option<Stream> {
    let keepalive = keepalive?;
    if *shutdown.borrow() {
        return None;
    }
    if !stream.as_any().is::<EdgeStream>() {
        return Some(stream);
    }
    let Ok(mut edge) = stream.into_any().downcast::<EdgeStream>() else {
        return None;
    };
    let mut shutdown = shutdown.clone();
    let arrived = tokio::select! {
        biased;
        arrived = edge.next_request() => arrived,
        _ = tokio::time::sleep(keepalive) => false,
        _ = shutdown.wait_for(|down| *down) => false,
    };
    arrived.then_some(edge as Stream)
}
