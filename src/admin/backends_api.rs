//! The backend endpoints of the admin API: `POST /api/v1/pools/{pool}/backends`,
//! `PATCH` and `DELETE …/backends/{address}` (body checks, the overlay change and its
//! JSON answer).

use super::api::{bad_field, error, json_body, json_reply, percent_decode, Api, Reply};
use super::view;
use crate::config::value::lookup_backend;
use crate::pool::overlay::{AddedBackend, PoolOverlay};
use crate::pool::Pool;
use http::StatusCode;
use serde_json::Value;
use std::sync::Arc;

impl Api {
    pub(super) async fn add_backend(&self, pool_name: &str, body: &[u8]) -> Reply {
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

    pub(super) fn patch_backend(&self, pool_name: &str, raw_address: &str, body: &[u8]) -> Reply {
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

    pub(super) fn delete_backend(&self, pool_name: &str, raw_address: &str) -> Reply {
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

#[cfg(test)]
#[path = "backends_api_tests.rs"]
mod tests;
