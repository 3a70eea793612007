//! Open client connections of one listener or tcp_service, in all and per client IP,
//! against `max_connections` / `max_connections_per_ip` (0 = unlimited).

use crate::observe::refusal::Reason;
use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The caps in force (read from the running configuration at each accept, so a reload
/// changes them for new connections).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub max: u32,
    pub per_ip: u32,
}

#[derive(Debug, Default)]
pub struct ConnectionCounts {
    open: AtomicU32,
    per_ip: DashMap<IpAddr, u32>,
}

impl ConnectionCounts {
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn open_from(&self, ip: IpAddr) -> u32 {
        self.per_ip.get(&ip).map(|n| *n).unwrap_or(0)
    }

    /// Whether one more connection from `ip` would pass `caps` (no count is taken).
    pub fn would_refuse(&self, ip: Option<IpAddr>, caps: Caps) -> Option<Reason> {
        if caps.max > 0 && self.open() >= caps.max {
            return Some(Reason::ConnectionLimit);
        }
        match ip {
            Some(ip) if caps.per_ip > 0 && self.open_from(ip) >= caps.per_ip => {
                Some(Reason::PerIpLimit)
            }
            _ => None,
        }
    }

    /// Counts one more connection from `ip` if `caps` allow it; the count is given back
    /// when the returned hold is dropped.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>, caps: Caps) -> Result<Hold, Reason> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if caps.max > 0 && open >= caps.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Reason::ConnectionLimit);
        }
        if let Some(ip) = ip {
            let mut n = self.per_ip.entry(ip).or_insert(0);
            if caps.per_ip > 0 && *n >= caps.per_ip {
                drop(n);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Reason::PerIpLimit);
            }
            *n += 1;
        }
        Ok(Hold {
            counts: self.clone(),
            ip,
        })
    }
}

/// One counted connection.
#[derive(Debug)]
pub struct Hold {
    counts: Arc<ConnectionCounts>,
    ip: Option<IpAddr>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            // Entries of addresses with no open connection are removed, so the map holds
            // only clients that are connected.
            self.counts.per_ip.remove_if_mut(&ip, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn the_total_cap_refuses_the_next_connection_until_one_closes() {
        let counts = Arc::new(ConnectionCounts::default());
        let caps = Caps { max: 2, per_ip: 0 };
        let a = counts.admit(ip("10.0.0.1"), caps).unwrap();
        let _b = counts.admit(ip("10.0.0.2"), caps).unwrap();
        assert_eq!(
            counts.would_refuse(ip("10.0.0.3"), caps),
            Some(Reason::ConnectionLimit)
        );
        assert_eq!(
            counts.admit(ip("10.0.0.3"), caps).unwrap_err(),
            Reason::ConnectionLimit
        );
        assert_eq!(counts.open(), 2);
        drop(a);
        assert!(counts.admit(ip("10.0.0.3"), caps).is_ok());
    }

    #[test]
    fn the_per_ip_cap_counts_each_address_apart() {
        let counts = Arc::new(ConnectionCounts::default());
        let caps = Caps { max: 0, per_ip: 1 };
        let a = counts.admit(ip("10.0.0.1"), caps).unwrap();
        assert_eq!(
            counts.admit(ip("10.0.0.1"), caps).unwrap_err(),
            Reason::PerIpLimit
        );
        let _b = counts.admit(ip("10.0.0.2"), caps).unwrap();
        assert_eq!(counts.open(), 2);
        drop(a);
        assert_eq!(counts.open_from("10.0.0.1".parse().unwrap()), 0);
        assert!(counts.per_ip.get(&"10.0.0.1".parse().unwrap()).is_none());
        assert!(counts.admit(ip("10.0.0.1"), caps).is_ok());
    }

    #[test]
    fn unlimited_caps_still_count() {
        let counts = Arc::new(ConnectionCounts::default());
        let holds: Vec<_> = (0..100)
            .map(|_| counts.admit(ip("10.0.0.1"), Caps::default()).unwrap())
            .collect();
        assert_eq!(counts.open_from("10.0.0.1".parse().unwrap()), 100);
        drop(holds);
        assert_eq!(counts.open(), 0);
    }
}
