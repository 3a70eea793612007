//! End-to-end test harness: real backend servers on 127.0.0.1 and the real switchyard
//! binary started on free ports with a YAML written to a temporary directory.
//! Every wait is bounded; every process is killed on drop.
//!
//! Split by concern: [`backend`] (servers behind switchyard), [`proc`] (the switchyard
//! process), [`config`] (typed configurations), [`http`] (clients and metrics), [`tls`],
//! [`tools`] (external programs), [`db`] (PostgreSQL, MariaDB) and [`redis`].

mod backend;
pub mod config;
mod db;
mod http;
mod proc;
mod quic_client;
mod redis;
mod tls;
mod tools;

pub use backend::*;
pub use db::*;
pub use http::*;
pub use proc::*;
pub use quic_client::*;
pub use redis::*;
pub use tls::*;
pub use tools::*;

use std::net::{TcpListener as StdListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (the OS picks it).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A port with nothing listening (bound once, then closed).
pub fn closed_port() -> u16 {
    free_port()
}

pub fn wait_for_port(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Calls `done` every `every` until it returns true (then true) or `limit` has passed
/// (then false).
pub fn wait_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// A port for a switchyard listener that no other caller in this process gets and that
/// sits below the ephemeral range, so backends (`bind(0)`) and client sockets never take
/// it between the choice and switchyard's bind. Checked free when handed out.
pub fn listen_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static SEED: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let low: usize = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(32768);
    let span = low.saturating_sub(2048).min(12000);
    if span < 1000 {
        return free_port();
    }
    let start = low - span;
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as usize)
            .unwrap_or(0);
        (std::process::id() as usize).wrapping_mul(7919) ^ nanos
    });
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (start + (seed.wrapping_add(n)) % span) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

/// True once something listens on 127.0.0.1:`port` (or the IPv4/IPv6 wildcard),
/// judged from /proc/net/tcp{,6} without connecting to it.
pub fn is_listening(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|file| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                cols.len() > 3
                    && cols[1].ends_with(&hex)
                    && cols[3] == "0A"
                    && (cols[1].starts_with("0100007F")
                        || cols[1].starts_with("00000000")
                        || cols[1].starts_with("00000000000000000000000000000000"))
            })
    })
}

/// A TCP connection to 127.0.0.1:`port` from `ip` (a loopback address), 5 s timeouts.
pub fn connect_from(ip: &str, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(format!("{ip}:0").parse().expect("ip"))
            .expect("bind");
        let to = format!("127.0.0.1:{port}").parse().expect("addr");
        let s = tokio::time::timeout(Duration::from_secs(5), sock.connect(to))
            .await
            .expect("connect timed out")
            .expect("connect");
        s.into_std().expect("into_std")
    });
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}
