//! The demo path end to end: a route to a round-robin pool of three real backends.
use crate::common::config::*;
use crate::common::*;
use serde_json::json;

#[test]
fn round_robin_spreads_across_three_backends() {
    let [a, b, c] = Backend::start_each(["a", "b", "c"]);
    let port = free_port();
    let config = config_of(
        json!([listener("web", port)]),
        json!([pool("p", &[a.address(), b.address(), c.address()])]),
        json!([route("all", "p")]),
    );
    let _sy = Switchyard::start_config(&config, &[port]);
    let counts = spread(port, "/", 30);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&10), "{counts:?}");
}
