//! A route's cache key from its configured parts (`routes[].cache.key`): method (HEAD
//! reads GET's entry), host, path, query, `header:NAME`, `cookie:NAME`. The key carries
//! the URL it was built for, so the purge index can find it.

use super::index::Url;
use super::store::UrlTag;
use crate::config::CacheKeyPart;
use pingora::http::RequestHeader;
use pingora_cache::key::CacheKey;

/// The request's host: the Host header, else the URI's authority.
pub fn host(req: &RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("")
}

fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The key of `req` on route `route` (routes never share entries).
pub fn build(route: &str, parts: &[CacheKeyPart], req: &RequestHeader) -> CacheKey {
    let host = host(req);
    let url = Url::new(host, req.uri.path());
    let mut primary = String::with_capacity(route.len() + 96);
    primary.push_str(route);
    for part in parts {
        // Values never hold a newline (Pingora refuses such headers).
        primary.push('\n');
        match part {
            CacheKeyPart::Method => primary.push_str(match req.method {
                http::Method::HEAD => "GET",
                ref m => m.as_str(),
            }),
            CacheKeyPart::Host => primary.push_str(&url.host),
            CacheKeyPart::Path => primary.push_str(&url.path),
            CacheKeyPart::Query => primary.push_str(req.uri.query().unwrap_or("")),
            CacheKeyPart::Header(name) => {
                for (i, v) in req.headers.get_all(name).iter().enumerate() {
                    if i > 0 {
                        primary.push_str(", ");
                    }
                    primary.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
            }
            CacheKeyPart::Cookie(name) => {
                if let Some(v) = cookie(req, name) {
                    primary.push('=');
                    primary.push_str(v);
                }
            }
        }
    }
    let hash = pingora_cache::key::hash_key(&primary);
    // The URL rides in the user tag (not hashed): the purge index reads it on a fill.
    let mut key = CacheKey::new(primary, UrlTag::encode(&url));
    // Hashed once here instead of at every use of the key.
    key.set_primary_bin_override(hash);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::key::CacheHashKey;

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn key(parts: &[CacheKeyPart], r: &RequestHeader) -> String {
        build("static", parts, r).primary()
    }

    #[test]
    fn head_shares_get_entry_and_host_case_does_not_matter() {
        let d = CacheKeyPart::defaults();
        let get = req("GET", "/a?x=1", &[("Host", "A.test")]);
        let head = req("HEAD", "/a?x=1", &[("Host", "a.test:80")]);
        assert_eq!(key(&d, &get), key(&d, &head));
        let other = req("GET", "/a?x=2", &[("Host", "a.test")]);
        assert_ne!(key(&d, &get), key(&d, &other));
    }

    #[test]
    fn parts_left_out_of_the_key_do_not_split_entries() {
        let parts = [CacheKeyPart::Host, CacheKeyPart::Path];
        let a = req("GET", "/a?x=1", &[("Host", "a.test")]);
        let b = req("GET", "/a?x=2", &[("Host", "a.test")]);
        assert_eq!(key(&parts, &a), key(&parts, &b));
    }

    #[test]
    fn header_and_cookie_parts_split_entries() {
        let parts = [
            CacheKeyPart::Path,
            CacheKeyPart::Header(http::header::ACCEPT_LANGUAGE),
            CacheKeyPart::Cookie("tier".into()),
        ];
        let a = req(
            "GET",
            "/",
            &[("Accept-Language", "de"), ("Cookie", "x=1; tier=gold")],
        );
        let b = req(
            "GET",
            "/",
            &[("Accept-Language", "de"), ("Cookie", "tier=free")],
        );
        let c = req(
            "GET",
            "/",
            &[("Accept-Language", "de"), ("Cookie", "tier=gold")],
        );
        assert_ne!(key(&parts, &a), key(&parts, &b));
        assert_eq!(key(&parts, &a), key(&parts, &c));
        let routes_differ = build("other", &parts, &a).primary();
        assert_ne!(routes_differ, key(&parts, &a));
    }

    #[test]
    fn the_key_remembers_its_url_for_purges() {
        let r = req("GET", "/img/a.png?v=2", &[("Host", "Cdn.test")]);
        let k = build("static", &CacheKeyPart::defaults(), &r);
        assert_eq!(
            UrlTag::decode(&k.user_tag),
            Url::new("cdn.test", "/img/a.png")
        );
        let plain = pingora_cache::key::hash_key(k.primary_key());
        assert_eq!(k.primary_bin(), plain, "the override is the key's own hash");
    }
}
