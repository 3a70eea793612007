//! Who may use the admin listener: the client inside `admin.allow`, and for `/api/` a
//! bearer token from `admin.tokens` or `admin.read_only_tokens`, compared in constant
//! time (JWTs: `jwt`, roles: `roles`). The policy is read from the running
//! configuration on every request, so a reload applies it at once.

use super::roles::Actor;
use crate::config::AdminConfig;
use crate::net::contains_any;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// Why a request is refused before routing, if it is: the client is outside
/// `admin.allow` (403), the bearer token is missing or wrong (401, `/api/` only), or a
/// read-only actor asked for a change (403).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotAllowed,
    NoToken,
    ReadOnly(Actor),
}

pub fn allowed(admin: &AdminConfig, client: Option<IpAddr>) -> bool {
    client.is_some_and(|ip| contains_any(&admin.allow, ip))
}

/// Whether `path` is under /api/, with the same segmentation as the router's (leading
/// slashes trimmed), so no spelling of an /api/ path reaches it without the token check.
pub fn is_api(path: &str) -> bool {
    path.trim_start_matches('/').split('/').next() == Some("api")
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme is
/// case-insensitive (RFC 9110) and only Bearer is accepted.
pub fn bearer(header: &[u8]) -> Option<&[u8]> {
    (header.len() > 7 && header[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &header[7..])
}

/// The static token `token` is, if any. Every configured token is compared, in
/// constant time, whatever matches.
pub fn static_token(admin: &AdminConfig, token: &[u8]) -> Option<Actor> {
    let mut found = None;
    for (i, t) in admin.tokens.iter().enumerate() {
        if bool::from(t.as_bytes().ct_eq(token)) {
            found = found.or(Some(Actor::Token(i)));
        }
    }
    for (i, t) in admin.read_only_tokens.iter().enumerate() {
        if bool::from(t.as_bytes().ct_eq(token)) {
            found = found.or(Some(Actor::ReadOnlyToken(i)));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(tokens: &[&str], allow: &str) -> AdminConfig {
        AdminConfig {
            listen: "127.0.0.1:9090".parse().unwrap(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            allow: vec![allow.parse().unwrap()],
            state_file: "/tmp/unused".into(),
            read_only_tokens: Vec::new(),
            jwt: None,
            audit_log: None,
        }
    }

    #[test]
    fn every_spelling_of_an_api_path_is_an_api_path() {
        for path in [
            "/api/v1/pools",
            "//api/v1/pools",
            "/api",
            "///api/v1/config",
        ] {
            assert!(is_api(path), "{path}");
        }
        assert!(!is_api("/healthz"));
        assert!(!is_api("/"));
        assert!(!is_api("/apix"));
    }

    #[test]
    fn only_bearer_carries_a_token() {
        assert_eq!(bearer(b"Bearer s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer(b"bEARER s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer(b"Basic s3cret"), None);
        assert_eq!(bearer(b"Bearer "), None);
    }

    #[test]
    fn tokens_match_exactly() {
        let a = admin(&["s3cret", "other"], "127.0.0.0/8");
        assert_eq!(static_token(&a, b"other"), Some(Actor::Token(1)));
        assert_eq!(static_token(&a, b"s3cre"), None);
        assert_eq!(static_token(&a, b"s3cret!"), None);
    }

    #[test]
    fn the_allowlist_is_checked() {
        let a = admin(&["s3cret"], "10.0.0.0/8");
        assert!(!allowed(&a, Some("127.0.0.1".parse().unwrap())));
        assert!(allowed(&a, Some("10.1.2.3".parse().unwrap())));
        assert!(!allowed(&a, None));
    }
}
