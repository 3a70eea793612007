//! Who is asking and what they may do (SPEC §14): a full token (`admin.tokens`), a
//! read-only token (`admin.read_only_tokens`), or a JWT whose role claim says which;
//! a read-only actor may read (GET, HEAD) and gets 403 for any change.

use super::audit::AuditLog;
use super::auth::{self, Refusal};
use super::jwt::JwtKeys;
use crate::config::AdminConfig;
use http::Method;
use serde_json::{json, Value};
use std::net::IpAddr;

/// The admin listener's state for deciding and recording who did what.
#[derive(Default)]
pub struct Guard {
    pub jwt: JwtKeys,
    pub audit: AuditLog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    ReadOnly,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// No token is asked for (a loopback listener without tokens), or a page outside /api/.
    Open,
    /// `admin.tokens[i]`.
    Token(usize),
    /// `admin.read_only_tokens[i]`.
    ReadOnlyToken(usize),
    Jwt {
        sub: String,
        role: Role,
    },
}

impl Actor {
    pub fn role(&self) -> Role {
        match self {
            Actor::Open | Actor::Token(_) => Role::Admin,
            Actor::ReadOnlyToken(_) => Role::ReadOnly,
            Actor::Jwt { role, .. } => *role,
        }
    }

    /// The audit line's `actor`: the index into `admin.tokens`, `"read_only:I"` for a
    /// read-only token, the JWT's `sub`, or null when no token is asked for.
    pub fn audit_value(&self) -> Value {
        match self {
            Actor::Open => Value::Null,
            Actor::Token(i) => json!(i),
            Actor::ReadOnlyToken(i) => json!(format!("read_only:{i}")),
            Actor::Jwt { sub, .. } => json!(sub),
        }
    }
}

/// `GET /api/v1/whoami`: the dashboard asks what it may offer.
pub fn is_whoami(path: &str) -> bool {
    path.trim_start_matches('/') == "api/v1/whoami"
}

/// The caller's role and audit name.
pub fn whoami(actor: &Actor) -> Value {
    let role = match actor.role() {
        Role::Admin => "admin",
        Role::ReadOnly => "read_only",
    };
    json!({"role": role, "actor": actor.audit_value()})
}

/// Whether `method` only reads.
pub fn reads_only(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The actor of a request to the admin listener, or why it is refused: outside
/// `admin.allow` (403), no valid token on an /api/ path (401), a read-only actor
/// asking for a change (403).
pub async fn authenticate(
    admin: &AdminConfig,
    jwt: &JwtKeys,
    method: &Method,
    path: &str,
    client: Option<IpAddr>,
    authorization: Option<&[u8]>,
) -> Result<Actor, Refusal> {
    if !auth::allowed(admin, client) {
        return Err(Refusal::NotAllowed);
    }
    if !auth::is_api(path) || !admin.asks_for_token() {
        return Ok(Actor::Open);
    }
    let token = authorization
        .and_then(auth::bearer)
        .ok_or(Refusal::NoToken)?;
    let actor = match auth::static_token(admin, token) {
        Some(actor) => actor,
        None => jwt_actor(admin, jwt, token).await?,
    };
    if actor.role() == Role::ReadOnly && !reads_only(method) {
        return Err(Refusal::ReadOnly(actor));
    }
    Ok(actor)
}

async fn jwt_actor(admin: &AdminConfig, keys: &JwtKeys, token: &[u8]) -> Result<Actor, Refusal> {
    let cfg = admin.jwt.as_ref().ok_or(Refusal::NoToken)?;
    let text = std::str::from_utf8(token).map_err(|_| Refusal::NoToken)?;
    match keys.verify(cfg, text).await {
        Ok(v) => Ok(Actor::Jwt {
            sub: v.sub,
            role: v.role,
        }),
        Err(e) => {
            log::info!("admin API: bearer JWT refused: {e}");
            Err(Refusal::NoToken)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(tokens: &[&str], read_only: &[&str]) -> AdminConfig {
        AdminConfig {
            listen: "127.0.0.1:9090".parse().unwrap(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            state_file: "/tmp/unused".into(),
            read_only_tokens: read_only.iter().map(|t| t.to_string()).collect(),
            jwt: None,
            audit_log: None,
        }
    }

    fn check(a: &AdminConfig, method: Method, bearer: &str) -> Result<Actor, Refusal> {
        let header = format!("Bearer {bearer}");
        let keys = JwtKeys::default();
        let ip = Some("127.0.0.1".parse().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(authenticate(
            a,
            &keys,
            &method,
            "/api/v1/pools",
            ip,
            Some(header.as_bytes()),
        ))
    }

    #[test]
    fn read_only_tokens_read_and_are_refused_changes() {
        let a = admin(&["full"], &["ro-1", "ro-2"]);
        assert_eq!(check(&a, Method::GET, "ro-2"), Ok(Actor::ReadOnlyToken(1)));
        assert_eq!(
            check(&a, Method::POST, "ro-1"),
            Err(Refusal::ReadOnly(Actor::ReadOnlyToken(0)))
        );
        assert_eq!(check(&a, Method::DELETE, "full"), Ok(Actor::Token(0)));
        assert_eq!(check(&a, Method::GET, "ro-3"), Err(Refusal::NoToken));
    }

    #[test]
    fn read_only_tokens_alone_still_ask_for_a_token() {
        let a = admin(&[], &["ro"]);
        assert_eq!(check(&a, Method::GET, "x"), Err(Refusal::NoToken));
        assert_eq!(check(&a, Method::GET, "ro"), Ok(Actor::ReadOnlyToken(0)));
        let open = admin(&[], &[]);
        assert_eq!(check(&open, Method::PATCH, "anything"), Ok(Actor::Open));
    }

    #[test]
    fn audit_names_the_actor() {
        assert_eq!(Actor::Token(2).audit_value(), json!(2));
        assert_eq!(Actor::ReadOnlyToken(0).audit_value(), json!("read_only:0"));
        let jwt = Actor::Jwt {
            sub: "alice".into(),
            role: Role::Admin,
        };
        assert_eq!(jwt.audit_value(), json!("alice"));
        assert_eq!(Actor::Open.audit_value(), Value::Null);
    }
}
