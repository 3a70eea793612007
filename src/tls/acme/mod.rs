//! Automatic certificates (SPEC §3 `listeners.tls.acme`, §9): per ACME listener, a
//! Pingora background service that orders a certificate for its domains over HTTP-01,
//! stores it, installs it in the listener's SNI store without a restart, and renews it
//! 30 days before expiry, retrying with backoff while the current certificate (or the
//! placeholder) keeps serving.

pub mod challenge;
mod order;
mod storage;

use crate::config::AcmeConfig;
use crate::tls::store::CertStore;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Renewal starts this long before the certificate expires.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
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
    /// Expiry (Unix seconds) of the stored certificate installed at startup.
    stored_expiry: Option<i64>,
}

impl AcmeService {
    /// Readies the listener before it serves: its stored certificate when that covers
    /// the domains (no order needed until renewal), else its certificate files, else a
    /// self-signed placeholder.
    pub fn prepare(
        listener: &str,
        config: &AcmeConfig,
        store: &Arc<CertStore>,
    ) -> Result<AcmeService, String> {
        let storage = storage::Storage::new(&config.storage, &config.domains);
        let domains = config.domains.join(", ");
        let mut stored_expiry = None;
        match storage.certificate(&config.domains) {
            Ok(Some(cert)) => {
                log::info!(
                    "listener {listener}: serving the stored ACME certificate for {domains} ({})",
                    storage.cert_path().display()
                );
                stored_expiry = Some(cert.not_after);
                store.set_acme(cert);
            }
            Ok(None) => {}
            Err(e) => log::warn!("listener {listener}: ignoring the stored ACME certificate: {e}"),
        }
        if stored_expiry.is_none() {
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
            stored_expiry,
        })
    }

    /// Serves and stores an issued certificate; returns its expiry.
    fn install(&self, issued: order::Issued) -> Result<i64, String> {
        let cert = storage::parse(&issued.chain_pem, &issued.key_pem)?;
        let expiry = cert.not_after;
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
        Ok(expiry)
    }
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut expiry = self.stored_expiry;
        let mut failures = 0u32;
        loop {
            let delay = if failures > 0 {
                retry_delay(failures)
            } else {
                until_due(expiry, now())
            };
            if !delay.is_zero() {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(delay.min(MAX_SLEEP)) => {}
                }
                if failures == 0 && !until_due(expiry, now()).is_zero() {
                    continue;
                }
            }
            let ordered = tokio::select! {
                _ = shutdown.changed() => return,
                r = tokio::time::timeout(ORDER_TIMEOUT, order::obtain(&self.config, &self.storage)) => r,
            };
            let installed = ordered
                .map_err(|_| format!("no certificate within {ORDER_TIMEOUT:?}"))
                .and_then(|r| r)
                .and_then(|issued| self.install(issued));
            match installed {
                Ok(not_after) => {
                    expiry = Some(not_after);
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let serving = if expiry.is_some() {
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

/// Time until renewal is due: zero without a certificate or inside the window.
fn until_due(expiry: Option<i64>, now: i64) -> Duration {
    let Some(expiry) = expiry else {
        return Duration::ZERO;
    };
    let due = expiry - RENEW_BEFORE.as_secs() as i64;
    Duration::from_secs(due.saturating_sub(now).max(0) as u64)
}

fn retry_delay(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_thirty_days_before_expiry() {
        let day = 86_400;
        assert_eq!(until_due(None, 1_000), Duration::ZERO);
        assert_eq!(
            until_due(Some(1_000 + 31 * day), 1_000),
            Duration::from_secs(day as u64)
        );
        assert_eq!(until_due(Some(1_000 + 30 * day), 1_000), Duration::ZERO);
        assert_eq!(until_due(Some(1_000 + 10 * day), 1_000), Duration::ZERO);
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
