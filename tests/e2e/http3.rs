//! HTTP/3 over QUIC end to end (SPEC §15): a TLS listener with `http3: true` served by
//! a real HTTP/3 client (quinn + h3, `common::quic_client`): bodies streamed both ways,
//! headers to the backend, the access log's `protocol`, SNI certificate choice and
//! reload, ACLs, rate limits and connection caps, `Alt-Svc` on the TCP side, and the
//! zero-downtime upgrade with the UDP socket handed over.
use crate::common::config::*;
use crate::common::*;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

struct Leaf {
    cert: X509,
    cert_file: String,
    key_file: String,
}

struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    a: Leaf,
    b: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir for certificates");
        let ca = TestCa::new("Switchyard HTTP/3 Test CA");
        let a = leaf(&ca, dir.path(), "a", "a.example.com");
        let b = leaf(&ca, dir.path(), "b", "b.example.com");
        Pki { dir, ca, a, b }
    }

    fn client(&self) -> H3Client {
        H3Client::new(&self.ca.cert)
    }
}

fn leaf(ca: &TestCa, dir: &std::path::Path, stem: &str, name: &str) -> Leaf {
    let (cert, key): (X509, PKey<Private>) =
        ca.issue(&[("CN", name)], &[&format!("DNS:{name}")], CertUse::Server);
    let (cert_file, key_file) = write_pair(dir, stem, &cert, &[], &key);
    Leaf {
        cert,
        cert_file,
        key_file,
    }
}

/// A TLS listener `name` on `port` with `http3: true` (unless `http3` is false),
/// certificates a then b, and `keys` (more listener keys).
fn h3_listener(pki: &Pki, name: &str, port: u16, http3: bool, keys: Value) -> Value {
    let certificates: Vec<Value> = [&pki.a, &pki.b]
        .iter()
        .map(|c| certificate(&c.cert_file, &c.key_file))
        .collect();
    let mut l = with(listener(name, port), keys);
    l["http3"] = json!(http3);
    l["tls"] = json!({ "certificates": certificates });
    l
}

fn start(pki: &Pki, backend: &str, route_keys: Value) -> (Switchyard, u16) {
    let port = listen_port();
    let config = one_pool_config(
        json!([h3_listener(pki, "websecure", port, true, json!({}))]),
        backend,
        route_keys,
    );
    let sy = Switchyard::start_config(&config, &[port]);
    assert!(
        sy.wait_stderr("HTTP/3 on udp", 1, Duration::from_secs(10)),
        "no QUIC listener; stderr:\n{}",
        sy.stderr()
    );
    (sy, port)
}

fn ok(r: Result<H3Reply, String>, what: &str) -> H3Reply {
    let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.status, 200, "{what}: {r:?}");
    r
}

/// A backend that echoes the request body (Content-Length or chunked) and answers
/// `GET /big/N` with N bytes of a repeating pattern; `X-Framing` tells how the request
/// body came.
struct EchoBackend {
    addr: String,
    _stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

impl EchoBackend {
    fn start() -> EchoBackend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        l.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        std::thread::spawn(move || {
                            let _ = echo_connection(s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        EchoBackend { addr, _stop: stop }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self._stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn echo_connection(s: TcpStream) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        let framing = if chunked {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            "chunked"
        } else {
            body.resize(length, 0);
            r.read_exact(&mut body)?;
            if length > 0 {
                "length"
            } else {
                "none"
            }
        };
        if target == "/cut" {
            // Promises a megabyte, sends 100 KB, then dies.
            write!(out, "HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")?;
            out.write_all(&pattern(100_000))?;
            return Ok(());
        }
        if let Some(n) = target.strip_prefix("/big/") {
            body = pattern(n.parse().unwrap_or(0));
        }
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-framing: {framing}\r\n\r\n",
            body.len()
        )?;
        out.write_all(&body)?;
    }
}

#[test]
fn get_and_post_stream_bodies_both_ways() {
    let pki = Pki::new();
    let echo = EchoBackend::start();
    let (sy, port) = start(&pki, &echo.addr, json!({}));
    let client = pki.client();
    let mut conn = client.connect(port, "a.example.com").expect("connect");

    // A GET without a body reaches the backend without one.
    let r = ok(
        client.request(&mut conn, "GET", "/big/3000000", &[], &[]),
        "3 MB download",
    );
    assert_eq!(r.body.len(), 3_000_000);
    assert!(r.body == pattern(3_000_000), "the download arrived intact");
    assert_eq!(r.header("x-framing"), Some("none"), "{r:?}");

    // Bodies in both directions, on the same connection, with and without a length.
    let upload = pattern(1_500_000);
    let r = ok(
        client.request(&mut conn, "POST", "/echo", &[], &upload),
        "1.5 MB upload",
    );
    assert!(
        r.body == upload,
        "the upload came back intact ({} bytes)",
        r.body.len()
    );
    assert_eq!(r.header("x-framing"), Some("chunked"));
    let len = upload.len().to_string();
    let r = ok(
        client.request(
            &mut conn,
            "PUT",
            "/echo",
            &[("content-length", &len)],
            &upload,
        ),
        "upload with a length",
    );
    assert!(r.body == upload);
    assert_eq!(r.header("x-framing"), Some("length"));

    // A backend that dies mid-body: the HTTP/3 stream is reset, never finished, so the
    // client cannot take the cut body for the whole response.
    let cut = client.request(&mut conn, "GET", "/cut", &[], &[]);
    assert!(
        cut.is_err(),
        "a cut response must not arrive as complete: {cut:?}"
    );
    ok(
        client.request(&mut conn, "GET", "/big/10", &[], &[]),
        "the connection survives the reset stream",
    );

    let entries = sy.access_entries(5);
    assert_eq!(entries.len(), 5, "{entries:?}");
    let entries: Vec<_> = entries.into_iter().take(3).collect();
    for e in &entries {
        assert_eq!(e["protocol"], "HTTP/3", "{e}");
        assert_eq!(e["status"], 200, "{e}");
    }
    assert_eq!(entries[1]["method"], "POST");
}

#[test]
fn requests_reach_the_backend_with_forwarding_headers_and_are_logged_as_http3() {
    let pki = Pki::new();
    let backend = Backend::start("a");
    let (sy, port) = start(&pki, &backend.address(), json!({ "path_prefix": "/app" }));
    let client = pki.client();
    let mut conn = client.connect(port, "a.example.com").expect("connect");
    let r = ok(
        client.request(
            &mut conn,
            "GET",
            "/app/page?x=1",
            &[("x-custom", "one"), ("x-forwarded-for", "203.0.113.9")],
            &[],
        ),
        "GET",
    );
    assert_eq!(r.text(), "backend a\n");
    assert!(r.header("x-request-id").is_some(), "{r:?}");
    assert!(
        r.header("alt-svc").is_none(),
        "HTTP/3 responses carry no Alt-Svc: {r:?}"
    );
    let seen = backend.last().expect("the backend saw the request");
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/app/page?x=1");
    assert_eq!(seen.header("x-custom"), Some("one"));
    assert_eq!(
        seen.header("host"),
        Some(format!("a.example.com:{port}").as_str())
    );
    // The QUIC client's own address is appended to what it sent.
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert!(seen.header("x-request-id").is_some());

    // No route: the same 404 as over TCP.
    let r = client
        .request(&mut conn, "GET", "/elsewhere", &[], &[])
        .expect("404");
    assert_eq!(r.status, 404);

    let entries = sy.access_entries(2);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["protocol"], "HTTP/3");
    assert_eq!(entries[0]["client_ip"], "127.0.0.1", "{}", entries[0]);
    assert_eq!(entries[0]["route"], "r");
    assert_eq!(entries[1]["status"], 404);
    assert_eq!(entries[1]["protocol"], "HTTP/3");
}

#[test]
fn sni_picks_the_certificate_and_a_reload_replaces_it() {
    let pki = Pki::new();
    let backend = Backend::start("a");
    let (sy, port) = start(&pki, &backend.address(), json!({}));
    let client = pki.client();
    for (sni, want) in [("a.example.com", &pki.a), ("b.example.com", &pki.b)] {
        let conn = client
            .connect(port, sni)
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(
            conn.served_cert(),
            want.cert.to_der().unwrap(),
            "SNI {sni} got the wrong certificate"
        );
    }
    // A name without a certificate gets the first (default) one, which the client then
    // refuses: it does not name the host.
    assert!(client.connect(port, "c.example.com").is_err());

    // New contents at the same paths, then SIGHUP: new QUIC handshakes get the new
    // certificate; a connection opened before keeps working.
    let mut before = client.connect(port, "a.example.com").expect("before");
    let renewed = leaf(&pki.ca, pki.dir.path(), "a", "a.example.com");
    sy.signal("-HUP");
    assert!(
        sy.wait_stderr("reloaded", 1, Duration::from_secs(10)),
        "no reload logged:\n{}",
        sy.stderr()
    );
    let after = client.connect(port, "a.example.com").expect("after");
    assert_eq!(after.served_cert(), renewed.cert.to_der().unwrap());
    assert_ne!(renewed.cert.to_der().unwrap(), pki.a.cert.to_der().unwrap());
    ok(
        client.request(&mut before, "GET", "/", &[], &[]),
        "the connection from before the reload",
    );
}

#[test]
fn alt_svc_is_added_to_the_tcp_responses_of_an_http3_listener_only() {
    let pki = Pki::new();
    let backend = Backend::start("a");
    let (h3, plain) = (listen_port(), listen_port());
    let listeners = json!([
        h3_listener(&pki, "websecure", h3, true, json!({})),
        h3_listener(&pki, "other", plain, false, json!({})),
    ]);
    let config = one_pool_config(listeners, &backend.address(), json!({}));
    let sy = Switchyard::start_config(&config, &[h3, plain]);
    let tcp = |port| {
        TlsClient {
            sni: Some("a.example.com".into()),
            ca: Some(pki.ca.cert.clone()),
            ..TlsClient::default()
        }
        .get(port, "/", &[])
        .expect("TLS request")
    };
    let r = tcp(h3);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("alt-svc"),
        Some(format!("h3=\":{h3}\"; ma=86400").as_str()),
        "{r:?}"
    );
    let r = tcp(plain);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("alt-svc"), None, "{r:?}");
    // And the advertised endpoint answers.
    ok(
        pki.client().get(h3, "a.example.com", "/"),
        "HTTP/3 on the advertised port",
    );
    assert!(!sy.stderr().contains("panicked"));
}

#[test]
fn acl_and_rate_limit_apply_to_http3_requests() {
    let pki = Pki::new();
    let backend = Backend::start("a");
    let port = listen_port();
    let routes = json!([
        { "name": "closed", "pool": "p", "path_prefix": "/closed", "deny": ["127.0.0.0/8"] },
        {
            "name": "limited",
            "pool": "p",
            "path_prefix": "/limited",
            "rate_limit": { "rate": 1, "burst": 2 },
        },
    ]);
    let config = config_of(
        json!([h3_listener(&pki, "websecure", port, true, json!({}))]),
        json!([pool("p", &[backend.address()])]),
        routes,
    );
    let sy = Switchyard::start_config(&config, &[port]);
    assert!(sy.wait_stderr("HTTP/3 on udp", 1, Duration::from_secs(10)));
    let client = pki.client();
    let mut conn = client.connect(port, "a.example.com").expect("connect");
    let r = client
        .request(&mut conn, "GET", "/closed", &[], &[])
        .unwrap();
    assert_eq!(r.status, 403, "deny applies to the QUIC client's address");
    let statuses: Vec<u16> = (0..5)
        .map(|_| {
            client
                .request(&mut conn, "GET", "/limited", &[], &[])
                .unwrap()
                .status
        })
        .collect();
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(
        statuses[2..].contains(&429),
        "the burst is spent: {statuses:?}"
    );
    let limited = client
        .request(&mut conn, "GET", "/limited", &[], &[])
        .unwrap();
    if limited.status == 429 {
        assert!(limited.header("retry-after").is_some(), "{limited:?}");
    }
    assert_eq!(
        backend.count(),
        2 + statuses[2..].iter().filter(|s| **s == 200).count()
            + usize::from(limited.status == 200)
    );
}

#[test]
fn quic_connections_count_against_the_listeners_connection_caps() {
    let pki = Pki::new();
    let backend = Backend::start("a");
    let port = listen_port();
    let config = one_pool_config(
        json!([h3_listener(
            &pki,
            "websecure",
            port,
            true,
            json!({ "limits": { "max_connections_per_ip": 1 } }),
        )]),
        &backend.address(),
        json!({}),
    );
    let sy = Switchyard::start_config(&config, &[port]);
    assert!(sy.wait_stderr("HTTP/3 on udp", 1, Duration::from_secs(10)));
    let client = pki.client();
    let mut first = client.connect(port, "a.example.com").expect("first");
    ok(client.request(&mut first, "GET", "/", &[], &[]), "first");
    // The second connection from the same address is refused while the first is open,
    // and the TCP side shares the count.
    assert!(
        client.connect(port, "a.example.com").is_err(),
        "second QUIC connection"
    );
    let tcp = TlsClient {
        sni: Some("a.example.com".into()),
        ca: Some(pki.ca.cert.clone()),
        ..TlsClient::default()
    };
    assert!(
        tcp.get(port, "/", &[]).map_or(true, |r| r.status != 200),
        "a TCP connection beside the QUIC one"
    );
    first.quic.close(0u32.into(), b"done");
    drop(first);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || client
            .get(port, "a.example.com", "/")
            .is_ok_and(|r| r.status == 200)),
        "a new connection once the first closed"
    );
}

/// Outcome of one HTTP/3 client loop across an upgrade.
#[derive(Default, Debug)]
struct LoopResult {
    ok: usize,
    failures: Vec<String>,
    /// New connections opened because the server said GOAWAY (the request was not
    /// sent on the old one, or refused unprocessed with H3_REQUEST_REJECTED).
    reconnects: usize,
}

/// Whether an HTTP/3 error means the request was never processed and may be sent again
/// on a new connection (RFC 9114 §4.1.1, §5.2): refused after GOAWAY, or the connection
/// closed gracefully (H3_NO_ERROR: the server closes only once every request it accepted
/// is answered, so an unanswered one was not accepted).
fn not_processed(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    ["goaway", "request_rejected", "closing", "h3_no_error"]
        .iter()
        .any(|m| e.contains(m))
}

/// Requests until `stop` (bounded by 40 s and 5000 requests): on one long-lived
/// connection (`reuse`) or a new connection each time.
fn h3_loop(
    ca: X509,
    port: u16,
    reuse: bool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> LoopResult {
    let client = H3Client::new(&ca);
    let mut result = LoopResult::default();
    let mut conn = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && std::time::Instant::now() < deadline
        && n < 5000
    {
        n += 1;
        if conn.is_none() {
            match client.connect(port, "a.example.com") {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    result.failures.push(format!("request {n}: connect: {e}"));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut reply = client.request(c, "GET", "/", &[], &[]);
        if let Err(e) = &reply {
            if reuse && not_processed(e) {
                result.reconnects += 1;
                conn = client.connect(port, "a.example.com").ok();
                reply = match conn.as_mut() {
                    Some(c) => client.request(c, "GET", "/", &[], &[]),
                    None => Err(format!("reconnect after {e}")),
                };
            }
        }
        match reply {
            Ok(r) if r.status == 200 => result.ok += 1,
            Ok(r) => result
                .failures
                .push(format!("request {n}: status {}", r.status)),
            Err(e) => {
                result.failures.push(format!("request {n}: {e}"));
                conn = None;
            }
        }
        if !reuse {
            conn = None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    result
}

#[test]
fn an_upgrade_under_http3_load_fails_no_request() {
    let pki = Pki::new();
    let backend = Backend::start("a");
    let (old, port) = start(&pki, &backend.address(), json!({}));
    ok(
        pki.client().get(port, "a.example.com", "/"),
        "before the upgrade",
    );

    let new_stderr = old.dir.path().join("new-stderr.log");
    let new = switchyard_command()
        .arg("-u")
        .arg("-c")
        .arg(&old.config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&new_stderr).expect("stderr file"))
        .spawn()
        .expect("start switchyard -u");
    let mut new = ChildGuard(new);
    let sock = old.dir.path().join("upgrade.sock");
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || sock
            .exists()),
        "the new instance never opened upgrade_sock"
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loops: Vec<_> = [true, false]
        .into_iter()
        .map(|reuse| {
            let (ca, stop) = (pki.ca.cert.clone(), stop.clone());
            std::thread::spawn(move || h3_loop(ca, port, reuse, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    signal_process("-QUIT", old.pid());
    let old_pid = old.pid();
    let exited = wait_pid_gone(old_pid, Duration::from_secs(20));
    // Keep going a little on the new process alone.
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results: Vec<LoopResult> = loops.into_iter().map(|h| h.join().unwrap()).collect();
    let new_log = std::fs::read_to_string(&new_stderr).unwrap_or_default();
    for (r, what) in results
        .iter()
        .zip(["one connection", "a connection per request"])
    {
        assert!(
            r.failures.is_empty(),
            "{what}: {} failed, {} ok: {:#?}\nold stderr:\n{}\nnew stderr:\n{new_log}",
            r.failures.len(),
            r.ok,
            r.failures,
            old.stderr()
        );
        assert!(r.ok >= 50, "{what}: only {} requests", r.ok);
    }
    assert!(exited, "the old process did not exit:\n{}", old.stderr());
    assert!(
        new_log.contains("socket taken over from the previous process"),
        "the new process did not take the UDP socket over:\n{new_log}"
    );
    assert!(
        matches!(new.0.try_wait(), Ok(None)),
        "the new instance exited:\n{new_log}"
    );
    // The new process serves HTTP/3 on its own.
    ok(
        pki.client().get(port, "a.example.com", "/"),
        "after the upgrade",
    );
}

#[test]
fn listener_limits_apply_to_http3() {
    let pki = Pki::new();
    let echo = EchoBackend::start();
    let port = listen_port();
    let limits = json!({ "limits": {
        "max_body_bytes": 100000,
        "max_header_bytes": 4096,
        "max_requests_per_connection": 3,
        "keepalive_timeout": "1s",
    } });
    let config = one_pool_config(
        json!([h3_listener(&pki, "websecure", port, true, limits)]),
        &echo.addr,
        json!({}),
    );
    let sy = Switchyard::start_config(&config, &[port]);
    assert!(sy.wait_stderr("HTTP/3 on udp", 1, Duration::from_secs(10)));
    let client = pki.client();

    // Body: a declared length over the limit is refused before the backend; a streamed
    // body is cut at the limit.
    let mut conn = client.connect(port, "a.example.com").expect("connect");
    let big = pattern(200_000);
    let r = client
        .request(
            &mut conn,
            "POST",
            "/",
            &[("content-length", "200000")],
            &big,
        )
        .expect("declared length");
    assert_eq!(r.status, 413, "{r:?}");
    let mut conn = client.connect(port, "a.example.com").expect("connect");
    match client.request(&mut conn, "POST", "/", &[], &big) {
        Ok(r) => assert_eq!(r.status, 413, "streamed body over the limit: {r:?}"),
        Err(e) => assert!(!e.is_empty()),
    }
    let small = pattern(50_000);
    let mut conn = client.connect(port, "a.example.com").expect("connect");
    let r = ok(
        client.request(&mut conn, "POST", "/", &[], &small),
        "within the limit",
    );
    assert!(r.body == small);

    // Header section over max_header_bytes: never reaches the backend.
    let long = "x".repeat(8000);
    let mut conn = client.connect(port, "a.example.com").expect("connect");
    let refused = client.request(&mut conn, "GET", "/", &[("x-long", &long)], &[]);
    assert!(
        refused.as_ref().map_or(true, |r| r.status == 431),
        "an 8 KB header on a 4 KiB listener: {refused:?}"
    );

    // max_requests_per_connection: 3 answered, then GOAWAY; a new connection goes on.
    let mut conn = client.connect(port, "a.example.com").expect("connect");
    for i in 0..3 {
        ok(
            client.request(&mut conn, "GET", "/", &[], &[]),
            &format!("request {i}"),
        );
    }
    let fourth = client.request(&mut conn, "GET", "/", &[], &[]);
    assert!(
        fourth.is_err(),
        "a fourth request on the connection: {fourth:?}"
    );
    ok(client.get(port, "a.example.com", "/"), "a new connection");

    // keepalive_timeout is the QUIC idle timeout.
    let idle = client.connect(port, "a.example.com").expect("connect");
    let quic = idle.quic.clone();
    let closed = client
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), quic.closed()).await });
    assert!(closed.is_ok(), "an idle connection is closed by the server");
}

/// A gRPC message frame: uncompressed, 4-byte length, the message.
fn grpc_frame(msg: &impl prost::Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn grpc_messages(mut body: &[u8]) -> Vec<crate::protocols::EchoReply> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let n = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        out.push(prost::Message::decode(&body[5..5 + n]).expect("a reply message"));
        body = &body[5 + n..];
    }
    out
}

#[test]
fn grpc_over_http3_reaches_an_h2c_backend_with_its_trailers() {
    let pki = Pki::new();
    let grpc = crate::protocols::GrpcBackend::start();
    let port = listen_port();
    let config = config_of(
        json!([h3_listener(&pki, "websecure", port, true, json!({}))]),
        json!([with(
            pool("p", &[format!("127.0.0.1:{}", grpc.port)]),
            json!({ "upstream": { "protocol": "h2c" } }),
        )]),
        json!([route("r", "p")]),
    );
    let sy = Switchyard::start_config(&config, &[port]);
    assert!(sy.wait_stderr("HTTP/3 on udp", 1, Duration::from_secs(10)));
    let client = pki.client();
    let mut conn = client.connect(port, "a.example.com").expect("connect");
    let headers = [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("x-tenant", "t-7"),
    ];
    let call = |conn: &mut H3Conn, count: u32, fail_with: i32| {
        let req = crate::protocols::EchoRequest {
            message: "tick".into(),
            count,
            fail_with,
        };
        client
            .request(
                conn,
                "POST",
                "/test.Echo/Stream",
                &headers,
                &grpc_frame(&req),
            )
            .expect("a gRPC call over HTTP/3")
    };
    let r = call(&mut conn, 5, 0);
    assert_eq!(r.status, 200, "{r:?}");
    let replies = grpc_messages(&r.body);
    assert_eq!(replies.len(), 5, "every streamed message arrives: {r:?}");
    assert_eq!(replies[4].message, "tick #4");
    assert_eq!(replies[0].tenant, "t-7", "metadata reaches the backend");
    let trailers = r.trailers.expect("the response ends with trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0", "{trailers:?}");

    // An error status travels in the trailers too.
    let r = call(&mut conn, 2, 8);
    assert_eq!(grpc_messages(&r.body).len(), 2);
    let trailers = r.trailers.expect("trailers with the error");
    assert_eq!(trailers.get("grpc-status").unwrap(), "8", "{trailers:?}");
}
