//! The JSON shapes of the admin API: POOL, BACKEND (SPEC §5) and the effective
//! configuration with secrets redacted.

use crate::config::*;
use crate::pool::{Backend, Pool};
use serde_json::{json, Value};

pub fn backend(b: &Backend) -> Value {
    let (ok, failed) = b.outcomes();
    json!({
        "address": b.address,
        "weight": b.weight(),
        "backup": b.backup,
        "source": b.source.as_str(),
        "healthy": b.healthy(),
        "circuit": b.circuit().as_str(),
        "active": b.in_flight(),
        "draining": b.draining(),
        "ejected": b.ejected(),
        "requests": ok + failed,
    })
}

pub fn pool(p: &Pool) -> Value {
    json!({
        "name": p.name,
        "algorithm": p.algorithm.as_str(),
        "backends": p.members().backends.iter().map(|b| backend(b)).collect::<Vec<_>>(),
    })
}

/// The configuration as running, defaults included; tokens, keys and the Redis URL
/// (which may hold a password) are redacted (see `config::ser`).
pub fn config(c: &Config) -> Value {
    serde_json::to_value(c).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

#[cfg(test)]
#[path = "view_shape.rs"]
mod shape;
