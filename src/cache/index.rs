//! Which stored objects belong to which URL (host and path), so an admin purge can drop
//! one URL with every variant, a path prefix or everything. Touched on fills, evictions
//! and purges only, never on a hit.

use pingora_cache::key::HashBinary;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The URL an object was stored for: host lower case without a port, path without query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Url {
    pub host: String,
    pub path: String,
}

impl Url {
    pub fn new(host: &str, path: &str) -> Url {
        Url {
            host: normalize_host(host),
            path: path.to_string(),
        }
    }
}

/// `Example.COM:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let bare = if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    bare.to_ascii_lowercase()
}

#[derive(Default)]
pub struct PurgeIndex {
    hosts: HashMap<String, BTreeMap<String, HashSet<HashBinary>>>,
}

impl PurgeIndex {
    pub fn add(&mut self, url: &Url, hash: HashBinary) {
        self.hosts
            .entry(url.host.clone())
            .or_default()
            .entry(url.path.clone())
            .or_default()
            .insert(hash);
    }

    pub fn remove(&mut self, url: &Url, hash: &HashBinary) {
        let Some(paths) = self.hosts.get_mut(&url.host) else {
            return;
        };
        if let Some(set) = paths.get_mut(&url.path) {
            set.remove(hash);
            if set.is_empty() {
                paths.remove(&url.path);
            }
        }
        if paths.is_empty() {
            self.hosts.remove(&url.host);
        }
    }

    /// Every object of one URL (any query, method or variant).
    pub fn take_path(&mut self, host: &str, path: &str) -> Vec<HashBinary> {
        let host = normalize_host(host);
        let Some(paths) = self.hosts.get_mut(&host) else {
            return Vec::new();
        };
        let out = paths
            .remove(path)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        if paths.is_empty() {
            self.hosts.remove(&host);
        }
        out
    }

    /// Every object of `host` whose path starts with `prefix`.
    pub fn take_prefix(&mut self, host: &str, prefix: &str) -> Vec<HashBinary> {
        let host = normalize_host(host);
        let Some(paths) = self.hosts.get_mut(&host) else {
            return Vec::new();
        };
        let keys: Vec<String> = paths
            .range(prefix.to_string()..)
            .take_while(|(p, _)| p.starts_with(prefix))
            .map(|(p, _)| p.clone())
            .collect();
        let mut out = Vec::new();
        for k in keys {
            if let Some(set) = paths.remove(&k) {
                out.extend(set);
            }
        }
        if paths.is_empty() {
            self.hosts.remove(&host);
        }
        out
    }

    pub fn take_all(&mut self) -> Vec<HashBinary> {
        std::mem::take(&mut self.hosts)
            .into_values()
            .flat_map(|paths| paths.into_values().flatten())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> HashBinary {
        [n; 16]
    }

    #[test]
    fn hosts_lose_case_and_port() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("a.test"), "a.test");
    }

    #[test]
    fn a_path_purge_takes_every_variant_and_leaves_the_rest() {
        let mut ix = PurgeIndex::default();
        ix.add(&Url::new("a.test", "/x"), h(1));
        ix.add(&Url::new("a.test", "/x"), h(2));
        ix.add(&Url::new("a.test", "/xy"), h(3));
        ix.add(&Url::new("b.test", "/x"), h(4));
        let mut got = ix.take_path("A.test:80", "/x");
        got.sort();
        assert_eq!(got, vec![h(1), h(2)]);
        assert!(ix.take_path("a.test", "/x").is_empty());
        assert_eq!(ix.take_all().len(), 2);
    }

    #[test]
    fn a_prefix_purge_stops_at_the_first_path_outside_it() {
        let mut ix = PurgeIndex::default();
        for (i, p) in ["/img/a", "/img/b/c", "/imgx", "/other", "/im"]
            .iter()
            .enumerate()
        {
            ix.add(&Url::new("a.test", p), h(i as u8));
        }
        let mut got = ix.take_prefix("a.test", "/img/");
        got.sort();
        assert_eq!(got, vec![h(0), h(1)]);
        assert_eq!(ix.take_prefix("a.test", "/").len(), 3);
    }

    #[test]
    fn removing_an_evicted_object_forgets_its_url() {
        let mut ix = PurgeIndex::default();
        let u = Url::new("a.test", "/x");
        ix.add(&u, h(1));
        ix.remove(&u, &h(1));
        assert!(ix.hosts.is_empty());
    }
}
