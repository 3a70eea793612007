//! HTTP-01 answers of the orders in progress: token → key authorization, published by
//! the ACME service and answered by every plaintext listener under
//! `/.well-known/acme-challenge/` before routing (the CA connects from anywhere, for a
//! host no route may know).

use dashmap::DashMap;
use once_cell::sync::Lazy;

pub const PATH_PREFIX: &str = "/.well-known/acme-challenge/";

static PENDING: Lazy<DashMap<String, String>> = Lazy::new(DashMap::new);

/// The key authorization to answer for a request path, if it names a pending token.
pub fn answer(path: &str) -> Option<String> {
    let token = path.strip_prefix(PATH_PREFIX)?;
    PENDING.get(token).map(|v| v.value().clone())
}

/// Answers `token` until `withdraw` (one per challenge of an order in progress).
pub fn publish(token: &str, key_authorization: &str) {
    PENDING.insert(token.to_string(), key_authorization.to_string());
}

pub fn withdraw(token: &str) {
    PENDING.remove(token);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_published_tokens_under_the_prefix() {
        publish("tok-1", "tok-1.thumb");
        assert_eq!(
            answer("/.well-known/acme-challenge/tok-1").as_deref(),
            Some("tok-1.thumb")
        );
        assert_eq!(answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(answer("/tok-1"), None);
        withdraw("tok-1");
        assert_eq!(answer("/.well-known/acme-challenge/tok-1"), None);
    }
}
