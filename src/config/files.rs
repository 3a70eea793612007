//! Opens the files a configuration refers to (certificates, keys, CA bundles), so that
//! `-t` and startup fail on an unreadable, unparsable or mismatched file.

use super::decode::Decoder;
use super::model::Config;
use pingora::tls::pkey::PKey;
use pingora::tls::x509::X509;
use std::path::Path;

pub fn check(d: &mut Decoder, c: &Config) {
    for (i, l) in c.listeners.iter().enumerate() {
        let Some(tls) = &l.tls else { continue };
        for cert in &tls.certificates {
            if let Err(e) = load_pair(&cert.cert_file, &cert.key_file) {
                d.error(cert.pos, &cert.path, e);
            }
        }
        if let Some(ca) = &tls.client_ca_file {
            if let Err(e) = load_ca(ca) {
                d.error(l.pos, &format!("listeners[{i}].tls.client_ca_file"), e);
            }
        }
        if let Some(ca) = tls.acme.as_ref().and_then(|a| a.ca_file.as_ref()) {
            if let Err(e) = load_ca(ca) {
                d.error(l.pos, &format!("listeners[{i}].tls.acme.ca_file"), e);
            }
        }
    }
    for (i, p) in c.pools.iter().enumerate() {
        if let Some(ca) = p.upstream.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            if let Err(e) = load_ca(ca) {
                d.error(p.pos, &format!("pools[{i}].upstream.tls.ca_file"), e);
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A certificate chain and its key; the key must belong to the first certificate.
pub fn load_pair(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<X509>, PKey<pingora::tls::pkey::Private>), String> {
    let chain = X509::stack_from_pem(&read(cert_file)?)
        .map_err(|e| format!("{} is not a PEM certificate: {e}", cert_file.display()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| format!("{} holds no certificate", cert_file.display()))?;
    let key = PKey::private_key_from_pem(&read(key_file)?)
        .map_err(|e| format!("{} is not a PEM private key: {e}", key_file.display()))?;
    let public = leaf
        .public_key()
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    if !public.public_eq(&key) {
        return Err(format!(
            "{} does not match the certificate in {}",
            key_file.display(),
            cert_file.display()
        ));
    }
    Ok((chain, key))
}

fn load_ca(path: &Path) -> Result<(), String> {
    let certs = X509::stack_from_pem(&read(path)?)
        .map_err(|e| format!("{} is not a PEM CA bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(())
}
