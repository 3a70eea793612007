//! The HTTP access-log line (SPEC §7): its fields, taken from the finished request and
//! its context. `observe::access_log` writes it.

use crate::http::ctx::RequestCtx;
use crate::observe::access_log::{millis, timestamp, HttpEntry};
use crate::runtime::Runtime;

/// The access-log line for a finished request.
pub fn http_entry<'a>(
    session: &'a pingora_proxy::Session,
    ctx: &'a RequestCtx,
    rt: &'a Runtime,
    status: u16,
    tls: bool,
) -> HttpEntry<'a> {
    let req = session.req_header();
    let pool = ctx.pool.map(|p| &rt.pools[p]);
    HttpEntry {
        ts: timestamp(),
        request_id: &ctx.request_id,
        // A request refused before the client IP is worked out logs the TCP peer.
        client_ip: ctx
            .client_ip
            .or(ctx.peer_ip)
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
        method: req.method.as_str(),
        host: req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host())
            .unwrap_or(""),
        // As the client sent it (like nginx's `$request`), not as normalised.
        path: ctx
            .original_target
            .as_deref()
            .unwrap_or_else(|| req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")),
        status,
        duration_ms: millis(ctx.start.elapsed()),
        route: ctx.route.map(|r| rt.routes[r].name.as_str()).unwrap_or(""),
        pool: pool.map(|p| p.name.as_str()).unwrap_or(""),
        backend: ctx.upstream.backend().map_or("", |b| b.address.as_str()),
        bytes_sent: session.body_bytes_sent(),
        protocol: match req.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        },
        tls,
        termination: "-",
        attempts: ctx.upstream.attempts.count,
        upstream_connect_ms: ctx.upstream.attempts.connect_ms,
        upstream_response_ms: ctx.upstream.attempts.response_ms,
        country: rt
            .geoip
            .is_some()
            .then(|| ctx.country.as_ref().map_or("", |c| c.as_str())),
        cache: ctx.cache_status.map(|s| s.header()),
        cache_wait_ms: ctx
            .cache_status
            .and_then(|_| crate::http::cache::lock_wait_ms(session)),
    }
}

/// The request in its route's and backend's one-minute windows (`GET /api/v1/stats`).
fn record_stats(ctx: &RequestCtx, rt: &crate::runtime::Runtime, status: u16) {
    let (error, took) = (status >= 500, ctx.start.elapsed());
    if let Some(route) = ctx.route.and_then(|r| rt.routes.get(r)) {
        route.metrics.stats.record(error, took);
    }
    if let Some(b) = ctx.upstream.backend() {
        b.stats.record(error, took);
    }
}

/// The status sent to the client (0 when none was).
pub fn status_of(session: &pingora_proxy::Session) -> u16 {
    session
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0)
}

/// The per-request metrics and access-log line, once the request is done.
pub fn finish(
    session: &pingora_proxy::Session,
    ctx: &RequestCtx,
    e: Option<&pingora::Error>,
    tls: bool,
) {
    let Some(rt) = ctx.runtime.as_deref() else {
        return;
    };
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0);
    if status > 0 && rt.metrics_enabled {
        let metrics = ctx
            .route
            .and_then(|r| rt.routes.get(r))
            .map_or(&rt.unrouted_metrics, |r| &r.metrics);
        metrics.observe(&session.req_header().method, status, ctx.start.elapsed());
    }
    if status > 0 {
        record_stats(ctx, rt, status);
    }
    if rt.access_log.enabled() {
        let mut entry = http_entry(session, ctx, rt, status, tls);
        entry.termination = crate::http::termination::code(e, &ctx.upstream.attempts, status);
        rt.access_log.write(&entry);
    }
}
