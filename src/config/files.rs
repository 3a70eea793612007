//! Opens the files a configuration refers to (certificates, keys, CA bundles, the JWKS), so that
//! `-t` and startup fail on an unreadable, unparsable or mismatched file.

use super::model::Config;
use super::raw::Decoder;
use pingora::tls::error::ErrorStack;
use pingora::tls::pkey::PKey;
use pingora::tls::x509::X509;
use std::path::{Path, PathBuf};

/// A certificate, key or CA file that cannot serve; the text names the file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{name} is not a PEM certificate: {source}")]
    NotCertificate { name: String, source: ErrorStack },
    #[error("{name} is not a PEM private key: {source}")]
    NotKey { name: String, source: ErrorStack },
    #[error("{name} is not a PEM CA bundle: {source}")]
    NotCaBundle { name: String, source: ErrorStack },
    #[error("{0} holds no certificate")]
    Empty(String),
    #[error("{name}: {source}")]
    PublicKey { name: String, source: ErrorStack },
    #[error("{key} does not match the certificate in {cert}")]
    Mismatch { key: String, cert: String },
}

pub fn check(d: &mut Decoder, c: &Config) {
    super::traffic::check_files(d, c);
    for (i, l) in c.listeners.iter().enumerate() {
        let Some(tls) = &l.tls else { continue };
        let listener = format!("listeners[{i}]");
        let pos = d.spans.at(&listener);
        for (j, cert) in tls.certificates.iter().enumerate() {
            if let Err(e) = load_pair(&cert.cert_file, &cert.key_file) {
                let path = format!("{listener}.tls.certificates[{j}]");
                d.error(d.spans.at(&path), &path, e.to_string());
            }
        }
        if let Some(ca) = &tls.client_ca_file {
            if let Err(e) = load_ca(ca) {
                d.error(
                    pos,
                    &format!("listeners[{i}].tls.client_ca_file"),
                    e.to_string(),
                );
            }
        }
        if let Some(ca) = tls.acme.as_ref().and_then(|a| a.ca_file.as_ref()) {
            if let Err(e) = load_ca(ca) {
                d.error(
                    pos,
                    &format!("listeners[{i}].tls.acme.ca_file"),
                    e.to_string(),
                );
            }
        }
    }
    let jwks = c
        .admin
        .as_ref()
        .and_then(|a| a.jwt.as_ref())
        .map(|j| &j.jwks);
    if let Some(super::model::JwksSource::File(path)) = jwks {
        if let Err(e) = check_jwks(path) {
            d.error(d.spans.at("admin"), "admin.jwt.jwks_file", e);
        }
    }
    for (i, p) in c.pools.iter().enumerate() {
        if let Some(ca) = p.upstream.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            if let Err(e) = load_ca(ca) {
                let pool = format!("pools[{i}]");
                let pos = d.spans.at(&pool);
                d.error(pos, &format!("{pool}.upstream.tls.ca_file"), e.to_string());
            }
        }
    }
}

/// The JWKS file must be readable and a JSON Web Key Set (keys rotate by replacing it).
fn check_jwks(path: &Path) -> Result<(), String> {
    let bytes = read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice::<jsonwebtoken::jwk::JwkSet>(&bytes)
        .map(|_| ())
        .map_err(|e| format!("{} is not a JSON Web Key Set: {e}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A certificate chain and its key; the key must belong to the first certificate.
pub fn load_pair(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<X509>, PKey<pingora::tls::pkey::Private>), CertError> {
    parse_pair(
        &read(cert_file)?,
        &read(key_file)?,
        &cert_file.display().to_string(),
        &key_file.display().to_string(),
    )
}

/// A PEM chain and its PEM key (named `cert_name` and `key_name` in errors); the key
/// must belong to the first certificate.
pub fn parse_pair(
    chain_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
) -> Result<(Vec<X509>, PKey<pingora::tls::pkey::Private>), CertError> {
    let named = |name: &str| name.to_string();
    let chain = X509::stack_from_pem(chain_pem).map_err(|source| CertError::NotCertificate {
        name: named(cert_name),
        source,
    })?;
    let leaf = chain
        .first()
        .ok_or_else(|| CertError::Empty(named(cert_name)))?;
    let key = PKey::private_key_from_pem(key_pem).map_err(|source| CertError::NotKey {
        name: named(key_name),
        source,
    })?;
    let public = leaf.public_key().map_err(|source| CertError::PublicKey {
        name: named(cert_name),
        source,
    })?;
    if !public.public_eq(&key) {
        return Err(CertError::Mismatch {
            key: named(key_name),
            cert: named(cert_name),
        });
    }
    Ok((chain, key))
}

fn load_ca(path: &Path) -> Result<(), CertError> {
    let name = || path.display().to_string();
    let certs = X509::stack_from_pem(&read(path)?).map_err(|source| CertError::NotCaBundle {
        name: name(),
        source,
    })?;
    if certs.is_empty() {
        return Err(CertError::Empty(name()));
    }
    Ok(())
}
