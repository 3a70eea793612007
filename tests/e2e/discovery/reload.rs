//! Reloads and discovery: a reload that keeps a pool's discovery settings keeps its
//! discovered backends and their health, with the provider left running; changing one
//! provider's settings restarts that provider only.

use super::docker_api::{Container, DockerApi};
use super::*;

/// Pool `p` from DNS (localhost on `dns_port`) and from the Docker API on `socket` (with
/// `docker_keys` laid over its settings), health-checked with `check`.
fn pools(socket: &std::path::Path, dns_port: u16, docker_keys: Value, check: Value) -> Value {
    json!([{
        "name": "p",
        "retries": 0,
        "health_check": check,
        "discovery": {
            "dns": { "name": "localhost", "port": dns_port, "interval": "1s" },
            "docker": with(json!({ "socket": socket.display().to_string() }), docker_keys),
        },
    }])
}

#[test]
fn unchanged_settings_keep_backends_and_health_and_a_change_restarts_only_that_provider() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let [a, from_dns] = Backend::start_each(["a", "dns"]);
    let dead = closed_port();
    let container = |id: &str, port: u16| {
        Container::new(
            id,
            &[
                ("switchyard.pool", "p"),
                ("switchyard.port", &port.to_string()),
            ],
        )
    };
    let api = DockerApi::start(
        &socket,
        vec![container("aaaa", a.addr.port()), container("dddd", dead)],
    );
    let check = |interval: &str, unhealthy: u32| {
        json!({
            "interval": interval,
            "timeout": "200ms",
            "healthy_threshold": 1,
            "unhealthy_threshold": unhealthy,
        })
    };
    let (fast, slow) = (check("200ms", 1), check("1s", 3));
    let s = Setup::start(pools(&socket, from_dns.addr.port(), json!({}), fast), &[]);
    let dead_addr = format!("127.0.0.1:{dead}");
    let dns_addr = format!("127.0.0.1:{}", from_dns.addr.port());
    s.wait_members(
        &[a.address(), dead_addr.clone(), dns_addr.clone()],
        Duration::from_secs(5),
    );
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || s
            .backend(&dead_addr)["healthy"]
            == false),
        "the dead container never went unhealthy: {}",
        s.pool()
    );
    assert!(wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || api.streams() >= 1
    ));
    let lists = api.lists();

    // The pool changes (a slower check that needs 3 failures), discovery does not: the
    // new pool starts with the discovered backends and their health, at once, and
    // the Docker provider keeps its connection (no new list).
    s.reload(pools(
        &socket,
        from_dns.addr.port(),
        json!({}),
        slow.clone(),
    ));
    let v = s.pool();
    let mut now: Vec<String> = v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap().to_string())
        .collect();
    now.sort();
    let mut want = vec![a.address(), dead_addr.clone(), dns_addr.clone()];
    want.sort();
    assert_eq!(
        now, want,
        "the discovered backends stayed through the reload"
    );
    assert_eq!(
        backend_in(&v, &dead_addr).unwrap()["healthy"],
        false,
        "its health stayed too: {v}"
    );
    let counts = s.spread(6);
    assert_eq!(counts.get("none"), None, "{counts:?}");
    assert_eq!(api.lists(), lists, "the Docker provider was not restarted");
    assert_eq!(s.sy.stderr_count("pool p docker: stopped"), 0);

    // Docker's settings change: that provider restarts (lists again), DNS keeps going.
    s.reload(pools(
        &socket,
        from_dns.addr.port(),
        json!({ "weight_label": "app.weight" }),
        slow,
    ));
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || api
            .lists()
            > lists),
        "the changed provider did not list again"
    );
    assert_eq!(
        s.sy.stderr_count("pool p docker: stopped"),
        1,
        "stderr:\n{}",
        s.sy.stderr()
    );
    assert_eq!(
        s.sy.stderr_count("pool p dns: stopped"),
        0,
        "stderr:\n{}",
        s.sy.stderr()
    );
    s.wait_members(&want, PROMPT);
}
