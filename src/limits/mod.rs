//! Client limits: CIDR `deny` (checked first) and `allow` lists per route and the global
//! `server.deny` here, rate limits in `rate`, shared ones in `lease` and `cluster`.

pub mod cluster;
pub mod lease;
pub mod rate;

use crate::net::canonical;
use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, Default)]
pub struct Acl {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl Acl {
    pub fn new(allow: &[IpNet], deny: &[IpNet]) -> Self {
        Acl {
            allow: allow.to_vec(),
            deny: deny.to_vec(),
        }
    }

    /// `server.deny`: refuses its members, admits everyone else.
    pub fn deny_only(deny: &[IpNet]) -> Self {
        Acl::new(&[], deny)
    }

    /// Whether a connection from `client` (if known) must be refused at once, before
    /// routing: HTTP answers 403, a tcp_service closes the connection.
    pub fn refuses(&self, client: Option<IpAddr>) -> bool {
        client.is_some_and(|ip| !self.permits(ip))
    }

    /// `deny` wins; a non-empty `allow` admits only its members.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().filter_map(|n| n.parse().ok()).collect()
    }

    #[test]
    fn deny_before_allow() {
        let acl = Acl::new(&nets(&["10.0.0.0/8"]), &nets(&["10.1.0.0/16"]));
        assert!(acl.permits("10.2.3.4".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        assert!(!acl.permits(IpAddr::from([10, 1, 2, 3])));
        assert!(!acl.permits(IpAddr::from([192, 168, 1, 1])));
        assert!(Acl::default().permits(IpAddr::from([1, 2, 3, 4])));
    }

    #[test]
    fn deny_only_refuses_its_members_and_no_one_else() {
        let deny = Acl::deny_only(&nets(&["127.0.0.0/8"]));
        assert!(deny.refuses(Some(IpAddr::from([127, 0, 0, 1]))));
        assert!(!deny.refuses(Some(IpAddr::from([10, 0, 0, 1]))));
        assert!(!deny.refuses(None), "an unknown peer is not refused");
        assert!(!Acl::deny_only(&[]).refuses(Some(IpAddr::from([127, 0, 0, 1]))));
    }

    #[test]
    fn mapped_v6_is_v4() {
        let acl = Acl::new(&[], &nets(&["127.0.0.0/8"]));
        let mapped: IpAddr = "::ffff:127.0.0.1"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(!acl.permits(mapped));
    }
}
