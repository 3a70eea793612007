//! `cache` (the shared storage) and `routes[].cache` (SPEC §11).

use super::*;
use crate::config::cache::{parse_size, CacheConfig, CacheKeyPart, RouteCacheConfig};

/// A size no smaller than this is a typo for something else (a storage of a few bytes).
const MIN_MEMORY: u64 = 1 << 20;
/// One object's weight is counted in 16-bit units of at least 256 bytes.
pub const MAX_OBJECT_LIMIT: u64 = 1 << 30;

fn size(d: &mut Decoder, m: &mut Map, key: &'static str, default: u64) -> u64 {
    get_with(d, m, key, |d, n, p| {
        d.parse(n, p, "a size such as 256MiB, 8MiB or 512KiB", parse_size)
    })
    .unwrap_or(default)
}

pub(super) fn read_cache(d: &mut Decoder, node: &Node) -> Option<CacheConfig> {
    let mut m = d.map(node, "cache")?;
    d.spans.set("cache", m.pos);
    let memory_pos = m.value_pos("memory");
    let memory = size(d, &mut m, "memory", CacheConfig::DEFAULT_MEMORY);
    let object_pos = m.value_pos("max_object");
    let max_object = size(d, &mut m, "max_object", CacheConfig::DEFAULT_MAX_OBJECT);
    if memory < MIN_MEMORY {
        d.error(memory_pos, "cache.memory", "must be at least 1MiB");
    }
    if max_object == 0 || max_object > MAX_OBJECT_LIMIT {
        d.error(
            object_pos,
            "cache.max_object",
            "must be from 1 byte to 1GiB",
        );
    } else if max_object > memory {
        d.error(
            object_pos,
            "cache.max_object",
            "must be at most cache.memory",
        );
    }
    m.finish(d, |_| None);
    Some(CacheConfig { memory, max_object })
}

pub(super) fn read_route_cache(
    d: &mut Decoder,
    node: &Node,
    path: &str,
) -> Option<RouteCacheConfig> {
    let mut m = d.map(node, path)?;
    d.spans.set(path, m.pos);
    let def = RouteCacheConfig::default();
    let default_ttl = duration(d, &mut m, "default_ttl", def.default_ttl);
    let max_ttl_pos = m.value_pos("max_ttl");
    let max_ttl = duration(d, &mut m, "max_ttl", def.max_ttl);
    let stale_while_revalidate = duration(
        d,
        &mut m,
        "stale_while_revalidate",
        def.stale_while_revalidate,
    );
    let stale_if_error = duration(d, &mut m, "stale_if_error", def.stale_if_error);
    let lock_timeout = duration_within(d, &mut m, "lock_timeout", def.lock_timeout, DAY);
    let key_path = m.child("key");
    let key = match m.get("key") {
        None => def.key,
        Some(n) => {
            let mut parts = d.list(n, &key_path, true, |d, n, p| {
                d.parse(n, p, CacheKeyPart::EXPECTED, CacheKeyPart::parse)
            });
            parts.dedup();
            if parts.is_empty() {
                d.error(m.key_pos("key"), &key_path, "must name at least one part");
            }
            parts
        }
    };
    if max_ttl.is_zero() {
        d.error(max_ttl_pos, &m.child("max_ttl"), "must be greater than 0");
    }
    if !default_ttl.is_zero() && default_ttl > max_ttl {
        d.warn(
            m.key_pos("default_ttl"),
            &m.child("default_ttl"),
            "is longer than max_ttl, which caps it",
        );
    }
    m.finish(d, |_| None);
    Some(RouteCacheConfig {
        default_ttl,
        max_ttl,
        stale_while_revalidate,
        stale_if_error,
        key,
        lock_timeout,
    })
}
