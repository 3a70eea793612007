//! Where admin-added backends are: an IP literal is its own address; a host name is
//! resolved by an explicit async step (`Pool::resolve_added`, run by the API handler that
//! added it, by the pool's background task and after another instance's change) and
//! remembered here, so rebuilding the membership never blocks on DNS.

use crate::config::value::{lookup_backend, BackendAddr, Host};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub struct AddedNames {
    resolved: Mutex<HashMap<String, SocketAddr>>,
}

impl AddedNames {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, SocketAddr>> {
        self.resolved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The address of an added backend, if known without a lookup.
    pub fn addr_of(&self, address: &str) -> Option<SocketAddr> {
        let parsed: BackendAddr = address.parse().ok()?;
        match parsed.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, parsed.port)),
            Host::Name(_) => self.lock().get(address).copied(),
        }
    }

    pub fn remember(&self, address: &str, addr: SocketAddr) {
        self.lock().insert(address.to_string(), addr);
    }

    /// Looks up every name in `addresses` not known yet; true when one was found.
    pub async fn resolve<'a>(&self, addresses: impl Iterator<Item = &'a str>) -> bool {
        let wanted: Vec<String> = addresses
            .filter(|a| self.addr_of(a).is_none())
            .map(str::to_string)
            .collect();
        let mut found = false;
        for address in wanted {
            match lookup_backend(&address).await {
                Ok((_, addr)) => {
                    self.remember(&address, addr);
                    found = true;
                }
                Err(e) => log::warn!("admin-added backend {address} skipped: {e}"),
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_need_no_lookup_and_names_are_remembered() {
        let names = AddedNames::default();
        assert_eq!(names.addr_of("127.0.0.1:80"), "127.0.0.1:80".parse().ok());
        assert_eq!(names.addr_of("localhost:80"), None);
        assert!(names.resolve(["localhost:80"].into_iter()).await);
        assert!(names
            .addr_of("localhost:80")
            .is_some_and(|a| a.port() == 80));
        // Known now: nothing more to look up.
        assert!(!names.resolve(["localhost:80"].into_iter()).await);
        assert!(!names.resolve(["no-such-host.invalid:80"].into_iter()).await);
    }
}
