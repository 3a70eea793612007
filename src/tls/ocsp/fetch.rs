//! Asking a responder: its `http://` URL and one POST of the DER request (RFC 6960
//! appendix A) with Pingora's HTTP/1 client.

use super::{FETCH_TIMEOUT, MAX_RESPONSE_BYTES};
use std::time::Duration;

/// Why the responder gave no usable body.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{0} has no address")]
    NoAddress(String),
    #[error("cannot connect: {0}")]
    Connect(#[source] pingora::BError),
    #[error("{0}")]
    Exchange(#[from] pingora::BError),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response over {0} bytes")]
    TooLarge(usize),
}

/// An `http://host[:port][/path]` responder URL (OCSP responders are plain HTTP: the
/// response is signed, so transport security adds nothing).
pub struct Url {
    pub text: String,
    host: String,
    port: u16,
    path: String,
}

impl Url {
    pub fn parse(text: &str) -> Option<Url> {
        let u = url::Url::parse(text).ok()?;
        if u.scheme() != "http" {
            return None;
        }
        let host = match u.host()? {
            url::Host::Ipv6(v6) => v6.to_string(),
            other => other.to_string(),
        };
        let path = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        };
        Some(Url {
            text: text.to_string(),
            host,
            port: u.port_or_known_default()?,
            path,
        })
    }
}

/// POSTs the DER request (RFC 6960 appendix A) with Pingora's HTTP/1 client; the body
/// of a 200 answer.
pub async fn post(url: &Url, body: &[u8]) -> Result<Vec<u8>, FetchError> {
    use pingora::http::RequestHeader;
    use pingora::upstreams::peer::HttpPeer;
    let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|source| FetchError::Resolve {
            host: url.host.clone(),
            source,
        })?
        .next()
        .ok_or_else(|| FetchError::NoAddress(url.host.clone()))?;
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(5));
    peer.options.read_timeout = Some(FETCH_TIMEOUT);
    peer.options.write_timeout = Some(FETCH_TIMEOUT);
    let connector = pingora::connectors::http::v1::Connector::new(None);
    let (mut session, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(FetchError::Connect)?;
    let mut req = RequestHeader::build("POST", url.path.as_bytes(), None)?;
    let host = if url.port == 80 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    req.insert_header("Host", host)?;
    req.insert_header("Content-Type", "application/ocsp-request")?;
    req.insert_header("Content-Length", body.len().to_string())?;
    req.insert_header("Connection", "close")?;
    session.write_request_header(Box::new(req)).await?;
    session.write_body(body).await?;
    session.finish_body().await?;
    session.read_response().await?;
    let status = session.get_status().map_or(0, |s| s.as_u16());
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    let mut out = Vec::new();
    while let Some(chunk) = session.read_body_bytes().await? {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_RESPONSE_BYTES {
            return Err(FetchError::TooLarge(MAX_RESPONSE_BYTES));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
