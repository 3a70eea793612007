//! What can go wrong in an ACME order or with what it stores, as one error type whose
//! text says which step failed and why (the CA's problem detail, the cause chain).

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// A request to the CA failed at `step`; the text carries the whole cause chain,
    /// since the top line alone rarely says what to fix.
    #[error("{step}: {}", chain(.source))]
    Ca {
        step: String,
        #[source]
        source: instant_acme::Error,
    },
    #[error("authorization for {domain} is {status}")]
    Authorization { domain: String, status: String },
    #[error("the CA offers no http-01 challenge for {0}")]
    NoHttp01(String),
    #[error("the order became {status}: {reason}")]
    OrderFailed { status: String, reason: String },
    #[error("no certificate within {0:?}")]
    Timeout(Duration),
    #[error("acme.ca_file {}: {message}", .path.display())]
    CaFile { path: PathBuf, message: String },
    #[error("cannot create {}: {source}", .path.display())]
    StorageDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the account: {0}")]
    Encode(#[from] serde_json::Error),
    /// A stored or issued certificate that cannot serve (unreadable, not matching its
    /// key, empty).
    #[error("{0}")]
    Certificate(String),
    #[error(transparent)]
    Write(#[from] crate::state::durable::WriteError),
    #[error(transparent)]
    Files(#[from] crate::config::files::CertError),
    #[error("cannot make a placeholder certificate: {0}")]
    Placeholder(#[from] openssl::error::ErrorStack),
}

impl AcmeError {
    /// A failed request to the CA at `step`.
    pub fn ca(step: impl Into<String>) -> impl FnOnce(instant_acme::Error) -> AcmeError {
        let step = step.into();
        move |source| AcmeError::Ca { step, source }
    }
}

/// `e` and its causes, each once (`client error (Connect): invalid peer certificate: …`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_once() {
        let inner = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        assert_eq!(
            chain(&Outer(inner)),
            "outer: invalid peer certificate: UnknownIssuer"
        );
    }
}
