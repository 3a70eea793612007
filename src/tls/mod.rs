//! TLS termination: per-listener settings (SNI certificate selection from an in-memory
//! store, minimum version, ALPN h2, mutual TLS), certificate reload and ACME.

pub mod acme;
pub mod ocsp;
pub mod store;

use crate::config::{ClientAuth, ListenerConfig, TlsVersion};
use async_trait::async_trait;
use once_cell::sync::Lazy;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;
use pingora::tls::ssl::{NameType, SslOptions, SslVerifyMode, SslVersion};
use pingora::tls::x509::X509;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use store::{CertStore, Certified};

/// The verified subject of a client certificate (mutual TLS), attached to the
/// connection and sent to backends as `X-Client-Cert-Subject`.
pub struct ClientSubject(pub String);

/// The SNI callback: picks the certificate for the requested name.
pub struct Sni {
    pub store: Arc<CertStore>,
}

#[async_trait]
impl TlsAccept for Sni {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let certs = self.store.current();
        let Some(c) = certs.pick(ssl.servername(NameType::HOST_NAME)) else {
            log::warn!("TLS handshake without any certificate to offer");
            return;
        };
        let Some(leaf) = c.chain.first() else { return };
        let set = ext::ssl_use_certificate(ssl, leaf)
            .and_then(|_| ext::ssl_use_private_key(ssl, &c.key))
            .and_then(|_| {
                c.chain[1..]
                    .iter()
                    .try_for_each(|ca| ext::ssl_add_chain_cert(ssl, ca))
            });
        if let Err(e) = set {
            log::warn!("TLS: could not set the certificate for {:?}: {e}", c.names);
            return;
        }
        // Sent only if the client asked (the status callback below says so).
        if let Some(staple) = ocsp::staple_for(c) {
            if let Err(e) = ssl.set_ocsp_status(&staple.der) {
                log::debug!(
                    "TLS: could not staple the OCSP response for {:?}: {e}",
                    c.names
                );
            }
        }
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let cert = ssl.peer_certificate()?;
        if ssl.verify_result() != pingora::tls::x509::X509VerifyResult::OK {
            return None;
        }
        Some(Arc::new(ClientSubject(subject_of(&cert))))
    }
}

/// `CN=client,O=Example` from a certificate's subject, in certificate order.
fn subject_of(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .filter_map(|e| {
            let key = e.object().nid().short_name().ok()?;
            let value = e.data().to_string().ok()?;
            Some(format!("{key}={value}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Builds a TLS listener's settings and returns its certificate store (for reload).
pub fn settings(l: &ListenerConfig) -> Result<(TlsSettings, Arc<CertStore>), TlsSetupError> {
    let tls = l
        .tls
        .as_ref()
        .ok_or_else(|| TlsSetupError::NotTls(l.name.clone()))?;
    let store = CertStore::new(Certified::load_files(&tls.certificates)?);
    let mut settings = TlsSettings::with_callbacks(Box::new(Sni {
        store: store.clone(),
    }))
    .map_err(|e| TlsSetupError::Pingora(l.name.clone(), e))?;
    let ossl = |source| TlsSetupError::OpenSsl {
        listener: l.name.clone(),
        source,
    };
    // On top of Pingora's Mozilla "intermediate" profile (TLS 1.2+, AEAD ciphers with
    // forward secrecy only, no compression): the server's cipher order wins (testssl.sh
    // rates a client-chosen order HIGH), and renegotiation is refused outright (a
    // client-initiated one costs the server a handshake per request: a DoS lever).
    // See docs/SECURITY.md "TLS posture (testssl.sh)".
    settings.set_options(SslOptions::CIPHER_SERVER_PREFERENCE | SslOptions::NO_RENEGOTIATION);
    if tls.min_version == TlsVersion::Tls13 {
        settings
            .set_min_proto_version(Some(SslVersion::TLS1_3))
            .map_err(ossl)?;
    }
    if l.http2 {
        settings.enable_h2();
    }
    // OpenSSL asks this only for a client's status_request, after the SNI callback has
    // picked the certificate and set its response (if any).
    settings
        .set_status_callback(|ssl| Ok(ssl.ocsp_status().is_some()))
        .map_err(ossl)?;
    if let Some(ca) = &tls.client_ca_file {
        let mode = match tls.client_auth {
            ClientAuth::None => SslVerifyMode::NONE,
            ClientAuth::Optional => SslVerifyMode::PEER,
            ClientAuth::Require => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        };
        settings.set_verify(mode);
        settings.set_ca_file(ca).map_err(ossl)?;
        // The CA names sent to clients, so they pick the right certificate.
        let pem = std::fs::read(ca).map_err(|source| TlsSetupError::ReadCa {
            path: ca.clone(),
            source,
        })?;
        let mut names = openssl::stack::Stack::new().map_err(ossl)?;
        for c in X509::stack_from_pem(&pem).map_err(ossl)? {
            names
                .push(c.subject_name().to_owned().map_err(ossl)?)
                .map_err(ossl)?;
        }
        settings.set_client_ca_list(names);
    }
    Ok((settings, store))
}

/// Why a TLS listener could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("listener {0} has no tls section")]
    NotTls(String),
    #[error(transparent)]
    Files(#[from] crate::config::files::CertError),
    #[error("listener {0}: {1}")]
    Pingora(String, pingora::BError),
    #[error("listener {listener}: {source}")]
    OpenSsl {
        listener: String,
        source: pingora::tls::error::ErrorStack,
    },
    #[error("cannot read {}: {source}", path.display())]
    ReadCa {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Sets `switchyard_tls_certificate_expiry_timestamp_seconds{listener,name}` for every
/// certificate of a listener (name = its first DNS name), and drops the series of names
/// the listener no longer serves (a renewed certificate may list its names differently).
pub fn publish_expiry(listener: &str, store: &CertStore) {
    static PUBLISHED: Lazy<Mutex<HashMap<String, Vec<String>>>> = Lazy::new(Default::default);
    let gauge = &crate::observe::metrics::METRICS.certificate_expiry;
    let certs = store.current();
    let names: Vec<String> = certs
        .list
        .iter()
        .map(|c| c.names.first().cloned().unwrap_or_default())
        .collect();
    for (c, name) in certs.list.iter().zip(&names) {
        gauge
            .with_label_values(&[listener, name])
            .set(c.not_after as f64);
    }
    {
        let mut published = PUBLISHED.lock().unwrap_or_else(PoisonError::into_inner);
        let before = published.insert(listener.to_string(), names.clone());
        for gone in before.iter().flatten().filter(|n| !names.contains(n)) {
            let _ = gauge.remove_label_values(&[listener, gone]);
        }
    }
}
