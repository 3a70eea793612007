//! The byte pipe of an L4 session: both directions at once, half-close passed on (a
//! client that shuts its write side still gets the server's remaining bytes), an idle
//! timeout over both directions, and byte counts per direction.

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The most one read moves. It lives on the stack only while a read is being polled, so
/// a session waiting for bytes holds no buffer at all (many idle database connections
/// would otherwise cost 2 × this each); it is never zeroed, so its size costs nothing
/// per read.
const CHUNK: usize = 64 * 1024;

/// Counters shared by both directions of one session.
#[derive(Default)]
pub struct Traffic {
    /// Bytes read from the client (and written to the backend).
    pub rx: AtomicU64,
    /// Bytes written to the client.
    pub tx: AtomicU64,
    /// Milliseconds since `start` at the last byte moved either way.
    last_active_ms: AtomicU64,
}

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// Both sides finished (each direction saw EOF and passed it on).
    Closed,
    Idle,
    Error(std::io::Error),
}

async fn pump<R, W>(
    mut from: R,
    mut to: W,
    count: &AtomicU64,
    traffic: &Traffic,
    start: Instant,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Bytes read that the writer could not take at once: the only heap buffer, and only
    // until they are written.
    let mut spill: Vec<u8> = Vec::new();
    loop {
        let n = poll_fn(|cx| read_and_write(cx, &mut from, &mut to, &mut spill)).await?;
        if n == 0 {
            // Pass the half-close on; the other direction keeps flowing.
            let _ = to.shutdown().await;
            return Ok(());
        }
        if !spill.is_empty() {
            to.write_all(&spill).await?;
            spill = Vec::new();
        }
        // Pingora's client stream buffers writes: a reply must leave now, not when the
        // buffer fills (request/response protocols would stall).
        to.flush().await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        traffic
            .last_active_ms
            .store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// One read into a stack buffer, written on at once as far as the writer takes it; the
/// rest goes to `spill`. Ready with the count read (0 at end of stream).
fn read_and_write<R, W>(
    cx: &mut Context<'_>,
    from: &mut R,
    to: &mut W,
    spill: &mut Vec<u8>,
) -> Poll<std::io::Result<usize>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut stack = [MaybeUninit::<u8>::uninit(); CHUNK];
    let mut buf = ReadBuf::uninit(&mut stack);
    ready!(Pin::new(&mut *from).poll_read(cx, &mut buf))?;
    let got = buf.filled();
    if got.is_empty() {
        return Poll::Ready(Ok(0));
    }
    let written = match Pin::new(&mut *to).poll_write(cx, got) {
        Poll::Ready(Ok(w)) => w,
        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        Poll::Pending => 0,
    };
    if let Some(rest) = got.get(written..) {
        spill.extend_from_slice(rest);
    }
    Poll::Ready(Ok(got.len()))
}

/// Copies both ways until both directions are done, an error, or `idle` passes with no
/// byte moving in either direction.
pub async fn bidirectional<C, B>(
    client: C,
    backend: B,
    idle: Duration,
    traffic: Arc<Traffic>,
) -> End
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    B: AsyncRead + AsyncWrite + Unpin + Send,
{
    let start = Instant::now();
    let (client_r, client_w) = tokio::io::split(client);
    let (backend_r, backend_w) = tokio::io::split(backend);
    let upstream = pump(client_r, backend_w, &traffic.rx, &traffic, start);
    let downstream = pump(backend_r, client_w, &traffic.tx, &traffic, start);
    // An error (e.g. a reset) on either side ends the whole session at once.
    let both = async {
        match tokio::try_join!(upstream, downstream) {
            Ok(_) => End::Closed,
            Err(e) => End::Error(e),
        }
    };
    let watchdog = async {
        loop {
            let last = Duration::from_millis(traffic.last_active_ms.load(Ordering::Relaxed));
            let quiet = start.elapsed().saturating_sub(last);
            if quiet >= idle {
                return End::Idle;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        end = both => end,
        end = watchdog => end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::task::JoinHandle;

    /// A session between two in-memory pipes, with a 5 s idle timeout, on its own task.
    fn start(client: DuplexStream, backend: DuplexStream) -> (JoinHandle<End>, Arc<Traffic>) {
        let traffic = Arc::new(Traffic::default());
        let t = traffic.clone();
        let session =
            tokio::spawn(
                async move { bidirectional(client, backend, Duration::from_secs(5), t).await },
            );
        (session, traffic)
    }

    /// A writer that takes fewer bytes than a read brings (a 64-byte pipe) gets every
    /// byte in order: the part it could not take at once is written from the spill.
    #[tokio::test]
    async fn slow_writer_gets_every_byte_in_order() {
        let (client, mut client_peer) = tokio::io::duplex(64 * 1024);
        let (backend, mut backend_peer) = tokio::io::duplex(64);
        let (session, traffic) = start(client, backend);
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            client_peer.write_all(&sent).await.unwrap_or(());
            client_peer.shutdown().await.unwrap_or(());
            client_peer
        });
        let mut got = Vec::new();
        backend_peer.read_to_end(&mut got).await.unwrap_or(0);
        assert_eq!(got.len(), payload.len());
        assert!(got == payload, "bytes arrived out of order");
        backend_peer.shutdown().await.unwrap_or(());
        drop(writer.await);
        assert!(matches!(session.await, Ok(End::Closed)));
        assert_eq!(traffic.rx.load(Ordering::Relaxed), payload.len() as u64);
    }

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (backend, mut backend_peer) = tokio::io::duplex(1024);
        let (session, traffic) = start(client, backend);
        client_peer.write_all(b"hello").await.unwrap_or(());
        client_peer.shutdown().await.unwrap_or(());
        let mut got = Vec::new();
        backend_peer.read_to_end(&mut got).await.unwrap_or(0);
        assert_eq!(got, b"hello");
        // The backend answers after the client's half-close.
        backend_peer.write_all(b"world!").await.unwrap_or(());
        backend_peer.shutdown().await.unwrap_or(());
        let mut back = Vec::new();
        client_peer.read_to_end(&mut back).await.unwrap_or(0);
        assert_eq!(back, b"world!");
        assert!(matches!(session.await, Ok(End::Closed)));
        assert_eq!(traffic.rx.load(Ordering::Relaxed), 5);
        assert_eq!(traffic.tx.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn idle_sessions_end() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (backend, _backend_peer) = tokio::io::duplex(64);
        let end = bidirectional(client, backend, Duration::from_millis(50), Arc::default()).await;
        assert!(matches!(end, End::Idle), "{end:?}");
    }
}
