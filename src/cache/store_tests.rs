//! Unit tests of `cache::store`.

use super::*;

fn object(n: usize, host: &str, path: &str, len: usize) -> Arc<Object> {
    let mut hash = [0u8; 16];
    hash[..8].copy_from_slice(&(n as u64).to_be_bytes());
    Arc::new(Object {
        hash,
        url: Url::new(host, path),
        meta: ArcSwap::from_pointee(Meta::of(&CacheMeta::new(
            SystemTime::now(),
            SystemTime::now(),
            0,
            0,
            ResponseHeader::build(200, None).unwrap(),
        ))),
        body: Bytes::from(vec![b'x'; len]),
        size: len + OVERHEAD,
    })
}

#[test]
fn three_times_the_bound_stays_within_it_and_counts_evictions() {
    let store = Store::new(4 << 20, 1 << 20);
    let evicted_before = METRICS.cache_evictions.get();
    for i in 0..(3 * 64) {
        store.insert(object(i, "a.test", &format!("/o{i}"), 64 * 1024));
    }
    let bytes = store.bytes();
    assert!(bytes <= 4 << 20, "held {bytes}");
    assert!(bytes > 2 << 20, "but used: {bytes}");
    assert!(METRICS.cache_evictions.get() > evicted_before);
    // The index forgot the evicted ones: purging everything removes what is held.
    let held = store.objects();
    assert_eq!(store.purge_all() as i64, held);
    assert_eq!((store.bytes(), store.objects()), (0, 0));
}

#[test]
fn a_one_off_newcomer_does_not_push_out_a_popular_object_when_full() {
    let store = Store::new(1 << 20, 512 * 1024);
    // Two objects that fill the storage, each admitted (asked for) several times.
    for _ in 0..4 {
        store.insert(object(1, "a.test", "/hot1", 400 * 1024));
        store.insert(object(2, "a.test", "/hot2", 400 * 1024));
    }
    assert_eq!(store.objects(), 2);
    let newcomer = object(3, "a.test", "/once", 400 * 1024);
    assert!(!store.insert(newcomer), "refused by TinyLFU");
    assert_eq!(store.objects(), 2);
    assert!(store.table.get(&object(1, "", "", 0).hash).is_some());
}

#[test]
fn replacing_an_object_keeps_one_copy_and_purges_count_what_went() {
    let store = Store::new(4 << 20, 1 << 20);
    store.insert(object(1, "a.test", "/x", 1000));
    store.insert(object(1, "a.test", "/x", 2000));
    assert_eq!(store.objects(), 1);
    assert_eq!(store.bytes(), (2000 + OVERHEAD) as i64);
    store.insert(object(2, "a.test", "/x", 10));
    store.insert(object(3, "a.test", "/img/1", 10));
    assert_eq!(store.purge_path("A.TEST", "/x"), 2);
    assert_eq!(store.purge_prefix("a.test", "/img/"), 1);
    assert_eq!(store.objects(), 0);
}
