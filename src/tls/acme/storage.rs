//! What ACME keeps under `storage`: the account (`account.json`, 0600, reused while the
//! directory URL is unchanged) and the certificate (`<first domain>.crt` full chain,
//! `<first domain>.key` 0600), all written atomically; plus the self-signed placeholder
//! served before the first certificate arrives.

use super::error::AcmeError;
use crate::state::durable;
use crate::tls::store::Certified;
use instant_acme::AccountCredentials;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub struct Storage {
    dir: PathBuf,
    /// The first domain: names the certificate files.
    name: String,
}

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

impl Storage {
    pub fn new(dir: &Path, domains: &[String]) -> Storage {
        Storage {
            dir: dir.to_path_buf(),
            name: domains.first().cloned().unwrap_or_default(),
        }
    }

    /// Creates the directory (0700) when missing. Only the writers call it: they run in
    /// the background service, after `server.user` took over, so the directory belongs
    /// to the user that writes into it.
    fn ensure_dir(&self) -> Result<(), AcmeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| AcmeError::StorageDir {
                path: self.dir.clone(),
                source,
            })
    }

    fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(format!("{}.key", self.name))
    }

    /// The stored account for `directory`, if any (an account belongs to one CA).
    pub fn account(&self, directory: &str) -> Option<AccountCredentials> {
        let text = std::fs::read(self.account_path()).ok()?;
        match serde_json::from_slice::<StoredAccount>(&text) {
            Ok(a) if a.directory == directory => Some(a.credentials),
            Ok(_) => None,
            Err(e) => {
                log::warn!(
                    "ACME: {} is not a stored account ({e}); a new account is created",
                    self.account_path().display()
                );
                None
            }
        }
    }

    /// Drops the stored account (the CA no longer knows it).
    pub fn forget_account(&self) {
        let _ = std::fs::remove_file(self.account_path());
    }

    pub fn save_account(
        &self,
        directory: &str,
        credentials: AccountCredentials,
    ) -> Result<(), AcmeError> {
        let stored = StoredAccount {
            directory: directory.to_string(),
            credentials,
        };
        let text = serde_json::to_vec_pretty(&stored)?;
        self.ensure_dir()?;
        write_atomically(&self.account_path(), &text, 0o600)
    }

    /// The stored certificate when it covers every one of `domains`; `Ok(None)` when
    /// there is none; an error when the files are unreadable or do not match.
    pub fn certificate(&self, domains: &[String]) -> Result<Option<Certified>, AcmeError> {
        let (cert, key) = (self.cert_path(), self.key_path());
        if !cert.exists() {
            return Ok(None);
        }
        let (chain, key) = crate::config::files::load_pair(&cert, &key)?;
        let stored = Certified::new(chain, key).ok_or_else(|| {
            AcmeError::Certificate(format!("{} holds no certificate", cert.display()))
        })?;
        let covers = domains
            .iter()
            .all(|d| stored.names.iter().any(|n| n.eq_ignore_ascii_case(d)));
        Ok(covers.then_some(stored))
    }

    /// Key first, so a crash between the two leaves a key the old chain does not match
    /// (refused at the next start, which orders anew) rather than a silent mismatch.
    pub fn save_certificate(&self, chain_pem: &str, key_pem: &str) -> Result<(), AcmeError> {
        self.ensure_dir()?;
        write_atomically(&self.key_path(), key_pem.as_bytes(), 0o600)?;
        write_atomically(&self.cert_path(), chain_pem.as_bytes(), 0o644)
    }
}

/// Parses an issued chain and its key into a servable certificate.
pub fn parse(chain_pem: &str, key_pem: &str) -> Result<Certified, AcmeError> {
    let (chain, key) = crate::config::files::parse_pair(
        chain_pem.as_bytes(),
        key_pem.as_bytes(),
        "the CA's certificate chain",
        "the certificate key",
    )?;
    Certified::new(chain, key)
        .ok_or_else(|| AcmeError::Certificate("the CA sent an empty chain".to_string()))
}

/// A self-signed certificate for `domains`, valid for 7 days: handshakes work (with a
/// warning in browsers) until the first real certificate is installed.
pub fn placeholder(domains: &[String]) -> Result<Certified, AcmeError> {
    let build = || -> Result<(X509, PKey<openssl::pkey::Private>), openssl::error::ErrorStack> {
        let key = PKey::from_ec_key(EcKey::generate(
            EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?.as_ref(),
        )?)?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, domains.first().map_or("switchyard", |d| d))?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Switchyard ACME placeholder")?;
        let name = name.build();
        let mut serial = BigNum::new()?;
        serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
        let mut b = X509::builder()?;
        b.set_version(2)?;
        b.set_serial_number(serial.to_asn1_integer()?.as_ref())?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        b.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
        b.set_not_after(Asn1Time::days_from_now(7)?.as_ref())?;
        let mut san = SubjectAlternativeName::new();
        for d in domains {
            san.dns(d);
        }
        let san = san.build(&b.x509v3_context(None, None))?;
        b.append_extension(san)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok((b.build(), key))
    };
    let (cert, key) = build()?;
    Certified::new(vec![cert], key)
        .ok_or_else(|| AcmeError::Certificate("empty placeholder chain".to_string()))
}

/// Files are written by `durable`, whose errors name the file.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AcmeError> {
    Ok(durable::write_atomically(path, bytes, mode)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Vec<String> {
        vec!["a.example.test".into(), "b.example.test".into()]
    }

    #[test]
    fn placeholder_names_every_domain() {
        let p = placeholder(&domains()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.names, domains());
        assert!(p.not_after > 0);
    }

    #[test]
    fn stored_certificate_must_cover_the_domains() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let storage = Storage::new(&dir.path().join("acme"), &domains());
        assert!(matches!(storage.certificate(&domains()), Ok(None)));
        let p = placeholder(&domains()).unwrap_or_else(|e| panic!("{e}"));
        let chain = String::from_utf8(p.chain[0].to_pem().unwrap_or_default()).unwrap_or_default();
        let key = String::from_utf8(p.key.private_key_to_pem_pkcs8().unwrap_or_default())
            .unwrap_or_default();
        assert!(storage.save_certificate(&chain, &key).is_ok());
        assert!(matches!(storage.certificate(&domains()), Ok(Some(_))));
        let more = vec!["c.example.test".to_string()];
        assert!(matches!(storage.certificate(&more), Ok(None)));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(storage.key_path()).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
    }
}
