//! OCSP stapling end to end: a test root, an issuing CA and leaves made with the openssl
//! CLI (the leaf's Authority Information Access names the responder), `openssl ocsp` as
//! the real responder, and `openssl s_client -status` as the client asking for the
//! staple. Covers: a good response stapled, a revocation picked up at the refresh
//! (a real 1-minute validity, so the refresh comes after 30 s), no responder URL, a
//! responder that is down, and who may sign a response (the issuer or its delegated
//! OCSP signer, not another certificate of the same CA).
use crate::common::config::*;
use crate::common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Certificates in a temporary directory, made with the openssl CLI.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir for certificates"),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-days",
            "30",
            "-subj",
            "/CN=OCSP Test Root",
        ]);
        pki.write(
            "issuer.ext",
            "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n",
        );
        pki.sign("issuer", "/CN=OCSP Test Issuing CA", "root", "issuer.ext");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write pki file");
    }

    fn openssl(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(self.dir.path());
        run_ok(&mut cmd, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A new key and a certificate `stem.pem` for `subject`, signed by `ca` with `ext`.
    fn sign(&self, stem: &str, subject: &str, ca: &str, ext: &str) {
        let (key, csr, pem) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.pem"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ]);
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-set_serial",
            &format!("0x{}", fastrand::u64(1..u64::MAX)),
            "-days",
            "7",
            "-extfile",
            ext,
            "-out",
            &pem,
        ]);
    }

    /// A server certificate for `localhost` issued by the issuing CA, with `ocsp_url` in
    /// its AIA (or none); returns (chain file: leaf then issuer, key file).
    fn leaf(&self, stem: &str, ocsp_url: Option<&str>) -> (String, String) {
        self.leaf_from(stem, "issuer", ocsp_url)
    }

    /// Like `leaf`, issued by `ca` (`issuer` or `root`).
    fn leaf_from(&self, stem: &str, ca: &str, ocsp_url: Option<&str>) -> (String, String) {
        let mut ext = "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n".to_string();
        if let Some(url) = ocsp_url {
            ext.push_str(&format!("authorityInfoAccess=OCSP;URI:{url}\n"));
        }
        let ext_file = format!("{stem}.ext");
        self.write(&ext_file, &ext);
        self.sign(stem, "/CN=localhost", ca, &ext_file);
        let chain = std::fs::read_to_string(self.path(&format!("{stem}.pem"))).expect("leaf")
            + &std::fs::read_to_string(self.path(&format!("{ca}.pem"))).expect("issuer");
        let chain_file = self.path(&format!("{stem}-chain.pem"));
        std::fs::write(&chain_file, chain).expect("write chain");
        (
            chain_file.display().to_string(),
            self.path(&format!("{stem}.key")).display().to_string(),
        )
    }

    /// Writes the responder's index.txt with the one `stem` certificate, valid or revoked.
    fn index(&self, stem: &str, revoked: bool) {
        let serial = self.openssl(&["x509", "-in", &format!("{stem}.pem"), "-noout", "-serial"]);
        let serial = serial.trim().trim_start_matches("serial=").to_string();
        let (flag, when) = if revoked {
            ("R", "260101000000Z")
        } else {
            ("V", "")
        };
        self.write(
            "index.txt",
            &format!("{flag}\t491231235959Z\t{when}\t{serial}\tunknown\t/CN=localhost\n"),
        );
    }

    /// `openssl ocsp` answering on `port` from index.txt, signing as the issuing CA,
    /// with responses valid for one minute.
    fn responder(&self, port: u16) -> ChildGuard {
        self.responder_as(port, "issuer", "issuer")
    }

    /// `openssl ocsp` for certificates of `ca`, signing as `signer` (`signer.pem/.key`).
    fn responder_as(&self, port: u16, signer: &str, ca: &str) -> ChildGuard {
        let (rsigner, rkey, ca) = (
            format!("{signer}.pem"),
            format!("{signer}.key"),
            format!("{ca}.pem"),
        );
        let log = std::fs::File::create(self.path("responder.log")).expect("responder log");
        let child = Command::new("openssl")
            .args([
                "ocsp",
                "-index",
                "index.txt",
                "-port",
                &port.to_string(),
                "-rsigner",
                &rsigner,
                "-rkey",
                &rkey,
                "-CA",
                &ca,
                "-nmin",
                "1",
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start openssl ocsp");
        let guard = ChildGuard(child);
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                is_listening(port)
            }),
            "openssl ocsp did not listen on {port}"
        );
        guard
    }
}

/// `openssl s_client -status` against the listener (10 s at most, stdin closed): its
/// stdout, which shows the stapled response or "OCSP response: no response sent".
fn s_client_status(port: u16) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        "localhost",
        "-status",
    ]);
    let out = run_bounded(&mut cmd, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("Cipher is") || text.contains("Cipher    :"),
        "no TLS handshake with switchyard: {text}"
    );
    text
}

fn one_listener(port: u16, cert: &str, key: &str, backend: &Backend) -> Value {
    config_of(
        json!([tls_listener("websecure", port, cert, key)]),
        json!([pool("p", &[backend.address()])]),
        json!([route("r", "p")]),
    )
}

fn staple_says(port: u16, status: &str) -> bool {
    let out = s_client_status(port);
    out.contains("OCSP Response Status: successful")
        && out.contains(&format!("Cert Status: {status}"))
}

#[test]
fn a_good_response_is_stapled_and_a_revocation_replaces_it_at_the_refresh() {
    let pki = Pki::new();
    let responder_port = listen_port();
    let url = format!("http://127.0.0.1:{responder_port}");
    let (cert, key) = pki.leaf("leaf", Some(&url));
    pki.index("leaf", false);
    let responder = pki.responder(responder_port);
    let backend = Backend::start("a");
    let port = listen_port();
    let sy = Switchyard::start_config(&one_listener(port, &cert, &key, &backend), &[port]);
    sy.expect_stderr(
        &format!("stapling responses from {url}"),
        1,
        Duration::from_secs(5),
    );
    // The first fetch runs at start, in the background.
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
            staple_says(port, "good")
        }),
        "no good OCSP response stapled: {}\nstderr:\n{}",
        s_client_status(port),
        sy.stderr()
    );
    // The CA revokes the certificate; the responder (restarted on the new index) says so
    // from now on, and the stapled response is replaced at its half-life (30 s).
    drop(responder);
    pki.index("leaf", true);
    let _responder = pki.responder(responder_port);
    assert!(
        staple_says(port, "good"),
        "the good response stays until the refresh"
    );
    assert!(
        wait_until(Duration::from_secs(100), Duration::from_secs(1), || {
            staple_says(port, "revoked")
        }),
        "the revocation was not stapled after the refresh: {}\nstderr:\n{}",
        s_client_status(port),
        sy.stderr()
    );
    assert!(
        sy.stderr_count("says the certificate is REVOKED") >= 1,
        "the revocation is logged; stderr:\n{}",
        sy.stderr()
    );
}

#[test]
fn a_certificate_without_a_responder_url_is_served_without_a_staple_or_an_error() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("plain", None);
    let backend = Backend::start("a");
    let port = listen_port();
    let sy = Switchyard::start_config(&one_listener(port, &cert, &key, &backend), &[port]);
    let out = s_client_status(port);
    assert!(out.contains("OCSP response: no response sent"), "{out}");
    let reply = tls_request(port, "GET", "/", &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(sy.stderr_count("OCSP: "), 0, "stderr:\n{}", sy.stderr());
}

#[test]
fn a_responder_that_is_down_costs_no_handshake_and_one_log_line() {
    let pki = Pki::new();
    let url = format!("http://127.0.0.1:{}", closed_port());
    let (cert, key) = pki.leaf("leaf", Some(&url));
    let backend = Backend::start("a");
    let port = listen_port();
    let sy = Switchyard::start_config(&one_listener(port, &cert, &key, &backend), &[port]);
    sy.expect_stderr(
        "nothing is stapled; next try in 60 s",
        1,
        Duration::from_secs(10),
    );
    for _ in 0..5 {
        let out = s_client_status(port);
        assert!(out.contains("OCSP response: no response sent"), "{out}");
    }
    assert_eq!(tls_request(port, "GET", "/", &[]).status, 200);
    // The next attempt is a minute away: handshakes meanwhile log nothing.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sy.stderr_count(&format!("from {url}: cannot connect")),
        1,
        "stderr:\n{}",
        sy.stderr()
    );
}

#[test]
fn only_the_issuer_or_a_delegated_ocsp_signer_may_answer() {
    let pki = Pki::new();
    let responder_port = listen_port();
    let url = format!("http://127.0.0.1:{responder_port}");
    // Issued straight by the self-signed root (the case where a trust anchor could be
    // mistaken for an authorised signer).
    let (cert, key) = pki.leaf_from("leaf", "root", Some(&url));
    pki.index("leaf", false);
    pki.write(
        "delegate.ext",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning\n",
    );
    pki.sign("delegate", "/CN=OCSP delegate", "root", "delegate.ext");
    pki.write(
        "impostor.ext",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    pki.sign(
        "impostor",
        "/CN=another customer of the CA",
        "root",
        "impostor.ext",
    );
    let backend = Backend::start("a");
    let config_at = |p: u16| one_listener(p, &cert, &key, &backend);

    // Another certificate of the same CA, not delegated OCSP signing, answers: refused.
    let impostor = pki.responder_as(responder_port, "impostor", "root");
    let port = listen_port();
    let sy = Switchyard::start_config(&config_at(port), &[port]);
    sy.expect_stderr("signature does not verify", 1, Duration::from_secs(10));
    let out = s_client_status(port);
    assert!(out.contains("OCSP response: no response sent"), "{out}");
    drop(sy);
    drop(impostor);

    // A responder certificate with the OCSP-signing purpose, issued by the CA: stapled.
    let _delegate = pki.responder_as(responder_port, "delegate", "root");
    let port = listen_port();
    let sy = Switchyard::start_config(&config_at(port), &[port]);
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
            staple_says(port, "good")
        }),
        "no response from the delegated signer stapled: {}\nstderr:\n{}",
        s_client_status(port),
        sy.stderr()
    );
}
