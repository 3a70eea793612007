//! The admin overlay: backends added, re-weighted, drained or deleted through the API,
//! kept on top of the file's pools across reloads, restarts and upgrades, and persisted
//! atomically (write, fsync, rename, fsync the directory) to `admin.state_file`. It also
//! remembers which pools changed here and are not yet published to the other instances
//! (`admin::sync`); every change and its application to the running pool happen under
//! one lock, so a change made here and one arriving from another instance never
//! interleave.

use super::StateError;
pub use crate::pool::overlay::{AddedBackend, PoolOverlay};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overlay {
    pub pools: BTreeMap<String, PoolOverlay>,
}

struct Inner {
    overlay: Overlay,
    /// Pools changed through this instance's API and not yet published.
    dirty: BTreeSet<String>,
}

/// The overlay in memory plus where it is persisted.
pub struct StateStore {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
    /// Woken after every API change (the sync service publishes it).
    changed: Notify,
}

impl StateStore {
    /// Loads `path` if it exists; a corrupt file is an error (never silently dropped).
    pub fn open(path: Option<PathBuf>) -> Result<Self, StateError> {
        let overlay = match &path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p).map_err(|source| StateError::Read {
                    path: p.clone(),
                    source,
                })?;
                serde_json::from_str(&text).map_err(|source| StateError::Corrupt {
                    path: p.clone(),
                    source,
                })?
            }
            _ => Overlay::default(),
        };
        Ok(StateStore {
            path,
            inner: Mutex::new(Inner {
                overlay,
                dirty: BTreeSet::new(),
            }),
            changed: Notify::new(),
        })
    }

    /// The state, also after a panic elsewhere under this lock: every change replaces
    /// whole overlays, so what is there is still a valid state, and silently losing
    /// every drain and delete (what a default would mean) is worse.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn pool(&self, name: &str) -> PoolOverlay {
        self.lock()
            .overlay
            .pools
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// The whole overlay.
    pub fn snapshot(&self) -> Overlay {
        self.lock().overlay.clone()
    }

    /// Runs `f` on pool `name`'s overlay with the lock held (no change can slip in
    /// between reading it and applying it to a running pool).
    pub fn with_pool<R>(&self, name: &str, f: impl FnOnce(&PoolOverlay) -> R) -> Option<R> {
        let guard = self.lock();
        let empty = PoolOverlay::default();
        Some(f(guard.overlay.pools.get(name).unwrap_or(&empty)))
    }

    /// An API change: applies `change` to pool `name`'s overlay and persists the whole
    /// overlay; only if the write succeeded does the in-memory state change, `apply`
    /// run (with the lock held) and the pool become due for publishing.
    pub fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut PoolOverlay),
        apply: impl FnOnce(&PoolOverlay),
    ) -> Result<PoolOverlay, StateError> {
        let mut guard = self.lock();
        let mut next = guard.overlay.clone();
        let entry = next.pools.entry(name.to_string()).or_default();
        change(entry);
        let result = entry.clone();
        if result.is_empty() {
            next.pools.remove(name);
        }
        if let Some(path) = &self.path {
            write_atomically(path, &next)?;
        }
        guard.overlay = next;
        guard.dirty.insert(name.to_string());
        apply(&result);
        drop(guard);
        self.changed.notify_one();
        Ok(result)
    }

    /// Resolves once an API change is waiting to be published (at once if one came
    /// since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// The pools changed here and not yet published, with their current overlays.
    pub fn unpublished(&self) -> Vec<(String, PoolOverlay)> {
        let i = self.lock();
        i.dirty
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    i.overlay.pools.get(n).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// `overlay` of pool `name` was published: the pool is clean unless it changed
    /// again since.
    pub fn published(&self, name: &str, overlay: &PoolOverlay) {
        let mut i = self.lock();
        let current = i.overlay.pools.get(name).cloned().unwrap_or_default();
        if current == *overlay {
            i.dirty.remove(name);
        }
    }

    /// Another instance's change: replaces pool `name`'s overlay, without marking it
    /// for publishing, and runs `apply` with the lock held. A pool with an unpublished
    /// change of our own is left alone (that change is published after this one and
    /// wins). Returns whether anything changed. The memory state changes even when the
    /// state file cannot be written (the instance follows the cluster; the error is
    /// returned for the log, and Redis has the state for the next start).
    pub fn replace(
        &self,
        name: &str,
        overlay: PoolOverlay,
        apply: impl FnOnce(&PoolOverlay),
    ) -> Result<bool, StateError> {
        let mut one = BTreeMap::new();
        one.insert(name.to_string(), overlay);
        let mut apply = Some(apply);
        let changed = self.replace_pools(one, &BTreeSet::new(), |_, o| {
            if let Some(f) = apply.take() {
                f(o)
            }
        })?;
        Ok(!changed.is_empty())
    }

    /// The cluster's whole overlay (read at (re)connection): every pool without an
    /// unpublished change of ours and not in `keep` takes its overlay from `pools`
    /// (absent = no changes), without being marked for publishing. `apply` runs for each
    /// changed pool with the lock held. Returns the changed pools' names (`replace`
    /// explains the state file).
    pub fn replace_all(
        &self,
        pools: BTreeMap<String, PoolOverlay>,
        keep: &BTreeSet<String>,
        apply: impl FnMut(&str, &PoolOverlay),
    ) -> Result<Vec<String>, StateError> {
        let mut all = pools;
        for name in self.lock().overlay.pools.keys() {
            all.entry(name.clone()).or_default();
        }
        self.replace_pools(all, keep, apply)
    }

    fn replace_pools(
        &self,
        pools: BTreeMap<String, PoolOverlay>,
        keep: &BTreeSet<String>,
        mut apply: impl FnMut(&str, &PoolOverlay),
    ) -> Result<Vec<String>, StateError> {
        let mut guard = self.lock();
        let mut changed = Vec::new();
        for (name, overlay) in pools {
            if guard.dirty.contains(&name) || keep.contains(&name) {
                continue;
            }
            let current = guard.overlay.pools.get(&name).cloned().unwrap_or_default();
            if current == overlay {
                continue;
            }
            if overlay.is_empty() {
                guard.overlay.pools.remove(&name);
            } else {
                guard.overlay.pools.insert(name.clone(), overlay.clone());
            }
            apply(&name, &overlay);
            changed.push(name);
        }
        if !changed.is_empty() {
            if let Some(path) = &self.path {
                write_atomically(path, &guard.overlay)?;
            }
        }
        Ok(changed)
    }
}

/// The whole overlay as pretty JSON, replacing `path` atomically.
fn write_atomically(path: &Path, overlay: &Overlay) -> Result<(), StateError> {
    let text = serde_json::to_vec_pretty(overlay)?;
    Ok(super::durable::write_atomically(path, &text, 0o640)?)
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
        let r = store.update(
            "web",
            |p| {
                p.draining.insert("127.0.0.1:1".into());
            },
            |_| {},
        );
        assert!(r.is_ok());
        let again = StateStore::open(Some(path.clone())).unwrap_or_else(|e| panic!("{e}"));
        assert!(again.pool("web").draining.contains("127.0.0.1:1"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn draining(address: &str) -> PoolOverlay {
        let mut o = PoolOverlay::default();
        o.draining.insert(address.into());
        o
    }

    #[test]
    fn an_unpublished_change_is_not_overwritten_by_another_instance() {
        let store = StateStore::open(None).unwrap_or_else(|e| panic!("{e}"));
        let mut applied = Vec::new();
        let r = store.update("web", |p| *p = draining("a:1"), |o| applied.push(o.clone()));
        assert!(r.is_ok());
        assert_eq!(applied, vec![draining("a:1")]);
        assert_eq!(store.unpublished(), vec![("web".into(), draining("a:1"))]);

        // Not published yet: ours wins over what arrives meanwhile.
        assert_eq!(
            store.replace("web", draining("b:1"), |_| {}).ok(),
            Some(false)
        );
        assert_eq!(store.pool("web"), draining("a:1"));

        // Published: the next remote change applies and is not ours to publish.
        store.published("web", &draining("a:1"));
        assert!(store.unpublished().is_empty());
        let mut seen = None;
        assert_eq!(
            store
                .replace("web", draining("b:1"), |o| seen = Some(o.clone()))
                .ok(),
            Some(true)
        );
        assert_eq!(seen, Some(draining("b:1")));
        assert_eq!(store.pool("web"), draining("b:1"));
        assert!(store.unpublished().is_empty());
    }

    /// Regression: with std's Mutex, a panic while the lock was held made every later
    /// read return an empty overlay, so all drains and deletes vanished at once.
    #[test]
    fn a_panic_under_the_lock_loses_no_change() {
        let store = StateStore::open(None).unwrap();
        store
            .update("web", |p| *p = draining("a:1"), |_| {})
            .unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = store.update(
                "web",
                |p| {
                    p.draining.insert("b:1".into());
                },
                |_| panic!("applying the change failed"),
            );
        }));
        assert!(panicked.is_err());
        let web = store.pool("web");
        assert!(web.draining.contains("a:1") && web.draining.contains("b:1"));
        assert!(store.update("web", |p| p.deleted.clear(), |_| {}).is_ok());
    }

    #[test]
    fn published_keeps_a_pool_that_changed_again_dirty() {
        let store = StateStore::open(None).unwrap_or_else(|e| panic!("{e}"));
        let _ = store.update("web", |p| *p = draining("a:1"), |_| {});
        let _ = store.update("web", |p| *p = draining("a:2"), |_| {});
        store.published("web", &draining("a:1"));
        assert_eq!(store.unpublished(), vec![("web".into(), draining("a:2"))]);
    }

    #[test]
    fn replace_all_empties_pools_absent_from_the_cluster() {
        let store = StateStore::open(None).unwrap_or_else(|e| panic!("{e}"));
        let _ = store.update("old", |p| *p = draining("a:1"), |_| {});
        let _ = store.update("mine", |p| *p = draining("m:1"), |_| {});
        store.published("old", &draining("a:1"));
        let mut cluster = BTreeMap::new();
        cluster.insert("new".to_string(), draining("n:1"));
        cluster.insert("mine".to_string(), draining("x:1"));
        let mut applied = Vec::new();
        let changed = store.replace_all(cluster, &BTreeSet::new(), |n, o| {
            applied.push((n.to_string(), o.clone()))
        });
        assert_eq!(
            changed.ok(),
            Some(vec!["new".to_string(), "old".to_string()])
        );
        assert_eq!(
            applied,
            vec![
                ("new".to_string(), draining("n:1")),
                ("old".to_string(), PoolOverlay::default())
            ]
        );
        assert_eq!(store.pool("old"), PoolOverlay::default());
        assert_eq!(store.pool("new"), draining("n:1"));
        // Unpublished: kept, published later.
        assert_eq!(store.pool("mine"), draining("m:1"));
    }
}
