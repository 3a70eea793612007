//! Discovery providers end to end (SPEC §12): DNS SRV against a real dnsmasq, Docker
//! against a Docker Engine API test server on a Unix socket (`docker_api`), Kubernetes
//! against an API server test double on 127.0.0.1 reached through a kubeconfig
//! (`kube_api`), each driven by the real client crate inside switchyard. Also: the
//! BACKEND `source`, `switchyard_discovery_errors_total`, and reloads that keep a
//! provider's backends.

use crate::common::config::{admin_on, config_text, metrics_on, pool, web_config, with};
use crate::common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

mod dns_srv;
mod docker;
mod docker_api;
mod kube_api;
mod kubernetes;
mod reload;

pub const TOKEN: &str = "discovery-test-token";
/// How soon a change must show (the issue's "within 2 s of an event").
pub const PROMPT: Duration = Duration::from_secs(2);

/// A switchyard with a web listener routing everything to pool `p`, an admin API and a
/// metrics listener.
pub struct Setup {
    pub sy: Switchyard,
    pub web: u16,
    pub admin: u16,
    pub metrics: u16,
}

/// The whole configuration's text with these `pools`.
pub fn config(web: u16, admin: u16, metrics: u16, pools: Value) -> String {
    let routes = json!([{ "name": "all", "path_prefix": "/", "pool": "p" }]);
    let config = with(web_config(web, pools, routes), admin_on(admin, &[TOKEN]));
    config_text(&with(config, metrics_on(metrics)))
}

impl Setup {
    pub fn start(pools: Value, env: &[(&str, &str)]) -> Setup {
        let (web, admin, metrics) = (listen_port(), listen_port(), listen_port());
        let sy = Switchyard::start_with_env(
            &config(web, admin, metrics, pools),
            &[web, admin, metrics],
            env,
        );
        Setup {
            sy,
            web,
            admin,
            metrics,
        }
    }

    /// Rewrites the config with new `pools` and reloads (SIGHUP), waiting until the
    /// reload counter moves.
    pub fn reload(&self, pools: Value) {
        let reloads = |m| {
            metric(
                m,
                "switchyard_config_reloads_total",
                &[("result", "success")],
            )
            .unwrap_or(0.0)
        };
        let before = reloads(self.metrics);
        self.sy
            .rewrite_config(&config(self.web, self.admin, self.metrics, pools));
        self.sy.signal("-HUP");
        let now = wait_metric(
            self.metrics,
            "switchyard_config_reloads_total",
            &[("result", "success")],
            before + 1.0,
        );
        assert_eq!(
            now,
            before + 1.0,
            "reload applied; stderr:\n{}",
            self.sy.stderr()
        );
    }

    /// The admin API's POOL `p`.
    pub fn pool(&self) -> Value {
        let auth = format!("Bearer {TOKEN}");
        let r = request(
            self.admin,
            "GET",
            "/api/v1/pools/p",
            &[("Authorization", auth.as_str())],
            b"",
        );
        assert_eq!(r.status, 200, "GET /api/v1/pools/p: {r:?}");
        serde_json::from_str(&r.body).expect("POOL JSON")
    }

    /// The BACKENDs of pool p, by address.
    pub fn backends(&self) -> Vec<Value> {
        self.pool()["backends"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (`limit` at most) until the backend addresses of pool p (sorted) are
    /// `want`; returns how long that took, or panics with what was there.
    pub fn wait_members(&self, want: &[String], limit: Duration) -> Duration {
        let start = Instant::now();
        let mut want: Vec<String> = want.to_vec();
        want.sort();
        let mut seen = Vec::new();
        let done = wait_until(limit, Duration::from_millis(20), || {
            seen = self.addresses();
            seen == want
        });
        assert!(
            done,
            "pool p has {seen:?}, wanted {want:?} within {limit:?}; stderr:\n{}",
            self.sy.stderr()
        );
        start.elapsed()
    }

    pub fn addresses(&self) -> Vec<String> {
        let mut a: Vec<String> = self
            .backends()
            .iter()
            .filter_map(|b| b["address"].as_str().map(str::to_string))
            .collect();
        a.sort();
        a
    }

    /// The BACKEND `address` of pool p.
    pub fn backend(&self, address: &str) -> Value {
        backend_in(&self.pool(), address)
            .unwrap_or_else(|| panic!("no backend {address} in {}", self.pool()))
    }

    pub fn errors(&self, provider: &str) -> f64 {
        metric(
            self.metrics,
            "switchyard_discovery_errors_total",
            &[("pool", "p"), ("provider", provider)],
        )
        .unwrap_or(0.0)
    }

    /// Waits until the provider's error counter passes `above`.
    pub fn wait_errors_above(&self, provider: &str, above: f64) -> f64 {
        let mut v = 0.0;
        let ok = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            v = self.errors(provider);
            v > above
        });
        assert!(
            ok,
            "{provider} errors stayed at {v}; stderr:\n{}",
            self.sy.stderr()
        );
        v
    }

    /// Which backend (its X-Backend name) answers `n` requests through the web listener.
    pub fn spread(&self, n: usize) -> std::collections::HashMap<String, usize> {
        served_by(self.web, "/", n)
    }
}

// ---------------------------------------------------------------- the seam: dns + static

/// Pool `p` over `file`, plus what DNS finds for `name` (port `port`), every second.
fn dns_pool(file: &Backend, name: &str, port: u16) -> Value {
    let dns = json!({ "name": name, "port": port, "interval": "1s" });
    json!([with(
        pool("p", &[file.address()]),
        json!({ "discovery": { "dns": dns } }),
    )])
}

#[test]
fn dns_backends_carry_their_source_beside_static_ones_and_failures_are_counted() {
    let file = Backend::start("file");
    let found = Backend::start("found");
    let s = Setup::start(dns_pool(&file, "localhost", found.addr.port()), &[]);
    let discovered = format!("127.0.0.1:{}", found.addr.port());
    s.wait_members(
        &[file.address(), discovered.clone()],
        Duration::from_secs(5),
    );
    assert_eq!(s.backend(&file.address())["source"], "static");
    assert_eq!(s.backend(&discovered)["source"], "dns");
    let counts = s.spread(20);
    assert_eq!(counts.get("found"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("file"), Some(&10), "{counts:?}");
    // Drain and weight changes through the API apply to a discovered backend.
    let auth = format!("Bearer {TOKEN}");
    let path = format!("/api/v1/pools/p/backends/{discovered}");
    let patch = |body: &str| {
        let r = request(
            s.admin,
            "PATCH",
            &path,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "PATCH {body}: {r:?}");
    };
    patch(r#"{"weight": 3}"#);
    assert_eq!(s.backend(&discovered)["weight"], 3);
    let counts = s.spread(8);
    assert_eq!(counts.get("found"), Some(&6), "weights 3:1 {counts:?}");
    patch(r#"{"draining": true}"#);
    let counts = s.spread(4);
    assert_eq!(counts.get("file"), Some(&4), "drained {counts:?}");
    patch(r#"{"draining": false, "weight": 1}"#);

    // The counter exists at 0 while the provider answers.
    assert_eq!(
        metric(
            s.metrics,
            "switchyard_discovery_errors_total",
            &[("pool", "p"), ("provider", "dns")]
        ),
        Some(0.0)
    );

    // A name that does not resolve: counted, logged once, the static backend serves on.
    s.reload(dns_pool(&file, "nothing.invalid", 80));
    let errors = s.wait_errors_above("dns", 0.0);
    s.wait_errors_above("dns", errors);
    assert_eq!(
        s.sy.stderr_count("nothing.invalid:80 failed"),
        1,
        "one line per outage; stderr:\n{}",
        s.sy.stderr()
    );
    s.wait_members(&[file.address()], PROMPT);
}
