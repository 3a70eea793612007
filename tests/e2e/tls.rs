//! TLS end to end (SPEC §3 listeners.tls and upstream.tls, §9 mTLS and certificate
//! reload): SNI certificate selection, protocol versions, reload of new file contents at
//! unchanged paths, mutual TLS, ALPN h2, upstream TLS verification, HSTS and `-t` checks.
//! Certificates come from a private CA made at test time; clients are OpenSSL (and curl).
use crate::common::config::*;
use crate::common::*;
use openssl::pkey::{PKey, Private};
use openssl::ssl::SslVersion;
use openssl::x509::X509;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A private CA and three server certificates, written to a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    ca_file: String,
    /// (certificate, key, cert path, key path) for a.example.com, b.example.com, *.wild.test.
    a: Leaf,
    b: Leaf,
    wild: Leaf,
}

struct Leaf {
    cert: X509,
    key: PKey<Private>,
    cert_file: String,
    key_file: String,
}

impl Leaf {
    fn new(ca: &TestCa, dir: &std::path::Path, stem: &str, cn: &str, sans: &[&str]) -> Leaf {
        let (cert, key) = ca.issue(&[("CN", cn)], sans, CertUse::Server);
        let (cert_file, key_file) = write_pair(dir, stem, &cert, &[], &key);
        Leaf {
            cert,
            key,
            cert_file,
            key_file,
        }
    }

    /// Its `certificates:` entry.
    fn entry(&self) -> Value {
        certificate(&self.cert_file, &self.key_file)
    }
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir for certificates");
        let ca = TestCa::new("Switchyard Test Root CA");
        let ca_file = ca.write(dir.path(), "ca.pem");
        let a = Leaf::new(
            &ca,
            dir.path(),
            "a",
            "a.example.com",
            &["DNS:a.example.com"],
        );
        let b = Leaf::new(
            &ca,
            dir.path(),
            "b",
            "b.example.com",
            &["DNS:b.example.com", "DNS:www.b.example.com"],
        );
        let wild = Leaf::new(&ca, dir.path(), "wild", "wild.test", &["DNS:*.wild.test"]);
        Pki {
            dir,
            ca,
            ca_file,
            a,
            b,
            wild,
        }
    }

    fn client(&self, sni: &str) -> TlsClient {
        TlsClient {
            sni: Some(sni.to_string()),
            ca: Some(self.ca.cert.clone()),
            ..TlsClient::default()
        }
    }
}

/// A TLS listener `name` on `port` with `certs` and `tls_keys` added under `tls:`.
fn tls_listener_with(name: &str, port: u16, certs: &[&Leaf], tls_keys: Value) -> Value {
    let certificates: Vec<Value> = certs.iter().map(|c| c.entry()).collect();
    let mut l = listener(name, port);
    l["tls"] = with(json!({ "certificates": certificates }), tls_keys);
    l
}

/// One TLS listener with `certs` and `tls_keys` under `tls:`, one pool, one route.
fn tls_config(port: u16, backend: &str, certs: &[&Leaf], tls_keys: Value) -> Value {
    one_pool_config(
        json!([tls_listener_with("websecure", port, certs, tls_keys)]),
        backend,
        json!({}),
    )
}

/// Backend `a` behind `tls_config` on a new port.
fn start_tls(certs: &[&Leaf], tls_keys: Value) -> (Backend, Switchyard, u16) {
    let backend = Backend::start("a");
    let port = listen_port();
    let sy = Switchyard::start_config(
        &tls_config(port, &backend.address(), certs, tls_keys),
        &[port],
    );
    (backend, sy, port)
}

/// A plaintext listener `web` and a TLS listener `websecure` (a.example.com) in front of
/// `backend`, route `r` with `route_keys`: the plaintext and the TLS port.
fn start_plain_and_tls(pki: &Pki, backend: &Backend, route_keys: Value) -> (Switchyard, u16, u16) {
    let (plain, secure) = (listen_port(), listen_port());
    let listeners = json!([
        listener("web", plain),
        tls_listener_with("websecure", secure, &[&pki.a], json!({})),
    ]);
    let config = one_pool_config(listeners, &backend.address(), route_keys);
    (
        Switchyard::start_config(&config, &[plain, secure]),
        plain,
        secure,
    )
}

/// Client certificates from `ca_file` under `client_auth` (`require` or `optional`).
fn client_auth(ca_file: &str, mode: &str) -> Value {
    json!({ "client_ca_file": ca_file, "client_auth": mode })
}

/// curl offering HTTP/2 to https://a.example.com:`port``path` (resolved to 127.0.0.1,
/// verified against the test CA) with `extra` arguments; (success, body followed by
/// "\nHTTP-VERSION STATUS", stderr).
fn curl_a_example(pki: &Pki, port: u16, path: &str, extra: &[&str]) -> (bool, String, String) {
    let resolve = format!("a.example.com:{port}:127.0.0.1");
    let url = format!("https://a.example.com:{port}{path}");
    let mut args = vec![
        "-sS",
        "--http2",
        "--cacert",
        &pki.ca_file,
        "--resolve",
        &resolve,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-w", "\n%{http_version} %{http_code}", &url]);
    curl(&args)
}

fn ok_reply(r: Result<Reply, String>, what: &str) -> Reply {
    let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.status, 200, "{what}: {r:?}");
    r
}

#[test]
fn sni_picks_each_certificate_and_the_first_is_the_default() {
    let pki = Pki::new();
    let (backend, _sy, port) = start_tls(&[&pki.a, &pki.b, &pki.wild], json!({}));

    // Each name gets its own certificate, verified against the CA and the name.
    for (sni, want) in [
        ("a.example.com", &pki.a),
        ("b.example.com", &pki.b),
        ("www.b.example.com", &pki.b),
        ("api.wild.test", &pki.wild),
        ("B.Example.COM", &pki.b),
    ] {
        let s = pki
            .client(sni)
            .connect(port)
            .unwrap_or_else(|e| panic!("handshake for {sni}: {e}"));
        assert_eq!(
            fingerprint(&served_cert(&s)),
            fingerprint(&want.cert),
            "SNI {sni} got {}",
            common_name(&served_cert(&s))
        );
        drop(s);
        let r = ok_reply(pki.client(sni).get(port, "/sni", &[]), sni);
        assert_eq!(r.body, "backend a\n");
    }

    // Unknown and missing SNI: the first certificate.
    let unknown = TlsClient::sni("unknown.test")
        .connect(port)
        .expect("unknown SNI");
    assert_eq!(common_name(&served_cert(&unknown)), "a.example.com");
    let none = TlsClient::default().connect(port).expect("no SNI");
    assert_eq!(common_name(&served_cert(&none)), "a.example.com");
    let r = ok_reply(TlsClient::default().get(port, "/nosni", &[]), "no SNI");
    assert_eq!(r.body, "backend a\n");
    assert_eq!(backend.last().expect("backend saw it").path, "/nosni");
}

#[test]
fn the_default_certificate_is_the_first_listed_not_the_alphabetical_one() {
    let pki = Pki::new();
    let (_backend, _sy, port) = start_tls(&[&pki.b, &pki.wild, &pki.a], json!({}));
    let s = TlsClient::sni("nothing.here")
        .connect(port)
        .expect("handshake");
    assert_eq!(common_name(&served_cert(&s)), "b.example.com");
    let s = pki
        .client("a.example.com")
        .connect(port)
        .expect("handshake a");
    assert_eq!(common_name(&served_cert(&s)), "a.example.com");
}

#[test]
fn the_full_chain_is_served() {
    // A leaf issued by an intermediate; the client trusts only the root.
    let pki = Pki::new();
    let intermediate = pki.ca.intermediate("Switchyard Test Intermediate");
    let (cert, key) = intermediate.issue(
        &[("CN", "chain.example.com")],
        &["DNS:chain.example.com"],
        CertUse::Server,
    );
    let (cert_file, key_file) =
        write_pair(pki.dir.path(), "chain", &cert, &[&intermediate.cert], &key);
    let leaf = Leaf {
        cert,
        key,
        cert_file,
        key_file,
    };
    let (_backend, _sy, port) = start_tls(&[&pki.a, &leaf], json!({}));
    let s = pki
        .client("chain.example.com")
        .connect(port)
        .expect("the chain verifies against the root alone");
    let chain = s.ssl().peer_cert_chain().expect("peer chain");
    let served: Vec<String> = chain.iter().map(common_name).collect();
    assert_eq!(
        served,
        vec!["chain.example.com", "Switchyard Test Intermediate"]
    );
    ok_reply(pki.client("chain.example.com").get(port, "/", &[]), "chain");
}

#[test]
fn a_wildcard_san_covers_exactly_one_label() {
    let pki = Pki::new();
    let (_backend, _sy, port) = start_tls(&[&pki.a, &pki.wild], json!({}));

    for sni in ["x.wild.test", "Deep.WILD.test", "wild-card.wild.test"] {
        // Verified by the client: chain and host name.
        let s = pki
            .client(sni)
            .connect(port)
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(
            fingerprint(&served_cert(&s)),
            fingerprint(&pki.wild.cert),
            "{sni}"
        );
        ok_reply(pki.client(sni).get(port, "/", &[]), sni);
    }
    // Two labels deep and the apex are not covered: the default certificate.
    for sni in ["a.b.wild.test", "wild.test", "xwild.test"] {
        let s = TlsClient::sni(sni).connect(port).expect("handshake");
        assert_eq!(common_name(&served_cert(&s)), "a.example.com", "{sni}");
    }
}

#[test]
fn tls_1_1_is_refused_and_1_2_and_1_3_are_accepted() {
    let pki = Pki::new();
    let (backend, _sy, port) = start_tls(&[&pki.a], json!({}));

    for v in [SslVersion::TLS1_1, SslVersion::TLS1] {
        let old = TlsClient {
            min_version: Some(v),
            max_version: Some(v),
            legacy: true,
            ..pki.client("a.example.com")
        };
        let err = old
            .get(port, "/old", &[])
            .expect_err("a TLS 1.0/1.1 handshake must fail");
        // The server's protocol_version alert: the client did offer the old version.
        assert!(
            err.contains("alert protocol version"),
            "expected the server to refuse {v:?} with a protocol_version alert: {err}"
        );
    }
    assert_eq!(
        backend.count(),
        0,
        "no request over an old protocol reached the backend"
    );

    for (v, name) in [
        (SslVersion::TLS1_2, "TLSv1.2"),
        (SslVersion::TLS1_3, "TLSv1.3"),
    ] {
        let c = TlsClient {
            min_version: Some(v),
            max_version: Some(v),
            ..pki.client("a.example.com")
        };
        let s = c.connect(port).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.ssl().version_str(), name);
        ok_reply(c.get(port, "/", &[]), name);
    }
    // A client with defaults negotiates the newest.
    let s = pki
        .client("a.example.com")
        .connect(port)
        .expect("default client");
    assert_eq!(s.ssl().version_str(), "TLSv1.3");
}

#[test]
fn min_version_1_3_refuses_tls_1_2() {
    let pki = Pki::new();
    let (backend, _sy, port) = start_tls(&[&pki.a], json!({ "min_version": "1.3" }));

    let tls12 = TlsClient {
        max_version: Some(SslVersion::TLS1_2),
        ..pki.client("a.example.com")
    };
    let err = tls12
        .get(port, "/", &[])
        .expect_err("TLS 1.2 must be refused");
    assert!(err.contains("alert protocol version"), "{err}");
    assert_eq!(backend.count(), 0);

    let tls13 = TlsClient {
        min_version: Some(SslVersion::TLS1_3),
        ..pki.client("a.example.com")
    };
    let s = tls13.connect(port).expect("TLS 1.3 handshake");
    assert_eq!(s.ssl().version_str(), "TLSv1.3");
    ok_reply(tls13.get(port, "/", &[]), "TLS 1.3");
    assert_eq!(backend.count(), 1);
}

/// Outcome of one request of the steady client loop.
struct Sample {
    fingerprint: Option<String>,
    error: Option<String>,
}

#[test]
fn sighup_reloads_new_certificate_contents_at_unchanged_paths_without_failures() {
    let pki = Pki::new();
    let (_backend, sy, port) = start_tls(&[&pki.a, &pki.b], json!({}));
    let old_a = fingerprint(&pki.a.cert);

    // A keep-alive connection opened before the reload must keep working after it.
    let mut kept = pki
        .client("a.example.com")
        .connect(port)
        .expect("keep-alive handshake");
    let hs = [("Host", "a.example.com")];
    tls_send_request(&mut kept, "GET", "/before", &hs).expect("send");
    assert_eq!(tls_read_reply(&mut kept).expect("reply").status, 200);

    // The new pair: same names, new key and serial.
    let (new_cert, new_key) = pki.ca.issue(
        &[("CN", "a.example.com")],
        &["DNS:a.example.com"],
        CertUse::Server,
    );
    let new_a = fingerprint(&new_cert);
    assert_ne!(old_a, new_a);

    // Steady requests: at least 200, and at least 50 after the new certificate showed up
    // (bounded: 2000 requests or 60 s).
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let seen_new = Arc::new(AtomicUsize::new(0));
    let client = pki.client("a.example.com");
    let (s2, d2, n2, want_new) = (
        samples.clone(),
        done.clone(),
        seen_new.clone(),
        new_a.clone(),
    );
    let looper = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut i = 0;
        while (i < 200 || n2.load(Ordering::Relaxed) < 50) && i < 2000 && Instant::now() < deadline
        {
            i += 1;
            let sample = match client.connect(port) {
                Err(e) => Sample {
                    fingerprint: None,
                    error: Some(format!("handshake: {e}")),
                },
                Ok(mut s) => {
                    let fp = fingerprint(&served_cert(&s));
                    if fp == want_new {
                        n2.fetch_add(1, Ordering::Relaxed);
                    }
                    let hs = [("Host", "a.example.com"), ("Connection", "close")];
                    let res = tls_send_request(&mut s, "GET", &format!("/steady/{i}"), &hs)
                        .and_then(|_| tls_read_reply(&mut s));
                    let error = match res {
                        Ok(r) if r.status == 200 => None,
                        Ok(r) => Some(format!("status {}", r.status)),
                        Err(e) => Some(e),
                    };
                    Sample {
                        fingerprint: Some(fp),
                        error,
                    }
                }
            };
            if let Ok(mut v) = s2.lock() {
                v.push(sample);
            }
            d2.fetch_add(1, Ordering::Relaxed);
        }
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::Relaxed) < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        done.load(Ordering::Relaxed) >= 50,
        "the client loop is stuck"
    );
    // Overwrite both files in place (as certbot's renewal does at unchanged paths), then HUP.
    write_pair(pki.dir.path(), "a", &new_cert, &[], &new_key);
    sy.signal("-HUP");
    assert!(
        sy.wait_stderr("reloaded", 1, Duration::from_secs(10)),
        "no reload logged:\n{}",
        sy.stderr()
    );
    looper.join().expect("client loop");

    let samples = samples.lock().expect("samples");
    let failures: Vec<(usize, &String)> = samples
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.error.as_ref().map(|e| (i, e)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the reload: {:?}",
        failures.len(),
        samples.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(samples.len() >= 200, "only {} requests", samples.len());
    let fps: Vec<&str> = samples
        .iter()
        .filter_map(|s| s.fingerprint.as_deref())
        .collect();
    assert_eq!(
        fps.first(),
        Some(&old_a.as_str()),
        "the old certificate served first"
    );
    assert_eq!(
        fps.last(),
        Some(&new_a.as_str()),
        "the new certificate served at the end"
    );
    assert!(
        fps.iter().all(|f| *f == old_a || *f == new_a),
        "only the old or the new certificate of a.example.com is served"
    );
    // Once the new certificate appears, the old one never comes back.
    let first_new = fps
        .iter()
        .position(|f| *f == new_a)
        .expect("new certificate seen");
    assert!(
        fps[first_new..].iter().all(|f| *f == new_a),
        "old certificate after the switch"
    );

    // The untouched certificate is still served for its name.
    let s = pki
        .client("b.example.com")
        .connect(port)
        .expect("b after reload");
    assert_eq!(fingerprint(&served_cert(&s)), fingerprint(&pki.b.cert));

    // The connection opened before the reload still works, on its old certificate.
    tls_send_request(&mut kept, "GET", "/after", &hs).expect("send on the kept connection");
    let r = tls_read_reply(&mut kept).expect("reply on the kept connection");
    assert_eq!(r.status, 200);
    assert_eq!(fingerprint(&served_cert(&kept)), old_a);
}

#[test]
fn sighup_follows_certificate_symlinks_to_new_files() {
    // The certbot layout: the configured paths are symlinks re-pointed at new files.
    let pki = Pki::new();
    let dir = pki.dir.path();
    let (live_cert, live_key) = (dir.join("live.pem"), dir.join("live.key"));
    std::os::unix::fs::symlink(&pki.a.cert_file, &live_cert).expect("symlink cert");
    std::os::unix::fs::symlink(&pki.a.key_file, &live_key).expect("symlink key");
    let live = Leaf {
        cert: pki.a.cert.clone(),
        key: pki.a.key.clone(),
        cert_file: live_cert.display().to_string(),
        key_file: live_key.display().to_string(),
    };
    let (_backend, sy, port) = start_tls(&[&live], json!({}));
    let s = pki
        .client("a.example.com")
        .connect(port)
        .expect("handshake");
    assert_eq!(fingerprint(&served_cert(&s)), fingerprint(&pki.a.cert));

    let (cert, key) = pki.ca.issue(
        &[("CN", "a.example.com")],
        &["DNS:a.example.com"],
        CertUse::Server,
    );
    let (new_cert_file, new_key_file) = write_pair(dir, "a-renewed", &cert, &[], &key);
    for (link, target) in [(&live_cert, &new_cert_file), (&live_key, &new_key_file)] {
        let tmp = dir.join("tmp-link");
        std::os::unix::fs::symlink(target, &tmp).expect("new symlink");
        std::fs::rename(&tmp, link).expect("re-point symlink");
    }
    sy.signal("-HUP");
    assert!(
        sy.wait_stderr("reloaded ", 1, Duration::from_secs(10)),
        "{}",
        sy.stderr()
    );
    let s = pki
        .client("a.example.com")
        .connect(port)
        .expect("handshake after renewal");
    assert_eq!(fingerprint(&served_cert(&s)), fingerprint(&cert));
    ok_reply(
        pki.client("a.example.com").get(port, "/", &[]),
        "after renewal",
    );
}

#[test]
fn a_mismatched_key_on_reload_is_rejected_and_the_old_certificate_keeps_serving() {
    let pki = Pki::new();
    let (_backend, sy, port) = start_tls(&[&pki.a], json!({}));
    let old_a = fingerprint(&pki.a.cert);

    // A new certificate with the old key's file replaced by an unrelated key.
    let (new_cert, _its_key) = pki.ca.issue(
        &[("CN", "a.example.com")],
        &["DNS:a.example.com"],
        CertUse::Server,
    );
    let unrelated = new_key();
    write_pair(pki.dir.path(), "a", &new_cert, &[], &unrelated);
    sy.signal("-HUP");
    assert!(
        sy.wait_stderr("does not match", 1, Duration::from_secs(10)),
        "the mismatched pair is not reported:\n{}",
        sy.stderr()
    );
    let log = sy.stderr();
    assert!(
        log.contains(&pki.a.key_file) && log.contains(&pki.a.cert_file),
        "the error names the key and certificate files:\n{log}"
    );
    assert_eq!(
        sy.stderr_count("reloaded "),
        0,
        "the reload was not applied:\n{log}"
    );

    for _ in 0..5 {
        let s = pki
            .client("a.example.com")
            .connect(port)
            .expect("handshake after a rejected reload");
        assert_eq!(
            fingerprint(&served_cert(&s)),
            old_a,
            "the old certificate keeps serving"
        );
        ok_reply(
            pki.client("a.example.com").get(port, "/", &[]),
            "after rejected reload",
        );
    }
    assert!(sy.child.id() > 0);

    // Fixing the pair and reloading again switches to the new certificate.
    let (fixed_cert, fixed_key) = pki.ca.issue(
        &[("CN", "a.example.com")],
        &["DNS:a.example.com"],
        CertUse::Server,
    );
    write_pair(pki.dir.path(), "a", &fixed_cert, &[], &fixed_key);
    sy.signal("-HUP");
    assert!(
        sy.wait_stderr("reloaded ", 1, Duration::from_secs(10)),
        "the fixed pair was not reloaded:\n{}",
        sy.stderr()
    );
    let s = pki
        .client("a.example.com")
        .connect(port)
        .expect("handshake after the fix");
    assert_eq!(fingerprint(&served_cert(&s)), fingerprint(&fixed_cert));
}

/// Mutual TLS fixtures: the client CA (trusted by the listener), a client certificate it
/// issued, and a client certificate from an unrelated CA.
struct Clients {
    ca_file: String,
    good: (X509, PKey<Private>),
    untrusted: (X509, PKey<Private>),
}

fn clients(pki: &Pki) -> Clients {
    let client_ca = TestCa::new("Switchyard Test Client CA");
    let ca_file = client_ca.write(pki.dir.path(), "clients-ca.pem");
    let good = client_ca.issue(
        &[("CN", "client-one"), ("O", "Example")],
        &[],
        CertUse::Client,
    );
    let rogue_ca = TestCa::new("Rogue CA");
    let untrusted = rogue_ca.issue(
        &[("CN", "client-one"), ("O", "Example")],
        &[],
        CertUse::Client,
    );
    Clients {
        ca_file,
        good,
        untrusted,
    }
}

const FORGED: (&str, &str) = ("X-Client-Cert-Subject", "CN=admin,O=Forged");

#[test]
fn mtls_require_admits_only_a_trusted_client_certificate() {
    let pki = Pki::new();
    let c = clients(&pki);
    let (backend, _sy, port) = start_tls(&[&pki.a], client_auth(&c.ca_file, "require"));

    let with = |id: &(X509, PKey<Private>)| TlsClient {
        identity: Some(id.clone()),
        ..pki.client("a.example.com")
    };
    // Valid: 200, and the backend gets the verified subject (never the client's own).
    ok_reply(
        with(&c.good).get(port, "/m", &[FORGED]),
        "valid client certificate",
    );
    let seen = backend.last().expect("backend saw the request");
    assert_eq!(
        seen.header_all("x-client-cert-subject"),
        vec!["CN=client-one,O=Example"]
    );
    ok_reply(
        with(&c.good).get(port, "/m2", &[]),
        "valid client certificate again",
    );
    assert_eq!(
        backend
            .last()
            .expect("second")
            .header_all("x-client-cert-subject"),
        vec!["CN=client-one,O=Example"]
    );
    let reached = backend.count();
    assert_eq!(reached, 2);

    // Missing or untrusted: the handshake fails (over TLS 1.2 and 1.3) and no request
    // reaches the backend.
    for v in [SslVersion::TLS1_2, SslVersion::TLS1_3] {
        let version = |mut c: TlsClient| {
            c.min_version = Some(v);
            c.max_version = Some(v);
            c
        };
        let err = version(pki.client("a.example.com"))
            .get(port, "/missing", &[FORGED])
            .expect_err("no client certificate must fail the handshake");
        // The server's alert: handshake_failure (1.2) or certificate_required (1.3).
        assert!(
            err.contains("alert handshake failure") || err.contains("alert certificate required"),
            "{v:?} without a certificate: {err}"
        );
        let err = version(with(&c.untrusted))
            .get(port, "/untrusted", &[FORGED])
            .expect_err("an untrusted client certificate must fail the handshake");
        assert!(err.contains("alert unknown ca"), "{v:?} untrusted: {err}");
        if v == SslVersion::TLS1_2 {
            // TLS 1.2: the server decides inside the handshake itself.
            assert!(version(pki.client("a.example.com")).connect(port).is_err());
            assert!(version(with(&c.untrusted)).connect(port).is_err());
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        backend.count(),
        reached,
        "a refused client reached the backend"
    );

    // Over HTTP/2 the verified subject reaches the backend too (curl with a client cert).
    let (cert_file, key_file) = write_pair(pki.dir.path(), "client", &c.good.0, &[], &c.good.1);
    let extra = [
        "--cert",
        &cert_file,
        "--key",
        &key_file,
        "-H",
        "X-Client-Cert-Subject: CN=admin",
    ];
    let (_ok, text, err) = curl_a_example(&pki, port, "/h2-mtls", &extra);
    assert!(
        text.ends_with("\n2 200"),
        "mTLS over HTTP/2: {text:?} {err}"
    );
    let seen = backend.last().expect("backend saw the h2 request");
    assert_eq!(seen.path, "/h2-mtls");
    assert_eq!(
        seen.header_all("x-client-cert-subject"),
        vec!["CN=client-one,O=Example"]
    );
}

#[test]
fn mtls_optional_lets_a_missing_certificate_through_but_not_an_untrusted_one() {
    let pki = Pki::new();
    let c = clients(&pki);
    let (backend, _sy, port) = start_tls(&[&pki.a], client_auth(&c.ca_file, "optional"));

    // Missing: 200 without the header, even when the client sent one.
    ok_reply(
        pki.client("a.example.com").get(port, "/anon", &[FORGED]),
        "no client certificate",
    );
    let seen = backend.last().expect("backend saw the request");
    assert!(
        seen.header_all("x-client-cert-subject").is_empty(),
        "no verified subject, so no header: {:?}",
        seen.headers
    );

    // Valid: the subject.
    let good = TlsClient {
        identity: Some(c.good.clone()),
        ..pki.client("a.example.com")
    };
    ok_reply(good.get(port, "/id", &[FORGED]), "valid client certificate");
    assert_eq!(
        backend
            .last()
            .expect("second")
            .header_all("x-client-cert-subject"),
        vec!["CN=client-one,O=Example"]
    );

    // Untrusted: refused.
    let reached = backend.count();
    let rogue = TlsClient {
        identity: Some(c.untrusted.clone()),
        ..pki.client("a.example.com")
    };
    let err = rogue
        .get(port, "/rogue", &[])
        .expect_err("an untrusted client certificate must fail the handshake");
    assert!(err.contains("alert unknown ca"), "{err}");
    let rogue12 = TlsClient {
        max_version: Some(SslVersion::TLS1_2),
        ..rogue
    };
    assert!(
        rogue12.connect(port).is_err(),
        "TLS 1.2 handshake with an untrusted certificate"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(backend.count(), reached);
}

#[test]
fn a_client_sent_cert_subject_is_removed_without_mutual_tls() {
    let pki = Pki::new();
    let backend = Backend::start("a");
    let (_sy, plain, secure) = start_plain_and_tls(&pki, &backend, json!({}));
    ok_reply(
        pki.client("a.example.com").get(secure, "/", &[FORGED]),
        "TLS",
    );
    assert!(backend
        .last()
        .expect("tls")
        .header_all("x-client-cert-subject")
        .is_empty());
    let r = request(plain, "GET", "/", &[FORGED], b"");
    assert_eq!(r.status, 200);
    assert!(backend
        .last()
        .expect("plain")
        .header_all("x-client-cert-subject")
        .is_empty());
}

#[test]
fn alpn_offers_h2_on_tls_listeners_unless_http2_is_off() {
    let pki = Pki::new();
    let backend = Backend::start("a");
    let (on, off) = (listen_port(), listen_port());
    let h1 = with(
        tls_listener_with("h1", off, &[&pki.a], json!({})),
        json!({ "http2": false }),
    );
    let listeners = json!([tls_listener_with("h2", on, &[&pki.a], json!({})), h1]);
    let config = one_pool_config(listeners, &backend.address(), json!({}));
    let _sy = Switchyard::start_config(&config, &[on, off]);
    let offer = TlsClient {
        alpn: vec!["h2", "http/1.1"],
        ..pki.client("a.example.com")
    };
    let s = offer.connect(on).expect("handshake with ALPN");
    assert_eq!(
        s.ssl().selected_alpn_protocol(),
        Some(&b"h2"[..]),
        "http2 defaults to on with TLS"
    );
    let s = offer.connect(off).expect("handshake with ALPN, http2 off");
    assert_ne!(
        s.ssl().selected_alpn_protocol(),
        Some(&b"h2"[..]),
        "http2: false offers no h2"
    );

    // A real HTTP/2 client end to end.
    let (ok, text, err) = curl_a_example(&pki, on, "/over-h2", &[]);
    assert!(ok, "curl failed: {err}");
    assert!(
        text.ends_with("\n2 200"),
        "curl --http2 did not get HTTP/2 200: {text:?}"
    );
    assert!(text.starts_with("backend a\n"), "{text:?}");
    let seen = backend.last().expect("backend saw the h2 request");
    assert_eq!(seen.path, "/over-h2");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    // Many concurrent streams over two TLS connections (h2load, from nghttp2-client).
    let url = format!("https://127.0.0.1:{on}/load");
    let out = h2load(&["-n", "40", "-c", "2", "-m", "10", &url]);
    assert!(
        out.contains("40 succeeded, 0 failed, 0 errored"),
        "h2load over TLS: {out}"
    );
    assert!(out.contains("status codes: 40 2xx"), "{out}");
    assert!(out.contains("Application protocol: h2"), "{out}");

    let (_ok, text, _err) = curl_a_example(&pki, off, "/over-h1", &[]);
    assert!(
        text.ends_with("\n1.1 200"),
        "http2: false falls back to HTTP/1.1: {text:?}"
    );
}

#[test]
fn security_headers_add_hsts_only_over_tls() {
    let pki = Pki::new();
    let backend = Backend::start("a");
    let (_sy, plain, secure) =
        start_plain_and_tls(&pki, &backend, json!({ "security_headers": true }));
    let r = ok_reply(pki.client("a.example.com").get(secure, "/", &[]), "TLS");
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        r.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    let r = get(plain, "/");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("strict-transport-security"),
        None,
        "no HSTS over plaintext"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

// ---------------------------------------------------------------------------------------
// Upstream TLS
// ---------------------------------------------------------------------------------------

/// An HTTP/1.1-over-TLS backend: answers every request `200 tls backend` and closes
/// (or, started with `keep_alive`, keeps the connection for further requests).
/// Records the SNI of each handshake.
struct TlsBackend {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    snis: Arc<Mutex<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
}

impl TlsBackend {
    fn start(cert: &X509, key: &PKey<Private>) -> TlsBackend {
        Self::start_with(cert, key, false)
    }

    fn start_with(cert: &X509, key: &PKey<Private>, keep_alive: bool) -> TlsBackend {
        use openssl::ssl::{SslAcceptor, SslMethod};
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        b.set_certificate(cert).expect("cert");
        b.set_private_key(key).expect("key");
        let snis: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let record = snis.clone();
        b.set_servername_callback(move |ssl, _| {
            if let Ok(mut v) = record.lock() {
                v.push(
                    ssl.servername(openssl::ssl::NameType::HOST_NAME)
                        .map(String::from),
                );
            }
            Ok(())
        });
        let acceptor = Arc::new(b.build());
        let listener = StdListener::bind("127.0.0.1:0").expect("bind TLS backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let backend = TlsBackend {
            addr: listener.local_addr().expect("addr"),
            requests: Arc::default(),
            snis,
            stop: Arc::default(),
        };
        let (requests, stop) = (backend.requests.clone(), backend.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (acceptor, requests) = (acceptor.clone(), requests.clone());
                std::thread::spawn(move || {
                    let _ = tcp.set_nonblocking(false);
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                    let Ok(mut s) = acceptor.accept(tcp) else {
                        return;
                    };
                    // Requests carry no body here; at most 100 on one connection.
                    for _ in 0..100 {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        requests.fetch_add(1, Ordering::Relaxed);
                        let body = "tls backend\n";
                        let connection = if keep_alive { "keep-alive" } else { "close" };
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).is_err() || !keep_alive {
                            break;
                        }
                    }
                    let _ = s.shutdown();
                });
            }
        });
        backend
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Pool `name` over `backend` (no health check, no retries) with `upstream: {tls: ...}`.
fn upstream_pool(name: &str, backend: &TlsBackend, upstream_tls: Value) -> Value {
    with(
        pool(name, &[backend.addr.to_string()]),
        json!({
            "health_check": { "kind": "none" },
            "retries": 0,
            "upstream": { "tls": upstream_tls },
        }),
    )
}

/// A plaintext listener in front of one pool whose backend speaks TLS (`upstream_tls`
/// is the mapping under `upstream: {tls: ...}`).
fn upstream_config(port: u16, backend: &TlsBackend, upstream_tls: Value) -> Value {
    config_of(
        json!([listener("web", port)]),
        json!([upstream_pool("p", backend, upstream_tls)]),
        json!([route("r", "p")]),
    )
}

/// A TLS backend whose certificate names only `localhost` (no IP SAN).
fn localhost_only_backend(keep_alive: bool) -> (Pki, TlsBackend) {
    let pki = Pki::new();
    let (cert, key) = pki
        .ca
        .issue(&[("CN", "localhost")], &["DNS:localhost"], CertUse::Server);
    let backend = TlsBackend::start_with(&cert, &key, keep_alive);
    (pki, backend)
}

fn backend_pki() -> (Pki, TlsBackend) {
    let pki = Pki::new();
    let (cert, key) = pki.ca.issue(
        &[("CN", "localhost")],
        &["DNS:localhost", "IP:127.0.0.1"],
        CertUse::Server,
    );
    let backend = TlsBackend::start(&cert, &key);
    (pki, backend)
}

#[test]
fn upstream_tls_verified_against_a_trusted_ca_file_passes() {
    let (pki, backend) = backend_pki();
    let port = listen_port();
    let config = upstream_config(
        port,
        &backend,
        json!({ "sni": "localhost", "verify": true, "ca_file": pki.ca_file }),
    );
    let _sy = Switchyard::start_config(&config, &[port]);
    let r = get(port, "/up");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "tls backend\n");
    assert_eq!(backend.count(), 1);
    assert!(
        backend
            .snis
            .lock()
            .expect("snis")
            .contains(&Some("localhost".to_string())),
        "the configured SNI is sent"
    );
}

#[test]
fn upstream_tls_verify_is_on_by_default_and_an_untrusted_backend_gets_502() {
    let (pki, backend) = backend_pki();
    let other_ca = TestCa::new("Some Other CA");
    let other_ca_file = other_ca.write(pki.dir.path(), "other-ca.pem");
    for (what, tls) in [
        ("no ca_file (system store)", json!({ "sni": "localhost" })),
        (
            "the wrong CA",
            json!({ "sni": "localhost", "verify": true, "ca_file": other_ca_file }),
        ),
        // Trusted CA, but the certificate does not name the SNI.
        (
            "a name mismatch",
            json!({ "sni": "elsewhere.test", "ca_file": pki.ca_file }),
        ),
    ] {
        let port = listen_port();
        let _sy = Switchyard::start_config(&upstream_config(port, &backend, tls), &[port]);
        let r = get(port, "/up");
        assert_eq!(r.status, 502, "{what}: {r:?}");
        assert_eq!(
            backend.count(),
            0,
            "{what}: no request was sent to an unverified backend"
        );
    }
}

/// Regression: two pools in front of one TLS backend, one trusting its CA and one not.
/// Pingora's connection-reuse hash ignores the CA, so the untrusting pool used to get
/// 200 over the connection the trusting pool had verified; each pool now has its own
/// reuse group.
#[test]
fn a_pool_that_does_not_trust_a_backend_never_reuses_another_pools_connection() {
    let (pki, backend) = localhost_only_backend(true);
    let other_ca_file = TestCa::new("Some Other CA").write(pki.dir.path(), "other-ca.pem");
    let port = listen_port();
    let trusting = |name: &str, ca_file: &str| {
        upstream_pool(
            name,
            &backend,
            json!({ "sni": "localhost", "ca_file": ca_file }),
        )
    };
    let config = config_of(
        json!([listener("web", port)]),
        json!([
            trusting("trusting", &pki.ca_file),
            trusting("untrusting", &other_ca_file),
        ]),
        json!([
            { "name": "t", "path_prefix": "/t", "pool": "trusting" },
            { "name": "u", "path_prefix": "/u", "pool": "untrusting" },
        ]),
    );
    let _sy = Switchyard::start_config(&config, &[port]);
    for round in 0..3 {
        let r = get(port, "/t");
        assert_eq!(r.status, 200, "round {round}, trusting pool: {r:?}");
        let r = get(port, "/u");
        assert_eq!(
            r.status, 502,
            "round {round}, the untrusting pool must not ride the verified connection: {r:?}"
        );
    }
    assert_eq!(
        backend.count(),
        3,
        "only the trusting pool's requests arrived"
    );
}

#[test]
fn upstream_tls_with_verify_off_accepts_any_certificate() {
    let (_pki, backend) = backend_pki();
    let port = listen_port();
    let config = upstream_config(port, &backend, json!({ "verify": false }));
    let _sy = Switchyard::start_config(&config, &[port]);
    let r = get(port, "/up");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "tls backend\n");
}

#[test]
fn upstream_tls_to_an_ip_address_verifies_its_ip_san() {
    // No `sni`: the backend is addressed as 127.0.0.1 and its certificate names that IP.
    let (pki, backend) = backend_pki();
    let port = listen_port();
    let config = upstream_config(port, &backend, json!({ "ca_file": pki.ca_file }));
    let _sy = Switchyard::start_config(&config, &[port]);
    let r = get(port, "/up");
    assert_eq!(
        r.status, 200,
        "a backend addressed by IP with a matching IP SAN: {r:?}"
    );
    assert_eq!(
        get(port, "/again").status,
        200,
        "and on a reused connection"
    );
}

#[test]
fn upstream_tls_to_an_ip_address_without_that_ip_san_is_refused() {
    // Trusted chain, but the certificate names only localhost, not 127.0.0.1.
    let (pki, backend) = localhost_only_backend(false);
    let port = listen_port();
    let config = upstream_config(port, &backend, json!({ "ca_file": pki.ca_file }));
    let _sy = Switchyard::start_config(&config, &[port]);
    let r = get(port, "/up");
    assert_eq!(r.status, 502, "no IP SAN for the backend's address: {r:?}");
    assert_eq!(
        backend.count(),
        0,
        "no request reached the unverified backend"
    );
}

// ---------------------------------------------------------------------------------------
// `-t` opens every certificate, key and CA file
// ---------------------------------------------------------------------------------------

fn check(config: &Value) -> (bool, String) {
    let (out, _path, _dir) = check_config(&config_text(config));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn dash_t_accepts_matching_pairs_and_rejects_a_mismatched_pair() {
    let pki = Pki::new();
    let good = tls_config(1, "127.0.0.1:1", &[&pki.a, &pki.b], json!({}));
    let (ok, err) = check(&good);
    assert!(ok, "a valid TLS configuration fails -t:\n{err}");

    // b's certificate with a's key.
    let mismatched = Leaf {
        cert: pki.b.cert.clone(),
        key: pki.a.key.clone(),
        cert_file: pki.b.cert_file.clone(),
        key_file: pki.a.key_file.clone(),
    };
    let config = tls_config(1, "127.0.0.1:1", &[&pki.a, &mismatched], json!({}));
    let (ok, err) = check(&config);
    assert!(!ok, "-t passed a mismatched pair");
    assert!(err.contains("does not match"), "{err}");
    assert!(
        err.contains(&pki.a.key_file),
        "the error names the key file: {err}"
    );

    // A key file that is not a key, a certificate file that is not a certificate.
    let junk = pki.dir.path().join("junk.pem");
    std::fs::write(&junk, "not PEM at all\n").expect("write junk");
    let junk = junk.display().to_string();
    for (cert, key) in [
        (pki.a.cert_file.as_str(), junk.as_str()),
        (junk.as_str(), pki.a.key_file.as_str()),
    ] {
        let bad = Leaf {
            cert: pki.a.cert.clone(),
            key: pki.a.key.clone(),
            cert_file: cert.to_string(),
            key_file: key.to_string(),
        };
        let (ok, err) = check(&tls_config(1, "127.0.0.1:1", &[&bad], json!({})));
        assert!(!ok, "-t passed an unparsable file");
        assert!(err.contains(&junk), "{err}");
    }
}

#[test]
fn dash_t_rejects_unparsable_ca_files() {
    let pki = Pki::new();
    let junk = pki.dir.path().join("junk-ca.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("write junk");
    let junk = junk.display().to_string();

    let client_ca = client_auth(&junk, "require");
    let (ok, err) = check(&tls_config(1, "127.0.0.1:1", &[&pki.a], client_ca));
    assert!(!ok, "-t passed an unparsable client_ca_file");
    assert!(
        err.contains("client_ca_file") && err.contains(&junk),
        "{err}"
    );

    let good_client_ca = client_auth(&pki.ca_file, "require");
    let (ok, err) = check(&tls_config(1, "127.0.0.1:1", &[&pki.a], good_client_ca));
    assert!(ok, "a valid client_ca_file fails -t:\n{err}");

    // Only a pool (no listeners or routes) whose upstream trusts `ca_file`.
    let upstream_ca = |ca_file: &str| {
        with(
            test_config(),
            json!({ "pools": [with(
                pool("p", &["127.0.0.1:1".to_string()]),
                json!({ "upstream": { "tls": { "ca_file": ca_file } } }),
            )] }),
        )
    };
    let (ok, err) = check(&upstream_ca(&junk));
    assert!(!ok, "-t passed an unparsable upstream ca_file");
    assert!(
        err.contains("upstream.tls.ca_file") && err.contains(&junk),
        "{err}"
    );

    let missing = format!("{}/nope.pem", pki.dir.path().display());
    let (ok, err) = check(&upstream_ca(&missing));
    assert!(!ok, "-t passed a missing upstream ca_file");
    assert!(err.contains(&missing), "{err}");
}

// ---------------------------------------------------------------------------------------
// Process log: failed handshakes are not errors of Switchyard's
// ---------------------------------------------------------------------------------------

#[test]
fn a_failed_handshake_is_logged_at_debug_not_error() {
    let pki = Pki::new();
    let backend = Backend::start("a");
    for (level, shown) in [("info", false), ("debug", true)] {
        let port = listen_port();
        let config = tls_config(port, &backend.address(), &[&pki.a], json!({}));
        let sy = Switchyard::start_with_env(
            &config_text(&config),
            &[port],
            &[("SWITCHYARD_LOG", level)],
        );
        // Plain HTTP to the TLS port: the handshake fails.
        let _ = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n");
        // A working handshake afterwards proves the failed one was processed.
        let ok = TlsClient::sni("a.example.com").get(port, "/", &[]);
        assert_eq!(ok.map(|r| r.status).ok(), Some(200));
        let log = sy.stderr();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("handshake")).collect();
        assert!(
            lines.iter().all(|l| !l.contains("ERROR")),
            "SWITCHYARD_LOG={level}: a client's failed handshake is not an error line:\n{log}"
        );
        assert_eq!(
            lines.iter().any(|l| l.contains("DEBUG")),
            shown,
            "SWITCHYARD_LOG={level}: the handshake failure at debug level:\n{log}"
        );
    }
}
