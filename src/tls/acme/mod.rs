//! Automatic certificates (SPEC §3 `listeners.tls.acme`, §9): per ACME listener, a
//! Pingora background service that orders a certificate for its domains over HTTP-01,
//! stores it, installs it in the listener's SNI store without a restart, and renews it
//! 30 days before expiry, retrying with backoff while the current certificate (or the
//! placeholder) keeps serving.

mod challenge;
mod error;
mod order;
mod storage;

use crate::config::AcmeConfig;
use crate::tls::store::{unix_time, CertStore, Certified};
use async_trait::async_trait;
pub use challenge::Challenges;
pub use error::AcmeError;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Renewal starts this long before the certificate expires (SPEC §9).
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// The first retry after a failed order; doubled per failure up to `MAX_RETRY`. Public
/// CAs limit failed validations (Let's Encrypt: 5 per hour per name), which this
/// schedule stays under: 1, 2, 4, 8, 16 min, then 32 and 60.
const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// Long sleeps are cut into these, so a wall-clock jump is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(12 * 3600);
/// A whole order (account, validation, issuance) gives up after this.
const ORDER_TIMEOUT: Duration = Duration::from_secs(600);

pub struct AcmeService {
    listener: String,
    config: AcmeConfig,
    storage: storage::Storage,
    store: Arc<CertStore>,
    /// When the stored certificate installed at startup is due for renewal (Unix s).
    stored_due: Option<i64>,
    /// Where the orders publish their HTTP-01 answers.
    challenges: Arc<Challenges>,
}

impl AcmeService {
    /// Readies the listener before it serves: its stored certificate when that covers
    /// the domains (no order needed until renewal), else its certificate files, else a
    /// self-signed placeholder.
    pub fn prepare(
        listener: &str,
        config: &AcmeConfig,
        store: &Arc<CertStore>,
        challenges: Arc<Challenges>,
    ) -> Result<AcmeService, AcmeError> {
        let storage = storage::Storage::new(&config.storage, &config.domains);
        let domains = config.domains.join(", ");
        let mut stored_due = None;
        match storage.certificate(&config.domains) {
            Ok(Some(cert)) => {
                log::info!(
                    "listener {listener}: serving the stored ACME certificate for {domains} ({})",
                    storage.cert_path().display()
                );
                stored_due = Some(renewal_due(&cert));
                store.set_acme(cert);
            }
            Ok(None) => {}
            Err(e) => log::warn!("listener {listener}: ignoring the stored ACME certificate: {e}"),
        }
        if stored_due.is_none() {
            if store.current().list.is_empty() {
                store.set_acme(storage::placeholder(&config.domains)?);
                log::warn!(
                    "listener {listener}: no certificate for {domains} yet; serving a self-signed placeholder until {} issues one",
                    config.directory
                );
            } else {
                log::info!(
                    "listener {listener}: serving its certificate files until {} issues one for {domains}",
                    config.directory
                );
            }
        }
        Ok(AcmeService {
            listener: listener.to_string(),
            config: config.clone(),
            storage,
            store: store.clone(),
            stored_due,
            challenges,
        })
    }

    /// Serves and stores an issued certificate; returns when it is due for renewal.
    fn install(&self, issued: order::Issued) -> Result<i64, AcmeError> {
        let cert = storage::parse(&issued.chain_pem, &issued.key_pem)?;
        let expiry = cert.not_after;
        let due = next_renewal(&cert);
        self.store.set_acme(cert);
        crate::tls::publish_expiry(&self.listener, &self.store);
        log::info!(
            "listener {}: installed a new ACME certificate for {} (expires at Unix time {expiry})",
            self.listener,
            self.config.domains.join(", ")
        );
        if let Err(e) = self
            .storage
            .save_certificate(&issued.chain_pem, &issued.key_pem)
        {
            log::error!(
                "listener {}: the new certificate serves but could not be stored ({e}); a restart orders again",
                self.listener
            );
        }
        Ok(due)
    }
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut due = self.stored_due;
        let mut failures = 0u32;
        loop {
            let delay = if failures > 0 {
                retry_delay(failures)
            } else {
                until(due, now())
            };
            if !delay.is_zero() {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(delay.min(MAX_SLEEP)) => {}
                }
                if failures == 0 && !until(due, now()).is_zero() {
                    continue;
                }
            }
            let ordered = tokio::select! {
                _ = shutdown.changed() => return,
                r = tokio::time::timeout(ORDER_TIMEOUT, order::obtain(&self.config, &self.storage, &self.challenges)) => r,
            };
            let installed = ordered
                .map_err(|_| AcmeError::Timeout(ORDER_TIMEOUT))
                .and_then(|r| r)
                .and_then(|issued| self.install(issued));
            match installed {
                Ok(next) => {
                    due = Some(next);
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let serving = if due.is_some() {
                        "the current certificate keeps serving"
                    } else {
                        "the listener keeps serving what it has"
                    };
                    log::error!(
                        "listener {}: ACME order for {} at {} failed: {e}; {serving}; next attempt in {:?}",
                        self.listener,
                        self.config.domains.join(", "),
                        self.config.directory,
                        retry_delay(failures)
                    );
                }
            }
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When `cert` is due for renewal (Unix seconds): 30 days before it expires.
fn renewal_due(cert: &Certified) -> i64 {
    cert.not_after - RENEW_BEFORE.as_secs() as i64
}

/// When a certificate just issued is due: as `renewal_due`, but not before two thirds
/// of its lifetime. A CA issuing certificates shorter than the window (a private CA's
/// daily ones) would otherwise be asked again at once, in a loop; asking sooner would
/// not get a longer one.
fn next_renewal(cert: &Certified) -> i64 {
    let not_before = cert
        .chain
        .first()
        .map_or(cert.not_after, |leaf| unix_time(leaf.not_before()));
    let lifetime = (cert.not_after - not_before).max(0);
    renewal_due(cert).max(not_before + lifetime * 2 / 3)
}

/// Time until `due`: zero without a certificate or once due.
fn until(due: Option<i64>, now: i64) -> Duration {
    due.map_or(Duration::ZERO, |due| {
        Duration::from_secs(due.saturating_sub(now).max(0) as u64)
    })
}

fn retry_delay(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate valid from `from_days` to `to_days` (relative to now).
    fn valid(from_days: i64, to_days: i64) -> Certified {
        let mut c =
            storage::placeholder(&["a.example.test".to_string()]).unwrap_or_else(|e| panic!("{e}"));
        let day = 86_400;
        let at = |d: i64| {
            openssl::asn1::Asn1Time::from_unix(now() + d * day).unwrap_or_else(|e| panic!("{e}"))
        };
        let mut b = openssl::x509::X509::builder().unwrap_or_else(|e| panic!("{e}"));
        let _ = b.set_not_before(&at(from_days));
        let _ = b.set_not_after(&at(to_days));
        let _ = b.set_pubkey(&c.key);
        let _ = b.sign(&c.key, openssl::hash::MessageDigest::sha256());
        let leaf = b.build();
        c.not_after = unix_time(leaf.not_after());
        c.chain = vec![leaf];
        c
    }

    #[test]
    fn renewal_is_due_thirty_days_before_expiry() {
        let day = 86_400;
        // A 90-day certificate: 30 days before it expires.
        let c = valid(-10, 80);
        assert_eq!(renewal_due(&c), c.not_after - 30 * day);
        let wait = until(Some(renewal_due(&c)), now()).as_secs() as i64;
        assert!((49 * day..=50 * day).contains(&wait), "{wait}");
        assert_eq!(until(None, now()), Duration::ZERO);
        assert_eq!(until(Some(now() - 5), now()), Duration::ZERO);
    }

    #[test]
    fn short_certificates_just_issued_renew_after_two_thirds_of_their_life() {
        // A one-day certificate from a private CA: after 16 hours, not at once.
        let c = valid(0, 1);
        assert_eq!(next_renewal(&c), c.not_after - 86_400 / 3);
        assert!(!until(Some(next_renewal(&c)), now()).is_zero());
        // The same certificate found in storage is inside the 30-day window: due now.
        assert!(until(Some(renewal_due(&c)), now()).is_zero());
        // A 90-day certificate: both rules agree.
        let c = valid(0, 90);
        assert_eq!(next_renewal(&c), renewal_due(&c));
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(1), Duration::from_secs(60));
        assert_eq!(retry_delay(2), Duration::from_secs(120));
        assert_eq!(retry_delay(4), Duration::from_secs(480));
        assert_eq!(retry_delay(12), MAX_RETRY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }
}
