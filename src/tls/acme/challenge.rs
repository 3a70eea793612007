//! HTTP-01 answers of the orders in progress: token → key authorization, published by
//! the ACME services and answered by every plaintext listener under
//! `/.well-known/acme-challenge/` before routing (the CA connects from anywhere, for a
//! host no route may know). One table per process, made by the server wiring and handed
//! to both sides.

use dashmap::DashMap;

pub const PATH_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Default)]
pub struct Challenges {
    pending: DashMap<String, String>,
}

impl Challenges {
    /// The key authorization to answer for a request path, if it names a pending token.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(PATH_PREFIX)?;
        self.pending.get(token).map(|v| v.value().clone())
    }

    /// Answers `token` until `withdraw` (one per challenge of an order in progress).
    pub fn publish(&self, token: &str, key_authorization: &str) {
        self.pending
            .insert(token.to_string(), key_authorization.to_string());
    }

    pub fn withdraw(&self, token: &str) {
        self.pending.remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_published_tokens_under_the_prefix() {
        let c = Challenges::default();
        c.publish("tok-1", "tok-1.thumb");
        assert_eq!(
            c.answer("/.well-known/acme-challenge/tok-1").as_deref(),
            Some("tok-1.thumb")
        );
        assert_eq!(c.answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(c.answer("/tok-1"), None);
        c.withdraw("tok-1");
        assert_eq!(c.answer("/.well-known/acme-challenge/tok-1"), None);
    }
}
