//! One ACME order for a listener's domains: the account (stored, else created and
//! stored), an HTTP-01 answer published per authorization, finalize with a fresh key,
//! and the issued full chain.

use super::challenge;
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
pub async fn obtain(cfg: &AcmeConfig, storage: &Storage) -> Result<Issued, String> {
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
                .map_err(|e| format!("new order: {e}"))?
        }
        Err(e) => return Err(format!("new order: {e}")),
    };
    let mut published = Published(Vec::new());
    let mut authorizations = order.authorizations();
    while let Some(next) = authorizations.next().await {
        let mut authz = next.map_err(|e| format!("authorization: {e}"))?;
        let domain = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("authorization for {domain} is {other:?}")),
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| format!("the CA offers no http-01 challenge for {domain}"))?;
        challenge::publish(&challenge.token, challenge.key_authorization().as_str());
        published.0.push(challenge.token.clone());
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("challenge for {domain}: {e}"))?;
    }
    let status = order
        .poll_ready(&POLL)
        .await
        .map_err(|e| format!("waiting for validation: {e}"))?;
    if status != OrderStatus::Ready {
        return Err(format!(
            "the order became {status:?}: {}",
            invalid_reason(&mut order).await
        ));
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain_pem = order
        .poll_certificate(&POLL)
        .await
        .map_err(|e| format!("downloading the certificate: {e}"))?;
    Ok(Issued { chain_pem, key_pem })
}

async fn account(cfg: &AcmeConfig, storage: &Storage) -> Result<Account, String> {
    let builder = || -> Result<AccountBuilder, String> {
        match &cfg.ca_file {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        }
        .map_err(|e| format!("HTTP client for {}: {e}", cfg.directory))
    };
    if let Some(credentials) = storage.account(&cfg.directory) {
        return builder()?
            .from_credentials(credentials)
            .await
            .map_err(|e| format!("stored account at {}: {e}", cfg.directory));
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
        .map_err(|e| format!("creating an account at {}: {e}", cfg.directory))?;
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
struct Published(Vec<String>);

impl Drop for Published {
    fn drop(&mut self) {
        for token in &self.0 {
            challenge::withdraw(token);
        }
    }
}
