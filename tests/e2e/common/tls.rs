//! TLS fixtures: a private CA issuing certificates at test time (OpenSSL, EC P-256), and a
//! TLS client with full control over SNI, versions, ALPN, trust and client certificates.

use super::*;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A self-signed EC P-256 certificate for `localhost`, `example.com` and 127.0.0.1,
/// valid until 2126 (a test fixture; clients in these tests do not verify it).
pub const TLS_TEST_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBpzCCAU6gAwIBAgIUPl3j5UDxn4FWtZ2ZKKZthJ1tI6EwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMzEyNTAwMFoYDzIxMjYxMDMw
MTI1MDAwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQBtTpGDQlxTJZKUEc1qzi8sR1ERrhyRMVsS0nPJtw1fEGPliRA4W2E
uNAKzqDuqNhsSBU6WbO0NiGAPmv0kMHyo3wwejAdBgNVHQ4EFgQUMcVCLc2Sfdxd
aRrhHidyTA7fV4UwHwYDVR0jBBgwFoAUMcVCLc2SfdxdaRrhHidyTA7fV4UwDwYD
VR0TAQH/BAUwAwEB/zAnBgNVHREEIDAegglsb2NhbGhvc3SCC2V4YW1wbGUuY29t
hwR/AAABMAoGCCqGSM49BAMCA0cAMEQCIH7M0OArcXjMIgswpmS92u2ytE23BuQQ
LFSyGRCFqwm/AiAHRkYY5aUs/JW+Zab6TnbTPTg8H14XNBMFEKDuZnXd7g==
-----END CERTIFICATE-----
";

/// The private key of `TLS_TEST_CERT_PEM`.
pub const TLS_TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJD5Xk+ne1wweZMX4
1lnwvh9XoLwyF6qWAjlMDG66+g+hRANCAAQBtTpGDQlxTJZKUEc1qzi8sR1ERrhy
RMVsS0nPJtw1fEGPliRA4W2EuNAKzqDuqNhsSBU6WbO0NiGAPmv0kMHy
-----END PRIVATE KEY-----
";

/// Writes the test certificate and key into a new temporary directory; returns the
/// directory (keep it alive) and the two paths as strings for a YAML file.
pub fn tls_test_cert_files() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("tempdir for certificates");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, TLS_TEST_CERT_PEM).expect("write cert");
    std::fs::write(&key, TLS_TEST_KEY_PEM).expect("write key");
    (dir, cert.display().to_string(), key.display().to_string())
}

/// One HTTP/1.1 request over TLS (certificate not verified, SNI `localhost`),
/// keep-alive off; reads until the server closes (5 s at most).
pub fn tls_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    use pingora::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut builder = SslConnector::builder(SslMethod::tls()).expect("ssl connector");
    builder.set_verify(SslVerifyMode::NONE);
    let connector = builder.build();
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let mut s = connector
        .connect("localhost", tcp)
        .expect("TLS handshake with switchyard");
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        raw.push_str("Host: localhost\r\n");
    }
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("Connection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).expect("write over TLS");
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    parse_reply(&text).unwrap_or_else(|| panic!("no HTTP reply over TLS from {port}: {text:?}"))
}

/// A fresh EC P-256 private key.
pub fn new_key() -> PKey<Private> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
        .expect("P-256 group");
    let ec = openssl::ec::EcKey::generate(&group).expect("EC key");
    PKey::from_ec_key(ec).expect("PKey")
}

/// A private certificate authority that issues leaf certificates for tests.
pub struct TestCa {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CertUse {
    Server,
    Client,
}

fn x509_name(entries: &[(&str, &str)]) -> openssl::x509::X509Name {
    let mut name = openssl::x509::X509NameBuilder::new().expect("name builder");
    for (k, v) in entries {
        name.append_entry_by_text(k, v).expect("name entry");
    }
    name.build()
}

fn random_serial() -> openssl::asn1::Asn1Integer {
    let mut bn = openssl::bn::BigNum::new().expect("bignum");
    bn.rand(120, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .expect("random serial");
    bn.to_asn1_integer().expect("serial")
}

impl TestCa {
    /// A self-signed CA certificate with subject `CN=<cn>,O=Switchyard Tests`.
    pub fn new(cn: &str) -> TestCa {
        Self::make(cn, None)
    }

    /// An intermediate CA signed by this one (for chain tests).
    pub fn intermediate(&self, cn: &str) -> TestCa {
        Self::make(cn, Some(self))
    }

    /// A CA certificate for `CN=<cn>,O=Switchyard Tests`: self-signed for 10 years, or
    /// signed by `issuer` for 5 years with path length 0.
    fn make(cn: &str, issuer: Option<&TestCa>) -> TestCa {
        use openssl::x509::extension::{
            AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
        };
        let key = new_key();
        let name = x509_name(&[("CN", cn), ("O", "Switchyard Tests")]);
        let mut b = X509::builder().expect("x509 builder");
        b.set_version(2).expect("version");
        b.set_serial_number(&random_serial()).expect("serial");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(issuer.map_or(&*name, |i| i.cert.subject_name()))
            .expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        let days = if issuer.is_some() { 1825 } else { 3650 };
        let not_before = openssl::asn1::Asn1Time::days_from_now(0).expect("now");
        let not_after = openssl::asn1::Asn1Time::days_from_now(days).expect("later");
        b.set_not_before(&not_before).expect("not before");
        b.set_not_after(&not_after).expect("not after");
        let mut constraints = BasicConstraints::new();
        constraints.critical().ca();
        if issuer.is_some() {
            constraints.pathlen(0);
        }
        b.append_extension(constraints.build().expect("bc"))
            .expect("bc");
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku"),
        )
        .expect("ku");
        let issuer_cert = issuer.map(|i| &*i.cert);
        let skid = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(issuer_cert, None))
            .expect("skid");
        b.append_extension(skid).expect("skid");
        if issuer_cert.is_some() {
            let akid = AuthorityKeyIdentifier::new()
                .keyid(true)
                .build(&b.x509v3_context(issuer_cert, None))
                .expect("akid");
            b.append_extension(akid).expect("akid");
        }
        let signer = issuer.map_or(&key, |i| &i.key);
        b.sign(signer, openssl::hash::MessageDigest::sha256())
            .expect("sign CA");
        TestCa {
            cert: b.build(),
            key,
        }
    }

    /// A leaf certificate signed by this CA. `subject` is in certificate order (e.g.
    /// `[("O", "Example"), ("CN", "client-one")]`); `sans` are `DNS:name` or `IP:addr`.
    pub fn issue(
        &self,
        subject: &[(&str, &str)],
        sans: &[&str],
        usage: CertUse,
    ) -> (X509, PKey<Private>) {
        let key = new_key();
        let cert = self.issue_for(&key, subject, sans, usage);
        (cert, key)
    }

    /// Like `issue`, for an existing key.
    pub fn issue_for(
        &self,
        key: &PKey<Private>,
        subject: &[(&str, &str)],
        sans: &[&str],
        usage: CertUse,
    ) -> X509 {
        self.issue_for_days(key, subject, sans, usage, 365)
    }

    /// Like `issue_for`, valid from now for `days`.
    pub fn issue_for_days(
        &self,
        key: &PKey<Private>,
        subject: &[(&str, &str)],
        sans: &[&str],
        usage: CertUse,
        days: u32,
    ) -> X509 {
        use openssl::x509::extension::{
            AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage,
            SubjectAlternativeName,
        };
        let mut b = X509::builder().expect("x509 builder");
        b.set_version(2).expect("version");
        b.set_serial_number(&random_serial()).expect("serial");
        b.set_subject_name(&x509_name(subject)).expect("subject");
        b.set_issuer_name(self.cert.subject_name()).expect("issuer");
        b.set_pubkey(key).expect("pubkey");
        let not_before = openssl::asn1::Asn1Time::days_from_now(0).expect("now");
        let not_after = openssl::asn1::Asn1Time::days_from_now(days).expect("later");
        b.set_not_before(&not_before).expect("not before");
        b.set_not_after(&not_after).expect("not after");
        b.append_extension(BasicConstraints::new().build().expect("bc"))
            .expect("bc");
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build()
                .expect("ku"),
        )
        .expect("ku");
        let mut eku = ExtendedKeyUsage::new();
        match usage {
            CertUse::Server => eku.server_auth(),
            CertUse::Client => eku.client_auth(),
        };
        b.append_extension(eku.build().expect("eku")).expect("eku");
        if !sans.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for s in sans {
                match s.split_once(':') {
                    Some(("DNS", d)) => san.dns(d),
                    Some(("IP", ip)) => san.ip(ip),
                    _ => panic!("SAN {s:?} is not DNS:name or IP:addr"),
                };
            }
            let ext = san
                .build(&b.x509v3_context(Some(&self.cert), None))
                .expect("san");
            b.append_extension(ext).expect("san");
        }
        let akid = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.cert), None))
            .expect("akid");
        b.append_extension(akid).expect("akid");
        b.sign(&self.key, openssl::hash::MessageDigest::sha256())
            .expect("sign leaf");
        b.build()
    }

    /// Writes the CA certificate to `dir/<name>` and returns the path as a string.
    pub fn write(&self, dir: &Path, name: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, self.cert.to_pem().expect("CA PEM")).expect("write CA");
        path.display().to_string()
    }
}

/// Writes `cert` (followed by `chain`) and `key` as PEM to `dir/<stem>.pem` and
/// `dir/<stem>.key`, overwriting in place; returns both paths as strings.
pub fn write_pair(
    dir: &Path,
    stem: &str,
    cert: &X509,
    chain: &[&X509],
    key: &PKey<Private>,
) -> (String, String) {
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    let mut pem = cert.to_pem().expect("cert PEM");
    for c in chain {
        pem.extend_from_slice(&c.to_pem().expect("chain PEM"));
    }
    std::fs::write(&cert_path, pem).expect("write cert");
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().expect("key PEM")).expect("write key");
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

/// The SHA-256 fingerprint of a certificate, as hex.
pub fn fingerprint(cert: &openssl::x509::X509Ref) -> String {
    cert.digest(openssl::hash::MessageDigest::sha256())
        .expect("digest")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The common name of a certificate's subject.
pub fn common_name(cert: &openssl::x509::X509Ref) -> String {
    cert.subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_default()
}

/// How a test TLS client connects.
#[derive(Default, Clone)]
pub struct TlsClient {
    /// SNI to send (None = no SNI extension at all).
    pub sni: Option<String>,
    /// Trust this CA and verify the chain (and the SNI name when set); None = no
    /// verification.
    pub ca: Option<X509>,
    /// A client certificate and its key (mutual TLS).
    pub identity: Option<(X509, PKey<Private>)>,
    /// Both bounds of the protocol version (None = library defaults).
    pub min_version: Option<openssl::ssl::SslVersion>,
    pub max_version: Option<openssl::ssl::SslVersion>,
    /// ALPN protocols offered, e.g. `["h2", "http/1.1"]`.
    pub alpn: Vec<&'static str>,
    /// OpenSSL security level 0 (needed to even offer TLS 1.0/1.1).
    pub legacy: bool,
}

/// An established TLS connection (the handshake is done).
pub type TlsStream = openssl::ssl::SslStream<TcpStream>;

impl TlsClient {
    pub fn sni(name: &str) -> TlsClient {
        TlsClient {
            sni: Some(name.to_string()),
            ..TlsClient::default()
        }
    }

    /// Connects to 127.0.0.1:`port` and runs the handshake (5 s timeouts).
    pub fn connect(&self, port: u16) -> Result<TlsStream, String> {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
        if self.legacy {
            b.set_security_level(0);
            b.set_cipher_list("DEFAULT:@SECLEVEL=0")
                .map_err(|e| e.to_string())?;
        }
        b.set_min_proto_version(self.min_version)
            .map_err(|e| e.to_string())?;
        b.set_max_proto_version(self.max_version)
            .map_err(|e| e.to_string())?;
        match &self.ca {
            Some(ca) => {
                let mut store =
                    openssl::x509::store::X509StoreBuilder::new().map_err(|e| e.to_string())?;
                store.add_cert(ca.clone()).map_err(|e| e.to_string())?;
                b.set_verify_cert_store(store.build())
                    .map_err(|e| e.to_string())?;
                b.set_verify(SslVerifyMode::PEER);
            }
            None => b.set_verify(SslVerifyMode::NONE),
        }
        if let Some((cert, key)) = &self.identity {
            b.set_certificate(cert).map_err(|e| e.to_string())?;
            b.set_private_key(key).map_err(|e| e.to_string())?;
        }
        if !self.alpn.is_empty() {
            let mut wire = Vec::new();
            for p in &self.alpn {
                wire.push(p.len() as u8);
                wire.extend_from_slice(p.as_bytes());
            }
            b.set_alpn_protos(&wire).map_err(|e| e.to_string())?;
        }
        let connector = b.build();
        let mut config = connector.configure().map_err(|e| e.to_string())?;
        config.set_verify_hostname(self.ca.is_some() && self.sni.is_some());
        config.set_use_server_name_indication(self.sni.is_some());
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(5)));
        config
            .connect(self.sni.as_deref().unwrap_or("localhost"), tcp)
            .map_err(|e| e.to_string())
    }

    /// Handshake plus one `GET path` (keep-alive off). Any failure — handshake, alert
    /// after the handshake (TLS 1.3 client-certificate checks), no or short reply — is Err.
    pub fn get(&self, port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        let mut s = self.connect(port)?;
        let host = self.sni.clone().unwrap_or_else(|| "localhost".to_string());
        let mut hs: Vec<(&str, &str)> = vec![("Host", host.as_str()), ("Connection", "close")];
        hs.extend_from_slice(headers);
        tls_send_request(&mut s, "GET", path, &hs)?;
        tls_read_reply(&mut s)
    }
}

/// The certificate the server presented on `s`.
pub fn served_cert(s: &TlsStream) -> X509 {
    s.ssl().peer_certificate().expect("server certificate")
}

/// Writes one HTTP/1.1 request (no body) on a TLS stream.
pub fn tls_send_request(
    s: &mut TlsStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(), String> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    s.write_all(raw.as_bytes()).map_err(|e| e.to_string())
}

/// Reads one HTTP/1.1 response with a Content-Length body (keep-alive safe), 5 s at most.
pub fn tls_read_reply(s: &mut TlsStream) -> Result<Reply, String> {
    read_reply(s)
}
