//! HTTP/2 abuse end to end (SPEC §10): rapid reset, an endless CONTINUATION sequence and
//! a PING flood, each written as raw frames on an h2c connection. The abusive connection
//! is sent a GOAWAY or closed, `switchyard_http_refused_total{reason="h2_abuse"}` counts
//! it, and another client is served meanwhile.
use crate::common::config::*;
use crate::common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET /` for authority `a`, HPACK-encoded from the static table (no dynamic state).
const GET_BLOCK: &[u8] = b"\x82\x86\x84\x41\x01a";

struct H2Edge {
    _sy: Switchyard,
    _backend: Backend,
    port: u16,
    metrics: u16,
}

fn start() -> H2Edge {
    let backend = Backend::start("a");
    let (port, metrics) = (listen_port(), listen_port());
    let web = with(listener("web", port), json!({ "http2": true }));
    let p = pool_with("p", no_health_check(), &[backend.address()]);
    let config = with(
        config_of(json!([web]), json!([p]), json!([route("all", "p")])),
        metrics_on(metrics),
    );
    let sy = Switchyard::start_config(&config, &[port, metrics]);
    H2Edge {
        _sy: sy,
        _backend: backend,
        port,
        metrics,
    }
}

impl H2Edge {
    fn abuse_count(&self) -> f64 {
        metric(
            self.metrics,
            "switchyard_http_refused_total",
            &[("listener", "web"), ("reason", "h2_abuse")],
        )
        .unwrap_or(-1.0)
    }

    /// Polls the h2_abuse count until it is `want` (10 s at most); the last value seen.
    fn wait_abuse(&self, want: f64) -> f64 {
        wait_metric(
            self.metrics,
            "switchyard_http_refused_total",
            &[("listener", "web"), ("reason", "h2_abuse")],
            want,
        )
    }

    /// A well-behaved h2c request from another client gets its 200.
    fn assert_others_served(&self) {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "--max-time",
                "5",
                "--http2-prior-knowledge",
                &format!("http://127.0.0.1:{}/ok", self.port),
            ])
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200 2");
    }

    fn open(&self) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        s.write_all(PREFACE).unwrap();
        s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
        s
    }
}

/// Reads frames until the server closes (or 10 s): the GOAWAY error code, if one came.
fn goaway_code(s: &mut TcpStream) -> (Option<u32>, bool) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut closed = false;
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    let mut at = 0;
    let mut code = None;
    while at + 9 <= buf.len() {
        let len = (buf[at] as usize) << 16 | (buf[at + 1] as usize) << 8 | buf[at + 2] as usize;
        if buf[at + 3] == GOAWAY && at + 9 + 8 <= buf.len() {
            let p = &buf[at + 9..];
            code = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    (code, closed)
}

/// Writes `bytes`, ignoring a connection the server already closed.
fn write_lossy(s: &mut TcpStream, bytes: &[u8]) {
    for chunk in bytes.chunks(16 * 1024) {
        if s.write_all(chunk).is_err() {
            return;
        }
    }
}

#[test]
fn rapid_reset_gets_goaway_and_is_counted() {
    let edge = start();
    let before = edge.abuse_count();
    let mut s = edge.open();
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, GET_BLOCK));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    write_lossy(&mut s, &burst);
    let (code, _) = goaway_code(&mut s);
    // ENHANCE_YOUR_CALM (0xb).
    assert_eq!(code, Some(0xb), "a GOAWAY for rapid reset");
    let after = edge.wait_abuse(before + 1.0);
    assert_eq!(after, before + 1.0);
    edge.assert_others_served();
}

#[test]
fn an_endless_continuation_sequence_gets_goaway_and_is_counted() {
    let edge = start();
    let before = edge.abuse_count();
    let mut s = edge.open();
    let mut flood = frame(HEADERS, END_STREAM, 1, GET_BLOCK);
    // Header blocks that never end: each CONTINUATION adds a literal header.
    let literal = b"\x40\x01x\x01y";
    for _ in 0..20_000 {
        flood.extend(frame(CONTINUATION, 0, 1, literal));
    }
    write_lossy(&mut s, &flood);
    let (code, closed) = goaway_code(&mut s);
    assert!(
        code.is_some_and(|c| c != 0),
        "a GOAWAY with an error: {code:?}"
    );
    assert!(closed, "the connection is closed");
    let after = edge.wait_abuse(before + 1.0);
    assert_eq!(after, before + 1.0);
    edge.assert_others_served();
}

#[test]
fn a_ping_flood_is_closed_and_counted_while_others_are_served() {
    let edge = start();
    let before = edge.abuse_count();
    let mut s = edge.open();
    let pings: Vec<u8> = (0..5000u64)
        .flat_map(|i| frame(PING, 0, 0, &i.to_be_bytes()))
        .collect();
    write_lossy(&mut s, &pings);
    let (_, closed) = goaway_code(&mut s);
    assert!(closed, "the flooding connection is closed");
    let after = edge.wait_abuse(before + 1.0);
    assert_eq!(after, before + 1.0);
    edge.assert_others_served();
    // A client that pings a few times is not abuse.
    let mut calm = edge.open();
    for i in 0..10u64 {
        calm.write_all(&frame(PING, 0, 0, &i.to_be_bytes()))
            .unwrap();
    }
    calm.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, GET_BLOCK))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(edge.abuse_count(), before + 1.0);
}
