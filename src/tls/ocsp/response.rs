//! Checking an OCSP responder's answer: status, signature (issuer or delegated
//! responder), the certificate it covers, currency; and the times in it.

use super::SKEW_SECS;
use openssl::error::ErrorStack;
use openssl::ocsp::{OcspCertId, OcspCertStatus, OcspFlag, OcspResponse, OcspResponseStatus};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::X509;

/// Why an answer cannot be stapled.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("not an OCSP response: {0}")]
    NotOcsp(#[source] ErrorStack),
    #[error("the responder answered with status {0}")]
    Status(&'static str),
    #[error("no basic response: {0}")]
    NoBasic(#[source] ErrorStack),
    #[error("cannot set up the verification: {0}")]
    Store(#[from] ErrorStack),
    #[error("the response's signature does not verify: {0}")]
    Signature(#[source] ErrorStack),
    #[error("the response does not cover this certificate")]
    NotCovered,
    #[error("the response is not current: {0}")]
    NotCurrent(#[source] ErrorStack),
    #[error("the responder does not know the certificate (status unknown)")]
    Unknown,
    #[error("unreadable {0}")]
    Unreadable(&'static str),
}

pub struct Checked {
    pub revoked: bool,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

/// Accepts a response only if it is successful, signed by the issuer (or by a responder
/// certificate the issuer delegated OCSP signing to), answers for this certificate with
/// `good` or `revoked`, and is current.
pub fn verify(der: &[u8], id: &OcspCertId, issuer: &X509) -> Result<Checked, Rejected> {
    let response = OcspResponse::from_der(der).map_err(Rejected::NotOcsp)?;
    if response.status() != OcspResponseStatus::SUCCESSFUL {
        return Err(Rejected::Status(response_status_name(response.status())));
    }
    let basic = response.basic().map_err(Rejected::NoBasic)?;
    let mut certs = Stack::new()?;
    certs.push(issuer.clone())?;
    let mut store = X509StoreBuilder::new()?;
    store.add_cert(issuer.clone())?;
    // The issuer is usually an intermediate: it is the anchor, not its root.
    store.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
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
        .map_err(Rejected::Signature)?;
    let status = basic.find_status(id).ok_or(Rejected::NotCovered)?;
    status
        .check_validity(SKEW_SECS, None)
        .map_err(Rejected::NotCurrent)?;
    let revoked = match status.status {
        OcspCertStatus::GOOD => false,
        OcspCertStatus::REVOKED => true,
        _ => return Err(Rejected::Unknown),
    };
    let this_update = generalized_unix(&status.this_update.to_string())
        .ok_or(Rejected::Unreadable("thisUpdate"))?;
    let next_update = match status.next_update() {
        Some(t) => {
            Some(generalized_unix(&t.to_string()).ok_or(Rejected::Unreadable("nextUpdate"))?)
        }
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
}
