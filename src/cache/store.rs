//! The process-wide HTTP cache storage: Pingora's `Storage` trait over a TinyUFO table
//! (TinyLFU admission, S3-FIFO eviction) bounded by `cache.memory`, with the purge index
//! beside it and the size, object and eviction metrics kept as objects come and go.
//!
//! An object is its `CacheMeta` fields (freshness, stale windows, variance, the parsed
//! response header) and its body in one `Bytes`: a hit rebuilds the `CacheMeta` from
//! them (no decompression or header parsing per hit) and hands out the body without
//! copying. A miss is buffered up to
//! `cache.max_object` while it streams to the client and becomes visible only when its
//! last byte arrived, so a fetch that breaks off never leaves a truncated object.

use super::index::{PurgeIndex, Url};
use crate::observe::metrics::METRICS;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora_cache::eviction::CacheEntryId;
use pingora_cache::key::{CacheHashKey, CacheKey, HashBinary};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::CacheMeta;
use pingora_error::{Error, ErrorType, Result};
use std::any::Any;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tinyufo::TinyUfo;

/// What an object costs beyond its bytes: the table's bucket, the index entry, the Arcs.
const OVERHEAD: usize = 256;

/// What a `CacheMeta` holds, kept parsed.
pub struct Meta {
    fresh_until: SystemTime,
    created: SystemTime,
    updated: SystemTime,
    stale_while_revalidate: u32,
    stale_if_error: u32,
    variance: Option<HashBinary>,
    header: ResponseHeader,
}

impl Meta {
    fn of(m: &CacheMeta) -> Meta {
        Meta {
            fresh_until: m.fresh_until(),
            created: m.created(),
            updated: m.updated(),
            stale_while_revalidate: m.stale_while_revalidate_sec(),
            stale_if_error: m.stale_if_error_sec(),
            variance: m.variance(),
            // Kept as long as the entry: without the room for added headers a copy has.
            header: m.response_header().clone_compact(),
        }
    }

    fn to_cache_meta(&self) -> CacheMeta {
        let mut m = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate,
            self.stale_if_error,
            self.header.clone(),
        );
        // A refreshed entry's age and freshness count from its refresh.
        if self.updated != self.created {
            m.set_epoch_override(self.updated);
        }
        if let Some(v) = self.variance {
            m.set_variance(v);
        }
        m
    }

    /// Roughly what the header takes in memory.
    fn size(&self) -> usize {
        self.header
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() * 2 + v.len() + 48)
            .sum::<usize>()
            + 128
    }
}

/// One stored response.
pub struct Object {
    hash: HashBinary,
    url: Url,
    meta: ArcSwap<Meta>,
    body: Bytes,
    /// Bytes counted against `cache.memory`.
    size: usize,
}

pub struct Store {
    table: TinyUfo<HashBinary, Arc<Object>>,
    /// Bytes per unit of TinyUFO weight (a u16 per object).
    unit: usize,
    pub memory: usize,
    pub max_object: usize,
    index: Mutex<PurgeIndex>,
    /// This storage's share of the gauges (what `bytes()`/`objects()` report).
    bytes: AtomicI64,
    objects: AtomicI64,
}

impl Store {
    pub fn new(memory: usize, max_object: usize) -> Store {
        // The largest object must fit in a u16 weight.
        let unit = (max_object + OVERHEAD + 64 * 1024)
            .div_ceil(u16::MAX as usize)
            .max(256);
        let units = (memory / unit).max(1);
        // TinyUFO sizes its frequency sketch from the expected number of objects.
        let estimated = (memory / 4096).clamp(1024, 4 << 20);
        Store {
            table: TinyUfo::new(units, estimated),
            unit,
            memory,
            max_object,
            index: Mutex::new(PurgeIndex::default()),
            bytes: AtomicI64::new(0),
            objects: AtomicI64::new(0),
        }
    }

    /// Bytes held (counted as against `cache.memory`).
    pub fn bytes(&self) -> i64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Objects held.
    pub fn objects(&self) -> i64 {
        self.objects.load(Ordering::Relaxed)
    }

    fn account(&self, size: usize, sign: i64) {
        let size = size as i64 * sign;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.objects.fetch_add(sign, Ordering::Relaxed);
        METRICS.cache_size_bytes.add(size);
        METRICS.cache_objects.add(sign);
    }

    fn weight(&self, size: usize) -> u16 {
        size.div_ceil(self.unit).clamp(1, u16::MAX as usize) as u16
    }

    fn index(&self) -> std::sync::MutexGuard<'_, PurgeIndex> {
        // A panic elsewhere while holding the lock leaves a usable index.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `object` visible, replacing what the key held; TinyLFU may refuse a
    /// newcomer that is less popular than what it would push out.
    fn insert(&self, object: Arc<Object>) -> bool {
        if let Some(old) = self.table.remove(&object.hash) {
            self.forget(&old, false);
        }
        let evicted = self
            .table
            .put(object.hash, object.clone(), self.weight(object.size));
        let mut admitted = true;
        for kv in evicted {
            if Arc::ptr_eq(&kv.data, &object) {
                admitted = false;
            } else {
                self.forget(&kv.data, true);
            }
        }
        if admitted {
            self.account(object.size, 1);
            self.index().add(&object.url, object.hash);
        }
        admitted
    }

    /// An object left the table (evicted, replaced or purged).
    fn forget(&self, object: &Object, evicted: bool) {
        self.account(object.size, -1);
        if evicted {
            METRICS.cache_evictions.inc();
        }
        self.index().remove(&object.url, &object.hash);
    }

    fn drop_all(&self, hashes: Vec<HashBinary>) -> usize {
        let mut n = 0;
        for h in hashes {
            if let Some(old) = self.table.remove(&h) {
                self.account(old.size, -1);
                n += 1;
            }
        }
        n
    }

    /// Admin purge of everything; returns how many objects went.
    pub fn purge_all(&self) -> usize {
        let hashes = self.index().take_all();
        self.drop_all(hashes)
    }

    /// Admin purge of one URL with every variant (any query, method or `Vary` value).
    pub fn purge_path(&self, host: &str, path: &str) -> usize {
        let hashes = self.index().take_path(host, path);
        self.drop_all(hashes)
    }

    /// Admin purge of every URL of `host` under `prefix`.
    pub fn purge_prefix(&self, host: &str, prefix: &str) -> usize {
        let hashes = self.index().take_prefix(host, prefix);
        self.drop_all(hashes)
    }

    fn get(&self, key: &CacheKey) -> Option<Arc<Object>> {
        self.table.get(&key.combined_bin())
    }
}

/// The URL a cache key was built for, carried in the key's user tag as `host\npath`
/// (set by `cache::key`, read when storing).
pub struct UrlTag;

impl UrlTag {
    pub fn encode(url: &Url) -> String {
        let mut s = String::with_capacity(url.host.len() + url.path.len() + 1);
        s.push_str(&url.host);
        s.push('\n');
        s.push_str(&url.path);
        s
    }

    pub fn decode(tag: &str) -> Url {
        let (host, path) = tag.split_once('\n').unwrap_or(("", tag));
        Url {
            host: host.to_string(),
            path: path.to_string(),
        }
    }
}

/// A hit: the stored body, whole or a byte range of it.
struct Hit {
    body: Bytes,
    done: bool,
    start: usize,
    end: usize,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done || self.start >= self.end {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(ErrorType::InternalError, "seek start out of range");
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A fill in progress: the body so far; nothing is visible until `finish`.
struct Fill {
    store: &'static Store,
    hash: HashBinary,
    url: Url,
    meta: Meta,
    body: BytesMut,
    too_large: bool,
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.too_large {
            return Ok(());
        }
        if self.body.len() + data.len() > self.store.max_object {
            // Pingora stops filling on its own max size check; this guards the bound.
            self.too_large = true;
            self.body = BytesMut::new();
            return Ok(());
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        if self.too_large {
            return Ok(MissFinishType::Created(0));
        }
        let Fill {
            store,
            hash,
            url,
            meta,
            body,
            ..
        } = *self;
        // Growth by doubling can leave up to half the buffer unused: keep what is used.
        let body = if body.capacity() - body.len() > body.len() / 8 {
            Bytes::copy_from_slice(&body)
        } else {
            body.freeze()
        };
        let size = body.len() + meta.size() + url.host.len() * 2 + url.path.len() * 2 + OVERHEAD;
        store.insert(Arc::new(Object {
            hash,
            url,
            meta: ArcSwap::from_pointee(meta),
            body,
            size,
        }));
        Ok(MissFinishType::Created(size))
    }
}

#[async_trait]
impl Storage for Store {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(object) = self.get(key) else {
            return Ok(None);
        };
        let meta = object.meta.load().to_cache_meta();
        let hit = Hit {
            body: object.body.clone(),
            done: false,
            start: 0,
            end: object.body.len(),
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let url = UrlTag::decode(&key.user_tag);
        let expected = meta
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(self.max_object);
        Ok(Box::new(Fill {
            store: self,
            hash: key.combined_bin(),
            url,
            meta: Meta::of(meta),
            body: BytesMut::with_capacity(expected),
            too_large: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = target.key().combined_bin();
        match self.table.remove(&hash) {
            Some(old) => {
                self.forget(&old, false);
                Ok(PurgeOutcome::Purged(None::<CacheEntryId>))
            }
            None => Ok(PurgeOutcome::NotFound),
        }
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        match self.get(key) {
            Some(object) => {
                object.meta.store(Arc::new(Meta::of(meta)));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
