//! RFC 9111 shared-cache decisions as pure functions (SPEC §11): whether a request may use
//! the cache, whether and how long a response is stored, which request headers it varies
//! by, whether a stored response may answer a request with `Authorization`, and which
//! `X-Cache` word a cache phase is. Pingora's `cache_control` and `filters` helpers do
//! the header parsing and the freshness arithmetic.

use super::Status;
use crate::config::RouteCacheConfig;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora_cache::filters::{calculate_fresh_until, calculate_serve_stale_durations};
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheMeta, CacheMetaDefaults, CachePhase, NoCacheReason, RespCacheable};
use std::time::{Duration, SystemTime};

/// Statuses a cache may store (RFC 9110 §15.1 "heuristically cacheable"); 206 is left out
/// (ranges are cut from the whole stored response instead).
pub fn storable_status(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// GET and HEAD may use the cache; everything else, and upgrades, pass by it.
pub fn request_uses_cache(req: &RequestHeader) -> bool {
    let method_ok = matches!(req.method, http::Method::GET | http::Method::HEAD);
    let upgrade = req.headers.contains_key(http::header::UPGRADE);
    method_ok && !upgrade
}

pub fn has_authorization(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::AUTHORIZATION)
}

/// A stored response may answer a request with `Authorization` only if it was `public`
/// or had `s-maxage` (RFC 9111 §3.5).
pub fn shareable_with_authorization(resp: &ResponseHeader) -> bool {
    CacheControl::from_resp_headers(resp)
        .is_some_and(|cc| cc.public() || cc.s_maxage().ok().flatten().is_some())
}

fn upstream_age(resp: &ResponseHeader) -> Duration {
    resp.headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_default()
}

fn has_validator(resp: &ResponseHeader) -> bool {
    resp.headers.contains_key(http::header::ETAG)
        || resp.headers.contains_key(http::header::LAST_MODIFIED)
}

fn vary_star(resp: &ResponseHeader) -> bool {
    resp.headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*")
}

fn uncacheable(why: &'static str) -> RespCacheable {
    RespCacheable::Uncacheable(NoCacheReason::Custom(why))
}

/// Whether `resp` is stored, and the metadata it is stored with: freshness from
/// `s-maxage`/`max-age`/`Expires` (less the upstream `Age`), else `default_ttl`, capped
/// at `max_ttl`; stale windows from the response's directives, else the route's.
pub fn response_cacheable(
    resp: &ResponseHeader,
    cfg: &RouteCacheConfig,
    authorization: bool,
    now: SystemTime,
) -> RespCacheable {
    if !storable_status(resp.status.as_u16()) {
        return uncacheable("status");
    }
    if resp.headers.contains_key(http::header::SET_COOKIE) {
        return uncacheable("set-cookie");
    }
    if vary_star(resp) {
        return uncacheable("vary *");
    }
    let cc = CacheControl::from_resp_headers(resp);
    if authorization && !shareable_with_authorization(resp) {
        return uncacheable("authorization");
    }
    if cc
        .as_ref()
        .is_some_and(|c| c.is_cacheable() == Cacheable::No)
    {
        return uncacheable("no-store or private");
    }
    let none = CacheMetaDefaults::new(|_| None, 0, 0);
    let explicit = calculate_fresh_until(now, cc.as_ref(), resp, false, &none);
    let fresh_until = match explicit {
        Some(t) => t.checked_sub(upstream_age(resp)).unwrap_or(t),
        None if !cfg.default_ttl.is_zero() => now + cfg.default_ttl,
        None => return uncacheable("no freshness"),
    };
    let fresh_until = fresh_until.min(now + cfg.max_ttl);
    let route_stale = CacheMetaDefaults::new(
        |_| None,
        secs(cfg.stale_while_revalidate),
        secs(cfg.stale_if_error),
    );
    let (swr, sie) = calculate_serve_stale_durations(cc.as_ref(), &route_stale);
    // Already stale, nothing to revalidate it with and no stale window: storing it would
    // only take room.
    if fresh_until <= now && !has_validator(resp) && swr == 0 && sie == 0 {
        return uncacheable("stale on arrival");
    }
    let mut header = resp.clone();
    if let Some(cc) = &cc {
        cc.strip_private_headers(&mut header);
    }
    RespCacheable::Cacheable(CacheMeta::new(fresh_until, now, swr, sie, header))
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// The variance of `req` for a stored response's `Vary` names (None: it varies by
/// nothing). Names are hashed lower case and sorted, so their order does not matter.
pub fn variance(meta_resp: &ResponseHeader, req: &RequestHeader) -> Option<HashBinary> {
    let mut names: Vec<String> = meta_resp
        .headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    names.dedup();
    let mut builder = pingora_cache::VarianceBuilder::new();
    for name in &names {
        let mut value = Vec::new();
        for (i, v) in req.headers.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(v.as_bytes());
        }
        builder.add_owned_name_value(name.clone(), value);
    }
    builder.finalize()
}

/// The `X-Cache` word for where Pingora's cache phase ended (`bypassed`: this request
/// was kept away from the cache by the route's rules).
pub fn status_of(phase: CachePhase, bypassed: bool) -> Status {
    if bypassed {
        return Status::Bypass;
    }
    match phase {
        CachePhase::Hit => Status::Hit,
        CachePhase::Stale | CachePhase::StaleUpdating => Status::Stale,
        CachePhase::Expired => Status::Expired,
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => Status::Revalidated,
        CachePhase::Bypass => Status::Bypass,
        CachePhase::Miss | CachePhase::Uninit | CachePhase::CacheKey | CachePhase::Disabled(_) => {
            Status::Miss
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn cfg() -> RouteCacheConfig {
        RouteCacheConfig::default()
    }

    /// How long `r` is fresh from `now` when stored, or None when it is not stored.
    fn freshness(
        r: &ResponseHeader,
        c: &RouteCacheConfig,
        authorized: bool,
        now: SystemTime,
    ) -> Option<Duration> {
        match response_cacheable(r, c, authorized, now) {
            RespCacheable::Cacheable(m) => {
                Some(m.fresh_until().duration_since(now).unwrap_or_default())
            }
            RespCacheable::Uncacheable(_) => None,
        }
    }

    #[test]
    fn max_age_and_s_maxage_set_freshness_and_s_maxage_wins() {
        let now = SystemTime::now();
        let r = resp(200, &[("Cache-Control", "max-age=60")]);
        assert_eq!(
            freshness(&r, &cfg(), false, now),
            Some(Duration::from_secs(60))
        );
        let r = resp(200, &[("Cache-Control", "max-age=60, s-maxage=120")]);
        assert_eq!(
            freshness(&r, &cfg(), false, now),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn upstream_age_counts_against_freshness() {
        let now = SystemTime::now();
        let r = resp(200, &[("Cache-Control", "max-age=60"), ("Age", "20")]);
        assert_eq!(
            freshness(&r, &cfg(), false, now),
            Some(Duration::from_secs(40))
        );
    }

    #[test]
    fn no_store_private_set_cookie_and_vary_star_are_not_stored() {
        let now = SystemTime::now();
        for h in [
            ("Cache-Control", "no-store, max-age=60"),
            ("Cache-Control", "private, max-age=60"),
            ("Set-Cookie", "a=b"),
            ("Vary", "*"),
        ] {
            let mut r = resp(200, &[h]);
            if h.0 != "Cache-Control" {
                r.append_header("Cache-Control", "max-age=60").unwrap();
            }
            assert!(freshness(&r, &cfg(), false, now).is_none(), "{h:?}");
        }
    }

    #[test]
    fn default_ttl_applies_only_without_freshness_and_max_ttl_caps() {
        let now = SystemTime::now();
        let r = resp(200, &[]);
        assert!(freshness(&r, &cfg(), false, now).is_none());
        let c = RouteCacheConfig {
            default_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(100),
            ..cfg()
        };
        assert_eq!(freshness(&r, &c, false, now), Some(Duration::from_secs(30)));
        let long = resp(200, &[("Cache-Control", "max-age=86400")]);
        assert_eq!(
            freshness(&long, &c, false, now),
            Some(Duration::from_secs(100))
        );
    }

    #[test]
    fn expires_gives_freshness() {
        let now = SystemTime::now();
        let when = httpdate::fmt_http_date(now + Duration::from_secs(300));
        let r = resp(200, &[("Expires", when.as_str())]);
        let got = freshness(&r, &cfg(), false, now).unwrap();
        assert!(got > Duration::from_secs(290) && got <= Duration::from_secs(300));
    }

    #[test]
    fn authorization_needs_public_or_s_maxage() {
        let now = SystemTime::now();
        let plain = resp(200, &[("Cache-Control", "max-age=60")]);
        assert!(freshness(&plain, &cfg(), true, now).is_none());
        let public = resp(200, &[("Cache-Control", "public, max-age=60")]);
        assert!(freshness(&public, &cfg(), true, now).is_some());
        let shared = resp(200, &[("Cache-Control", "s-maxage=60")]);
        assert!(shareable_with_authorization(&shared));
        assert!(!shareable_with_authorization(&plain));
    }

    #[test]
    fn uncacheable_statuses_are_not_stored() {
        let now = SystemTime::now();
        for s in [206, 302, 500, 503] {
            let r = resp(s, &[("Cache-Control", "max-age=60")]);
            assert!(freshness(&r, &cfg(), false, now).is_none(), "{s}");
        }
        let r = resp(404, &[("Cache-Control", "max-age=60")]);
        assert!(freshness(&r, &cfg(), false, now).is_some());
    }

    #[test]
    fn stale_windows_come_from_the_response_else_the_route() {
        let now = SystemTime::now();
        let c = RouteCacheConfig {
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(20),
            ..cfg()
        };
        let r = resp(200, &[("Cache-Control", "max-age=1")]);
        let RespCacheable::Cacheable(m) = response_cacheable(&r, &c, false, now) else {
            panic!("stored")
        };
        assert_eq!(
            (m.stale_while_revalidate_sec(), m.stale_if_error_sec()),
            (10, 20)
        );
        let r = resp(
            200,
            &[(
                "Cache-Control",
                "max-age=1, stale-while-revalidate=5, stale-if-error=7",
            )],
        );
        let RespCacheable::Cacheable(m) = response_cacheable(&r, &c, false, now) else {
            panic!("stored")
        };
        assert_eq!(
            (m.stale_while_revalidate_sec(), m.stale_if_error_sec()),
            (5, 7)
        );
        let r = resp(200, &[("Cache-Control", "max-age=1, must-revalidate")]);
        let RespCacheable::Cacheable(m) = response_cacheable(&r, &c, false, now) else {
            panic!("stored")
        };
        assert_eq!(
            (m.stale_while_revalidate_sec(), m.stale_if_error_sec()),
            (0, 0)
        );
    }

    #[test]
    fn variance_follows_the_named_request_headers() {
        let stored = resp(200, &[("Vary", "Accept-Encoding, Accept-Language")]);
        let req = |enc: &str| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            r.append_header("Accept-Encoding", enc).unwrap();
            r.append_header("Accept-Language", "de").unwrap();
            r
        };
        assert_eq!(
            variance(&stored, &req("gzip")),
            variance(&stored, &req("gzip"))
        );
        assert_ne!(
            variance(&stored, &req("gzip")),
            variance(&stored, &req("br"))
        );
        assert!(variance(&resp(200, &[]), &req("gzip")).is_none());
    }

    #[test]
    fn phases_map_to_x_cache_words() {
        assert_eq!(status_of(CachePhase::Hit, false), Status::Hit);
        assert_eq!(status_of(CachePhase::StaleUpdating, false), Status::Stale);
        assert_eq!(
            status_of(CachePhase::Revalidated, false),
            Status::Revalidated
        );
        assert_eq!(
            status_of(CachePhase::Disabled(NoCacheReason::OriginNotCache), false),
            Status::Miss
        );
        assert_eq!(status_of(CachePhase::Hit, true), Status::Bypass);
    }
}
