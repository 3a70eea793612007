//! The demo path end to end: a route to a round-robin pool of three real backends.
mod common;
use common::*;

#[test]
fn round_robin_spreads_across_three_backends() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let port = free_port();
    let yaml = format!(
        "{TEST_SERVER}
listeners:
  - name: web
    listen: 127.0.0.1:{port}
pools:
  - name: p
    backends:
      - address: {}
      - address: {}
      - address: {}
routes:
  - name: all
    pool: p
",
        a.address(),
        b.address(),
        c.address()
    );
    let _sy = Switchyard::start(&yaml, &[port]);
    let counts = spread(port, "/", 30);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&10), "{counts:?}");
}
