//! L4 services (raw TCP, PostgreSQL, MySQL): a Pingora `ServerApp` per tcp_service, so
//! they take part in the SIGQUIT upgrade and graceful shutdown. Each connection picks a
//! backend from the service's pool (algorithm, weights, backups, health, circuit,
//! max_connections; least_conn counts open connections), connects with retries on other
//! backends, then pipes bytes both ways until both sides close or `idle_timeout`.

pub mod copy;
pub mod session;

use crate::ops::shutdown::WorkCount;
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::Arc;

pub struct TcpProxy {
    /// The tcp_service's name (its listener is fixed until an upgrade).
    pub service: String,
    pub runtime: SharedRuntime,
    /// Sessions in flight (SIGTERM waits for them).
    pub work: WorkCount,
}

/// A tcp_service has no HTTP/1 requests: the default (Pingora's loop) is never reached.
impl crate::edge::keepalive::ServeHttp1 for TcpProxy {}

#[async_trait]
impl ServerApp for TcpProxy {
    async fn process_new(
        self: &Arc<Self>,
        io: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // The session keeps the runtime (and pool membership) it started with.
        session::run(self.runtime.load_full(), &self.service, &self.work, io).await;
        None
    }
}
