//! `discovery.docker` with bollard inside switchyard against the Docker Engine API test
//! server (`docker_api`) on a Unix socket; one opt-in test against a real engine.

use super::docker_api::{Container, DockerApi};
use super::*;

/// Pool `p` from the Docker API on `socket`, with `keys` laid over `discovery.docker`.
fn pool(socket: &std::path::Path, keys: Value) -> Value {
    let docker = with(json!({ "socket": socket.display().to_string() }), keys);
    json!([{ "name": "p", "retries": 0, "discovery": { "docker": docker } }])
}

fn labelled(id: &str, port: u16, more: &[(&str, &str)]) -> Container {
    let port = port.to_string();
    let mut labels = vec![("switchyard.pool", "p"), ("switchyard.port", port.as_str())];
    labels.extend_from_slice(more);
    let mut c = Container::new(id, &labels);
    c.networks = two_networks();
    c
}

fn one_network(mut c: Container) -> Container {
    c.networks = vec![("bridge".into(), "127.0.0.1".into())];
    c
}

fn two_networks() -> Vec<(String, String)> {
    vec![
        ("backend".into(), "127.0.0.1".into()),
        ("aaa-front".into(), "127.0.0.9".into()),
    ]
}

fn wait_stream(api: &DockerApi, s: &Setup) {
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || api
            .streams()
            >= 1),
        "switchyard never followed /events; stderr:\n{}",
        s.sy.stderr()
    );
}

#[test]
fn labelled_containers_serve_and_events_change_the_pool_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let a = Backend::start_with("a", Behaviour::with_delay(Duration::from_millis(700)));
    let [b, other] = Backend::start_each(["b", "other"]);
    let api = DockerApi::start(
        &socket,
        vec![
            labelled("aaaa", a.addr.port(), &[]),
            // Another pool's container and a stopped one of ours: not members.
            Container::new(
                "cccc",
                &[
                    ("switchyard.pool", "q"),
                    ("switchyard.port", &other.addr.port().to_string()),
                ],
            ),
            {
                let mut c = labelled("dddd", other.addr.port(), &[]);
                c.running = false;
                c
            },
        ],
    );
    // Every container sits on two networks; the pool names the one to use (the other
    // sorts first, so the default would pick it).
    let s = Setup::start(pool(&socket, json!({ "network": "backend" })), &[]);
    s.wait_members(&[a.address()], Duration::from_secs(5));
    assert_eq!(s.backend(&a.address())["source"], "docker");
    wait_stream(&api, &s);

    // A container starts: the event brings it in, with its weight label; it has no
    // port label, so its single exposed port is used.
    let mut c = Container::new(
        "bbbb",
        &[("switchyard.pool", "p"), ("switchyard.weight", "3")],
    );
    c.exposed = vec![b.addr.port()];
    c.networks = two_networks();
    api.run(c);
    let took = s.wait_members(&[a.address(), b.address()], PROMPT);
    eprintln!("container start -> member in {took:?}");
    assert_eq!(s.backend(&b.address())["weight"], 3, "weight label");
    let counts = s.spread(8);
    assert_eq!(counts.get("b"), Some(&6), "weights 1:3 {counts:?}");
    assert_eq!(counts.get("a"), Some(&2), "{counts:?}");

    // A stop while a request to it is in flight: no new requests from then on, the
    // in-flight one finishes.
    let web = s.web;
    let in_flight = std::thread::spawn(move || {
        let mut n = 0;
        loop {
            let r = get(web, "/");
            if r.header("x-backend") == Some("a") {
                return r.status;
            }
            n += 1;
            assert!(n < 10, "a never answered");
        }
    });
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(5), || a
            .count()
            >= 3),
        "the slow request never reached a"
    );
    api.stop_container("aaaa");
    s.wait_members(&[b.address()], PROMPT);
    let before = a.count();
    let counts = s.spread(6);
    assert_eq!(counts.get("b"), Some(&6), "{counts:?}");
    assert_eq!(
        a.count(),
        before,
        "no new request reached the stopped container"
    );
    assert_eq!(
        in_flight.join().unwrap(),
        200,
        "the in-flight request finished"
    );
}

#[test]
fn an_unhealthy_container_is_drained_and_the_engine_going_away_keeps_the_set() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let [a, b, c] = Backend::start_each(["a", "b", "c"]);
    let api = DockerApi::start(
        &socket,
        // One network each: the default (`network: null`) takes it.
        vec![
            one_network(labelled("aaaa", a.addr.port(), &[])),
            one_network(labelled("bbbb", b.addr.port(), &[])),
        ],
    );
    let s = Setup::start(pool(&socket, json!({})), &[]);
    s.wait_members(&[a.address(), b.address()], Duration::from_secs(5));
    wait_stream(&api, &s);

    // Docker's health check fails: the container drains (stays listed, no traffic).
    api.set_health("bbbb", false);
    assert!(
        wait_until(PROMPT, Duration::from_millis(20), || s
            .backend(&b.address())["draining"]
            == true),
        "{}",
        s.pool()
    );
    let counts = s.spread(6);
    assert_eq!(counts.get("a"), Some(&6), "{counts:?}");
    api.set_health("bbbb", true);
    assert!(wait_until(PROMPT, Duration::from_millis(20), || s
        .backend(&b.address())["draining"]
        == false));

    // The engine goes away: the last set keeps serving, failures are counted and
    // logged once.
    drop(api);
    let errors = s.wait_errors_above("docker", 0.0);
    s.wait_errors_above("docker", errors);
    assert_eq!(s.addresses(), {
        let mut v = vec![a.address(), b.address()];
        v.sort();
        v
    });
    let counts = s.spread(4);
    assert_eq!(counts.get("a"), Some(&2), "{counts:?}");
    let outage = s.sy.stderr_count("docker: Docker");
    assert_eq!(outage, 1, "one line per outage; stderr:\n{}", s.sy.stderr());

    // It comes back with other containers: listed again after the reconnect.
    let api = DockerApi::start(
        &socket,
        vec![one_network(labelled("cccc", c.addr.port(), &[]))],
    );
    s.wait_members(&[c.address()], Duration::from_secs(5));
    assert_eq!(s.sy.stderr_count("docker: answering again"), 1);
    wait_stream(&api, &s);
}

/// Against a real engine when `DOCKER_HOST` names a Unix socket: the provider connects
/// and lists (no container carries the test's label, so the pool keeps only its static
/// backend) without counting errors.
#[test]
fn a_real_engine_when_docker_host_is_set() {
    let Some(socket) = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
    else {
        eprintln!("skipped: DOCKER_HOST is not set to a unix:// socket (no Docker engine here)");
        return;
    };
    let file = Backend::start("file");
    let pools = json!([{
        "name": "p",
        "discovery": { "docker": {
            "socket": socket,
            "label": format!("switchyard.e2e.{}", std::process::id()),
        } },
        "backends": [{ "address": file.address() }],
    }]);
    let s = Setup::start(pools, &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.errors("docker"), 0.0, "stderr:\n{}", s.sy.stderr());
    assert_eq!(s.addresses(), [file.address()]);
}

#[test]
fn the_label_keys_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let [a, b] = Backend::start_each(["a", "b"]);
    let (pa, pb) = (a.addr.port().to_string(), b.addr.port().to_string());
    let api = DockerApi::start(
        &socket,
        vec![
            one_network(Container::new(
                "aaaa",
                &[
                    ("com.example.lb", "p"),
                    ("com.example.port", &pa),
                    ("com.example.weight", "4"),
                ],
            )),
            // The default keys mean nothing here.
            one_network(Container::new(
                "bbbb",
                &[("switchyard.pool", "p"), ("switchyard.port", &pb)],
            )),
        ],
    );
    let keys = json!({
        "label": "com.example.lb",
        "port_label": "com.example.port",
        "weight_label": "com.example.weight",
    });
    let s = Setup::start(pool(&socket, keys), &[]);
    s.wait_members(&[a.address()], Duration::from_secs(5));
    assert_eq!(s.backend(&a.address())["weight"], 4);
    drop(api);
}
