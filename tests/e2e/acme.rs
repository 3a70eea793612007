//! ACME end to end (SPEC §3 listeners.tls.acme, §9) against a real Pebble, Let's
//! Encrypt's ACME test server, with pebble-challtestsrv as its DNS (every name resolves
//! to 127.0.0.1) and its HTTP-01 validation pointed at Switchyard's plaintext listener:
//! first certificate, restart reusing it, renewal of a certificate inside the 30-day
//! window under steady requests, CA unreachable, and configuration errors.
use crate::common::config::*;
use crate::common::*;
use openssl::x509::X509;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOMAINS: [&str; 2] = ["switchyard.test", "www.switchyard.test"];

/// Pebble (ACME directory on HTTPS, management API) plus its DNS server.
struct Pebble {
    acme_port: u16,
    management_port: u16,
    dns_port: u16,
    dns_management_port: u16,
    /// The CA of Pebble's own HTTPS certificate (not of the certificates it issues).
    https_ca: X509,
    https_ca_file: String,
    programs: (PathBuf, PathBuf),
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on 127.0.0.1:`http_port`, or prints SKIP and
    /// returns `None` when pebble is not installed (CI installs the `pebble` package).
    fn start(http_port: u16) -> Option<Pebble> {
        let dirs = ["/usr/bin", "/usr/local/bin"];
        let (Some(pebble), Some(dns)) = (
            find_program(&["pebble"], &dirs),
            find_program(&["pebble-challtestsrv"], &dirs),
        ) else {
            eprintln!("SKIP: pebble not found (apt-get install pebble)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir for pebble");
        let ca = TestCa::new("Pebble HTTPS Test CA");
        // A bundle, with an unrelated CA first: every certificate of `ca_file` is trusted.
        let decoy = TestCa::new("Unrelated Test CA");
        let mut bundle = decoy.cert.to_pem().expect("decoy PEM");
        bundle.extend(ca.cert.to_pem().expect("CA PEM"));
        let https_ca_file = dir.path().join("pebble-https-ca.pem").display().to_string();
        std::fs::write(&https_ca_file, bundle).expect("write CA bundle");
        let (cert, key) = ca.issue(
            &[("CN", "localhost")],
            &["DNS:localhost", "IP:127.0.0.1"],
            CertUse::Server,
        );
        let (cert_file, key_file) = write_pair(dir.path(), "pebble", &cert, &[], &key);
        let (acme_port, management_port, tls_port) = (listen_port(), listen_port(), listen_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": cert_file,
            "privateKey": key_file,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string())
            .expect("write pebble config");
        let mut p = Pebble {
            acme_port,
            management_port,
            dns_port: listen_port(),
            dns_management_port: listen_port(),
            https_ca: ca.cert.clone(),
            https_ca_file,
            programs: (pebble, dns),
            children: Vec::new(),
            dir,
        };
        p.launch();
        Some(p)
    }

    /// Starts both processes (again) on the same ports; a restarted Pebble has a new
    /// root and has forgotten every account and order.
    fn launch(&mut self) {
        let log = |name: &str| {
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .expect("log file")
        };
        let dns_server = Command::new(&self.programs.1)
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{}", self.dns_port)])
            .args([
                "-management",
                &format!("127.0.0.1:{}", self.dns_management_port),
            ])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let acme = Command::new(&self.programs.0)
            .arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            // Validate at once, accept every nonce, and never reuse an authorization:
            // each order really asks Switchyard for its HTTP-01 answers.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble");
        self.children = vec![dns_server, acme];
        for port in [self.acme_port, self.management_port] {
            assert!(
                wait_for_port(port, Duration::from_secs(10)),
                "pebble did not listen on {port}; log:\n{}",
                self.log()
            );
        }
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Pebble's issuing root (made fresh at each start; served by its management API).
    fn root(&self) -> X509 {
        let client = TlsClient {
            ca: Some(self.https_ca.clone()),
            ..TlsClient::default()
        };
        let reply = client
            .get(self.management_port, "/roots/0", &[])
            .expect("GET pebble /roots/0");
        X509::from_pem(reply.body.as_bytes()).expect("pebble root PEM")
    }

    fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A config with a plaintext listener on `http` (where the CA validates, and every
/// other request is redirected to HTTPS), an ACME listener on `https` routing to
/// `backend`, and metrics on `metrics`. `ca_file: None` leaves the trust
/// to the system store ($SSL_CERT_FILE).
fn acme_config(
    (http, https, metrics): (u16, u16, u16),
    directory: &str,
    storage: &Path,
    ca_file: Option<&str>,
    backend: &str,
) -> Value {
    let mut acme = json!({
        "email": "ops@switchyard.test",
        "directory": directory,
        "domains": DOMAINS,
        "storage": storage.display().to_string(),
    });
    if let Some(f) = ca_file {
        acme["ca_file"] = json!(f);
    }
    let mut secure = listener("websecure", https);
    secure["tls"] = json!({ "acme": acme });
    let app = with(
        pool("app", &[backend.to_string()]),
        json!({ "health_check": { "kind": "none" } }),
    );
    // Challenges are answered before the redirect.
    let all = with(route("all", "app"), json!({ "redirect_https": true }));
    with(
        config_of(
            json!([listener("web", http), secure]),
            json!([app]),
            json!([all]),
        ),
        metrics_on(metrics),
    )
}

/// The `tls.acme` section of `acme_config`'s ACME listener.
fn acme_of(config: &mut Value) -> &mut Value {
    &mut config["listeners"][1]["tls"]["acme"]
}

/// The leaf certificate served for `domain` (no verification).
fn served(port: u16, domain: &str) -> Option<X509> {
    TlsClient::sni(domain)
        .connect(port)
        .ok()
        .map(|s| served_cert(&s))
}

/// Handshake for `domain` verifying the chain against `root` (and the name).
fn verifies(port: u16, domain: &str, root: &X509) -> Result<X509, String> {
    let client = TlsClient {
        sni: Some(domain.to_string()),
        ca: Some(root.clone()),
        ..TlsClient::default()
    };
    client.connect(port).map(|s| served_cert(&s))
}

fn dns_sans(cert: &X509) -> Vec<String> {
    cert.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.dnsname().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls (every 200 ms, `limit` at most) until `done` returns Some.
fn wait_for<T>(limit: Duration, mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let mut found = None;
    wait_until(limit, Duration::from_millis(200), || {
        found = done();
        found.is_some()
    });
    found
}

/// Writes a certificate for DOMAINS from a private CA, expiring in `days`, where
/// Switchyard keeps its ACME certificate (as if an earlier run had obtained it).
fn store_certificate(storage: &Path, days: u32) -> X509 {
    let ca = TestCa::new("Earlier ACME CA");
    let key = new_key();
    let sans: Vec<String> = DOMAINS.iter().map(|d| format!("DNS:{d}")).collect();
    let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
    let cert = ca.issue_for_days(&key, &[("CN", DOMAINS[0])], &sans, CertUse::Server, days);
    std::fs::create_dir_all(storage).expect("storage dir");
    write_pair(storage, DOMAINS[0], &cert, &[&ca.cert], &key);
    // Stored as `<first domain>.crt` (write_pair names the chain `.pem`).
    std::fs::rename(
        storage.join(format!("{}.pem", DOMAINS[0])),
        storage.join(format!("{}.crt", DOMAINS[0])),
    )
    .expect("rename to .crt");
    cert
}

fn not_after_unix(cert: &X509) -> i64 {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).expect("epoch");
    let d = epoch.diff(cert.not_after()).expect("diff");
    d.days as i64 * 86_400 + d.secs as i64
}

fn storage_dir(root: &tempfile::TempDir) -> PathBuf {
    root.path().join("acme")
}

/// Pebble validating on a plaintext listener, a backend, and an ACME config trusting
/// Pebble through `ca_file`, with storage in a directory of its own.
struct Rig {
    http: u16,
    https: u16,
    pebble: Pebble,
    backend: Backend,
    storage: PathBuf,
    config: Value,
    _state: tempfile::TempDir,
}

impl Rig {
    fn new() -> Option<Rig> {
        let (http, https) = (listen_port(), listen_port());
        let pebble = Pebble::start(http)?;
        let backend = Backend::start("app");
        let state = tempfile::tempdir().expect("tempdir");
        let storage = storage_dir(&state);
        let config = acme_config(
            (http, https, listen_port()),
            &pebble.directory(),
            &storage,
            Some(&pebble.https_ca_file),
            &backend.address(),
        );
        Some(Rig {
            http,
            https,
            pebble,
            backend,
            storage,
            config,
            _state: state,
        })
    }

    /// Starts Switchyard with `config` and waits (60 s at most) until it serves a
    /// certificate for `domain` that verifies against Pebble's current root.
    fn obtain(&self, config: &Value, domain: &str) -> (Switchyard, X509) {
        let sy = Switchyard::start_config(config, &[self.http, self.https]);
        let root = self.pebble.root();
        let issued = wait_for(Duration::from_secs(60), || {
            verifies(self.https, domain, &root).ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no certificate for {domain} from Pebble within 60 s; switchyard:\n{}\npebble:\n{}",
                sy.stderr(),
                self.pebble.log()
            )
        });
        (sy, issued)
    }
}

#[test]
fn obtains_a_certificate_and_reuses_it_after_a_restart() {
    let Some(mut rig) = Rig::new() else { return };
    let (http, https, storage) = (rig.http, rig.https, rig.storage.clone());
    let (sy, issued) = rig.obtain(&rig.config, DOMAINS[1]);
    let root = rig.pebble.root();
    let mut sans = dns_sans(&issued);
    sans.sort();
    assert_eq!(sans, DOMAINS.to_vec(), "the certificate names every domain");
    assert!(
        sy.stderr().contains("self-signed placeholder"),
        "until then a placeholder served, and the log says why:\n{}",
        sy.stderr()
    );
    verifies(https, DOMAINS[0], &root).expect("the first domain verifies too");
    let reply = TlsClient::sni(DOMAINS[0])
        .get(https, "/hello", &[])
        .expect("HTTPS request");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(rig.backend.count(), 1, "the request reached the backend");

    // The certificate serves before it is stored (key first, then the chain): wait for
    // the stored chain to be the served one before stopping, or a slow write would be
    // cut off and the restart would find no pair to serve (seen on a loaded machine).
    let stored_chain = || {
        let pem = std::fs::read(storage.join("switchyard.test.crt")).ok()?;
        let chain = X509::stack_from_pem(&pem).ok()?;
        chain.first().map(|c| fingerprint(c))
    };
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            stored_chain().as_deref() == Some(fingerprint(&issued).as_str())
        }),
        "the served certificate is stored; stored: {:?}; stderr:\n{}",
        stored_chain(),
        sy.stderr()
    );

    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(storage.join("switchyard.test.key"))
        .map(|m| m.permissions().mode() & 0o777)
        .expect("stored key");
    assert_eq!(
        key_mode, 0o600,
        "the private key is readable by its owner only"
    );
    let account_mode = std::fs::metadata(storage.join("account.json"))
        .map(|m| m.permissions().mode() & 0o777)
        .expect("stored account");
    assert_eq!(account_mode, 0o600);
    drop(sy);

    // Without the CA, a restart serves the stored certificate and orders nothing.
    rig.pebble.stop();
    let again = Switchyard::start_config(&rig.config, &[http, https]);
    let served_again = served(https, DOMAINS[0]).expect("handshake after restart");
    assert_eq!(fingerprint(&served_again), fingerprint(&issued));
    std::thread::sleep(Duration::from_secs(2));
    let log = again.stderr();
    assert!(log.contains("serving the stored ACME certificate"), "{log}");
    assert!(
        !log.contains("ACME order"),
        "no order was attempted:\n{log}"
    );
}

#[test]
fn renews_a_certificate_inside_the_30_day_window_under_steady_requests() {
    let (http, https) = (listen_port(), listen_port());
    let Some(pebble) = Pebble::start(http) else {
        return;
    };
    let backend = Backend::start("app");
    let state = tempfile::tempdir().expect("tempdir");
    let storage = storage_dir(&state);
    let old = store_certificate(&storage, 10);
    // No ca_file: Pebble's HTTPS CA is trusted through $SSL_CERT_FILE.
    let metrics = listen_port();
    let config = acme_config(
        (http, https, metrics),
        &pebble.directory(),
        &storage,
        None,
        &backend.address(),
    );
    let sy = Switchyard::start_with_env(
        &config_text(&config),
        &[http, https, metrics],
        &[("SSL_CERT_FILE", pebble.https_ca_file.as_str())],
    );
    // One series per certificate, named by its first DNS name.
    let expiry = |cert: &X509| {
        metric(
            metrics,
            "switchyard_tls_certificate_expiry_timestamp_seconds",
            &[("listener", "websecure"), ("name", &dns_sans(cert)[0])],
        )
    };
    assert_eq!(
        expiry(&old),
        Some(not_after_unix(&old) as f64),
        "the stored certificate's expiry"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match TlsClient::sni(DOMAINS[0]).get(https, "/", &[]) {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let root = pebble.root();
    let renewed = wait_for(Duration::from_secs(60), || {
        verifies(https, DOMAINS[0], &root).ok()
    });
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let renewed = renewed.unwrap_or_else(|| {
        panic!(
            "not renewed within 60 s; switchyard:\n{}\npebble:\n{}",
            sy.stderr(),
            pebble.log()
        )
    });
    assert_ne!(fingerprint(&renewed), fingerprint(&old));
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the renewal ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 0);
    eprintln!(
        "renewal: {} requests succeeded, {} failed; new SANs {:?}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        dns_sans(&renewed)
    );
    // The gauge is set just after the new certificate starts serving.
    let want = Some(not_after_unix(&renewed) as f64);
    let followed = wait_for(Duration::from_secs(2), || {
        (expiry(&renewed) == want).then_some(())
    });
    assert!(
        followed.is_some(),
        "the expiry metric follows the renewal: {:?} != {want:?}",
        expiry(&renewed)
    );
    if dns_sans(&renewed)[0] != dns_sans(&old)[0] {
        assert_eq!(
            expiry(&old),
            None,
            "the replaced certificate's series is gone"
        );
    }
    let stored = std::fs::read(storage.join("switchyard.test.crt")).expect("stored chain");
    let stored = X509::stack_from_pem(&stored).expect("stored PEM");
    assert_eq!(
        fingerprint(&stored[0]),
        fingerprint(&renewed),
        "the renewed certificate replaced the stored one"
    );
    assert!(stored.len() >= 2, "the full chain is stored and served");
}

#[test]
fn an_unreachable_ca_keeps_the_current_certificate_and_logs_why() {
    let (http, https) = (listen_port(), listen_port());
    let backend = Backend::start("app");
    let state = tempfile::tempdir().expect("tempdir");
    let storage = storage_dir(&state);
    let old = store_certificate(&storage, 10);
    let directory = format!("https://127.0.0.1:{}/dir", closed_port());
    let config = acme_config(
        (http, https, listen_port()),
        &directory,
        &storage,
        None,
        &backend.address(),
    );
    let sy = Switchyard::start_config(&config, &[http, https]);
    let logged = wait_for(Duration::from_secs(20), || {
        sy.stderr()
            .contains("ACME order for switchyard.test")
            .then_some(())
    });
    assert!(logged.is_some(), "the failure is logged:\n{}", sy.stderr());
    assert!(sy
        .stderr()
        .contains("the current certificate keeps serving"));
    let served_now = served(https, DOMAINS[0]).expect("handshake");
    assert_eq!(fingerprint(&served_now), fingerprint(&old));
    let reply = TlsClient::sni(DOMAINS[0])
        .get(https, "/", &[])
        .expect("HTTPS request");
    assert_eq!(reply.status, 200);
}

#[test]
fn without_any_certificate_a_self_signed_placeholder_serves() {
    let (http, https) = (listen_port(), listen_port());
    let backend = Backend::start("app");
    let state = tempfile::tempdir().expect("tempdir");
    let directory = format!("https://127.0.0.1:{}/dir", closed_port());
    let config = acme_config(
        (http, https, listen_port()),
        &directory,
        &storage_dir(&state),
        None,
        &backend.address(),
    );
    let sy = Switchyard::start_config(&config, &[http, https]);
    let cert = served(https, DOMAINS[1]).expect("handshake with the placeholder");
    assert_eq!(
        cert.issuer_name().to_der().ok(),
        cert.subject_name().to_der().ok(),
        "self-signed"
    );
    let mut sans = dns_sans(&cert);
    sans.sort();
    assert_eq!(sans, DOMAINS.to_vec());
    assert!(
        sy.stderr().contains("self-signed placeholder"),
        "{}",
        sy.stderr()
    );
}

#[test]
fn acme_configuration_errors_are_reported() {
    let state = tempfile::tempdir().expect("tempdir");
    let storage = storage_dir(&state);
    let good = acme_config(
        (listen_port(), listen_port(), listen_port()),
        "https://127.0.0.1:1/dir",
        &storage,
        None,
        "127.0.0.1:9",
    );
    let refused = |config: &Value, key: &str, why: &str| {
        let (out, _, _) = check_config(&config_text(config));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key} must be refused");
        assert!(err.contains(key) && err.contains(why), "{err}");
    };
    let accepted = |config: &Value| {
        let (out, _, _) = check_config(&config_text(config));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
    };
    let mut wildcard = good.clone();
    acme_of(&mut wildcard)["domains"][0] = json!("*.switchyard.test");
    refused(&wildcard, "listeners[1].tls.acme.domains[0]", "DNS-01");
    // No plaintext listener: the CA could never validate.
    let mut no_web = good.clone();
    no_web["listeners"] = json!([good["listeners"][1]]);
    refused(&no_web, "listeners[0].tls.acme", "plaintext listener");
    let mut bad_email = good.clone();
    acme_of(&mut bad_email)["email"] = json!("ops at switchyard");
    refused(
        &bad_email,
        "listeners[1].tls.acme.email",
        "not an email address",
    );
    accepted(&good);
    // No email (the CA then has no contact) and a single-label name are the CA's call.
    let mut minimal = good.clone();
    let acme = acme_of(&mut minimal);
    acme.as_object_mut().expect("acme").remove("email");
    acme["domains"] = json!(["localhost", DOMAINS[0], DOMAINS[1]]);
    assert!(!config_text(&minimal).contains("email"));
    accepted(&minimal);
}

#[test]
fn a_ca_that_forgot_the_account_gets_a_new_one() {
    let Some(mut rig) = Rig::new() else { return };
    drop(rig.obtain(&rig.config, DOMAINS[0]));

    // Pebble restarts empty; one more domain makes the stored certificate too small, so
    // the restarted Switchyard orders with its stored, now unknown, account.
    rig.pebble.stop();
    rig.pebble.launch();
    let mut more = rig.config.clone();
    acme_of(&mut more)["domains"] = json!(["api.switchyard.test", DOMAINS[0], DOMAINS[1]]);
    assert_ne!(more, rig.config);
    let (sy, issued) = rig.obtain(&more, "api.switchyard.test");
    assert_eq!(dns_sans(&issued).len(), 3, "{:?}", dns_sans(&issued));
    assert!(
        sy.stderr().contains("no longer knows the stored account"),
        "{}",
        sy.stderr()
    );
}
