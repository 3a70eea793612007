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

use crate::tls::store::{CertStore, Certified};
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus,
};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
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
async fn refresh(t: &Target, slot: &OcspSlot) -> Result<Duration, String> {
    let id = || {
        OcspCertId::from_cert(MessageDigest::sha1(), &t.leaf, &t.issuer)
            .map_err(|e| format!("cannot build the certificate id: {e}"))
    };
    let mut request = OcspRequest::new().map_err(|e| e.to_string())?;
    request.add_id(id()?).map_err(|e| e.to_string())?;
    let body = request.to_der().map_err(|e| e.to_string())?;
    let der = tokio::time::timeout(FETCH_TIMEOUT, post(&t.url, &body))
        .await
        .map_err(|_| format!("no response within {} s", FETCH_TIMEOUT.as_secs()))??;
    let checked = verify(&der, &id()?, &t.issuer)?;
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

struct Checked {
    revoked: bool,
    this_update: i64,
    next_update: Option<i64>,
}

/// Accepts a response only if it is successful, signed by the issuer (or by a responder
/// certificate the issuer delegated OCSP signing to), answers for this certificate with
/// `good` or `revoked`, and is current.
fn verify(der: &[u8], id: &OcspCertId, issuer: &X509) -> Result<Checked, String> {
    let response = OcspResponse::from_der(der).map_err(|e| format!("not an OCSP response: {e}"))?;
    if response.status() != OcspResponseStatus::SUCCESSFUL {
        return Err(format!(
            "the responder answered with status {}",
            response_status_name(response.status())
        ));
    }
    let basic = response
        .basic()
        .map_err(|e| format!("no basic response: {e}"))?;
    let e = |e: openssl::error::ErrorStack| e.to_string();
    let mut certs = Stack::new().map_err(e)?;
    certs.push(issuer.clone()).map_err(e)?;
    let mut store = X509StoreBuilder::new().map_err(e)?;
    store.add_cert(issuer.clone()).map_err(e)?;
    // The issuer is usually an intermediate: it is the anchor, not its root.
    store.set_flags(X509VerifyFlags::PARTIAL_CHAIN).map_err(e)?;
    let store = store.build();
    // TRUST_OTHER: a response signed by the issuer itself verifies with its key alone.
    // NO_EXPLICIT: a signer that is neither the issuer nor delegated by it (OCSP-signing
    // purpose) fails, with no fallback to "explicit trust" settings of the issuer
    // (OpenSSL 3 already refuses such a signer here; this keeps it so).
    basic
        .verify(
            &certs,
            &store,
            OcspFlag::TRUST_OTHER | OcspFlag::NO_EXPLICIT,
        )
        .map_err(|e| format!("the response's signature does not verify: {e}"))?;
    let status = basic
        .find_status(id)
        .ok_or("the response does not cover this certificate")?;
    status
        .check_validity(SKEW_SECS, None)
        .map_err(|e| format!("the response is not current: {e}"))?;
    let revoked = match status.status {
        OcspCertStatus::GOOD => false,
        OcspCertStatus::REVOKED => true,
        _ => return Err("the responder does not know the certificate (status unknown)".into()),
    };
    let this_update =
        generalized_unix(&status.this_update.to_string()).ok_or("unreadable thisUpdate")?;
    let next_update = match status.next_update() {
        Some(t) => Some(generalized_unix(&t.to_string()).ok_or("unreadable nextUpdate")?),
        None => None,
    };
    Ok(Checked {
        revoked,
        this_update,
        next_update,
    })
}

fn response_status_name(s: OcspResponseStatus) -> &'static str {
    match s {
        OcspResponseStatus::MALFORMED_REQUEST => "malformedRequest",
        OcspResponseStatus::INTERNAL_ERROR => "internalError",
        OcspResponseStatus::TRY_LATER => "tryLater",
        OcspResponseStatus::SIG_REQUIRED => "sigRequired",
        OcspResponseStatus::UNAUTHORIZED => "unauthorized",
        _ => "unknown",
    }
}

/// Unix seconds of an ASN.1 GeneralizedTime as OpenSSL prints it
/// (`Dec  2 01:53:09 2026 GMT`, seconds perhaps with a fraction): the openssl crate
/// turns only `Asn1Time`s (not GeneralizedTimes) into numbers.
fn generalized_unix(printed: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = printed.split_whitespace();
    let name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == name)? + 1;
    let day: u32 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    let year: u32 = parts.next()?.parse().ok()?;
    let mut hms = time.split('.').next()?.split(':');
    let (h, m, s): (u32, u32, u32) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(
        days_from_civil(i64::from(year), month as i64, i64::from(day)) * 86_400
            + i64::from(h * 3600 + m * 60 + s),
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An `http://host[:port][/path]` responder URL (OCSP responders are plain HTTP: the
/// response is signed, so transport security adds nothing).
struct Url {
    text: String,
    host: String,
    port: u16,
    path: String,
}

impl Url {
    fn parse(text: &str) -> Option<Url> {
        let rest = text.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // `[v6]` or `[v6]:port`, else `host` or `host:port`.
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                match after.strip_prefix(':') {
                    Some(p) => (host, p.parse().ok()?),
                    None if after.is_empty() => (host, 80),
                    None => return None,
                }
            }
            None => match authority.split_once(':') {
                Some((h, p)) => (h, p.parse().ok()?),
                None => (authority, 80),
            },
        };
        if host.is_empty() {
            return None;
        }
        Some(Url {
            text: text.to_string(),
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// POSTs the DER request (RFC 6960 appendix A) with Pingora's HTTP/1 client; the body
/// of a 200 answer.
async fn post(url: &Url, body: &[u8]) -> Result<Vec<u8>, String> {
    use pingora::http::RequestHeader;
    use pingora::upstreams::peer::HttpPeer;
    let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", url.host))?;
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(5));
    peer.options.read_timeout = Some(FETCH_TIMEOUT);
    peer.options.write_timeout = Some(FETCH_TIMEOUT);
    let connector = pingora::connectors::http::v1::Connector::new(None);
    let (mut session, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let e = |e: pingora::BError| e.to_string();
    let mut req = RequestHeader::build("POST", url.path.as_bytes(), None).map_err(e)?;
    let host = if url.port == 80 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    req.insert_header("Host", host).map_err(e)?;
    req.insert_header("Content-Type", "application/ocsp-request")
        .map_err(e)?;
    req.insert_header("Content-Length", body.len().to_string())
        .map_err(e)?;
    req.insert_header("Connection", "close").map_err(e)?;
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(e)?;
    session.write_body(body).await.map_err(e)?;
    session.finish_body().await.map_err(e)?;
    session.read_response().await.map_err(e)?;
    let status = session.get_status().map_or(0, |s| s.as_u16());
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    let mut out = Vec::new();
    while let Some(chunk) = session.read_body_bytes().await.map_err(e)? {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_RESPONSE_BYTES {
            return Err(format!("response over {MAX_RESPONSE_BYTES} bytes"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_times_as_openssl_prints_them() {
        assert_eq!(generalized_unix("Jan  1 00:00:00 1970 GMT"), Some(0));
        assert_eq!(
            generalized_unix("Dec  2 01:53:09 2026 GMT"),
            Some(1_796_176_389)
        );
        assert_eq!(
            generalized_unix("Dec  2 01:53:09.25 2026 GMT"),
            Some(1_796_176_389)
        );
        assert_eq!(
            generalized_unix("Feb 29 12:00:00 2028 GMT"),
            Some(1_835_438_400)
        );
        assert_eq!(generalized_unix("garbage"), None);
    }

    #[test]
    fn responder_urls() {
        let u = Url::parse("http://127.0.0.1:8888").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8888, "/")
        );
        let u = Url::parse("http://ocsp.example.com/a/b").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("ocsp.example.com", 80, "/a/b")
        );
        let u = Url::parse("http://[::1]:81/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
        let u = Url::parse("http://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert!(Url::parse("https://ocsp.example.com/").is_none());
        assert!(Url::parse("http://:80/").is_none());
    }
}
