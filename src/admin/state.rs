//! The admin overlay: backends added, re-weighted, drained or deleted through the API,
//! kept on top of the file's pools across reloads, restarts and upgrades, and persisted
//! atomically (write, fsync, rename, fsync the directory) to `admin.state_file`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overlay {
    pub pools: BTreeMap<String, PoolOverlay>,
}

/// The overlay in memory plus where it is persisted.
pub struct StateStore {
    path: Option<PathBuf>,
    overlay: Mutex<Overlay>,
}

impl StateStore {
    /// Loads `path` if it exists; a corrupt file is an error (never silently dropped).
    pub fn open(path: Option<PathBuf>) -> Result<Self, String> {
        let overlay = match &path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                serde_json::from_str(&text)
                    .map_err(|e| format!("{} is not a valid state file: {e}", p.display()))?
            }
            _ => Overlay::default(),
        };
        Ok(StateStore {
            path,
            overlay: Mutex::new(overlay),
        })
    }

    pub fn pool(&self, name: &str) -> PoolOverlay {
        self.overlay
            .lock()
            .map(|o| o.pools.get(name).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Applies `change` to pool `name`'s overlay and persists the whole overlay; the
    /// in-memory state changes only if the write succeeded.
    pub fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut PoolOverlay),
    ) -> Result<PoolOverlay, String> {
        let mut guard = self
            .overlay
            .lock()
            .map_err(|_| "state lock poisoned".to_string())?;
        let mut next = guard.clone();
        let entry = next.pools.entry(name.to_string()).or_default();
        change(entry);
        let result = entry.clone();
        if result.is_empty() {
            next.pools.remove(name);
        }
        if let Some(path) = &self.path {
            write_atomically(path, &next)?;
        }
        *guard = next;
        Ok(result)
    }
}

fn write_atomically(path: &Path, overlay: &Overlay) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(overlay).map_err(|e| e.to_string())?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("state.json"),
        std::process::id()
    ));
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    {
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        f.write_all(&text).map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_reloads() {
        let dir = std::env::temp_dir().join(format!("sy-state-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("state.json");
        let _ = std::fs::remove_file(&path);
        let store = StateStore::open(Some(path.clone())).unwrap_or_else(|e| panic!("{e}"));
        let r = store.update("web", |p| {
            p.draining.insert("127.0.0.1:1".into());
        });
        assert!(r.is_ok());
        let again = StateStore::open(Some(path.clone())).unwrap_or_else(|e| panic!("{e}"));
        assert!(again.pool("web").draining.contains("127.0.0.1:1"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
