//! One ACME order for a listener's domains: the account (stored, else created and
//! stored), an HTTP-01 answer published per authorization, finalize with a fresh key,
//! and the issued full chain.

use super::challenge::Challenges;
use super::error::AcmeError;
use super::storage::Storage;
use crate::config::AcmeConfig;
use instant_acme::{
    Account, AccountBuilder, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use std::time::Duration;

/// How long the CA may take to validate the challenges, then to issue.
const POLL: RetryPolicy = RetryPolicy::new().timeout(Duration::from_secs(120));

pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Runs a whole order; the error says which step failed and the CA's problem detail.
pub async fn obtain(
    cfg: &AcmeConfig,
    storage: &Storage,
    challenges: &Challenges,
) -> Result<Issued, AcmeError> {
    let identifiers: Vec<Identifier> = cfg
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let new_order = NewOrder::new(&identifiers);
    let mut order = match account(cfg, storage).await?.new_order(&new_order).await {
        Ok(order) => order,
        // A CA that was reset (a private one, a test one) forgets accounts.
        Err(e) if unknown_account(&e) => {
            log::warn!(
                "ACME: {} no longer knows the stored account; creating a new one",
                cfg.directory
            );
            storage.forget_account();
            account(cfg, storage)
                .await?
                .new_order(&new_order)
                .await
                .map_err(AcmeError::ca("new order"))?
        }
        Err(e) => return Err(AcmeError::ca("new order")(e)),
    };
    let mut published = Published(challenges, Vec::new());
    let mut authorizations = order.authorizations();
    while let Some(next) = authorizations.next().await {
        let mut authz = next.map_err(AcmeError::ca("authorization"))?;
        let domain = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(AcmeError::Authorization {
                    domain,
                    status: format!("{other:?}"),
                })
            }
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| AcmeError::NoHttp01(domain.clone()))?;
        challenges.publish(&challenge.token, challenge.key_authorization().as_str());
        published.1.push(challenge.token.clone());
        challenge
            .set_ready()
            .await
            .map_err(AcmeError::ca(format!("challenge for {domain}")))?;
    }
    let status = order
        .poll_ready(&POLL)
        .await
        .map_err(AcmeError::ca("waiting for validation"))?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::OrderFailed {
            status: format!("{status:?}"),
            reason: invalid_reason(&mut order).await,
        });
    }
    let key_pem = order.finalize().await.map_err(AcmeError::ca("finalize"))?;
    let chain_pem = order
        .poll_certificate(&POLL)
        .await
        .map_err(AcmeError::ca("downloading the certificate"))?;
    Ok(Issued { chain_pem, key_pem })
}

/// The HTTP client for the CA: the system trust store (`$SSL_CERT_FILE` honoured), or
/// every certificate of `ca_file`.
fn account_builder(cfg: &AcmeConfig) -> Result<AccountBuilder, AcmeError> {
    let Some(ca) = &cfg.ca_file else {
        return Account::builder()
            .map_err(AcmeError::ca(format!("HTTP client for {}", cfg.directory)));
    };
    let fail = |e: &dyn std::fmt::Display| AcmeError::CaFile {
        path: ca.clone(),
        message: e.to_string(),
    };
    let pem = std::fs::read(ca).map_err(|e| fail(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in openssl::x509::X509::stack_from_pem(&pem).map_err(|e| fail(&e))? {
        let der = cert.to_der().map_err(|e| fail(&e))?;
        roots.add(der.into()).map_err(|e| fail(&e))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    Ok(Account::builder_with_http(Box::new(client)))
}

async fn account(cfg: &AcmeConfig, storage: &Storage) -> Result<Account, AcmeError> {
    let builder = || account_builder(cfg);
    if let Some(credentials) = storage.account(&cfg.directory) {
        return builder()?
            .from_credentials(credentials)
            .await
            .map_err(AcmeError::ca(format!(
                "stored account at {}",
                cfg.directory
            )));
    }
    let contact = cfg.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            None,
        )
        .await
        .map_err(AcmeError::ca(format!(
            "creating an account at {}",
            cfg.directory
        )))?;
    storage.save_account(&cfg.directory, credentials)?;
    log::info!(
        "ACME: created an account at {} (contact: {})",
        cfg.directory,
        cfg.email.as_deref().unwrap_or("none")
    );
    Ok(account)
}

fn unknown_account(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p)
        if p.r#type.as_deref().is_some_and(|t| t.ends_with(":accountDoesNotExist")))
}

/// The CA's explanation of a failed order: the order's problem, else its challenges'.
async fn invalid_reason(order: &mut instant_acme::Order) -> String {
    if let Some(p) = &order.state().error {
        return p.to_string();
    }
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                reasons.push(format!("{}: {p}", authz.identifier()));
            }
        }
    }
    if reasons.is_empty() {
        "no reason given".into()
    } else {
        reasons.join("; ")
    }
}

/// Withdraws the published HTTP-01 answers when the order ends, however it ends.
struct Published<'a>(&'a Challenges, Vec<String>);

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for token in &self.1 {
            self.0.withdraw(token);
        }
    }
}
