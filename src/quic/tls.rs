//! The QUIC handshake's TLS 1.3 (rustls, ring): certificates come from the listener's
//! own SNI store (`tls::store::CertStore`), the one its TCP handshakes use, so a reload
//! or an ACME renewal reaches QUIC with no step of its own. Each published `Certs` is
//! converted to rustls keys once, on the first handshake that sees it; the OCSP staple
//! (kept fresh by `tls::ocsp`) is attached per handshake.

use crate::tls::ocsp;
use crate::tls::store::{CertStore, Certified, Certs};
use arc_swap::ArcSwapOption;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::sync::Arc;

/// ALPN for HTTP/3 (RFC 9114 §3.1).
pub const ALPN_H3: &[u8] = b"h3";

/// Why the QUIC side of a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicTlsError {
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC TLS: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// The rustls keys for one published `Certs`, in its order.
struct Converted {
    from: Arc<Certs>,
    keys: Vec<Option<Arc<CertifiedKey>>>,
}

/// A `ResolvesServerCert` over a listener's certificate store.
pub struct StoreResolver {
    store: Arc<CertStore>,
    cache: ArcSwapOption<Converted>,
}

impl fmt::Debug for StoreResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreResolver")
    }
}

impl StoreResolver {
    pub fn new(store: Arc<CertStore>) -> Self {
        StoreResolver {
            store,
            cache: ArcSwapOption::empty(),
        }
    }

    /// The converted keys for the store's current certificates (converted again only
    /// after a reload or renewal published new ones).
    fn converted(&self) -> Arc<Converted> {
        let certs = self.store.current();
        if let Some(c) = self.cache.load_full() {
            if Arc::ptr_eq(&c.from, &certs) {
                return c;
            }
        }
        let keys = certs.list.iter().map(convert).collect();
        let fresh = Arc::new(Converted { from: certs, keys });
        self.cache.store(Some(fresh.clone()));
        fresh
    }
}

impl ResolvesServerCert for StoreResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let converted = self.converted();
        let picked = converted.from.pick(hello.server_name())?;
        let index = converted
            .from
            .list
            .iter()
            .position(|c| std::ptr::eq(c, picked))?;
        let key = converted.keys.get(index)?.clone()?;
        match ocsp::staple_for(picked) {
            Some(staple) => {
                let mut stapled = (*key).clone();
                stapled.ocsp = Some(staple.der.clone());
                Some(Arc::new(stapled))
            }
            None => Some(key),
        }
    }
}

/// One certificate as rustls wants it; `None` (logged) when OpenSSL cannot export it
/// or ring does not support its key type.
fn convert(c: &Certified) -> Option<Arc<CertifiedKey>> {
    let chain: Result<Vec<CertificateDer<'static>>, _> = c
        .chain
        .iter()
        .map(|x| x.to_der().map(CertificateDer::from))
        .collect();
    let key = c.key.private_key_to_pkcs8();
    let (chain, key) = match (chain, key) {
        (Ok(chain), Ok(key)) => (chain, key),
        (Err(e), _) | (_, Err(e)) => {
            log::warn!("QUIC: cannot export the certificate for {:?}: {e}", c.names);
            return None;
        }
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    match any_supported_type(&key) {
        Ok(signer) => Some(Arc::new(CertifiedKey::new(chain, signer))),
        Err(e) => {
            log::warn!("QUIC: unsupported key for {:?}: {e}", c.names);
            None
        }
    }
}

/// The QUIC server crypto for a listener: TLS 1.3 only, ALPN `h3`, no 0-RTT (early data
/// could be replayed), certificates from `store`.
pub fn server_crypto(
    store: Arc<CertStore>,
) -> Result<quinn::crypto::rustls::QuicServerConfig, QuicTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(StoreResolver::new(store)));
    config.alpn_protocols = vec![ALPN_H3.to_vec()];
    config.max_early_data_size = 0;
    Ok(quinn::crypto::rustls::QuicServerConfig::try_from(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn cert(name: &str) -> Certified {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut subject = X509NameBuilder::new().unwrap();
        subject.append_entry_by_text("CN", name).unwrap();
        let subject = subject.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&subject).unwrap();
        b.set_issuer_name(&subject).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .dns(name)
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        Certified::new(vec![b.build()], key).unwrap()
    }

    fn der(c: &Certified) -> Vec<u8> {
        c.chain[0].to_der().unwrap()
    }

    #[test]
    fn keys_follow_the_store_and_are_converted_once_per_published_set() {
        let a = cert("a.example.test");
        let store = CertStore::new(vec![a.clone()]);
        let resolver = StoreResolver::new(store.clone());
        let first = resolver.converted();
        assert_eq!(first.keys.len(), 1);
        assert_eq!(first.keys[0].as_ref().unwrap().cert[0].as_ref(), der(&a));
        assert!(
            Arc::ptr_eq(&first, &resolver.converted()),
            "an unchanged store is not converted again"
        );
        // An ACME certificate, then new files (a reload): each reaches QUIC.
        let acme = cert("b.example.test");
        store.set_acme(acme.clone());
        let second = resolver.converted();
        assert_eq!(second.keys.len(), 2);
        assert_eq!(
            second.keys[1].as_ref().unwrap().cert[0].as_ref(),
            der(&acme)
        );
        let renewed = cert("a.example.test");
        store.set_files(vec![renewed.clone()]);
        let third = resolver.converted();
        assert_eq!(
            third.keys[0].as_ref().unwrap().cert[0].as_ref(),
            der(&renewed)
        );
        assert!(server_crypto(store).is_ok());
    }
}
