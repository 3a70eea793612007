//! `limits.header_timeout` for HTTP/1 (SPEC §10): the request line and headers must
//! arrive within it, however slowly they trickle in (slowloris). Pingora only bounds
//! each single read, so the accepted stream is wrapped in a [`ClockedStream`] that
//! keeps the deadline. The proxy hooks move its [`HeaderClock`] through a request: the
//! header is complete (`early_request_filter`), the response is done (`logging`); the
//! clock is found through a task-local, since an HTTP/1 connection is served by one
//! task from accept to close. When the deadline passes with part of a header read, the
//! client gets a 408 and the connection is closed; an idle connection that never sent a
//! byte is closed silently (that is a keep-alive or preconnect, not an attack).

use crate::observe::refusal::{self, Reason};
use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

tokio::task_local! {
    static CLOCK: Arc<HeaderClock>;
}

/// No request in progress: waiting (under Pingora's keep-alive timeout) for the first
/// byte of the next one.
const IDLE: u8 = 0;
/// A request's header is being read: the deadline runs.
const READING: u8 = 1;
/// The header is complete; the body and response are under their own timeouts.
const SERVING: u8 = 2;
/// HTTP/2 (or the clock is off): no deadline here.
const OFF: u8 = 3;

const TIMEOUT_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 20\r\nconnection: close\r\n\r\n408 request timeout\n";

/// Where one connection's current request is, shared by its stream and its hooks.
pub struct HeaderClock {
    phase: AtomicU8,
    timeout: Duration,
    listener: String,
}

impl HeaderClock {
    pub fn new(listener: &str, timeout: Duration) -> Arc<Self> {
        Arc::new(HeaderClock {
            // The first request's deadline runs from accept.
            phase: AtomicU8::new(READING),
            timeout,
            listener: listener.to_string(),
        })
    }

    /// Runs `fut` (the connection's HTTP/1 serving) with this clock reachable by the
    /// hooks below.
    pub async fn scope<F: Future>(self: Arc<Self>, fut: F) -> F::Output {
        CLOCK.scope(self, fut).await
    }
}

fn set_phase(phase: u8) {
    let _ = CLOCK.try_with(|c| {
        // OFF is final.
        let _ = c
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p != OFF).then_some(phase)
            });
    });
}

/// The request header has been read: its deadline stops.
pub fn header_complete() {
    set_phase(SERVING);
}

/// The response is done: the next request's deadline starts with its first byte.
pub fn request_done() {
    set_phase(IDLE);
}

/// An accepted stream under a header deadline.
pub struct ClockedStream {
    inner: Stream,
    clock: Arc<HeaderClock>,
    deadline: Pin<Box<Sleep>>,
    /// Bytes of the current request's header read so far (0 = none: an idle client).
    header_bytes: usize,
    /// Whether any byte arrived on this connection (the h2c preface is looked for first).
    seen_bytes: bool,
}

impl fmt::Debug for ClockedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClockedStream")
            .field("inner", &self.inner)
            .finish()
    }
}

impl ClockedStream {
    pub fn new(inner: Stream, clock: Arc<HeaderClock>) -> Self {
        let deadline = Box::pin(tokio::time::sleep(clock.timeout));
        ClockedStream {
            inner,
            clock,
            deadline,
            header_bytes: 0,
            seen_bytes: false,
        }
    }

    /// The deadline passed while reading a header: answer 408 if part of one arrived,
    /// then report end of stream so Pingora closes the connection.
    fn expire(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.clock.phase.store(OFF, Ordering::Release);
        if self.header_bytes > 0 {
            // One attempt: the answer is tiny and the socket's buffer is normally empty.
            let _ = Pin::new(&mut self.inner).poll_write(cx, TIMEOUT_408);
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
            let who = self
                .inner
                .get_socket_digest()
                .and_then(|d| {
                    d.peer_addr()
                        .and_then(|a| a.as_inet())
                        .map(|a| a.ip().to_string())
                })
                .unwrap_or_default();
            refusal::http(
                &self.clock.listener,
                Reason::HeaderTimeout,
                &format_args!("client {who}: 408 after {} header bytes", self.header_bytes),
            );
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ClockedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let phase = this.clock.phase.load(Ordering::Acquire);
        if phase == READING && this.deadline.as_mut().poll(cx).is_ready() {
            return this.expire(cx);
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let fresh = &buf.filled()[before..];
        if fresh.is_empty() || phase == OFF || phase == SERVING {
            return res;
        }
        if !this.seen_bytes && fresh.starts_with(b"PRI ") {
            // The HTTP/2 preface (h2c prior knowledge): streams have their own limits.
            this.clock.phase.store(OFF, Ordering::Release);
        } else if phase == IDLE {
            // The first byte of the next request starts its deadline.
            this.clock.phase.store(READING, Ordering::Release);
            let at = Instant::now() + this.clock.timeout;
            this.deadline.as_mut().reset(at);
            this.header_bytes = fresh.len();
        } else {
            this.header_bytes += fresh.len();
        }
        this.seen_bytes = true;
        res
    }
}

impl AsyncWrite for ClockedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for ClockedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for ClockedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClockedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClockedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClockedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ClockedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for ClockedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
