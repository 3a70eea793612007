//! The cache phases of the proxy (SPEC §11), called from `http::proxy`: turning the cache
//! on for a caching route, its key, what is stored, `Vary`, the `Authorization` rule on
//! hits, when stale may be served, and the `X-Cache` word for the response and the log.
//! The decisions themselves are `cache::policy`'s.

use super::ctx::RequestCtx;
use crate::cache::{key, policy, Status};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorSource, Result};
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, ForcedFreshness, NoCacheReason, RespCacheable};
use pingora_proxy::Session;
use std::time::SystemTime;

pub const X_CACHE: &str = "x-cache";

/// `request_cache_filter`: a caching route's GET and HEAD use the cache; its other
/// requests pass by it (`BYPASS`).
pub fn enable(session: &mut Session, ctx: &mut RequestCtx) {
    let Some(rc) = ctx.route().and_then(|r| r.cache.as_ref()) else {
        return;
    };
    let (store, lock, wait) = (rc.store, rc.lock, rc.config.lock_timeout);
    ctx.cache_status = Some(Status::Miss);
    if !policy::request_uses_cache(session.req_header()) {
        ctx.cache_status = Some(Status::Bypass);
        ctx.cache_bypass = true;
        return;
    }
    let mut overrides = pingora_cache::CacheOptionOverrides::default();
    overrides.wait_timeout = Some(wait);
    session
        .cache
        .enable(store, None, None, Some(lock), Some(overrides));
    session.cache.set_max_file_size_bytes(store.max_object);
}

/// `cache_key_callback`.
pub fn key(session: &Session, ctx: &RequestCtx) -> Result<CacheKey> {
    let route = ctx
        .route()
        .filter(|r| r.cache.is_some())
        .ok_or_else(|| Error::explain(pingora::ErrorType::InternalError, "no caching route"))?;
    let parts = route.cache.as_ref().map_or(&[][..], |c| &c.config.key[..]);
    Ok(key::build(&route.name, parts, session.req_header()))
}

/// `response_cache_filter`.
pub fn cacheable(session: &Session, resp: &ResponseHeader, ctx: &RequestCtx) -> RespCacheable {
    match ctx.route().and_then(|r| r.cache.as_ref()) {
        Some(rc) => policy::response_cacheable(
            resp,
            &rc.config,
            policy::has_authorization(session.req_header()),
            SystemTime::now(),
        ),
        None => RespCacheable::Uncacheable(NoCacheReason::NeverEnabled),
    }
}

/// `cache_vary_filter`.
pub fn vary(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    policy::variance(meta.response_header(), req)
}

/// `cache_hit_filter`: a request with `Authorization` is answered from the cache only
/// by a response that was `public` or had `s-maxage`; otherwise it goes to the backend.
pub fn hit_filter(session: &Session, meta: &CacheMeta) -> Option<ForcedFreshness> {
    let req = session.req_header();
    (policy::has_authorization(req)
        && !policy::shareable_with_authorization(meta.response_header()))
    .then_some(ForcedFreshness::ForceMiss)
}

/// `should_serve_stale`: during `stale-while-revalidate` (no error) always; after a
/// failure of the backend (5xx, connect, timeout), not of the client.
pub fn serve_stale(error: Option<&Error>) -> bool {
    error.is_none_or(|e| e.esource() != &ErrorSource::Downstream)
}

/// `response_filter`: the `X-Cache` header, and the word the log and metrics use.
pub fn stamp(session: &Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
    match settle(session, ctx) {
        Some(word) => resp.insert_header(X_CACHE, word),
        None => Ok(()),
    }
}

/// `fail_to_proxy`: the `X-Cache` word of an error answer on a caching route.
pub fn stamp_error(session: &Session, ctx: &mut RequestCtx) -> Option<&'static str> {
    settle(session, ctx)
}

/// On a caching route, fixes the request's cache status from the cache phase reached
/// and returns its `X-Cache` word.
fn settle(session: &Session, ctx: &mut RequestCtx) -> Option<&'static str> {
    ctx.cache_status?;
    let status = policy::status_of(session.cache.phase(), ctx.cache_bypass);
    ctx.cache_status = Some(status);
    Some(status.header())
}

/// `logging`: the route's counter for this request's cache status.
pub fn count(ctx: &RequestCtx) {
    if let (Some(status), Some(rc)) = (ctx.cache_status, ctx.route().and_then(|r| r.cache.as_ref()))
    {
        rc.count(status);
    }
}

/// How long this request waited for another's fetch of the same key (access log).
pub fn lock_wait_ms(session: &Session) -> Option<f64> {
    session
        .cache
        .lock_duration()
        .map(crate::observe::access_log::millis)
}
