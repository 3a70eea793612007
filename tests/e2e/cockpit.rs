//! SPEC §14 admin roles and the audit log end to end: read-only tokens (GET only, 403
//! on changes), bearer JWTs checked against a JWKS file or URL (RS256 and ES256 keys
//! made with openssl, tokens signed here), 401 for every bad token, role changes applied
//! by a reload, and one audit line per change, reopened on SIGUSR1.
use crate::common::config::*;
use crate::common::*;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FULL: &str = "full-t0ken-77a1";
const READ_ONLY: &str = "ro-t0ken-31c9";
const ISSUER: &str = "https://id.example.test";
const AUDIENCE: &str = "switchyard";

fn api(port: u16, method: &str, path: &str, bearer: Option<&str>, body: &str) -> Reply {
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    request(port, method, path, &headers, body.as_bytes())
}

/// `config` with an admin API on `admin_port` (state in `{dir}`) and `admin_keys`.
fn with_admin(config: Value, admin_port: u16, admin_keys: Value) -> Value {
    let admin = with(admin_on(admin_port, &[]), json!({ "admin": admin_keys }));
    with(config, admin)
}

fn config(admin_port: u16, web: u16, backend: &str, admin_keys: Value) -> Value {
    let config = config_of(
        json!([listener("web", web)]),
        json!([pool("web", &[backend.to_string()])]),
        json!([route("all", "web")]),
    );
    with_admin(config, admin_port, admin_keys)
}

fn drain_path(backend: &str) -> String {
    format!("/api/v1/pools/web/backends/{backend}")
}

// ---------------------------------------------------------------- keys and tokens

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..chunk.len() + 1 {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A signing key made by the openssl command line, with its public JWK.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl Key {
    fn rsa(dir: &Path, kid: &str) -> Key {
        let pem = dir.join(format!("{kid}.pem"));
        openssl(&["genrsa", "-out", pem.to_str().unwrap(), "2048"]);
        let rsa = openssl::rsa::Rsa::private_key_from_pem(&std::fs::read(&pem).unwrap()).unwrap();
        Key {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&rsa.private_key_to_der().unwrap()),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": b64url(&rsa.n().to_vec()), "e": b64url(&rsa.e().to_vec())}),
        }
    }

    fn ec(dir: &Path, kid: &str) -> Key {
        let pem = dir.join(format!("{kid}.pem"));
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            pem.to_str().unwrap(),
        ]);
        let pkey =
            openssl::pkey::PKey::private_key_from_pem(&std::fs::read(&pem).unwrap()).unwrap();
        let ec = pkey.ec_key().unwrap();
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        let (mut x, mut y) = (
            openssl::bn::BigNum::new().unwrap(),
            openssl::bn::BigNum::new().unwrap(),
        );
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
            .unwrap();
        Key {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&pkey.private_key_to_pkcs8().unwrap()),
            jwk: json!({"kty": "EC", "kid": kid, "crv": "P-256", "use": "sig",
                "x": b64url(&x.to_vec_padded(32).unwrap()), "y": b64url(&y.to_vec_padded(32).unwrap())}),
        }
    }

    /// A token for `sub` with `extra` claims over the standard valid ones.
    fn token(&self, sub: &str, extra: Value) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims =
            json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// `admin.jwt` with `source` (`jwks_file` or `jwks_url`) and the test's issuer,
/// audience and role claim.
fn jwt_section(source: Value) -> Value {
    let jwt = json!({ "issuer": ISSUER, "audience": AUDIENCE, "role_claim": "switchyard_role" });
    json!({ "jwt": with(source, jwt) })
}

/// An HTTP server answering every request with the current JWKS text; counts requests.
fn jwks_server(body: Arc<Mutex<String>>) -> TcpServer {
    TcpServer::start(move |mut s| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let text = body.lock().unwrap().clone();
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        );
        let _ = s.write_all(reply.as_bytes());
    })
}

// ---------------------------------------------------------------- roles

#[test]
fn read_only_tokens_read_and_get_403_for_changes_and_a_reload_rotates_them() {
    let b = Backend::start("b");
    let (admin, web) = (listen_port(), listen_port());
    let keys = json!({ "tokens": [FULL], "read_only_tokens": [READ_ONLY] });
    let sy = Switchyard::start_config(&config(admin, web, &b.address(), keys), &[admin, web]);

    let pools = api(admin, "GET", "/api/v1/pools", Some(READ_ONLY), "");
    assert_eq!(pools.status, 200, "{pools:?}");
    let who = |t: &str| {
        serde_json::from_str::<Value>(&api(admin, "GET", "/api/v1/whoami", Some(t), "").body)
            .unwrap()
    };
    assert_eq!(
        who(READ_ONLY),
        json!({"role": "read_only", "actor": "read_only:0"})
    );
    assert_eq!(who(FULL), json!({"role": "admin", "actor": 0}));
    assert_eq!(
        api(admin, "GET", "/api/v1/config", Some(READ_ONLY), "").status,
        200
    );
    let drain = drain_path(&b.address());
    for (method, path, body) in [
        ("PATCH", drain.as_str(), r#"{"draining":true}"#),
        ("DELETE", drain.as_str(), ""),
        (
            "POST",
            "/api/v1/pools/web/backends",
            r#"{"address":"127.0.0.1:9","weight":1}"#,
        ),
        ("POST", "/api/v1/reload", ""),
    ] {
        let r = api(admin, method, path, Some(READ_ONLY), body);
        assert_eq!(r.status, 403, "{method} {path}: {r:?}");
    }
    // Nothing changed: the backend is neither drained nor gone, and still serves.
    let pool: Value =
        serde_json::from_str(&api(admin, "GET", "/api/v1/pools/web", Some(FULL), "").body).unwrap();
    assert_eq!(pool["backends"].as_array().unwrap().len(), 1);
    assert_eq!(pool["backends"][0]["draining"], json!(false));
    assert_eq!(get(web, "/").status, 200);
    // Bad tokens are 401 whatever the method.
    for bad in [Some("ro-t0ken-31c"), Some("nope"), None] {
        assert_eq!(
            api(admin, "GET", "/api/v1/pools", bad, "").status,
            401,
            "{bad:?}"
        );
        assert_eq!(
            api(admin, "PATCH", &drain, bad, r#"{"draining":true}"#).status,
            401
        );
    }
    // The full token changes things.
    let r = api(admin, "PATCH", &drain, Some(FULL), r#"{"draining":true}"#);
    assert_eq!(r.status, 200, "{r:?}");

    // A reload that rotates the read-only token applies at once.
    let keys = json!({ "tokens": [FULL], "read_only_tokens": ["ro-rotated"] });
    sy.rewrite_config(&config_text(&config(admin, web, &b.address(), keys)));
    assert_eq!(
        api(admin, "POST", "/api/v1/reload", Some(FULL), "").status,
        200
    );
    assert_eq!(
        api(admin, "GET", "/api/v1/pools", Some(READ_ONLY), "").status,
        401
    );
    assert_eq!(
        api(admin, "GET", "/api/v1/pools", Some("ro-rotated"), "").status,
        200
    );
    assert_eq!(
        api(admin, "POST", "/api/v1/reload", Some("ro-rotated"), "").status,
        403
    );
    // The configuration view redacts them.
    let cfg = api(admin, "GET", "/api/v1/config", Some(FULL), "").body;
    assert!(!cfg.contains("ro-rotated") && !cfg.contains(FULL), "{cfg}");
}

#[test]
fn jwts_from_a_jwks_file_carry_their_role_and_bad_ones_get_401() {
    let keydir = tempfile::tempdir().unwrap();
    let rsa = Key::rsa(keydir.path(), "rsa-1");
    let ec = Key::ec(keydir.path(), "ec-1");
    let stranger = Key::rsa(keydir.path(), "unknown"); // not in the JWKS
    let otherdir = tempfile::tempdir().unwrap();
    let forger = Key::rsa(otherdir.path(), "rsa-1"); // claims the real kid
    let jwks_file = keydir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[&rsa, &ec])).unwrap();

    let b = Backend::start("b");
    let (admin, web) = (listen_port(), listen_port());
    let keys = with(
        json!({ "tokens": [FULL] }),
        jwt_section(json!({ "jwks_file": jwks_file.display().to_string() })),
    );
    let _sy = Switchyard::start_config(&config(admin, web, &b.address(), keys), &[admin, web]);
    let drain = drain_path(&b.address());

    // RS256 with the admin role: may change things.
    let alice = rsa.token("alice", json!({"switchyard_role": "admin"}));
    assert_eq!(
        api(admin, "GET", "/api/v1/pools", Some(&alice), "").status,
        200
    );
    let r = api(admin, "PATCH", &drain, Some(&alice), r#"{"weight":7}"#);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["weight"],
        json!(7)
    );
    // ES256 without a role claim: read-only.
    let bob = ec.token("bob", json!({}));
    assert_eq!(
        api(admin, "GET", "/api/v1/pools", Some(&bob), "").status,
        200
    );
    assert_eq!(
        api(admin, "PATCH", &drain, Some(&bob), r#"{"weight":3}"#).status,
        403
    );
    let carol = ec.token("carol", json!({"switchyard_role": "read_only"}));
    assert_eq!(
        api(admin, "POST", "/api/v1/reload", Some(&carol), "").status,
        403
    );

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let admin_role = json!({"switchyard_role": "admin"});
    let with = |extra: Value| {
        let mut v = admin_role.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "switchyard_role": "admin"}),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    let bad = [
        ("expired", rsa.token("x", with(json!({"exp": now - 600})))),
        (
            "other audience",
            rsa.token("x", with(json!({"aud": "someone-else"}))),
        ),
        (
            "other issuer",
            rsa.token("x", with(json!({"iss": "https://evil.test"}))),
        ),
        ("unknown key", stranger.token("x", admin_role.clone())),
        ("forged signature", forger.token("x", admin_role.clone())),
        ("HS256", hs256),
        ("garbage", "a.b.c".to_string()),
    ];
    for (what, token) in &bad {
        assert_eq!(
            api(admin, "GET", "/api/v1/pools", Some(token), "").status,
            401,
            "{what}"
        );
        assert_eq!(
            api(admin, "PATCH", &drain, Some(token), r#"{"weight":9}"#).status,
            401,
            "{what}"
        );
    }
    let pool: Value =
        serde_json::from_str(&api(admin, "GET", "/api/v1/pools/web", Some(FULL), "").body).unwrap();
    assert_eq!(
        pool["backends"][0]["weight"],
        json!(7),
        "no bad token changed anything"
    );

    // Rotating the file: the removed key's tokens stop working.
    std::fs::write(&jwks_file, jwks(&[&ec])).unwrap();
    assert_eq!(
        api(admin, "GET", "/api/v1/pools", Some(&alice), "").status,
        401
    );
    assert_eq!(
        api(admin, "GET", "/api/v1/pools", Some(&bob), "").status,
        200
    );
}

#[test]
fn a_jwks_url_is_fetched_and_refetched_for_a_new_key() {
    let keydir = tempfile::tempdir().unwrap();
    let old = Key::ec(keydir.path(), "old");
    let new = Key::rsa(keydir.path(), "new");
    let body = Arc::new(Mutex::new(jwks(&[&old])));
    let server = jwks_server(body.clone());

    let b = Backend::start("b");
    let (admin, web) = (listen_port(), listen_port());
    let url = json!({ "jwks_url": format!("http://{}/jwks.json", server.address()) });
    let keys = with(json!({ "tokens": [FULL] }), jwt_section(url));
    let sy = Switchyard::start_config(&config(admin, web, &b.address(), keys), &[admin, web]);

    let old_token = old.token("ops", json!({"switchyard_role": "admin"}));
    let new_token = new.token("ops2", json!({"switchyard_role": "admin"}));
    assert_eq!(
        api(admin, "GET", "/api/v1/pools", Some(&old_token), "").status,
        200
    );
    assert_eq!(
        api(admin, "GET", "/api/v1/pools", Some(&old_token), "").status,
        200
    );
    assert_eq!(
        server.accepted.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "fetched once, then cached"
    );

    // The provider rotates: a token with the new kid makes Switchyard fetch again
    // (at most every 5 s), after which the old key is gone.
    *body.lock().unwrap() = jwks(&[&new]);
    let ok = wait_until(Duration::from_secs(12), Duration::from_millis(500), || {
        api(admin, "GET", "/api/v1/pools", Some(&new_token), "").status == 200
    });
    assert!(
        ok,
        "the new key was never fetched; stderr:\n{}",
        sy.stderr()
    );
    assert_eq!(
        api(admin, "GET", "/api/v1/pools", Some(&old_token), "").status,
        401
    );
    assert_eq!(
        api(admin, "GET", "/api/v1/pools", Some("not-a-jwt"), "").status,
        401
    );
}

#[test]
fn jwt_settings_are_checked_by_t() {
    let cases = [
        (
            json!({ "jwt": { "issuer": "a", "audience": "b" } }),
            "needs jwks_file or jwks_url",
        ),
        (
            json!({ "jwt": {
                "jwks_file": "/x",
                "jwks_url": "https://id.test/k",
                "issuer": "a",
                "audience": "b",
            } }),
            "not both",
        ),
        (
            json!({ "jwt": { "jwks_file": "/x", "audience": "b" } }),
            "admin.jwt.issuer",
        ),
        (
            json!({ "jwt": { "jwks_url": "ftp://id.test/k", "issuer": "a", "audience": "b" } }),
            "admin.jwt.jwks_url",
        ),
        (
            json!({ "read_only_tokens": [""] }),
            "admin.read_only_tokens[0]",
        ),
    ];
    for (section, needle) in cases {
        let (out, _, _) = check_config(&config_text(&admin_only("127.0.0.1:9", section.clone())));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{section}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{section}: want {needle:?} in {stderr}"
        );
    }
    // -t opens the JWKS file.
    let (out, _, dir) = check_config(&config_text(&admin_only(
        "127.0.0.1:9",
        jwt_section(json!({ "jwks_file": "{dir}/jwks.json" })),
    )));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("admin.jwt.jwks_file") && stderr.contains("cannot read"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("jwks.json"), "{\"keys\": 1}").unwrap();
    let again = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(dir.path().join("switchyard.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("is not a JSON Web Key Set"), "{stderr}");
    std::fs::write(dir.path().join("jwks.json"), r#"{"keys": []}"#).unwrap();
    let ok = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(dir.path().join("switchyard.yaml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A non-loopback admin listener with only read-only tokens asks for them: valid.
    let (out, _, _) = check_config(&config_text(&admin_only(
        "0.0.0.0:9",
        json!({ "read_only_tokens": ["ro"] }),
    )));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A configuration of only an `admin:` section listening on `listen`, with `keys`.
fn admin_only(listen: &str, keys: Value) -> Value {
    json!({ "admin": with(json!({ "listen": listen }), keys) })
}

// ---------------------------------------------------------------- audit log

fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn every_change_writes_one_audit_line_and_sigusr1_reopens_the_file() {
    let keydir = tempfile::tempdir().unwrap();
    let rsa = Key::rsa(keydir.path(), "k");
    let jwks_file = keydir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[&rsa])).unwrap();
    let b = Backend::start("b");
    let (admin, web) = (listen_port(), listen_port());
    let keys = with(
        json!({
            "tokens": ["other", FULL],
            "read_only_tokens": [READ_ONLY],
            "audit_log": "{dir}/audit.log",
        }),
        jwt_section(json!({ "jwks_file": jwks_file.display().to_string() })),
    );
    let sy = Switchyard::start_config(&config(admin, web, &b.address(), keys), &[admin, web]);
    let log = sy.dir.path().join("audit.log");
    let drain = drain_path(&b.address());

    assert_eq!(
        api(admin, "GET", "/api/v1/pools", Some(FULL), "").status,
        200
    );
    assert_eq!(
        api(admin, "PATCH", &drain, Some(FULL), r#"{"draining":true}"#).status,
        200
    );
    let dave = rsa.token("dave@example.test", json!({"switchyard_role": "admin"}));
    let add = r#"{"address":"127.0.0.1:9","weight":2}"#;
    assert_eq!(
        api(
            admin,
            "POST",
            "/api/v1/pools/web/backends",
            Some(&dave),
            add
        )
        .status,
        201
    );
    assert_eq!(
        api(
            admin,
            "DELETE",
            "/api/v1/pools/web/backends/127.0.0.1:9",
            Some(READ_ONLY),
            ""
        )
        .status,
        403
    );
    assert_eq!(
        api(
            admin,
            "PATCH",
            "/api/v1/pools/nope/backends/x:1",
            Some(FULL),
            r#"{"weight":1}"#
        )
        .status,
        404
    );

    let lines = audit_lines(&log);
    assert_eq!(lines.len(), 4, "reads are not audited: {lines:#?}");
    for l in &lines {
        let keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "ts",
            "actor",
            "client_ip",
            "method",
            "path",
            "body",
            "status",
        ] {
            assert!(keys.contains(&k), "{k} in {l}");
        }
        assert_eq!(l["client_ip"], json!("127.0.0.1"));
        assert!(l["ts"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(
        lines[0]["actor"],
        json!(1),
        "the token's index in admin.tokens"
    );
    assert_eq!(lines[0]["method"], json!("PATCH"));
    assert_eq!(lines[0]["path"], json!(drain));
    assert_eq!(lines[0]["body"], json!({"draining": true}));
    assert_eq!(lines[0]["status"], json!(200));
    assert_eq!(lines[1]["actor"], json!("dave@example.test"));
    assert_eq!(lines[1]["status"], json!(201));
    assert_eq!(
        lines[1]["body"],
        json!({"address": "127.0.0.1:9", "weight": 2})
    );
    assert_eq!(lines[2]["actor"], json!("read_only:0"));
    assert_eq!(lines[2]["status"], json!(403));
    assert_eq!(lines[3]["status"], json!(404));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(FULL) && !text.contains(READ_ONLY) && !text.contains(&dave));

    // logrotate: rename, SIGUSR1, the next change goes to a new file.
    let rotated = sy.dir.path().join("audit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    sy.signal("-USR1");
    // The reopen line, not just "SIGUSR1": the start-up log names the signal's service.
    sy.expect_stderr("SIGUSR1: reopening", 1, Duration::from_secs(5));
    assert_eq!(
        api(admin, "PATCH", &drain, Some(FULL), r#"{"draining":false}"#).status,
        200
    );
    assert_eq!(audit_lines(&rotated).len(), 4);
    let fresh = audit_lines(&log);
    assert_eq!(fresh.len(), 1, "{fresh:#?}");
    assert_eq!(fresh[0]["body"], json!({"draining": false}));
}

// ---------------------------------------------------------------- GET /api/v1/stats

fn stats(admin: u16) -> Value {
    let r = api(admin, "GET", "/api/v1/stats", Some(READ_ONLY), "");
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_str(&r.body).unwrap()
}

fn entry<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|e| e[key] == value))
        .unwrap_or_else(|| panic!("no {key}={value} in {list}"))
}

#[test]
fn stats_show_the_last_minute_per_route_backend_listener_and_tcp_service() {
    let fast = Backend::start("fast");
    let slow = Backend::start_with("slow", Behaviour::with_delay(Duration::from_millis(200)));
    let broken = Backend::start_with("broken", Behaviour::with_status(503));
    let echo = TcpServer::echo();
    let (admin, web, tcp) = (listen_port(), listen_port(), listen_port());
    let pools = json!([
        pool("fast", &[fast.address()]),
        pool("slow", &[slow.address()]),
        pool("broken", &[broken.address()]),
        pool("echo", &[echo.address()]),
    ]);
    let routes = json!([
        { "name": "slow", "path_prefix": "/slow", "pool": "slow" },
        { "name": "broken", "path_prefix": "/broken", "pool": "broken" },
        route("fast", "fast"),
    ]);
    let service = json!({ "name": "echo", "listen": format!("127.0.0.1:{tcp}"), "pool": "echo" });
    let config = with(
        web_config(web, pools, routes),
        json!({ "tcp_services": [service] }),
    );
    let keys = json!({ "tokens": [FULL], "read_only_tokens": [READ_ONLY] });
    let _sy = Switchyard::start_config(&with_admin(config, admin, keys), &[admin, web, tcp]);
    let before = stats(admin);
    assert_eq!(before["window_seconds"], json!(60));
    assert_eq!(
        entry(&before["routes"], "name", "fast")["requests"],
        json!(0)
    );
    assert_eq!(
        entry(&before["routes"], "name", "fast")["p99_ms"],
        Value::Null
    );

    for _ in 0..20 {
        assert_eq!(get(web, "/").status, 200);
    }
    for _ in 0..4 {
        assert_eq!(get(web, "/slow").status, 200);
    }
    for _ in 0..5 {
        assert_eq!(get(web, "/broken").status, 503);
    }
    // One open HTTP connection and two open TCP sessions while the stats are read.
    let mut held = HttpConn::new(web);
    assert_eq!(held.get("/", &[]).unwrap().status, 200);
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
        s.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        sessions.push(s);
    }

    let s = stats(admin);
    let fast_route = entry(&s["routes"], "name", "fast");
    assert_eq!(fast_route["requests"], json!(21), "{s}");
    assert_eq!(fast_route["errors"], json!(0));
    assert_eq!(fast_route["error_rate"], json!(0.0));
    let slow_route = entry(&s["routes"], "name", "slow");
    assert_eq!(slow_route["requests"], json!(4));
    let p50 = slow_route["p50_ms"].as_f64().unwrap();
    assert!((170.0..400.0).contains(&p50), "slow p50 {p50} ms: {s}");
    assert!(fast_route["p99_ms"].as_f64().unwrap() < p50, "{s}");
    let broken_route = entry(&s["routes"], "name", "broken");
    assert_eq!(
        (
            broken_route["requests"].clone(),
            broken_route["errors"].clone()
        ),
        (json!(5), json!(5))
    );
    assert_eq!(broken_route["error_rate"], json!(1.0));
    let b = entry(&s["backends"], "address", &broken.address());
    assert_eq!(b["pool"], json!("broken"));
    assert_eq!(
        (b["requests"].clone(), b["error_rate"].clone()),
        (json!(5), json!(1.0))
    );
    assert_eq!(
        entry(&s["backends"], "address", &fast.address())["requests"],
        json!(21)
    );
    assert_eq!(
        entry(&s["listeners"], "name", "web")["open_connections"],
        json!(1),
        "{s}"
    );
    assert_eq!(
        entry(&s["tcp_services"], "name", "echo")["sessions"],
        json!(2),
        "{s}"
    );

    drop(sessions);
    drop(held);
    let closed = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let s = stats(admin);
        entry(&s["tcp_services"], "name", "echo")["sessions"] == json!(0)
            && entry(&s["listeners"], "name", "web")["open_connections"] == json!(0)
    });
    assert!(closed, "{}", stats(admin));
    assert_eq!(
        api(admin, "POST", "/api/v1/stats", Some(FULL), "").status,
        405
    );
    assert_eq!(api(admin, "GET", "/api/v1/stats", None, "").status, 401);
    let doc = api(admin, "GET", "/api/v1/openapi.json", Some(READ_ONLY), "");
    let doc: Value = serde_json::from_str(&doc.body).unwrap();
    assert_eq!(
        doc["paths"]["/api/v1/stats"]["get"]["operationId"],
        json!("getStats")
    );
}

#[test]
fn stats_list_every_served_certificate_with_its_days_to_expiry() {
    let (_certs, cert, key) = tls_test_cert_files();
    let b = Backend::start("b");
    let (admin, secure) = (listen_port(), listen_port());
    let config = config_of(
        json!([tls_listener("websecure", secure, &cert, &key)]),
        json!([pool("web", &[b.address()])]),
        json!([route("all", "web")]),
    );
    let keys = json!({ "read_only_tokens": [READ_ONLY] });
    let _sy = Switchyard::start_config(&with_admin(config, admin, keys), &[admin, secure]);
    let s = stats(admin);
    let c = entry(&s["certificates"], "listener", "websecure");
    assert_eq!(c["name"], json!("localhost"));
    // The test certificate's notAfter: 2126-10-30 12:50:00 UTC.
    assert_eq!(c["expires_at"], json!(4_949_038_200i64));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(c["days_left"], json!((4_949_038_200i64 - now) / 86_400));
}
