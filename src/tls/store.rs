//! The certificate store behind a TLS listener's SNI callback: every configured
//! certificate indexed by its DNS names (exact and `*.` wildcard SANs, else the CN), the
//! first as the default for unknown or missing SNI. Held in an `ArcSwap` so a reload
//! (re-read files) or an ACME renewal swaps certificates without touching open
//! connections.

use crate::config::files::{load_pair, CertError};
use crate::config::CertificateFiles;
use crate::tls::ocsp::OcspSlot;
use arc_swap::ArcSwap;
use pingora::tls::nid::Nid;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone)]
pub struct Certified {
    /// Leaf first, then the chain as it appears in the file.
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    /// DNS names (lower case) the certificate answers for; `*.x` for wildcards.
    pub names: Vec<String>,
    /// Expiry as Unix seconds (for the expiry metric).
    pub not_after: i64,
    /// The OCSP response stapled for this certificate, kept fresh by `ocsp::Stapler`
    /// (empty when the leaf names no responder). Shared by clones, and carried over a
    /// reload for an unchanged leaf, so the task and the handshakes see one slot.
    pub ocsp: Arc<OcspSlot>,
}

pub struct Certs {
    pub list: Vec<Certified>,
    exact: HashMap<String, usize>,
    /// `.example.com` suffixes of `*.example.com` names.
    wildcard: Vec<(String, usize)>,
}

impl Certified {
    /// A chain (leaf first) and the leaf's key; `None` for an empty chain.
    pub fn new(chain: Vec<X509>, key: PKey<Private>) -> Option<Certified> {
        let leaf = chain.first()?;
        Some(Certified {
            names: dns_names(leaf),
            not_after: not_after_unix(leaf),
            chain,
            key,
            ocsp: Arc::default(),
        })
    }

    /// Loads every pair; any unreadable or mismatched pair is an error naming the file.
    pub fn load_files(files: &[CertificateFiles]) -> Result<Vec<Certified>, CertError> {
        files
            .iter()
            .map(|f| {
                let (chain, key) = load_pair(&f.cert_file, &f.key_file)?;
                Certified::new(chain, key)
                    .ok_or_else(|| CertError::Empty(f.cert_file.display().to_string()))
            })
            .collect()
    }
}

impl Certs {
    fn index(list: Vec<Certified>) -> Certs {
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for (i, c) in list.iter().enumerate() {
            for n in &c.names {
                match n.strip_prefix('*') {
                    Some(suffix) => wildcard.push((suffix.to_string(), i)),
                    None => {
                        exact.entry(n.clone()).or_insert(i);
                    }
                }
            }
        }
        Certs {
            list,
            exact,
            wildcard,
        }
    }

    /// The certificate for `sni`: an exact name, else a wildcard covering one label,
    /// else the first (default) certificate.
    pub fn pick(&self, sni: Option<&str>) -> Option<&Certified> {
        let idx = sni
            .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
            .and_then(|name| {
                self.exact.get(&name).copied().or_else(|| {
                    let dot = name.find('.')?;
                    let suffix = &name[dot..];
                    self.wildcard
                        .iter()
                        .find(|(w, _)| w == suffix)
                        .map(|(_, i)| *i)
                })
            })
            .unwrap_or(0);
        self.list.get(idx)
    }
}

fn same_leaf(a: &Certified, b: &Certified) -> bool {
    match (a.chain.first(), b.chain.first()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn dns_names(cert: &X509) -> Vec<String> {
    let mut names: Vec<String> = cert
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| n.dnsname().map(|d| d.to_ascii_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        if let Some(cn) = cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok())
        {
            names.push(cn.to_ascii_lowercase());
        }
    }
    names
}

fn not_after_unix(cert: &X509) -> i64 {
    unix_time(cert.not_after())
}

/// An ASN.1 time as Unix seconds (0 if it cannot be compared).
pub fn unix_time(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    let epoch = openssl::asn1::Asn1Time::from_unix(0);
    match epoch.and_then(|e| e.diff(t)) {
        Ok(d) => d.days as i64 * 86_400 + d.secs as i64,
        Err(_) => 0,
    }
}

/// A listener's certificates: those from files (first = default) then, with `acme`, the
/// ACME one. Both parts change rarely (reload, renewal), so they are kept behind a
/// mutex and published to handshakes as one swapped `Certs`.
pub struct CertStore {
    current: ArcSwap<Certs>,
    parts: Mutex<(Vec<Certified>, Option<Certified>)>,
}

impl CertStore {
    pub fn new(files: Vec<Certified>) -> Arc<Self> {
        Arc::new(CertStore {
            current: ArcSwap::from_pointee(Certs::index(files.clone())),
            parts: Mutex::new((files, None)),
        })
    }

    pub fn current(&self) -> Arc<Certs> {
        self.current.load_full()
    }

    /// Replaces the file certificates (reload), keeping the ACME one.
    pub fn set_files(&self, files: Vec<Certified>) {
        self.update(|parts| parts.0 = files);
    }

    /// Installs (or replaces) the ACME certificate.
    pub fn set_acme(&self, cert: Certified) {
        self.update(|parts| parts.1 = Some(cert));
    }

    fn update(&self, change: impl FnOnce(&mut (Vec<Certified>, Option<Certified>))) {
        // After a panic elsewhere under this lock the parts are still whole (each
        // change replaces one of them): keep going rather than drop every later update.
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        let before: Vec<Certified> = parts.0.iter().chain(parts.1.iter()).cloned().collect();
        change(&mut parts);
        let parts = &mut *parts;
        // An unchanged leaf keeps its stapled response (and the stapler its schedule).
        for c in parts.0.iter_mut().chain(parts.1.iter_mut()) {
            if let Some(old) = before.iter().find(|o| same_leaf(o, c)) {
                c.ocsp = old.ocsp.clone();
            }
        }
        let mut list = parts.0.clone();
        list.extend(parts.1.clone());
        self.current.store(Arc::new(Certs::index(list)));
    }
}
