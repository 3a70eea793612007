//! Bearer JWTs for the admin API (`admin.jwt`, SPEC §14): the JSON Web Key Set from a
//! file (re-read when it changes) or a URL (fetched again every 10 minutes, and early
//! when a token names a key it does not hold), and the checks a token must pass:
//! RS256 or ES256 signature, issuer, audience, expiry. The role comes from `role_claim`.

use super::roles::Role;
use crate::config::{JwksSource, JwtConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often a JWKS URL is fetched again.
pub const REFRESH: Duration = Duration::from_secs(600);
/// A failed fetch tries again after this long.
const RETRY: Duration = Duration::from_secs(30);
/// A token naming an unknown `kid` fetches the set again, at most this often.
const KID_REFETCH: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("cannot read the JWKS file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot fetch the JWKS from {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("the JWKS is not a JSON Web Key Set: {0}")]
    NotJwks(serde_json::Error),
    #[error("the token's algorithm {0:?} is not RS256 or ES256")]
    Algorithm(Algorithm),
    #[error("no key in the JWKS matches the token's kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("the token is invalid: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// A verified token's subject and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub sub: String,
    pub role: Role,
}

struct Loaded {
    source: JwksSource,
    set: Arc<JwkSet>,
    /// A file's modification time and length when read: a change reloads it.
    stamp: Option<(SystemTime, u64)>,
    /// The last attempt to fetch a URL's set, and when the next one is due.
    fetched_at: Instant,
    next_fetch: Instant,
}

/// The key set of the running `admin.jwt`, loaded on first use and kept fresh.
#[derive(Default)]
pub struct JwtKeys {
    loaded: tokio::sync::Mutex<Option<Loaded>>,
}

impl JwtKeys {
    /// Checks `token` against `cfg`: a known key's signature, issuer, audience, expiry.
    pub async fn verify(&self, cfg: &JwtConfig, token: &str) -> Result<Verified, JwtError> {
        let header = jsonwebtoken::decode_header(token)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(JwtError::Algorithm(header.alg));
        }
        let kid = header.kid.as_deref();
        let mut set = self.key_set(&cfg.jwks, false).await?;
        if find_key(&set, kid).is_none() {
            // Keys rotate: a token signed by a key we have not seen asks for a refetch.
            set = self.key_set(&cfg.jwks, true).await?;
        }
        let jwk = find_key(&set, kid).ok_or_else(|| JwtError::UnknownKey(header.kid.clone()))?;
        let key = DecodingKey::from_jwk(jwk)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_audience(&[&cfg.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)?.claims;
        Ok(Verified {
            sub: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            role: role_of(claims.get(&cfg.role_claim)),
        })
    }

    /// The current key set for `source`; `refetch` asks for a new copy of a URL's set
    /// (at most once per `RETRY`).
    async fn key_set(&self, source: &JwksSource, refetch: bool) -> Result<Arc<JwkSet>, JwtError> {
        let mut loaded = self.loaded.lock().await;
        let now = Instant::now();
        if let Some(l) = loaded.as_mut().filter(|l| &l.source == source) {
            let stale = match source {
                JwksSource::File(path) => file_stamp(path) != l.stamp,
                JwksSource::Url(_) => {
                    now >= l.next_fetch || (refetch && now >= l.fetched_at + KID_REFETCH)
                }
            };
            if !stale {
                return Ok(l.set.clone());
            }
            l.fetched_at = now;
            match load(source).await {
                Ok((set, stamp)) => {
                    l.set = Arc::new(set);
                    l.stamp = stamp;
                    l.next_fetch = now + REFRESH;
                }
                // The last good set keeps serving while the source is unreachable.
                Err(e) => {
                    log::warn!("admin.jwt: {e}; keeping the last key set");
                    l.next_fetch = now + RETRY;
                }
            }
            return Ok(l.set.clone());
        }
        let (set, stamp) = load(source).await?;
        let set = Arc::new(set);
        *loaded = Some(Loaded {
            source: source.clone(),
            set: set.clone(),
            stamp,
            fetched_at: now,
            next_fetch: now + REFRESH,
        });
        Ok(set)
    }
}

/// "admin" is the only role that may change things; anything else reads.
fn role_of(claim: Option<&Value>) -> Role {
    match claim.and_then(Value::as_str) {
        Some("admin") => Role::Admin,
        _ => Role::ReadOnly,
    }
}

/// The key a token names by `kid`, or the only key of a set when it names none.
fn find_key<'a>(set: &'a JwkSet, kid: Option<&str>) -> Option<&'a jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
}

fn file_stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

async fn load(source: &JwksSource) -> Result<(JwkSet, Option<(SystemTime, u64)>), JwtError> {
    match source {
        JwksSource::File(path) => {
            let stamp = file_stamp(path);
            let text = tokio::fs::read(path).await.map_err(|e| JwtError::File {
                path: path.clone(),
                source: e,
            })?;
            Ok((parse_jwks(&text)?, stamp))
        }
        JwksSource::Url(url) => Ok((parse_jwks(&fetch(url).await?)?, None)),
    }
}

pub fn parse_jwks(bytes: &[u8]) -> Result<JwkSet, JwtError> {
    serde_json::from_slice(bytes).map_err(JwtError::NotJwks)
}

/// GET `url` (http or https, the system trust store) with a timeout and a size cap.
async fn fetch(url: &str) -> Result<Vec<u8>, JwtError> {
    let fail = |message: String| JwtError::Fetch {
        url: url.to_string(),
        message,
    };
    let uri: http::Uri = url.parse().map_err(|e| fail(format!("{e}")))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| fail(format!("trust store: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(https);
    let exchange = async {
        let response = client.get(uri).await.map_err(|e| fail(format!("{e}")))?;
        if !response.status().is_success() {
            return Err(fail(format!("status {}", response.status())));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| fail(format!("{e}")))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {FETCH_TIMEOUT:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_role_claim_decides_and_defaults_to_read_only() {
        assert_eq!(role_of(Some(&json!("admin"))), Role::Admin);
        assert_eq!(role_of(Some(&json!("read_only"))), Role::ReadOnly);
        assert_eq!(role_of(Some(&json!("root"))), Role::ReadOnly);
        assert_eq!(role_of(Some(&json!(["admin"]))), Role::ReadOnly);
        assert_eq!(role_of(None), Role::ReadOnly);
    }

    #[test]
    fn a_token_without_kid_needs_a_single_key_set() {
        let one = parse_jwks(br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"a","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#).unwrap();
        assert!(find_key(&one, None).is_some());
        assert!(find_key(&one, Some("a")).is_some());
        assert!(find_key(&one, Some("b")).is_none());
        let none = parse_jwks(br#"{"keys":[]}"#).unwrap();
        assert!(find_key(&none, None).is_none());
        assert!(parse_jwks(b"{}").is_err());
    }
}
