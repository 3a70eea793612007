//! OCSP stapling: a background task fetches, verifies and refreshes the OCSP response of
//! every served certificate whose leaf names an OCSP responder (Authority Information
//! Access) and whose chain holds the issuer; the SNI callback staples the stored response
//! to handshakes that ask for it (status_request). Nothing here runs on a handshake but
//! a pointer load and an expiry check: a fetch never delays a client.
//!
//! A verified response is stapled whether it says `good` or `revoked` (as nginx does: it
//! is what the CA says, and a client should learn it); `unknown`, an error status, a bad
//! signature or a stale response is a failed fetch, and the previous response stays
//! stapled until its own `nextUpdate`.

mod fetch;
mod response;

use crate::tls::store::{CertStore, Certified};
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use fetch::Url;
use openssl::hash::MessageDigest;
use openssl::ocsp::{OcspCertId, OcspRequest};
use openssl::x509::X509;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The response stapled for one certificate (`None` until a fetch succeeds).
pub type OcspSlot = ArcSwapOption<Staple>;

/// A verified OCSP response, as DER, with the time it stops being usable.
pub struct Staple {
    pub der: Vec<u8>,
    /// Unix seconds: the response's `nextUpdate` (see `NO_NEXT_UPDATE_VALIDITY`).
    pub expires: i64,
}

/// First retry after a failed fetch, doubled per failure up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// A response is refreshed at half its validity, but never sooner than this after a fetch
/// (a responder handing out very short validity does not get hammered).
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// A response without `nextUpdate` is refreshed hourly and stapled for a day at most.
const NO_NEXT_UPDATE_REFRESH: i64 = 3600;
const NO_NEXT_UPDATE_VALIDITY: i64 = 86_400;
/// A whole fetch (resolve, connect, request, response) is abandoned after this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses are small (a few KiB); anything much larger is not an OCSP response.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Clock skew allowed on `thisUpdate`/`nextUpdate` (as `openssl ocsp` defaults to).
const SKEW_SECS: u32 = 300;

/// The response to staple for `c` now, if there is a fresh one.
pub fn staple_for(c: &Certified) -> Option<Arc<Staple>> {
    let staple = c.ocsp.load_full()?;
    (staple.expires > now_unix()).then_some(staple)
}

/// The background service: one schedule per served certificate with a responder, over
/// every TLS listener's store, following reloads and ACME renewals.
pub struct Stapler {
    pub stores: Vec<(String, Arc<CertStore>)>,
}

/// What one certificate needs fetched, and when.
struct Job {
    slot: Arc<OcspSlot>,
    /// `None`: nothing to fetch (the reason was logged once when the job was made).
    target: Option<Target>,
    next_at: Instant,
    backoff: Duration,
}

struct Target {
    label: String,
    url: Url,
    leaf: X509,
    issuer: X509,
}

#[async_trait]
impl BackgroundService for Stapler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut jobs: HashMap<usize, Job> = HashMap::new();
        loop {
            self.follow(&mut jobs);
            let now = Instant::now();
            for job in jobs.values_mut().filter(|j| j.next_at <= now) {
                let Some(target) = &job.target else { continue };
                let outcome = tokio::select! {
                    _ = shutdown.changed() => return,
                    outcome = refresh(target, &job.slot) => outcome,
                };
                match outcome {
                    Ok(refresh_in) => {
                        job.backoff = MIN_BACKOFF;
                        job.next_at = Instant::now() + refresh_in;
                    }
                    Err(e) => {
                        job.next_at = Instant::now() + job.backoff;
                        let kept = match job.slot.load().as_ref() {
                            Some(s) if s.expires > now_unix() => format!(
                                "the previous response stays stapled for another {} s",
                                s.expires - now_unix()
                            ),
                            _ => {
                                job.slot.store(None);
                                "nothing is stapled".to_string()
                            }
                        };
                        // One line per attempt, and attempts are at least a minute apart.
                        log::warn!(
                            "OCSP: {} from {}: {e}; {kept}; next try in {} s",
                            target.label,
                            target.url.text,
                            job.backoff.as_secs()
                        );
                        job.backoff = (job.backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            // Expired responses leave the slot even while the responder is unreachable
            // (handshakes check the expiry too; this frees the memory).
            for job in jobs.values() {
                if job
                    .slot
                    .load()
                    .as_ref()
                    .is_some_and(|s| s.expires <= now_unix())
                {
                    job.slot.store(None);
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

impl Stapler {
    /// Makes a job for each newly served certificate and drops those no longer served
    /// (a slot is one certificate in one listener; a reload keeps an unchanged leaf's).
    fn follow(&self, jobs: &mut HashMap<usize, Job>) {
        let mut seen = Vec::new();
        for (listener, store) in &self.stores {
            for c in &store.current().list {
                let key = Arc::as_ptr(&c.ocsp) as usize;
                seen.push(key);
                jobs.entry(key).or_insert_with(|| Job {
                    slot: c.ocsp.clone(),
                    target: target(listener, c),
                    next_at: Instant::now(),
                    backoff: MIN_BACKOFF,
                });
            }
        }
        jobs.retain(|key, _| seen.contains(key));
    }
}

/// What to ask and where, for a certificate with a usable responder URL; a certificate
/// without one is simply not stapled (logged at debug level), one with a URL we cannot
/// use is logged once.
fn target(listener: &str, c: &Certified) -> Option<Target> {
    let leaf = c.chain.first()?;
    let label = format!(
        "listener {listener}, certificate {}",
        c.names.first().map_or("(no name)", String::as_str)
    );
    let urls = leaf.ocsp_responders().ok()?;
    let Some(url) = urls.iter().next().map(|u| u.to_string()) else {
        log::debug!("OCSP: {label} names no responder; not stapled");
        return None;
    };
    let Some(issuer) = c.chain.get(1) else {
        log::warn!("OCSP: {label}: the certificate file holds no issuer after the leaf, so its status cannot be asked; not stapled");
        return None;
    };
    let Some(parsed) = Url::parse(&url) else {
        log::warn!("OCSP: {label}: responder {url} is not an http:// URL; not stapled");
        return None;
    };
    log::info!("OCSP: {label}: stapling responses from {url}");
    Some(Target {
        label,
        url: parsed,
        leaf: leaf.clone(),
        issuer: issuer.clone(),
    })
}

/// One fetch: on success the slot holds the new response and the result is when to
/// fetch again.
async fn refresh(t: &Target, slot: &OcspSlot) -> Result<Duration, OcspError> {
    let id = || OcspCertId::from_cert(MessageDigest::sha1(), &t.leaf, &t.issuer);
    let request = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut request = OcspRequest::new()?;
        request.add_id(id()?)?;
        request.to_der()
    };
    let body = request().map_err(OcspError::Request)?;
    let der = tokio::time::timeout(FETCH_TIMEOUT, fetch::post(&t.url, &body))
        .await
        .map_err(|_| OcspError::Timeout(FETCH_TIMEOUT))??;
    let checked = response::verify(&der, &id().map_err(OcspError::Request)?, &t.issuer)?;
    if checked.revoked {
        log::error!(
            "OCSP: {}: the responder {} says the certificate is REVOKED; stapling that answer",
            t.label,
            t.url.text
        );
    }
    let now = now_unix();
    let (expires, refresh_at) = match checked.next_update {
        Some(next) => (next, checked.this_update + (next - checked.this_update) / 2),
        None => (
            checked.this_update + NO_NEXT_UPDATE_VALIDITY,
            now + NO_NEXT_UPDATE_REFRESH,
        ),
    };
    slot.store(Some(Arc::new(Staple { der, expires })));
    let wait = Duration::from_secs(refresh_at.saturating_sub(now).max(0) as u64);
    Ok(wait.max(MIN_REFRESH))
}

/// Why a fetch failed (the previous response, if still valid, stays stapled).
#[derive(Debug, thiserror::Error)]
pub enum OcspError {
    #[error("cannot build the request: {0}")]
    Request(#[source] openssl::error::ErrorStack),
    #[error("no response within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error(transparent)]
    Rejected(#[from] response::Rejected),
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
