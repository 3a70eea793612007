//! The demo path end to end: a route to a round-robin pool of three real backends.
use crate::common::*;

#[test]
fn round_robin_spreads_across_three_backends() {
    let [a, b, c] = Backend::start_each(["a", "b", "c"]);
    let port = free_port();
    let yaml = config_yaml(
        TEST_SERVER,
        &listener_yaml("web", port),
        &pool_yaml("p", "", &[a.address(), b.address(), c.address()]),
        "  - name: all\n    pool: p\n",
    );
    let _sy = Switchyard::start(&yaml, &[port]);
    let counts = spread(port, "/", 30);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&10), "{counts:?}");
}
