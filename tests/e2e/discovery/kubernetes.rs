//! `discovery.kubernetes` with kube-runtime's watcher inside switchyard against the
//! Kubernetes API test double (`kube_api`) through a kubeconfig file; one opt-in test
//! against a real cluster.

use super::kube_api::{slice, KubeApi};
use super::*;

/// Pool `p` from Service web's `port` in namespace default, through `kubeconfig`.
fn pool(kubeconfig: &std::path::Path, port: &str) -> Value {
    json!([{
        "name": "p",
        "retries": 0,
        "discovery": { "kubernetes": {
            "namespace": "default",
            "service": "web",
            "port": port,
            "kubeconfig": kubeconfig.display().to_string(),
        } },
    }])
}

/// A slice of Service web with one endpoint at 127.0.0.1 on `b`'s port (named http,
/// beside a metrics port that must not be chosen).
fn one(name: &str, b: &Backend, ready: bool, terminating: bool) -> serde_json::Value {
    slice(
        name,
        "web",
        &[("metrics", 9), ("http", b.addr.port())],
        &[("127.0.0.1", ready, terminating)],
    )
}

fn start(slices: &[serde_json::Value]) -> (KubeApi, tempfile::TempDir, std::path::PathBuf) {
    let api = KubeApi::start(listen_port(), slices);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, api.kubeconfig()).unwrap();
    (api, dir, path)
}

fn wait_watch(api: &KubeApi, s: &Setup) {
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || api
            .watches()
            >= 1),
        "switchyard never watched; stderr:\n{}",
        s.sy.stderr()
    );
}

#[test]
fn ready_endpoints_serve_terminating_ones_drain_and_removed_ones_leave() {
    let [a, b, other] = Backend::start_each(["a", "b", "other"]);
    let (api, _dir, kubeconfig) = start(&[
        one("web-a", &a, true, false),
        // Another Service's slice and a not-ready endpoint: not members.
        slice(
            "api-x",
            "api",
            &[("http", other.addr.port())],
            &[("127.0.0.1", true, false)],
        ),
        slice(
            "web-n",
            "web",
            &[("http", other.addr.port())],
            &[("127.0.0.1", false, false)],
        ),
    ]);
    let s = Setup::start(pool(&kubeconfig, "http"), &[]);
    s.wait_members(&[a.address()], Duration::from_secs(5));
    assert_eq!(s.backend(&a.address())["source"], "kubernetes");
    wait_watch(&api, &s);

    // ADDED: serves within 2 s.
    api.apply(one("web-b", &b, true, false));
    let took = s.wait_members(&[a.address(), b.address()], PROMPT);
    eprintln!("endpoint added -> member in {took:?}");
    let counts = s.spread(10);
    assert_eq!(counts.get("a"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&5), "{counts:?}");

    // MODIFIED to terminating while a request is on b: b drains (listed, no new
    // requests) and the request in flight finishes.
    b.set(Behaviour::with_delay(Duration::from_millis(700)));
    let on_b = b.count();
    let web = s.web;
    let in_flight = std::thread::spawn(move || {
        for _ in 0..10 {
            let r = get(web, "/");
            if r.header("x-backend") == Some("b") {
                return r.status;
            }
        }
        panic!("b never answered");
    });
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(5), || b
            .count()
            > on_b),
        "the slow request never reached b"
    );
    api.apply(one("web-b", &b, false, true));
    assert!(
        wait_until(PROMPT, Duration::from_millis(20), || s
            .backend(&b.address())["draining"]
            == true),
        "{}",
        s.pool()
    );
    let before = b.count();
    let counts = s.spread(6);
    assert_eq!(counts.get("a"), Some(&6), "{counts:?}");
    assert_eq!(
        b.count(),
        before,
        "a terminating endpoint takes no new request"
    );
    assert_eq!(
        in_flight.join().unwrap(),
        200,
        "the in-flight request finished"
    );
    b.set(Behaviour::default());

    // DELETED: leaves at once.
    api.delete("web-b");
    s.wait_members(&[a.address()], PROMPT);
    assert_eq!(other.count(), 0);
}

#[test]
fn the_watch_resumes_from_its_version_and_lists_again_after_410_gone() {
    let [a, b] = Backend::start_each(["a", "b"]);
    let (api, _dir, kubeconfig) = start(&[one("web-a", &a, true, false)]);
    let s = Setup::start(pool(&kubeconfig, "http"), &[]);
    s.wait_members(&[a.address()], Duration::from_secs(5));
    wait_watch(&api, &s);
    assert_eq!(api.lists(), 1);

    // Another Service's change moves the version on unseen, a BOOKMARK carries it, a
    // change of ours follows (seen: the pool changes). The server then ends the watch,
    // as at its timeout: the client watches again from the last version it saw,
    // without listing.
    api.apply(slice(
        "api-x",
        "api",
        &[("http", 9)],
        &[("127.0.0.9", true, false)],
    ));
    api.bookmark();
    let last = api.apply(one("web-b", &b, true, false));
    s.wait_members(&[a.address(), b.address()], PROMPT);
    api.end_watches();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || api
            .watch_versions()
            .len()
            >= 2),
        "no second watch: {:?}",
        api.watch_versions()
    );
    assert_eq!(api.watch_versions()[1], last, "{:?}", api.watch_versions());
    assert_eq!(api.lists(), 1, "resumed, not listed again");

    // Changes made while the client's next watch waits, then the history is compacted:
    // the resumed watch gets 410 Gone, the client lists again and finds the changes.
    wait_watch(&api, &s);
    api.hold(true);
    api.end_watches();
    api.delete("web-a");
    api.apply(one("web-b", &b, true, false));
    api.compact();
    api.hold(false);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || api
            .lists()
            >= 2),
        "no list after 410; stderr:\n{}",
        s.sy.stderr()
    );
    wait_watch(&api, &s);
    s.wait_members(&[b.address()], PROMPT);
    assert_eq!(
        s.errors("kubernetes"),
        0.0,
        "a 410 is routine, not a failure"
    );

    // The API server goes away: the set stays, failures are counted, one log line.
    api.stop();
    let errors = s.wait_errors_above("kubernetes", 0.0);
    s.wait_errors_above("kubernetes", errors);
    assert_eq!(s.addresses(), [b.address()]);
    let counts = s.spread(4);
    assert_eq!(counts.get("b"), Some(&4), "{counts:?}");
    assert_eq!(
        s.sy.stderr_count("kubernetes: Kubernetes API"),
        1,
        "stderr:\n{}",
        s.sy.stderr()
    );

    // Back on the same address with other slices (and its watch history gone): listed
    // again, recovery logged once.
    let (port, version) = (api.port, api.version());
    drop(api);
    let _api = KubeApi::start_at(port, &[one("web-a", &a, true, false)], version + 10);
    s.wait_members(&[a.address()], Duration::from_secs(10));
    assert_eq!(s.sy.stderr_count("kubernetes: answering again"), 1);
}

/// `kubeconfig: null` outside a cluster: `$KUBECONFIG` names the server; the port is
/// given by number (the slice's other port is 9).
#[test]
fn without_a_kubeconfig_key_kubeconfig_env_is_used() {
    let b = Backend::start("b");
    let (_api, _dir, kubeconfig) = start(&[one("web-b", &b, true, false)]);
    let pools = json!([{
        "name": "p",
        "discovery": { "kubernetes": { "service": "web", "port": b.addr.port() } },
    }]);
    let env = kubeconfig.display().to_string();
    let s = Setup::start(
        pools,
        &[
            ("KUBECONFIG", env.as_str()),
            ("KUBERNETES_SERVICE_HOST", ""),
        ],
    );
    s.wait_members(&[b.address()], Duration::from_secs(5));
}

/// Against a real cluster when `$KUBECONFIG` names a readable file: the `kubernetes`
/// Service of namespace default (every cluster has it) on its `https` port.
#[test]
fn a_real_cluster_when_kubeconfig_is_set() {
    let Some(path) = std::env::var("KUBECONFIG")
        .ok()
        .filter(|p| std::path::Path::new(p).is_file())
    else {
        eprintln!("skipped: $KUBECONFIG names no file (no Kubernetes cluster here)");
        return;
    };
    let file = Backend::start("file");
    let pools = json!([{
        "name": "p",
        "discovery": { "kubernetes": {
            "namespace": "default",
            "service": "kubernetes",
            "port": "https",
            "kubeconfig": path,
        } },
        "backends": [{ "address": file.address() }],
    }]);
    let s = Setup::start(pools, &[]);
    let found = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        s.backends().iter().any(|b| b["source"] == "kubernetes")
    });
    assert!(
        found,
        "no API server endpoint discovered; stderr:\n{}",
        s.sy.stderr()
    );
    assert_eq!(s.errors("kubernetes"), 0.0);
}

#[test]
fn the_namespace_key_picks_the_slices_namespace() {
    let [a, b] = Backend::start_each(["a", "b"]);
    let mut in_shop = one("web-a", &a, true, false);
    in_shop["metadata"]["namespace"] = serde_json::json!("shop");
    let (_api, _dir, kubeconfig) = start(&[in_shop, one("web-b", &b, true, false)]);
    let mut pools = pool(&kubeconfig, "http");
    pools[0]["discovery"]["kubernetes"]["namespace"] = json!("shop");
    let s = Setup::start(pools, &[]);
    s.wait_members(&[a.address()], Duration::from_secs(5));
    let counts = s.spread(4);
    assert_eq!(counts.get("a"), Some(&4), "{counts:?}");
}

/// packaging/kubernetes/deployment.yaml's ConfigMap holds a valid configuration.
#[test]
fn the_shipped_deployment_example_is_valid() {
    let manifest = include_str!("../../../packaging/kubernetes/deployment.yaml");
    let (_, rest) = manifest
        .split_once("  switchyard.yaml: |\n")
        .expect("the ConfigMap's switchyard.yaml");
    let block = rest.split("\n---").next().unwrap_or_default();
    let yaml: String = block
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(yaml.contains("kubernetes:"), "{yaml}");
    let (out, _, _dir) = check_config(&yaml);
    assert!(
        out.status.success(),
        "{}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}
