//! Who may use the admin listener: the client inside `admin.allow`, and for `/api/` a
//! bearer token from `admin.tokens`, compared in constant time. The policy is read from
//! the running configuration on every request, so a reload applies it at once.

use crate::config::AdminConfig;
use crate::net::contains_any;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// Why a request is refused before routing, if it is: the client is outside
/// `admin.allow` (403) or the bearer token is missing or wrong (401, `/api/` only).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotAllowed,
    NoToken,
}

/// Checks `admin.allow` and, for `/api/`, the bearer token, against the policy of the
/// running configuration, so a reload that rotates tokens or narrows `allow` applies to
/// the next request.
pub fn refusal(
    admin: &AdminConfig,
    path: &str,
    client: Option<IpAddr>,
    authorization: Option<&[u8]>,
) -> Option<Refusal> {
    if !client.is_some_and(|ip| contains_any(&admin.allow, ip)) {
        return Some(Refusal::NotAllowed);
    }
    // The same segmentation as the router's (leading slashes trimmed), so no spelling
    // of an /api/ path reaches it without the token check.
    let api = path.trim_start_matches('/').split('/').next() == Some("api");
    (api && !authorized(&admin.tokens, authorization)).then_some(Refusal::NoToken)
}

fn authorized(tokens: &[String], header: Option<&[u8]>) -> bool {
    if tokens.is_empty() {
        return true;
    }
    // The scheme is case-insensitive (RFC 9110); only Bearer is accepted.
    let Some(token) = header
        .filter(|h| h.len() > 7 && h[..7].eq_ignore_ascii_case(b"bearer "))
        .map(|h| &h[7..])
    else {
        return false;
    };
    // Every token is compared, in constant time, whatever matches.
    tokens
        .iter()
        .fold(false, |ok, t| ok | bool::from(t.as_bytes().ct_eq(token)))
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
        }
    }

    /// The refusal for a request from 127.0.0.1.
    fn check(a: &AdminConfig, path: &str, authorization: Option<&[u8]>) -> Option<Refusal> {
        refusal(a, path, Some("127.0.0.1".parse().unwrap()), authorization)
    }

    #[test]
    fn every_spelling_of_an_api_path_needs_the_token() {
        let a = admin(&["s3cret"], "127.0.0.0/8");
        for path in [
            "/api/v1/pools",
            "//api/v1/pools",
            "/api",
            "///api/v1/config",
        ] {
            assert_eq!(check(&a, path, None), Some(Refusal::NoToken), "{path}");
            assert_eq!(check(&a, path, Some(b"Bearer s3cret")), None, "{path}");
        }
        assert_eq!(check(&a, "/healthz", None), None);
        assert_eq!(check(&a, "/", None), None);
        let wrong = check(&a, "/api/v1/pools", Some(b"Bearer s3cre"));
        assert_eq!(wrong, Some(Refusal::NoToken));
    }

    #[test]
    fn allow_is_checked_before_the_token() {
        let a = admin(&["s3cret"], "10.0.0.0/8");
        let r = check(&a, "/api/v1/pools", Some(b"Bearer s3cret"));
        assert_eq!(r, Some(Refusal::NotAllowed));
    }
}
