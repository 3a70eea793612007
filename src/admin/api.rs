//! The admin REST API (SPEC §5): request routing (after `auth`), input validation and
//! the JSON shapes.

use super::audit::Change;
use super::auth::{self, Refusal};
use super::roles::{self, Actor, Guard};
use super::view;
use crate::ops::reload::Reloader;
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
    /// With `cluster.redis` and `cache`: purges made here go to the other instances.
    pub purges: Option<super::cache_sync::PurgeQueue>,
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
            ["cache"] if m == Method::DELETE => {
                let store = self.runtime.load().cache_store;
                super::cache_api::purge(r.query, store, self.purges.as_ref())
            }
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

/// Decodes `%XX` escapes (a percent-encoded `host:port` works too).
pub fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
