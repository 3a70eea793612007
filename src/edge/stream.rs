//! [`EdgeStream`]: an accepted HTTP connection's stream as Pingora reads and writes it,
//! with the two watches that need its bytes: the HTTP/1 header deadline
//! (`header_clock`) and HTTP/2 abuse accounting (`h2_watch`). Everything else is passed
//! through to the inner stream unchanged. Between HTTP/1 requests it waits for the next
//! one without a buffer (`next_request`), keeping what arrived for Pingora's next read.

use super::app::client_ip;
use super::h2_watch::{H2Watch, Verdict};
use super::header_clock::{HeaderClock, Phase, TIMEOUT_408};
use crate::observe::access_log::HttpEntry;
use crate::observe::refusal::{self, Reason};
use crate::runtime::SharedRuntime;
use async_trait::async_trait;
use bytes::Bytes;
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
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The HTTP/1 header deadline's state on the stream.
struct Deadline {
    clock: Arc<HeaderClock>,
    sleep: Pin<Box<Sleep>>,
    /// Bytes of the current request's header read so far (0 = none: an idle client).
    header_bytes: usize,
    /// When the current request's first byte came.
    started: Instant,
    /// Where a request refused mid-header gets its access-log line.
    log: HeaderLog,
}

/// The running access log (a reload may swap it) and whether the connection is TLS.
pub struct HeaderLog {
    pub runtime: SharedRuntime,
    pub tls: bool,
}

pub struct EdgeStream {
    inner: Stream,
    listener: Arc<str>,
    deadline: Option<Deadline>,
    h2: Option<H2Watch>,
    /// Whether any byte arrived (the h2c preface is looked for in the first ones).
    seen_bytes: bool,
    /// The connection was refused here: reads end.
    closed: bool,
    /// Bytes `next_request` read and Pingora has not read yet (already seen by the
    /// watches).
    pending: Option<Bytes>,
}

/// The most `next_request` reads at once (Pingora's first read of a request header is
/// this size too).
const FIRST_READ: usize = 4096;

impl fmt::Debug for EdgeStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeStream")
            .field("inner", &self.inner)
            .finish()
    }
}

impl EdgeStream {
    /// An HTTP/1 (or not yet known: h2c) connection under `clock`.
    pub fn http1(
        inner: Stream,
        listener: Arc<str>,
        clock: Arc<HeaderClock>,
        log: HeaderLog,
    ) -> Self {
        let sleep = Box::pin(tokio::time::sleep(clock.timeout));
        EdgeStream {
            inner,
            listener,
            deadline: Some(Deadline {
                clock,
                sleep,
                header_bytes: 0,
                started: Instant::now(),
                log,
            }),
            h2: None,
            seen_bytes: false,
            closed: false,
            pending: None,
        }
    }

    /// A connection that negotiated HTTP/2 by ALPN.
    pub fn h2(inner: Stream, listener: Arc<str>) -> Self {
        EdgeStream {
            inner,
            listener,
            deadline: None,
            h2: Some(H2Watch::new(Instant::now().into_std())),
            seen_bytes: true,
            closed: false,
            pending: None,
        }
    }

    /// Waits for the first bytes of the next request, holding no buffer while nothing
    /// comes (an idle keep-alive connection costs only this stream); they are kept for
    /// the next read. False when the client closed the connection, a read failed, or
    /// the header deadline ended it.
    pub async fn next_request(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            // On the stack only while polled: nothing is held between polls.
            let mut space = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut buf = ReadBuf::uninit(&mut space);
            match Pin::new(&mut *self).poll_read(cx, &mut buf) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(_)) => Poll::Ready(false),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(false),
                Poll::Ready(Ok(())) => {
                    self.pending = Some(Bytes::copy_from_slice(buf.filled()));
                    Poll::Ready(true)
                }
            }
        })
        .await
    }

    fn client(&self) -> String {
        client_ip(&self.inner)
            .map(|ip| ip.to_string())
            .unwrap_or_default()
    }

    /// The access-log line of a request answered `status` before its header was whole.
    fn log_refused(&self, status: u16) {
        if let Some(d) = &self.deadline {
            let entry =
                HttpEntry::refused_header(self.client(), status, d.started.elapsed(), d.log.tls);
            d.log.runtime.load().access_log.write(&entry);
        }
    }

    /// The header deadline passed: answer 408 if part of a header arrived, then report
    /// end of stream so Pingora closes the connection.
    fn expire(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.closed = true;
        let Some(d) = self.deadline.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        d.clock.set(Phase::Off);
        let partial = d.header_bytes;
        if partial > 0 {
            // One attempt: the answer is tiny and the socket's buffer is normally empty.
            let _ = Pin::new(&mut self.inner).poll_write(cx, TIMEOUT_408);
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
            let who = self.client();
            refusal::http(
                &self.listener,
                Reason::HeaderTimeout,
                &format_args!("client {who}: 408 after {partial} header bytes"),
            );
            self.log_refused(408);
        }
        Poll::Ready(Ok(()))
    }

    /// Follows the deadline and the h2 watch over freshly read bytes.
    fn saw_read(&mut self, fresh: &[u8]) {
        if !self.seen_bytes {
            self.seen_bytes = true;
            if fresh.starts_with(b"PRI ") {
                // The HTTP/2 preface (h2c prior knowledge): streams have their own limits.
                if let Some(d) = self.deadline.take() {
                    d.clock.set(Phase::Off);
                }
                self.h2 = Some(H2Watch::new(Instant::now().into_std()));
            }
        }
        if let Some(d) = self.deadline.as_mut() {
            match d.clock.phase() {
                Phase::Idle => {
                    // The first byte of the next request starts its deadline.
                    d.clock.set(Phase::Reading);
                    d.started = Instant::now();
                    d.sleep.as_mut().reset(d.started + d.clock.timeout);
                    d.header_bytes = fresh.len();
                }
                Phase::Reading => d.header_bytes += fresh.len(),
                Phase::Serving | Phase::Off => {}
            }
        }
        if let Some(w) = self.h2.as_mut() {
            let before = w.verdict();
            if w.read(fresh, std::time::Instant::now()) == Verdict::ControlFlood
                && before == Verdict::Fine
            {
                self.closed = true;
                let who = self.client();
                refusal::http(
                    &self.listener,
                    Reason::H2Abuse,
                    &format_args!("client {who}: PING/SETTINGS flood, connection closed"),
                );
            }
        }
    }

    fn saw_write(&mut self, written: &[u8]) {
        // Nothing is answered while a header is still being read, except Pingora's own
        // refusal of a request its parser rejected (no hook runs for those): count it.
        let refused_by_parser = self.deadline.as_ref().is_some_and(|d| {
            d.clock.phase() == Phase::Reading && written.starts_with(b"HTTP/1.1 4")
        });
        if refused_by_parser {
            if let Some(d) = self.deadline.as_ref() {
                d.clock.set(Phase::Off);
            }
            let status = written
                .get(9..12)
                .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
                .unwrap_or(400);
            let who = self.client();
            refusal::http(
                &self.listener,
                Reason::Malformed,
                &format_args!("client {who}: {status} from the HTTP/1 parser"),
            );
            self.log_refused(status);
        }
        if let Some(w) = self.h2.as_mut() {
            let before = w.verdict();
            if w.wrote(written) == Verdict::RefusedByH2 && before == Verdict::Fine {
                let who = self.client();
                refusal::http(
                    &self.listener,
                    Reason::H2Abuse,
                    &format_args!("client {who}: GOAWAY with an error"),
                );
            }
        }
    }
}

impl AsyncRead for EdgeStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.closed {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        if let Some(pending) = this.pending.as_mut() {
            let n = pending.len().min(buf.remaining());
            buf.put_slice(&pending.split_to(n));
            if pending.is_empty() {
                this.pending = None;
            }
            return Poll::Ready(Ok(()));
        }
        let expired = this.deadline.as_mut().is_some_and(|d| {
            d.clock.phase() == Phase::Reading && d.sleep.as_mut().poll(cx).is_ready()
        });
        if expired {
            return this.expire(cx);
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.saw_read(&buf.filled()[before..]);
        }
        res
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.saw_write(&buf[..n]);
        }
        res
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
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = res {
            for b in bufs {
                let take = n.min(b.len());
                self.saw_write(&b[..take]);
                n -= take;
                if n == 0 {
                    break;
                }
            }
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for EdgeStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for EdgeStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for EdgeStream {
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

impl GetTimingDigest for EdgeStream {
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

impl GetProxyDigest for EdgeStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for EdgeStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for EdgeStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match &self.pending {
            None => self.inner.try_peek(buf).await,
            // Only what `next_request` holds can be peeked without losing its order.
            Some(pending) if pending.len() >= buf.len() => {
                buf.copy_from_slice(&pending[..buf.len()]);
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }
}
