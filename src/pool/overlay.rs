//! The per-pool overlay of admin API changes (backends added, re-weighted, drained or
//! deleted): plain data the pool applies on top of its file definition and the state
//! store persists.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddedBackend {
    pub address: String,
    pub weight: u32,
}

/// The changes made to one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolOverlay {
    pub added: Vec<AddedBackend>,
    pub weights: BTreeMap<String, u32>,
    pub draining: BTreeSet<String>,
    pub deleted: BTreeSet<String>,
}

impl PoolOverlay {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.weights.is_empty()
            && self.draining.is_empty()
            && self.deleted.is_empty()
    }
}
