//! Sticky-session cookies: the value is an opaque hash of the backend address (SHA-256
//! over the pool and cookie names, then the address), so it is the same across reloads,
//! restarts, upgrades and instances sharing a configuration, and carries no address in
//! any encoding. It is not keyed by a secret: it names a backend, it grants nothing.

use crate::config::StickyConfig;
use pingora::tls::hash::{hash, MessageDigest};

pub struct Sticky {
    pub cookie: String,
    /// `Max-Age` in seconds, when a ttl is set.
    pub max_age: Option<u64>,
    key: Vec<u8>,
}

impl Sticky {
    pub fn new(pool: &str, c: &StickyConfig) -> Self {
        Sticky {
            cookie: c.cookie.clone(),
            max_age: c.ttl.map(|t| t.as_secs().max(1)),
            key: format!("switchyard-sticky\0{pool}\0{}", c.cookie).into_bytes(),
        }
    }

    /// The cookie value naming `address` (32 hex characters).
    pub fn value_for(&self, address: &str) -> String {
        let mut input = self.key.clone();
        input.push(0);
        input.extend_from_slice(address.as_bytes());
        match hash(MessageDigest::sha256(), &input) {
            Ok(digest) => digest.iter().take(16).map(|b| format!("{b:02x}")).collect(),
            // Only if OpenSSL lacks SHA-256; stickiness then degrades to a plain hash.
            Err(_) => format!("{:016x}", crate::net::hash(&input)),
        }
    }

    /// The `Set-Cookie` header value.
    pub fn set_cookie(&self, value: &str, tls: bool) -> String {
        let mut s = format!("{}={value}; Path=/; HttpOnly; SameSite=Lax", self.cookie);
        if tls {
            s.push_str("; Secure");
        }
        if let Some(age) = self.max_age {
            s.push_str(&format!("; Max-Age={age}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn values_are_stable_opaque_and_distinct() {
        let c = StickyConfig {
            cookie: "S".into(),
            ttl: Some(Duration::from_secs(3600)),
        };
        let s = Sticky::new("web", &c);
        let a = s.value_for("127.0.0.1:9001");
        assert_eq!(a, Sticky::new("web", &c).value_for("127.0.0.1:9001"));
        assert_ne!(a, s.value_for("127.0.0.1:9002"));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("9001"));
        assert_eq!(
            s.set_cookie(&a, true),
            format!("S={a}; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=3600")
        );
    }
}
