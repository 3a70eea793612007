//! Pingora #946 end to end (SPEC §10): a backend that answers the WebSocket upgrade the
//! moment it accepts, before it has read the request, still gets a working tunnel, in
//! every one of 3,000 upgrades.
use crate::common::config::*;
use crate::common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Answers 101 at once, then reads the upgrade request and echoes everything after it.
fn instant_101_backend() -> TcpServer {
    TcpServer::start(|mut s| {
        let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // The request head first, then echo.
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        if end < seen.len() && s.write_all(&seen[end..]).is_err() {
            return;
        }
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// One upgrade and one echoed message; an error names what went wrong.
fn one_tunnel(port: u16, i: usize) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(UPGRADE).map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return Err(format!("no 101 head: {:?}", String::from_utf8_lossy(&head))),
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!("not 101: {:?}", String::from_utf8_lossy(&head)));
    }
    let msg = format!("frame-{i}");
    s.write_all(msg.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)
        .map_err(|e| format!("101 then no echo ({e})"))?;
    (got == msg.as_bytes())
        .then_some(())
        .ok_or_else(|| format!("echo {:?}", String::from_utf8_lossy(&got)))
}

#[test]
fn a_backend_answering_101_at_accept_gets_a_working_tunnel_every_time() {
    let backend = instant_101_backend();
    let port = listen_port();
    let p = with(
        pool("p", &[backend.address()]),
        json!({ "health_check": { "kind": "none" } }),
    );
    let config = config_of(
        json!([listener("web", port)]),
        json!([p]),
        json!([route("all", "p")]),
    );
    let _sy = Switchyard::start_config(&config, &[port]);
    let failures: Vec<String> = (0..3000)
        .filter_map(|i| one_tunnel(port, i).err().map(|e| format!("#{i}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 3000 tunnels failed, first: {:?}",
        failures.len(),
        failures.iter().take(3).collect::<Vec<_>>()
    );
}
