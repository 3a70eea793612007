//! The admin REST API (SPEC §5): request routing (after `auth`), input validation and
//! the JSON shapes.

use super::audit::Change;
use super::auth::{self, Refusal};
use super::roles::{self, Actor, Guard};
use super::view;
use crate::config::value::lookup_backend;
use crate::ops::reload::Reloader;
use crate::pool::overlay::{AddedBackend, PoolOverlay};
use crate::pool::Pool;
use crate::runtime::SharedRuntime;
use crate::state::store::StateStore;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const DASHBOARD: &str = include_str!("dashboard/index.html");
const OPENAPI: &str = include_str!("openapi.json");
/// Request bodies are tiny JSON objects.
pub const MAX_BODY: usize = 64 * 1024;

pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

pub(super) fn json_reply(status: StatusCode, value: Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: serde_json::to_vec(&value).unwrap_or_default(),
    }
}

pub(super) fn error(status: StatusCode, message: &str) -> Reply {
    json_reply(status, json!({ "error": message }))
}

pub(super) fn bad_field(field: &str, message: &str) -> Reply {
    json_reply(
        StatusCode::BAD_REQUEST,
        json!({ "error": message, "field": field }),
    )
}

pub struct Api {
    pub runtime: SharedRuntime,
    pub reloader: Arc<Reloader>,
    pub state: Arc<StateStore>,
    /// False once SIGTERM began the shutdown (/readyz answers 503).
    pub ready: Arc<AtomicBool>,
    /// JWT keys (and the audit log) of the running `admin` section.
    pub guard: Guard,
    /// Each pool's latest rollout (SPEC §13).
    pub rollouts: Arc<super::rollout::Rollouts>,
}

/// One parsed request.
pub struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub client: Option<IpAddr>,
    pub authorization: Option<&'a [u8]>,
    pub body: &'a [u8],
    /// The query string, without `?`.
    pub query: Option<&'a str>,
}

impl Api {
    pub async fn handle(&self, r: &Request<'_>) -> Reply {
        let rt = self.runtime.load_full();
        // A reload that removed the admin section: the listener stays until an upgrade,
        // refusing everything.
        let Some(admin) = rt.config.admin.as_ref() else {
            return error(StatusCode::FORBIDDEN, "client address not in admin.allow");
        };
        let (method, path) = (r.method, r.path);
        let authorization = r.authorization;
        let actor = roles::authenticate(
            admin,
            &self.guard.jwt,
            method,
            path,
            r.client,
            authorization,
        );
        let (actor, reply) = match actor.await {
            Ok(actor) if method == Method::GET && roles::is_whoami(path) => {
                let reply = json_reply(StatusCode::OK, roles::whoami(&actor));
                (actor, reply)
            }
            Ok(actor) => {
                let reply = self.route(r).await;
                (actor, reply)
            }
            // Refused by role: answered 403 and still audited, with who tried.
            Err(Refusal::ReadOnly(actor)) => {
                let reply = refused(&Refusal::ReadOnly(actor.clone()));
                (actor, reply)
            }
            Err(refusal) => return refused(&refusal),
        };
        if let Some(file) = admin.audit_log.as_deref() {
            if auth::is_api(path) && !roles::reads_only(method) {
                self.audit(file, r, &actor, reply.status);
            }
        }
        reply
    }

    /// The audit line of a change (or an attempt refused by role).
    fn audit(&self, file: &std::path::Path, r: &Request<'_>, actor: &Actor, status: StatusCode) {
        let target = match r.query {
            Some(q) => format!("{}?{q}", r.path),
            None => r.path.to_string(),
        };
        let change = Change {
            actor,
            client: r.client,
            method: r.method.as_str(),
            path: &target,
            body: r.body,
            status: status.as_u16(),
        };
        self.guard.audit.record(file, &change);
    }

    async fn route(&self, r: &Request<'_>) -> Reply {
        let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
        match (r.method, segments.as_slice()) {
            (&Method::GET, [""]) => Reply {
                status: StatusCode::OK,
                content_type: "text/html; charset=utf-8",
                body: DASHBOARD.as_bytes().to_vec(),
            },
            (&Method::GET, ["healthz"]) => json_reply(StatusCode::OK, json!({"status": "ok"})),
            (&Method::GET, ["readyz"]) => {
                if self.ready.load(Ordering::Relaxed) {
                    json_reply(StatusCode::OK, json!({"status": "ready"}))
                } else {
                    json_reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"status": "draining"}),
                    )
                }
            }
            (_, ["api", "v1", rest @ ..]) => self.api_v1(r, rest).await,
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    async fn api_v1(&self, r: &Request<'_>, rest: &[&str]) -> Reply {
        let m = r.method;
        match rest {
            ["pools"] if m == Method::GET => {
                let rt = self.runtime.load();
                json_reply(
                    StatusCode::OK,
                    json!({"pools": rt.pools.iter().map(|p| view::pool(p)).collect::<Vec<_>>()}),
                )
            }
            ["pools", name] if m == Method::GET => match self.pool(name) {
                Some(p) => json_reply(StatusCode::OK, view::pool(&p)),
                None => error(StatusCode::NOT_FOUND, "no such pool"),
            },
            ["pools", name, "backends"] if m == Method::POST => {
                self.add_backend(name, r.body).await
            }
            ["pools", name, "backends", address] if m == Method::PATCH => {
                self.patch_backend(name, address, r.body)
            }
            ["pools", name, "backends", address] if m == Method::DELETE => {
                self.delete_backend(name, address)
            }
            ["pools", name, "rollout"] if m == Method::POST => {
                self.start_rollout(name, r.body).await
            }
            ["pools", name, "rollout"] if m == Method::GET => self.rollout_progress(name),
            ["pools", name, "rollout"] if m == Method::DELETE => self.stop_rollout(name),
            ["cache"] if m == Method::DELETE => super::cache_api::purge(r.query),
            ["reload"] if m == Method::POST => match self.reloader.reload() {
                Ok(()) => json_reply(StatusCode::OK, json!({"status": "ok"})),
                Err(errors) => json_reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"errors": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()}),
                ),
            },
            ["stats"] if m == Method::GET => json_reply(
                StatusCode::OK,
                super::stats_view::stats(&self.runtime.load()),
            ),
            ["config"] if m == Method::GET => {
                json_reply(StatusCode::OK, view::config(&self.runtime.load().config))
            }
            ["openapi.json"] if m == Method::GET => Reply {
                status: StatusCode::OK,
                content_type: "application/json",
                body: OPENAPI.as_bytes().to_vec(),
            },
            ["pools"]
            | ["pools", _]
            | ["pools", _, "backends"]
            | ["pools", _, "backends", _]
            | ["pools", _, "rollout"]
            | ["reload"]
            | ["cache"]
            | ["config"]
            | ["stats"]
            | ["openapi.json"] => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    pub(super) fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        let name = percent_decode(name)?;
        self.runtime
            .load()
            .pools
            .iter()
            .find(|p| p.name == name)
            .cloned()
    }

    async fn add_backend(&self, pool_name: &str, body: &[u8]) -> Reply {
        let Some(pool) = self.pool(pool_name) else {
            return error(StatusCode::NOT_FOUND, "no such pool");
        };
        let (address, v) = match add_body(body) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let Ok((address, addr)) = lookup_backend(&address).await else {
            return bad_field("address", "not a resolvable host:port");
        };
        let address = address.as_str();
        let weight = match weight_field(&v) {
            Ok(w) => w.unwrap_or(1),
            Err(reply) => return reply,
        };
        // One backend, one name: another spelling of a member's socket address is the
        // same server, not a second backend.
        let members = pool.members();
        if let Some(b) = members
            .backends
            .iter()
            .find(|b| b.address == address || b.addr == addr)
        {
            if b.address == address {
                return error(StatusCode::CONFLICT, "backend already in the pool");
            }
            let message = format!("same address as backend {} ({addr})", b.address);
            return error(StatusCode::CONFLICT, &message);
        }
        let is_static = pool.is_static(address);
        pool.remember_added(address, addr);
        self.change_overlay(
            &pool,
            |o| {
                o.deleted.remove(address);
                o.draining.remove(address);
                if is_static {
                    o.weights.insert(address.to_string(), weight);
                } else {
                    o.added.retain(|a| a.address != address);
                    o.added.push(AddedBackend {
                        address: address.to_string(),
                        weight,
                    });
                }
            },
            || self.backend_reply(&pool, address, StatusCode::CREATED),
        )
    }

    /// The pool and the decoded address of one of its current backends, else the reply.
    fn pool_backend(
        &self,
        pool_name: &str,
        raw_address: &str,
    ) -> Result<(Arc<Pool>, String), Reply> {
        let Some(pool) = self.pool(pool_name) else {
            return Err(error(StatusCode::NOT_FOUND, "no such pool"));
        };
        let Some(address) = percent_decode(raw_address) else {
            return Err(bad_field("address", "bad percent-encoding"));
        };
        if pool.members().find(&address).is_none() {
            return Err(error(StatusCode::NOT_FOUND, "no such backend in this pool"));
        }
        Ok((pool, address))
    }

    /// Applies `change` to the pool's overlay (persisted, shared, then live); `done`
    /// builds the success reply.
    fn change_overlay(
        &self,
        pool: &Pool,
        change: impl FnOnce(&mut PoolOverlay),
        done: impl FnOnce() -> Reply,
    ) -> Reply {
        match self.state.update(&pool.name, change, |overlay| {
            pool.set_overlay(overlay.clone())
        }) {
            Ok(_) => done(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    fn patch_backend(&self, pool_name: &str, raw_address: &str, body: &[u8]) -> Reply {
        let (pool, address) = match self.pool_backend(pool_name, raw_address) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let (weight, draining) = match patch_body(body) {
            Ok(change) => change,
            Err(reply) => return reply,
        };
        self.change_overlay(
            &pool,
            |o| {
                if let Some(w) = weight {
                    match o.added.iter_mut().find(|a| a.address == address) {
                        Some(added) => added.weight = w,
                        // A static or discovered backend (SPEC §12: weight changes
                        // apply to discovered ones like any other).
                        None => {
                            o.weights.insert(address.clone(), w);
                        }
                    }
                }
                match draining {
                    Some(true) => {
                        o.draining.insert(address.clone());
                    }
                    Some(false) => {
                        o.draining.remove(&address);
                    }
                    None => {}
                }
            },
            || self.backend_reply(&pool, &address, StatusCode::OK),
        )
    }

    fn delete_backend(&self, pool_name: &str, raw_address: &str) -> Reply {
        let (pool, address) = match self.pool_backend(pool_name, raw_address) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let is_static = pool.is_static(&address);
        self.change_overlay(
            &pool,
            |o| {
                o.added.retain(|a| a.address != address);
                o.weights.remove(&address);
                o.draining.remove(&address);
                if is_static {
                    o.deleted.insert(address.clone());
                }
            },
            || Reply {
                status: StatusCode::NO_CONTENT,
                content_type: "application/json",
                body: Vec::new(),
            },
        )
    }

    fn backend_reply(&self, pool: &Pool, address: &str, status: StatusCode) -> Reply {
        let members = pool.members();
        match members.find(address) {
            Some(i) => json_reply(status, view::backend(&members.backends[i])),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "backend vanished"),
        }
    }
}

/// The answer to a refused request.
fn refused(refusal: &Refusal) -> Reply {
    match refusal {
        Refusal::NotAllowed => error(StatusCode::FORBIDDEN, "client address not in admin.allow"),
        Refusal::NoToken => Reply {
            status: StatusCode::UNAUTHORIZED,
            content_type: "application/json",
            body: br#"{"error":"a valid bearer token is required"}"#.to_vec(),
        },
        Refusal::ReadOnly(_) => error(
            StatusCode::FORBIDDEN,
            "read-only access: this token may not change anything",
        ),
    }
}

/// The request body as a JSON object with only `allowed` keys.
pub(super) fn json_body(body: &[u8], allowed: &[&str], example: &str) -> Result<Value, Reply> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return Err(bad_field(
                "body",
                &format!("expected a JSON object like {example}"),
            ))
        }
    };
    let unknown = v
        .as_object()
        .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())));
    match unknown {
        Some(k) => Err(bad_field(k, "unknown field")),
        None => Ok(v),
    }
}

/// The checks of a `POST …/backends` body that need no lookup: a JSON object with only
/// `address` and `weight`, and the `address` text. The weight is checked (`weight_field`)
/// after the address resolves, so a bad address is the error reported first.
pub fn add_body(body: &[u8]) -> Result<(String, Value), Reply> {
    let v = json_body(
        body,
        &["address", "weight"],
        "{\"address\":\"10.0.0.5:8080\",\"weight\":1}",
    )?;
    match v.get("address").and_then(|a| a.as_str()) {
        Some(address) => Ok((address.to_string(), v)),
        None => Err(bad_field("address", "required: \"host:port\"")),
    }
}

/// A `PATCH …/backends/ADDRESS` body: the weight and/or draining state to set.
pub fn patch_body(body: &[u8]) -> Result<(Option<u32>, Option<bool>), Reply> {
    let v = json_body(
        body,
        &["weight", "draining"],
        "{\"weight\":5} or {\"draining\":true}",
    )?;
    let weight = weight_field(&v)?;
    let draining = match v.get("draining") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(bad_field("draining", "must be true or false")),
    };
    if weight.is_none() && draining.is_none() {
        return Err(bad_field(
            "body",
            "nothing to change: give weight and/or draining",
        ));
    }
    Ok((weight, draining))
}

/// An optional `weight` from 1 to 1000.
pub fn weight_field(v: &Value) -> Result<Option<u32>, Reply> {
    match v.get("weight") {
        None => Ok(None),
        Some(w) => match w.as_u64() {
            Some(w @ 1..=1000) => Ok(Some(w as u32)),
            _ => Err(bad_field("weight", "must be a whole number from 1 to 1000")),
        },
    }
}

/// Decodes `%XX` escapes (a percent-encoded `host:port` works too).
pub fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(
            percent_decode("127.0.0.1%3A8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
    }

    fn field(r: Reply) -> (StatusCode, String) {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        (r.status, v["field"].as_str().unwrap().to_string())
    }

    #[test]
    fn add_bodies() {
        let (address, v) = add_body(br#"{"address":"10.0.0.5:80","weight":0}"#)
            .ok()
            .unwrap();
        assert_eq!(address, "10.0.0.5:80");
        // The weight is checked later (after the lookup), here it is still in the value.
        assert!(weight_field(&v).is_err());
        let bad = |b: &[u8]| field(add_body(b).err().unwrap());
        assert_eq!(bad(b"[1]"), (StatusCode::BAD_REQUEST, "body".into()));
        assert_eq!(
            bad(br#"{"weight":1}"#),
            (StatusCode::BAD_REQUEST, "address".into())
        );
        assert_eq!(
            bad(br#"{"address":1}"#),
            (StatusCode::BAD_REQUEST, "address".into())
        );
        assert_eq!(bad(br#"{"x":1}"#), (StatusCode::BAD_REQUEST, "x".into()));
    }

    #[test]
    fn patch_bodies() {
        assert_eq!(patch_body(br#"{"weight":5}"#).ok(), Some((Some(5), None)));
        assert_eq!(
            patch_body(br#"{"draining":true,"weight":1000}"#).ok(),
            Some((Some(1000), Some(true)))
        );
        let bad = |b: &[u8]| field(patch_body(b).err().unwrap());
        assert_eq!(bad(b"{}"), (StatusCode::BAD_REQUEST, "body".into()));
        assert_eq!(
            bad(br#"{"weight":1001}"#),
            (StatusCode::BAD_REQUEST, "weight".into())
        );
        assert_eq!(
            bad(br#"{"weight":2.5}"#),
            (StatusCode::BAD_REQUEST, "weight".into())
        );
        assert_eq!(
            bad(br#"{"draining":1}"#),
            (StatusCode::BAD_REQUEST, "draining".into())
        );
        assert_eq!(bad(b"\xff"), (StatusCode::BAD_REQUEST, "body".into()));
    }
}
