//! Unit tests of `pool`.

use super::*;
use std::net::SocketAddr;

fn pool_with(backups: &[bool], breaker: Option<CircuitBreakerConfig>) -> Pool {
    let backends = backups
        .iter()
        .enumerate()
        .map(|(i, b)| BackendConfig {
            address: format!("127.0.0.1:{}", 9000 + i),
            addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
            weight: 1,
            backup: *b,
        })
        .collect();
    Pool::new(
        &PoolConfig {
            name: "p".into(),
            algorithm: Algorithm::RoundRobin,
            hash_key: HashKey::ClientIp,
            backends,
            discovery: Default::default(),
            health_check: None,
            circuit_breaker: breaker,
            sticky: None,
            retries: 1,
            timeouts: Timeouts::default(),
            upstream: UpstreamConfig::default(),
            traffic: Default::default(),
        },
        HealthKind::Tcp,
        PoolOverlay::default(),
    )
}

/// Two primaries with `max_connections: 1`.
fn two_with_one_slot_each() -> Pool {
    pool_with(
        &[false, false],
        Some(CircuitBreakerConfig {
            max_connections: 1,
            ..Default::default()
        }),
    )
}

fn pool(backups: &[bool]) -> Pool {
    pool_with(backups, None)
}

#[test]
fn backups_only_when_no_primary_is_usable() {
    let p = pool(&[false, true]);
    let m = p.members();
    for _ in 0..5 {
        assert_eq!(m.select(b"", &[]), Some(0));
    }
    m.backends[0].set_healthy(false);
    assert_eq!(m.select(b"", &[]), Some(1));
    m.backends[0].set_healthy(true);
    m.backends[0].set_draining(true);
    assert_eq!(m.select(b"", &[]), Some(1));
}

#[test]
fn retries_avoid_tried_backends() {
    let p = pool(&[false, false, false]);
    let m = p.members();
    let first = m.select(b"", &[]).unwrap_or(9);
    let second = m.select(b"", &[first]).unwrap_or(9);
    assert_ne!(first, second);
    assert_eq!(m.select(b"", &[0, 1, 2]), None);
}

#[test]
fn backup_takes_the_retry_when_every_primary_failed() {
    let p = pool(&[false, true]);
    assert_eq!(p.members().select(b"", &[0]), Some(1));
}

#[test]
fn a_poisoned_overlay_lock_keeps_the_overlay() {
    let p = pool(&[false, false]);
    let mut o = PoolOverlay::default();
    o.draining.insert("127.0.0.1:9000".into());
    p.set_overlay(o.clone());
    let poisoned = std::thread::scope(|s| {
        s.spawn(|| {
            let _held = p.overlay.lock();
            panic!("poison the lock");
        })
        .join()
    });
    assert!(poisoned.is_err() && p.overlay.is_poisoned());
    assert_eq!(p.overlay(), o, "the drain survives");
    p.rebuild();
    assert!(p.members().backends[0].draining());
}

#[test]
fn claim_records_tried_and_skips_them() {
    let p = pool(&[false, false]);
    let m = p.members();
    let mut tried = Vec::new();
    let a = m.claim(b"", None, &mut tried, 2).map(|c| c.idx);
    let b = m.claim(b"", None, &mut tried, 2).map(|c| c.idx);
    assert!(a.is_some() && b.is_some() && a != b);
    assert_eq!(tried.len(), 2);
    assert!(m.claim(b"", None, &mut tried, 2).is_none(), "all tried");
}

#[test]
fn claim_uses_backups_only_when_no_primary_is_left() {
    let p = pool(&[false, true]);
    let m = p.members();
    let mut tried = Vec::new();
    assert_eq!(m.claim(b"", None, &mut tried, 1).map(|c| c.idx), Some(0));
    assert_eq!(m.claim(b"", None, &mut tried, 1).map(|c| c.idx), Some(1));
}

#[test]
fn claim_passes_over_full_backends_and_holds_a_slot() {
    let p = two_with_one_slot_each();
    let m = p.members();
    let held = InFlight::acquire(&m.backends[0]);
    assert!(held.is_some());
    let mut tried = Vec::new();
    let c = m.claim(b"", None, &mut tried, 2);
    assert_eq!(c.as_ref().map(|c| c.idx), Some(1));
    assert_eq!(m.backends[1].in_flight(), 1, "the claim holds the slot");
    drop(c);
    assert_eq!(m.backends[1].in_flight(), 0);
    assert!(m.claim(b"", None, &mut Vec::new(), 2).is_some());
}

#[test]
fn claim_stops_at_its_bound() {
    let p = pool(&[false, false, false]);
    let m = p.members();
    let mut tried = Vec::new();
    assert!(m.claim(b"", None, &mut tried, 0).is_none());
    assert!(tried.is_empty(), "a zero bound selects nothing");
    assert!(m.claim(b"", None, &mut tried, 1).is_some());
    assert_eq!(tried.len(), 1);
}

#[test]
fn max_connections_skips_full_backends() {
    let p = two_with_one_slot_each();
    let m = p.members();
    let g0 = InFlight::acquire(&m.backends[0]);
    assert!(g0.is_some());
    assert_eq!(m.select(b"", &[]), Some(1));
    let g1 = InFlight::acquire(&m.backends[1]);
    assert!(g1.is_some());
    assert_eq!(m.select(b"", &[]), None);
    drop(g0);
    assert_eq!(m.select(b"", &[]), Some(0));
}

/// Regression: a weight of 0 (here from an admin overlay, as a state file or another
/// instance could carry) reached Pingora's Ketama ring, which asserts on it, and an
/// all-zero tier divided by zero in round robin.
#[test]
fn a_zero_weight_never_reaches_a_selector() {
    for algorithm in [
        Algorithm::ConsistentHash,
        Algorithm::RoundRobin,
        Algorithm::Random,
        Algorithm::IpHash,
        Algorithm::LeastConn,
    ] {
        let mut p = pool(&[false, false]);
        p.algorithm = algorithm;
        p.definition.algorithm = algorithm;
        let address = p.members().backends[0].address.clone();
        let mut overlay = PoolOverlay::default();
        overlay.weights.insert(address, 0);
        overlay.added.push(overlay::AddedBackend {
            address: "127.0.0.1:9200".into(),
            weight: 0,
        });
        p.set_overlay(overlay);
        let m = p.members();
        assert_eq!(m.backends.len(), 3, "{algorithm:?}");
        assert!(m.backends.iter().all(|b| b.weight().get() == 1));
        assert!(m.select(b"key", &[]).is_some(), "{algorithm:?}");
    }
}

#[test]
fn rebuild_keeps_backend_state() {
    let p = pool(&[false, false]);
    p.members().backends[0].set_healthy(false);
    p.set_discovered(
        Source::Dns,
        vec![Discovered::serving(
            SocketAddr::from(([127, 0, 0, 1], 9100)),
            1,
        )],
    );
    let m = p.members();
    assert_eq!(m.backends.len(), 3);
    assert!(!m.backends[0].healthy());
}
