//! The PROXY protocol end to end (SPEC §10): a real HAProxy in front of Switchyard
//! (`send-proxy`, `send-proxy-v2`) and behind it (`accept-proxy`), clients on distinct
//! loopback addresses (127.0.0.5, 127.0.0.6), refusals counted in /metrics, a TLS
//! listener with the header before the handshake, a tcp_service taking and sending v2,
//! and an HTTP pool sending v1 that never lets two clients share a connection.
//!
//! HAProxy comes from Debian's `haproxy` package (scripts/test installs it); without it
//! these tests fail rather than pass unexercised.

use crate::common::config::*;
use crate::common::*;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// HAProxy in the foreground (`-db`) on a generated configuration; killed on drop.
struct Haproxy {
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

/// Starts HAProxy with `body` (frontends and backends) after common defaults and waits
/// (10 s at most) for every port in `ports`; `None` when HAProxy is not installed.
fn haproxy(body: &str, ports: &[u16]) -> Option<Haproxy> {
    assert!(
        Path::new(HAPROXY).exists(),
        "{HAPROXY} is not installed (scripts/test installs Debian's haproxy)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("haproxy.cfg");
    let text = format!(
        "global\n  maxconn 200\ndefaults\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n{body}"
    );
    std::fs::write(&cfg, text).expect("write haproxy.cfg");
    let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log");
    let child = Command::new(HAPROXY)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start haproxy");
    let h = Haproxy {
        _child: ChildGuard(child),
        _dir: dir,
    };
    for port in ports {
        assert!(
            wait_for_port(*port, Duration::from_secs(10)),
            "haproxy did not listen on {port}"
        );
    }
    Some(h)
}

/// One GET on an open connection (kept alive).
fn get_on(s: &mut (impl Read + Write), path: &str) -> Reply {
    write!(s, "GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n").expect("write request");
    read_reply(s).expect("reply")
}

/// Whether the server closes `s` without sending a byte (within 5 s).
fn closed_silently(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => return false,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) if Instant::now() > deadline => return false,
            Err(_) => {}
        }
    }
}

/// `config` with `server.trusted_proxies: [trusted]` and a metrics listener on `mport`.
fn trusting(config: Value, trusted: &str, mport: u16) -> Value {
    with(
        config,
        json!({
            "server": { "trusted_proxies": [trusted] },
            "metrics": { "listen": format!("127.0.0.1:{mport}") },
        }),
    )
}

/// A pool `hap` over 127.0.0.1:`back` sending PROXY headers (`send`: v1 or v2), with
/// `health_check`.
fn hap_pool(back: u16, send: &str, health_check: Value) -> Value {
    with(
        pool("hap", &[format!("127.0.0.1:{back}")]),
        json!({ "health_check": health_check, "upstream": { "proxy_protocol": send } }),
    )
}

/// Switchyard with one listener `edge` on `port` (extra listener keys `keys`) taking
/// PROXY headers from `trusted`, a pool over `b`, a route `/denied` that denies
/// 127.0.0.5 and a catch-all route.
fn edge(port: u16, mport: u16, trusted: &str, keys: Value, b: &Backend) -> Switchyard {
    let edge = with(
        listener("edge", port),
        with(json!({ "proxy_protocol": true }), keys),
    );
    let routes = json!([
        { "name": "denied", "path_prefix": "/denied", "pool": "web", "deny": ["127.0.0.5/32"] },
        route("all", "web"),
    ]);
    let config = config_of(json!([edge]), json!([pool("web", &[b.address()])]), routes);
    Switchyard::start_config(&trusting(config, trusted, mport), &[port, mport])
}

fn through_haproxy(send: &str) {
    let b = Backend::start("a");
    let (port, mport, hport) = (listen_port(), listen_port(), listen_port());
    let sy = edge(port, mport, "127.0.0.1", json!({}), &b);
    let Some(_h) = haproxy(
        &format!(
            "frontend fe\n  mode tcp\n  bind 127.0.0.1:{hport}\n  default_backend sy\n\
             backend sy\n  mode tcp\n  server sy 127.0.0.1:{port} {send}\n"
        ),
        &[hport],
    ) else {
        return;
    };
    let mut c = connect_from("127.0.0.5", hport);
    let r = get_on(&mut c, "/hello");
    assert_eq!(r.status, 200, "{r:?}\n{}", sy.stderr());
    let seen = b.last().expect("the backend got the request");
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("127.0.0.5"),
        "{seen:?}"
    );
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.5"), "{seen:?}");
    // The same connection goes on carrying requests after the header.
    let r = get_on(&mut c, "/denied");
    assert_eq!(
        r.status, 403,
        "server.deny-style route deny sees the client"
    );
    let entries = sy.access_entries(2);
    assert_eq!(entries.len(), 2, "{entries:?}");
    for e in &entries {
        assert_eq!(e["client_ip"], Value::from("127.0.0.5"), "{e}");
    }
    assert_eq!(b.count(), 1, "the denied request never reached the backend");
}

#[test]
fn haproxy_send_proxy_v2_names_the_client() {
    through_haproxy("send-proxy-v2");
}

#[test]
fn haproxy_send_proxy_v1_names_the_client() {
    through_haproxy("send-proxy");
}

#[test]
fn connections_without_a_good_header_are_closed_and_counted() {
    let b = Backend::start("a");
    let (port, mport) = (listen_port(), listen_port());
    let sy = edge(
        port,
        mport,
        "127.0.0.1",
        json!({ "limits": { "header_timeout": "1s" } }),
        &b,
    );
    let labels = [("listener", "edge"), ("reason", "malformed")];
    // The harness's readiness probe (a connect without a header) is the first refusal.
    let probe = wait_metric(mport, "switchyard_http_refused_total", &labels, 1.0);
    assert_eq!(probe, 1.0);
    // No header: a plain request is refused as not a header.
    let mut s = connect_from("127.0.0.1", port);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(
        closed_silently(&mut s),
        "a request without a header is closed"
    );
    // Garbage that starts like a header.
    let mut s = connect_from("127.0.0.1", port);
    s.write_all(b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(closed_silently(&mut s), "a garbled header is closed");
    // A good header from an address outside trusted_proxies.
    let mut s = connect_from("127.0.0.5", port);
    s.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_silently(&mut s), "an untrusted peer is closed");
    // Part of a header, then nothing: closed after header_timeout.
    let mut s = connect_from("127.0.0.1", port);
    s.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
    assert!(
        closed_silently(&mut s),
        "a header that never ends is closed"
    );
    assert_eq!(
        wait_metric(mport, "switchyard_http_refused_total", &labels, 5.0),
        5.0
    );
    assert_eq!(b.count(), 0, "the backend got nothing");
    // A v2 LOCAL header (a balancer's health check) is accepted: the peer stands.
    let mut s = connect_from("127.0.0.1", port);
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(&local).unwrap();
    let r = read_reply(&mut s).expect("reply after LOCAL");
    assert_eq!(r.status, 200, "{}", sy.stderr());
    assert_eq!(b.last().unwrap().header("x-real-ip"), Some("127.0.0.1"));
}

#[test]
fn tls_listener_reads_the_header_before_the_handshake() {
    use pingora::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let b = Backend::start("a");
    let (_certs, cert, key) = tls_test_cert_files();
    let (port, mport) = (listen_port(), listen_port());
    let edge = with(
        tls_listener("edge", port, &cert, &key),
        json!({ "proxy_protocol": true }),
    );
    let config = config_of(
        json!([edge]),
        json!([pool("web", &[b.address()])]),
        json!([route("all", "web")]),
    );
    let sy = Switchyard::start_config(&trusting(config, "127.0.0.1", mport), &[port, mport]);
    // A v2 PROXY header for 192.0.2.9:4444 -> 198.51.100.1:443, written by hand.
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&[192, 0, 2, 9, 198, 51, 100, 1, 0x11, 0x5c, 0x01, 0xbb]);
    let mut tcp = connect_from("127.0.0.1", port);
    tcp.write_all(&header).unwrap();
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder.set_verify(SslVerifyMode::NONE);
    let mut s = builder
        .build()
        .connect("localhost", tcp)
        .unwrap_or_else(|e| panic!("TLS after the PROXY header: {e}\n{}", sy.stderr()));
    let r = get_on(&mut s, "/");
    assert_eq!(r.status, 200);
    let seen = b.last().unwrap();
    assert_eq!(seen.header("x-real-ip"), Some("192.0.2.9"), "{seen:?}");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    // Without the header, the handshake never starts: closed and counted.
    let tcp = connect_from("127.0.0.1", port);
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder.set_verify(SslVerifyMode::NONE);
    assert!(builder.build().connect("localhost", tcp).is_err());
    let labels = [("listener", "edge"), ("reason", "malformed")];
    // One more than the harness's readiness probe.
    assert_eq!(
        wait_metric(mport, "switchyard_http_refused_total", &labels, 2.0),
        2.0
    );
}

/// HAProxy frontend `name` on `port` taking a PROXY header and passing HTTP to `backend`,
/// with the client address it was given in `X-Hap-Client`.
fn accept_proxy_frontend(name: &str, port: u16, backend: &str) -> String {
    format!(
        "frontend {name}\n  mode http\n  bind 127.0.0.1:{port} accept-proxy\n  option forwardfor header X-Hap-Client\n  default_backend {name}_be\n\
         backend {name}_be\n  mode http\n  server b {backend}\n"
    )
}

#[test]
fn tcp_service_takes_v2_and_sends_v2() {
    let b = Backend::start("a");
    let (port, mport, front, back) = (listen_port(), listen_port(), listen_port(), listen_port());
    let service = json!({
        "name": "pp",
        "listen": format!("127.0.0.1:{port}"),
        "protocol": "tcp",
        "pool": "hap",
        "idle_timeout": "10s",
        "proxy_protocol": true,
    });
    let config = with(
        config_of(
            json!([]),
            json!([hap_pool(back, "v2", json!({ "kind": "none" }))]),
            json!([]),
        ),
        json!({ "tcp_services": [service] }),
    );
    let sy = Switchyard::start_config(&trusting(config, "127.0.0.1", mport), &[port, mport]);
    let Some(_h) = haproxy(
        &format!(
            "frontend fe\n  mode tcp\n  bind 127.0.0.1:{front}\n  default_backend sy\n\
             backend sy\n  mode tcp\n  server sy 127.0.0.1:{port} send-proxy-v2\n{}",
            accept_proxy_frontend("in", back, &b.address())
        ),
        &[front, back],
    ) else {
        return;
    };
    // client 127.0.0.5 -> HAProxy (v2) -> tcp_service -> (v2) HAProxy -> backend
    let mut c = connect_from("127.0.0.5", front);
    let r = get_on(&mut c, "/");
    assert_eq!(r.status, 200, "{r:?}\n{}", sy.stderr());
    drop(c);
    let seen = b.last().unwrap();
    assert_eq!(
        seen.header("x-hap-client"),
        Some("127.0.0.5"),
        "{seen:?}\n{}",
        sy.stderr()
    );
    // The session line names the client (HAProxy's own probes of the port show up as
    // sessions from 127.0.0.1 too).
    let logged = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        sy.access_entries(1)
            .iter()
            .any(|e| e["client_ip"] == "127.0.0.5")
    });
    assert!(logged, "{:?}", sy.access_entries(1));
    // Straight to the service without a header: closed, counted as denied.
    let mut s = connect_from("127.0.0.1", port);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed_silently(&mut s));
    // One more than the harness's readiness probe.
    let labels = [("service", "pp"), ("reason", "denied")];
    assert_eq!(
        wait_metric(mport, "switchyard_tcp_refused_total", &labels, 2.0),
        2.0
    );
    assert_eq!(b.count(), 1);
}

#[test]
fn http_pool_sends_v1_and_never_shares_a_connection_between_clients() {
    let b = Backend::start("a");
    let (port, back) = (listen_port(), listen_port());
    let config = config_of(
        json!([listener("web", port)]),
        json!([hap_pool(back, "v1", json!({ "kind": "none" }))]),
        json!([route("all", "hap")]),
    );
    let sy = Switchyard::start_config(&config, &[port]);
    let Some(_h) = haproxy(&accept_proxy_frontend("in", back, &b.address()), &[back]) else {
        return;
    };
    let mut five = connect_from("127.0.0.5", port);
    let mut six = connect_from("127.0.0.6", port);
    // Alternating requests on two kept-alive client connections: an idle backend
    // connection of one client must never carry the other's requests.
    for round in 0..3 {
        for (c, ip) in [(&mut five, "127.0.0.5"), (&mut six, "127.0.0.6")] {
            let r = get_on(c, "/");
            assert_eq!(r.status, 200, "round {round}: {r:?}\n{}", sy.stderr());
            let seen = b.last().unwrap();
            assert_eq!(
                seen.header("x-hap-client"),
                Some(ip),
                "round {round}: {seen:?}"
            );
        }
    }
    assert_eq!(b.count(), 6);
}

#[test]
fn health_checks_send_the_header_too() {
    let b = Backend::start("a");
    let back = listen_port();
    let Some(_h) = haproxy(&accept_proxy_frontend("in", back, &b.address()), &[back]) else {
        return;
    };
    for send in ["v1", "v2"] {
        let port = listen_port();
        let before = b.paths().iter().filter(|p| *p == "/health").count();
        let health_check = json!({
            "kind": "http",
            "path": "/health",
            "interval": "200ms",
            "timeout": "1s",
            "healthy_threshold": 1,
            "unhealthy_threshold": 1,
        });
        let config = config_of(
            json!([listener("web", port)]),
            json!([hap_pool(back, send, health_check)]),
            json!([route("all", "hap")]),
        );
        let sy = Switchyard::start_config(&config, &[port]);
        // HAProxy's accept-proxy closes a connection without a header: each check would
        // fail and take the backend out.
        let checked = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            b.paths().iter().filter(|p| *p == "/health").count() >= before + 5
        });
        assert!(
            checked,
            "{send}: the checks never reached the backend\n{}",
            sy.stderr()
        );
        assert_eq!(
            sy.stderr_count("healthy -> unhealthy"),
            0,
            "{send}: {}",
            sy.stderr()
        );
        assert_eq!(get(port, "/").status, 200, "{send}: {}", sy.stderr());
    }
}
