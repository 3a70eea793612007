//! Request mirroring (`routes[].mirror`, SPEC §13): a copy of `percent` of a route's
//! requests (the request header as the client sent it, and a body up to 1 MiB; a larger
//! body is not mirrored) goes to another pool once the client's exchange is over, from
//! a task of its own. Its answer is read and discarded; its failures and slowness never
//! reach the client. At most `MAX_IN_FLIGHT` copies are in flight per process; beyond
//! that a copy is skipped. Counted in `switchyard_mirror_requests_total{route,outcome}`
//! (`success`: the mirror answered, `failure`: no backend, or it failed to answer,
//! `skipped`: body too large or too many copies in flight).

use super::ctx::RequestCtx;
use super::upstream;
use crate::runtime::RouteMirror;
use bytes::Bytes;
use once_cell::sync::Lazy;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The largest request body that is mirrored.
pub const MAX_BODY: usize = 1024 * 1024;
/// Copies in flight at once, per process.
pub const MAX_IN_FLIGHT: usize = 256;

static SLOTS: Lazy<Arc<Semaphore>> = Lazy::new(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT)));
static CONNECTOR: Lazy<Connector> = Lazy::new(|| Connector::new(None));

/// One request's mirror copy while the request runs.
#[derive(Default)]
pub struct MirrorState {
    /// Decided at the first look: whether this request is copied.
    sampled: Option<bool>,
    body: Vec<u8>,
    too_large: bool,
}

fn route_mirror(ctx: &RequestCtx) -> Option<&RouteMirror> {
    ctx.route()?.mirror.as_ref()
}

fn sampled(ctx: &mut RequestCtx) -> bool {
    if let Some(s) = ctx.mirror.sampled {
        return s;
    }
    let percent = route_mirror(ctx).map_or(0, |m| m.percent);
    let s = percent >= 100 || (percent > 0 && fastrand::u32(0..100) < percent);
    ctx.mirror.sampled = Some(s);
    s
}

/// Keeps a copy of a request body chunk for the mirror (up to `MAX_BODY`).
pub fn collect(ctx: &mut RequestCtx, chunk: Option<&Bytes>) {
    let Some(chunk) = chunk else {
        return;
    };
    if route_mirror(ctx).is_none() || !sampled(ctx) || ctx.mirror.too_large {
        return;
    }
    if ctx.mirror.body.len() + chunk.len() > MAX_BODY {
        ctx.mirror.too_large = true;
        ctx.mirror.body = Vec::new();
        return;
    }
    ctx.mirror.body.extend_from_slice(chunk);
}

/// Sends the copy, when this request is mirrored (at the end of the client's exchange).
pub fn send(session: &Session, ctx: &mut RequestCtx) {
    if route_mirror(ctx).is_none() || !sampled(ctx) {
        return;
    }
    // Borrowed field by field: the snapshot stays borrowed while the body is taken below.
    let Some(rt) = ctx.runtime.as_deref() else {
        return;
    };
    let Some(m) = ctx.route.and_then(|r| rt.routes.get(r)?.mirror.as_ref()) else {
        return;
    };
    if ctx.mirror.too_large {
        m.skipped.inc();
        return;
    }
    let Ok(slot) = SLOTS.clone().try_acquire_owned() else {
        m.skipped.inc();
        return;
    };
    let Some(pool) = rt.pools.get(m.pool) else {
        return;
    };
    let members = pool.members();
    let Some(claim) = members.claim(b"", None, &mut Vec::new(), members.backends.len().max(1))
    else {
        m.failure.inc();
        return;
    };
    let backend = members.backends[claim.idx].clone();
    let peer = upstream::peer(pool, &backend, false, session);
    let mut header = session.req_header().clone();
    if header.headers.get(http::header::HOST).is_none() {
        if let Some(host) = header.uri.authority().map(|a| a.to_string()) {
            let _ = header.insert_header(http::header::HOST, host);
        }
    }
    let body = Bytes::from(std::mem::take(&mut ctx.mirror.body));
    let (success, failure) = (m.success.clone(), m.failure.clone());
    let limit = pool.timeouts.connect + pool.timeouts.read + pool.timeouts.write;
    tokio::spawn(async move {
        let _slot = slot;
        let _held = claim.guard;
        let answered = tokio::time::timeout(limit, exchange(&peer, header, body)).await;
        let ok = matches!(answered, Ok(Ok(())));
        backend.record(ok, ok);
        if ok {
            success.inc();
        } else {
            failure.inc();
        }
    });
}

/// One request to the mirror backend; the answer is read to its end and dropped.
async fn exchange(peer: &HttpPeer, header: RequestHeader, body: Bytes) -> pingora::Result<()> {
    let (mut s, _reused) = CONNECTOR.get_http_session(peer).await?;
    s.set_read_timeout(peer.options.read_timeout);
    s.set_write_timeout(peer.options.write_timeout);
    s.write_request_header(Box::new(header)).await?;
    if !body.is_empty() {
        s.write_request_body(body, true).await?;
    }
    s.finish_request_body().await?;
    s.read_response_header().await?;
    let mut drained = 0usize;
    while let Some(chunk) = s.read_response_body().await? {
        drained += chunk.len();
        if drained > 64 * MAX_BODY {
            return Ok(());
        }
    }
    CONNECTOR
        .release_http_session(s, peer, Some(Duration::from_secs(60)))
        .await;
    Ok(())
}
