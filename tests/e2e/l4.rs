//! L4 services end to end (SPEC §3 tcp_services and the postgres / mysql health checks,
//! §6 tcp metrics, §7 the TCP session log line, §9 Health; issue 6): queries through the
//! proxy to private PostgreSQL and MariaDB instances, protocol health checks taking a
//! stopped or frozen server out and bringing it back, hundreds of mysql checks against
//! a server with max_connect_errors=5, and raw TCP services with large transfers both
//! ways, half-close, idle timeout, a refusing backend, the session log and metrics.
//!
//! The database tests print `SKIP` and pass when PostgreSQL / MariaDB are not installed
//! (CI installs `postgresql`, `mariadb-server` and `mariadb-client`).
use crate::common::config::*;
use crate::common::*;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// The test configuration with `tcp_services` and `pools` (JSON lists), and a metrics
/// listener when `metrics` is set.
fn services_config(metrics: Option<u16>, services: Value, pools: Value) -> Value {
    let mut config = with(
        test_config(),
        json!({ "tcp_services": services, "pools": pools }),
    );
    if let Some(p) = metrics {
        config["metrics"] = json!({ "listen": format!("127.0.0.1:{p}") });
    }
    config
}

/// `services_config`'s file text.
fn config(metrics: Option<u16>, services: Value, pools: Value) -> String {
    config_text(&services_config(metrics, services, pools))
}

fn service(name: &str, port: u16, protocol: &str, pool: &str, idle: &str) -> Value {
    json!({
        "name": name,
        "listen": format!("127.0.0.1:{port}"),
        "protocol": protocol,
        "pool": pool,
        "idle_timeout": idle,
    })
}

/// A pool over `backends` balanced by `algorithm`, with extra pool keys `keys`.
fn pool_of(name: &str, algorithm: &str, backends: &[String], keys: Value) -> Value {
    with(
        pool(name, backends),
        with(json!({ "algorithm": algorithm }), keys),
    )
}

/// The database check of the issue: fast, flipping on one result, logging in as the
/// health-check user. The kind is left to the default of the service's protocol.
fn db_check() -> Value {
    json!({ "health_check": {
        "interval": "300ms",
        "timeout": "1s",
        "healthy_threshold": 1,
        "unhealthy_threshold": 1,
        "user": "switchyard_health",
    } })
}

/// `keys` with `retries: 0`.
fn no_retries(keys: Value) -> Value {
    with(json!({ "retries": 0 }), keys)
}

/// Generous bound for a health transition of a 300 ms check on a busy machine.
const TRANSITION: Duration = Duration::from_secs(15);

/// Starts two instances at once (each takes a few seconds); `None` = skip.
fn two<T: Send>(start: fn() -> Option<T>) -> Option<(T, T)> {
    std::thread::scope(|s| {
        let other = s.spawn(start);
        let one = start();
        let other = other
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        Some((one?, other?))
    })
}

/// The TCP session lines of the access log (waiting up to 2 s for `n` lines).
fn tcp_entries(sy: &Switchyard, n: usize) -> Vec<Value> {
    sy.access_entries(n)
        .into_iter()
        .filter(|e| e.get("service").is_some())
        .collect()
}

/// Checks the fields of a TCP session line (SPEC §7) that do not depend on the session.
fn check_entry_shape(e: &Value, service: &str) {
    assert_eq!(e["service"], service, "{e}");
    assert_eq!(e["client_ip"], "127.0.0.1", "{e}");
    let ts = e["ts"].as_str().unwrap_or_else(|| panic!("no ts in {e}"));
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
        "ts is not RFC 3339 UTC with milliseconds: {e}"
    );
    let d = e["duration_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("duration_ms is not a number: {e}"));
    assert!((0.0..600_000.0).contains(&d), "{e}");
    for k in ["backend", "bytes_rx", "bytes_tx"] {
        assert!(e.get(k).is_some(), "no {k} in {e}");
    }
}

/// `n` queries through the proxy on `port`, each of which must succeed; the
/// `host:port` of the server that answered each (`query` returns the server's port).
fn answers(
    sy: &Switchyard,
    n: usize,
    query: impl Fn() -> Result<String, String>,
) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for i in 0..n {
        let port = query().unwrap_or_else(|e| {
            panic!(
                "query {i} of {n} through the proxy failed: {e}\nstderr:\n{}",
                sy.stderr()
            )
        });
        *seen.entry(format!("127.0.0.1:{port}")).or_insert(0) += 1;
    }
    seen
}

// ----------------------------------------------------------------------------------
// PostgreSQL
// ----------------------------------------------------------------------------------

const PG_PORT: &str = "SELECT inet_server_port()";

#[test]
fn postgres_round_robin_spreads_queries_and_logs_each_session() {
    let Some((a, b)) = two(Postgres::start) else {
        return;
    };
    let lp = listen_port();
    let cfg = config(
        None,
        json!([service("pg", lp, "postgres", "pg", "1h")]),
        json!([pool_of(
            "pg",
            "round_robin",
            &[a.address(), b.address()],
            db_check()
        )]),
    );
    let sy = Switchyard::start_without_probe(&cfg, &[lp]);
    let seen = answers(&sy, 10, || a.psql(lp, PG_PORT));
    for db in [&a, &b] {
        let n = seen.get(&db.address()).copied().unwrap_or(0);
        assert!(n >= 3, "{} answered {n} of 10: {seen:?}", db.address());
    }
    // One session line per connection, naming the server that answered it.
    let entries = tcp_entries(&sy, 10);
    assert_eq!(entries.len(), 10, "{entries:?}");
    let mut logged: HashMap<String, usize> = HashMap::new();
    for e in &entries {
        check_entry_shape(e, "pg");
        assert!(e["bytes_rx"].as_u64().unwrap_or(0) > 0, "{e}");
        assert!(e["bytes_tx"].as_u64().unwrap_or(0) > 0, "{e}");
        *logged
            .entry(e["backend"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(
        logged, seen,
        "session log backends vs servers that answered"
    );
    assert_eq!(
        sy.stderr_count("healthy -> unhealthy"),
        0,
        "{}",
        sy.stderr()
    );
}

#[test]
fn postgres_least_conn_sends_new_sessions_to_the_less_busy_instance() {
    let Some((a, b)) = two(Postgres::start) else {
        return;
    };
    let (lp, mp) = (listen_port(), listen_port());
    let cfg = config(
        Some(mp),
        json!([service("pg", lp, "postgres", "pg", "1h")]),
        json!([pool_of(
            "pg",
            "least_conn",
            &[a.address(), b.address()],
            db_check()
        )]),
    );
    let sy = Switchyard::start_without_probe(&cfg, &[lp, mp]);
    let active = |want: f64| {
        let got = wait_metric(
            mp,
            "switchyard_tcp_active_connections",
            &[("service", "pg")],
            want,
        );
        assert_eq!(got, want, "active sessions of pg");
    };
    // A long session through the proxy: whichever instance took it is the busy one.
    let _holder = a.psql_background(lp, "SELECT pg_sleep(60)", "switchyard_holder");
    let holding =
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'switchyard_holder'";
    let deadline = Instant::now() + Duration::from_secs(15);
    let (busy, idle) = loop {
        if a.psql(a.port, holding).as_deref() == Ok("1") {
            break (&a, &b);
        }
        if b.psql(b.port, holding).as_deref() == Ok("1") {
            break (&b, &a);
        }
        assert!(
            Instant::now() < deadline,
            "the held session reached neither instance; stderr:\n{}",
            sy.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    active(1.0);
    // Each new session goes to the instance with fewer open connections.
    for i in 0..6 {
        let port = a
            .psql(lp, PG_PORT)
            .unwrap_or_else(|e| panic!("query {i}: {e}\nstderr:\n{}", sy.stderr()));
        assert_eq!(
            port,
            idle.port.to_string(),
            "query {i} went to the busy instance {}",
            busy.address()
        );
        // The session is over once the proxy has let go of it.
        active(1.0);
    }
}

#[test]
fn postgres_instance_stopped_or_frozen_is_taken_out_and_comes_back() {
    let Some((mut a, b)) = two(Postgres::start) else {
        return;
    };
    let lp = listen_port();
    // retries: 0, so a connection sent to a dead instance would fail: every query below
    // succeeding shows the check, not a retry, kept the instance out.
    let keys = no_retries(db_check());
    let cfg = config(
        None,
        json!([service("pg", lp, "postgres", "pg", "1h")]),
        json!([pool_of(
            "pg",
            "round_robin",
            &[a.address(), b.address()],
            keys
        )]),
    );
    let sy = Switchyard::start_without_probe(&cfg, &[lp]);
    let seen = answers(&sy, 4, || b.psql(lp, PG_PORT));
    assert_eq!(seen.len(), 2, "both instances answer at first: {seen:?}");

    // Stopped (fast shutdown): out after the postgres check notices.
    a.stop();
    sy.expect_stderr(&went_down(&a.address()), 1, TRANSITION);
    let seen = answers(&sy, 20, || b.psql(lp, PG_PORT));
    assert_eq!(seen.get(&b.address()), Some(&20), "{seen:?}");

    // Started again: back in.
    a.restart();
    sy.expect_stderr(&came_up(&a.address()), 1, TRANSITION);
    let seen = answers(&sy, 6, || b.psql(lp, PG_PORT));
    assert_eq!(seen.len(), 2, "both instances answer again: {seen:?}");

    // Frozen: the kernel still completes TCP connections for it (a TCP check would
    // pass), but it answers no StartupMessage, so the postgres check takes it out.
    a.freeze();
    let probe = TcpStream::connect_timeout(
        &a.address().parse().expect("address"),
        Duration::from_secs(2),
    );
    assert!(probe.is_ok(), "a frozen postmaster still accepts TCP");
    drop(probe);
    sy.expect_stderr(&went_down(&a.address()), 2, TRANSITION);
    let seen = answers(&sy, 10, || b.psql(lp, PG_PORT));
    assert_eq!(seen.get(&b.address()), Some(&10), "{seen:?}");
    a.thaw();
    sy.expect_stderr(&came_up(&a.address()), 2, TRANSITION);
}

/// The README's way to keep a pool on the primary: a health-check user that only the
/// primary lets in (pg_hba.conf). The instance that rejects the user leaves that pool;
/// a pool checking with an ordinary user keeps both.
#[test]
fn postgres_check_user_rejected_by_pg_hba_takes_the_instance_out() {
    let Some((primary, replica)) = two(Postgres::start) else {
        return;
    };
    for pg in [&primary, &replica] {
        pg.psql(pg.port, "CREATE ROLE primary_only LOGIN")
            .unwrap_or_else(|e| panic!("create role: {e}"));
    }
    replica.prepend_hba("host all primary_only 127.0.0.1/32 reject");
    let (writes, reads) = (listen_port(), listen_port());
    let services = json!([
        service("writes", writes, "postgres", "writes", "1h"),
        service("reads", reads, "postgres", "reads", "1h"),
    ]);
    let check = |user: &str| {
        no_retries(json!({ "health_check": {
            "interval": "300ms",
            "timeout": "1s",
            "healthy_threshold": 1,
            "unhealthy_threshold": 1,
            "user": user,
            "database": "postgres",
        } }))
    };
    let both = [primary.address(), replica.address()];
    let pools = json!([
        pool_of("writes", "round_robin", &both, check("primary_only")),
        pool_of("reads", "round_robin", &both, check("switchyard_health")),
    ]);
    let sy = Switchyard::start_without_probe(&config(None, services, pools), &[writes, reads]);
    let down = format!("pool writes {}", went_down(&replica.address()));
    sy.expect_stderr(&down, 1, TRANSITION);
    let line = sy
        .stderr()
        .lines()
        .find(|l| l.contains(&down))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains("pg_hba.conf"),
        "reason names pg_hba.conf: {line}"
    );
    let seen = answers(&sy, 8, || primary.psql(writes, PG_PORT));
    assert_eq!(seen.get(&primary.address()), Some(&8), "{seen:?}");
    let seen = answers(&sy, 8, || primary.psql(reads, PG_PORT));
    assert_eq!(seen.len(), 2, "the reads pool keeps both: {seen:?}");
    assert_eq!(sy.stderr_count("pool reads"), 0, "{}", sy.stderr());
    assert_eq!(
        sy.stderr_count(&format!("pool writes {}", went_down(&primary.address()))),
        0,
        "{}",
        sy.stderr()
    );
}

// ----------------------------------------------------------------------------------
// MariaDB
// ----------------------------------------------------------------------------------

const MY_PORT: &str = "SELECT @@port";

#[test]
fn mariadb_round_robin_and_failover() {
    let Some((mut a, b)) = two(Mariadb::start) else {
        return;
    };
    let lp = listen_port();
    let keys = no_retries(db_check());
    // Beside it, a pool whose check user does not exist: its login must fail.
    let nouser = listen_port();
    let mut nouser_check = db_check();
    nouser_check["health_check"]["user"] = json!("no_such_user");
    let cfg = config(
        None,
        json!([
            service("my", lp, "mysql", "my", "1h"),
            service("nouser", nouser, "mysql", "nouser", "1h"),
        ]),
        json!([
            pool_of("my", "round_robin", &[a.address(), b.address()], keys),
            pool_of("nouser", "round_robin", &[b.address()], nouser_check),
        ]),
    );
    let sy = Switchyard::start_without_probe(&cfg, &[lp, nouser]);
    sy.expect_stderr(
        &format!("pool nouser {}", went_down(&b.address())),
        1,
        TRANSITION,
    );
    assert!(
        sy.stderr().contains("no_such_user"),
        "reason names the user: {}",
        sy.stderr()
    );
    let seen = answers(&sy, 6, || b.query(lp, MY_PORT));
    assert_eq!(seen.len(), 2, "both servers answer: {seen:?}");
    assert!(seen.values().all(|n| *n >= 2), "{seen:?}");

    a.stop();
    sy.expect_stderr(&went_down(&a.address()), 1, TRANSITION);
    let seen = answers(&sy, 20, || b.query(lp, MY_PORT));
    assert_eq!(seen.get(&b.address()), Some(&20), "{seen:?}");

    a.restart();
    sy.expect_stderr(&came_up(&a.address()), 1, TRANSITION);
    let seen = answers(&sy, 6, || b.query(lp, MY_PORT));
    assert_eq!(seen.len(), 2, "both servers answer again: {seen:?}");
    assert_eq!(
        sy.stderr_count(&format!("pool my {}", went_down(&b.address()))),
        0,
        "{}",
        sy.stderr()
    );
    let entries = tcp_entries(&sy, 32);
    assert_eq!(entries.len(), 32, "one session line per connection");
    for e in &entries {
        check_entry_shape(e, "my");
    }
}

/// MariaDB never blocks 127.0.0.1 (loopback is exempt from the host cache, and
/// `--skip-name-resolve` disables it), so the blocking itself cannot be seen from a
/// test on 127.0.0.1. What would count against `max_connect_errors` from any other
/// host is a connection abandoned or botched during the handshake, which the server
/// counts in `Aborted_connects`: the checks must leave that (and `Aborted_clients`)
/// unchanged, and the server must keep accepting connections.
#[test]
fn mariadb_500_checks_leave_the_server_accepting_connections() {
    let Some(db) = Mariadb::start() else {
        return;
    };
    let lp = listen_port();
    let aborted_connects = db.status("Aborted_connects");
    let aborted_clients = db.status("Aborted_clients");
    let start = db.status("Connections");
    let mut mine = 0; // status queries of this test, each one connection
    let cfg = config(
        None,
        json!([service("my", lp, "mysql", "my", "1h")]),
        json!([pool_of(
            "my",
            "round_robin",
            &[db.address()],
            json!({ "health_check": {
                "interval": "10ms",
                "timeout": "1s",
                "healthy_threshold": 1,
                "unhealthy_threshold": 1,
                "user": "switchyard_health",
            } }),
        )]),
    );
    let sy = Switchyard::start_without_probe(&cfg, &[lp]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let checks = loop {
        std::thread::sleep(Duration::from_millis(500));
        mine += 1;
        let checks = db.status("Connections") - start - mine;
        if checks >= 500 {
            break checks;
        }
        assert!(
            Instant::now() < deadline,
            "only {checks} checks in 60 s; stderr:\n{}",
            sy.stderr()
        );
    };
    assert_eq!(
        db.query(db.port, "SELECT 1"),
        Ok("1".into()),
        "direct login"
    );
    assert_eq!(
        db.status("Aborted_connects"),
        aborted_connects,
        "{checks} checks aborted connections; server log:\n{}",
        db.log()
    );
    assert_eq!(db.status("Aborted_clients"), aborted_clients);
    assert_eq!(
        sy.stderr_count("healthy -> unhealthy"),
        0,
        "{}",
        sy.stderr()
    );
    assert_eq!(
        db.query(lp, "SELECT 1"),
        Ok("1".into()),
        "through the proxy"
    );

    // The counter does see a careless check: read the handshake and hang up.
    let mut s = TcpStream::connect(db.address()).expect("connect to mariadb");
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut greeting = [0u8; 4];
    s.read_exact(&mut greeting).expect("handshake");
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.status("Aborted_connects") == aborted_connects && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(db.status("Aborted_connects"), aborted_connects + 1);
}

// ----------------------------------------------------------------------------------
// Raw TCP
// ----------------------------------------------------------------------------------

/// Deterministic test data: xorshift64* words.
struct Gen(u64);

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Fills `buf` (a multiple of 8 bytes long).
    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_exact_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            word.copy_from_slice(&self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
    }
}

/// An FNV-1a style checksum over 8-byte words (order-sensitive), fed in any pieces.
#[derive(Clone, Copy)]
struct Sum {
    hash: u64,
    len: u64,
    pending: [u8; 8],
    used: usize,
}

impl Sum {
    fn new() -> Sum {
        Sum {
            hash: 0xcbf2_9ce4_8422_2325,
            len: 0,
            pending: [0; 8],
            used: 0,
        }
    }
    fn word(&mut self, w: u64) {
        self.hash = (self.hash ^ w)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
    }
    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while self.used > 0 && !data.is_empty() {
            self.pending[self.used] = data[0];
            self.used += 1;
            data = &data[1..];
            if self.used == 8 {
                self.word(u64::from_le_bytes(self.pending));
                self.used = 0;
            }
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.word(u64::from_le_bytes(b));
        }
        for &byte in words.remainder() {
            self.pending[self.used] = byte;
            self.used += 1;
        }
    }
    /// (length, checksum)
    fn finish(mut self) -> (u64, u64) {
        for i in 0..self.used {
            let b = self.pending[i];
            self.word(u64::from(b) | 0x100);
        }
        (self.len, self.hash)
    }
}

/// Sends `chunks` MiB of `Gen::new(seed)` data; returns its checksum.
fn send_data(s: &mut TcpStream, seed: u64, chunks: usize) -> std::io::Result<(u64, u64)> {
    let mut gen = Gen::new(seed);
    let mut sum = Sum::new();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..chunks {
        gen.fill(&mut buf);
        sum.update(&buf);
        s.write_all(&buf)?;
    }
    Ok(sum.finish())
}

/// Reads until EOF (each read bounded by the stream's read timeout, the whole by
/// `limit`); returns the checksum of everything read.
fn receive_all(s: &mut TcpStream, limit: Duration) -> std::io::Result<(u64, u64)> {
    let deadline = Instant::now() + limit;
    let mut sum = Sum::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if Instant::now() > deadline {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "transfer too slow",
            ));
        }
        match s.read(&mut buf)? {
            0 => return Ok(sum.finish()),
            n => sum.update(&buf[..n]),
        }
    }
}

/// A backend that reads the client's data to EOF, then answers with the length and
/// checksum it read (16 bytes) followed by `reply_mib` MiB of `Gen::new(99)` data.
fn reply_after_eof(reply_mib: usize) -> TcpServer {
    TcpServer::start(move |mut s| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        let Ok((len, hash)) = receive_all(&mut s, Duration::from_secs(60)) else {
            return;
        };
        let mut head = len.to_le_bytes().to_vec();
        head.extend_from_slice(&hash.to_le_bytes());
        if s.write_all(&head).is_ok() && send_data(&mut s, 99, reply_mib).is_ok() {
            let _ = s.shutdown(Shutdown::Write);
        }
    })
}

/// A backend that reads the client's data to EOF, then answers with `reply` bytes.
fn reply_bytes_after_eof(reply: usize) -> TcpServer {
    TcpServer::start(move |mut s| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        if receive_all(&mut s, Duration::from_secs(30)).is_ok() {
            let _ = s.write_all(&vec![b'x'; reply]);
            let _ = s.shutdown(Shutdown::Write);
        }
    })
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to switchyard");
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    s
}

/// One TCP service `name` on `port` in front of `backends`.
fn tcp_service(port: u16, name: &str, backends: &[String], keys: Value) -> (Value, Value) {
    (
        service(name, port, "tcp", name, "1h"),
        pool_of(name, "round_robin", backends, keys),
    )
}

#[test]
fn tcp_echo_64_mib_both_ways_at_once() {
    const MIB: usize = 64;
    let echo = TcpServer::echo();
    let lp = listen_port();
    let (svc, pl) = tcp_service(lp, "echo", &[echo.address()], json!({}));
    let sy = Switchyard::start_without_probe(&config(None, json!([svc]), json!([pl])), &[lp]);
    let mut reader = connect(lp);
    let mut writer = reader.try_clone().expect("clone stream");
    let sender = std::thread::spawn(move || {
        let sent = send_data(&mut writer, 7, MIB)?;
        writer.shutdown(Shutdown::Write)?;
        Ok::<_, std::io::Error>(sent)
    });
    let received = receive_all(&mut reader, Duration::from_secs(100));
    let sent = sender
        .join()
        .expect("sender thread")
        .unwrap_or_else(|e| panic!("sending failed: {e}; stderr:\n{}", sy.stderr()));
    let received =
        received.unwrap_or_else(|e| panic!("receiving failed: {e}; stderr:\n{}", sy.stderr()));
    assert_eq!(sent.0, (MIB << 20) as u64);
    assert_eq!(received, sent, "(bytes, checksum) received vs sent");
    let entries = tcp_entries(&sy, 1);
    assert_eq!(entries.len(), 1, "{entries:?}");
    check_entry_shape(&entries[0], "echo");
    assert_eq!(entries[0]["backend"], echo.address());
    assert_eq!(entries[0]["bytes_rx"], (MIB << 20) as u64);
    assert_eq!(entries[0]["bytes_tx"], (MIB << 20) as u64);
}

#[test]
fn tcp_half_close_client_still_gets_the_whole_reply() {
    let server = reply_after_eof(4);
    let lp = listen_port();
    let (svc, pl) = tcp_service(lp, "half", &[server.address()], json!({}));
    let sy = Switchyard::start_without_probe(&config(None, json!([svc]), json!([pl])), &[lp]);
    let mut s = connect(lp);
    let sent = send_data(&mut s, 5, 1).expect("send 1 MiB");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut reply = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "reading the reply after {} bytes: {e}; stderr:\n{}",
                reply.len(),
                sy.stderr()
            ),
        }
    }
    assert_eq!(
        reply.len(),
        16 + (4 << 20),
        "the whole reply after the half-close"
    );
    let got = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&reply[i..i + 8]);
        u64::from_le_bytes(b)
    };
    assert_eq!((got(0), got(8)), sent, "what the backend read before EOF");
    let mut expected = vec![0u8; 4 << 20];
    Gen::new(99).fill(&mut expected);
    assert!(reply[16..] == expected[..], "reply body differs");
    let entries = tcp_entries(&sy, 1);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["bytes_rx"], 1u64 << 20);
    assert_eq!(entries[0]["bytes_tx"], 16 + (4u64 << 20));
}

#[test]
fn tcp_idle_timeout_closes_idle_sessions_only() {
    let echo = TcpServer::echo();
    let lp = listen_port();
    let cfg = config(
        None,
        json!([service("echo", lp, "tcp", "echo", "500ms")]),
        json!([pool_of(
            "echo",
            "round_robin",
            &[echo.address()],
            no_health_check()
        )]),
    );
    let sy = Switchyard::start_without_probe(&cfg, &[lp]);
    let mut idle = connect(lp);
    idle.write_all(b"ping").expect("write");
    let mut four = [0u8; 4];
    idle.read_exact(&mut four).expect("echo");
    assert_eq!(&four, b"ping");
    let quiet_since = Instant::now();
    // Meanwhile a session that moves a byte every 100 ms for 2 s (4 idle timeouts).
    let busy = std::thread::spawn(move || {
        let mut s = connect(lp);
        for i in 0..20u8 {
            std::thread::sleep(Duration::from_millis(100));
            s.write_all(&[i])?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            if b[0] != i {
                return Err(std::io::Error::other(format!("echo {} for {i}", b[0])));
            }
        }
        Ok::<_, std::io::Error>(())
    });
    let _ = idle.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 16];
    let r = idle.read(&mut buf);
    let waited = quiet_since.elapsed();
    match &r {
        Ok(0) => {}
        Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("idle session not closed by the proxy: {other:?} after {waited:?}"),
    }
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(8),
        "closed after {waited:?} of silence (idle_timeout 500ms)"
    );
    // The backend side of the idle session is closed too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while echo.finished.load(std::sync::atomic::Ordering::Relaxed) == 0 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        echo.finished.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the backend connection of the idle session stayed open"
    );
    let busy = busy.join().expect("busy thread");
    assert!(
        busy.is_ok(),
        "an active session was cut: {busy:?}; stderr:\n{}",
        sy.stderr()
    );
    let entries = tcp_entries(&sy, 1);
    let e = entries
        .iter()
        .find(|e| e["bytes_rx"] == 4)
        .unwrap_or_else(|| panic!("no line for the idle session: {entries:?}"));
    assert_eq!(e["bytes_tx"], 4);
    assert!(e["duration_ms"].as_f64().unwrap_or(0.0) >= 500.0, "{e}");
}

#[test]
fn tcp_refused_backend_closes_the_client_and_the_proxy_keeps_running() {
    let dead = format!("127.0.0.1:{}", closed_port());
    let echo = TcpServer::echo();
    let (p_unchecked, p_checked, p_echo) = (listen_port(), listen_port(), listen_port());
    // One service tries the dead backend (no active check), one finds it out by its
    // TCP check first; both with no retries and no other backend.
    let (s1, pl1) = tcp_service(
        p_unchecked,
        "unchecked",
        std::slice::from_ref(&dead),
        no_retries(no_health_check()),
    );
    let (s2, pl2) = tcp_service(
        p_checked,
        "checked",
        std::slice::from_ref(&dead),
        no_retries(json!({ "health_check": {
            "interval": "200ms",
            "timeout": "1s",
            "unhealthy_threshold": 1,
        } })),
    );
    let (s3, pl3) = tcp_service(p_echo, "echo", &[echo.address()], json!({}));
    let cfg = config(None, json!([s1, s2, s3]), json!([pl1, pl2, pl3]));
    let mut sy = Switchyard::start_without_probe(&cfg, &[p_unchecked, p_checked, p_echo]);
    for port in [p_unchecked, p_checked] {
        for i in 0..20 {
            let mut s = connect(port);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let t = Instant::now();
            let _ = s.write_all(b"hello");
            let mut buf = [0u8; 16];
            let r = s.read(&mut buf);
            match &r {
                Ok(0) => {}
                Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                other => panic!(
                    "connection {i} to {port} not closed: {other:?} after {:?}",
                    t.elapsed()
                ),
            }
        }
    }
    assert!(
        sy.child.try_wait().ok().flatten().is_none(),
        "switchyard exited; stderr:\n{}",
        sy.stderr()
    );
    assert!(
        sy.stderr_count(&format!("connect to {dead} failed")) >= 1,
        "no log line for the refused connect; stderr:\n{}",
        sy.stderr()
    );
    let mut s = connect(p_echo);
    s.write_all(b"still here").expect("write");
    let mut back = [0u8; 10];
    s.read_exact(&mut back).expect("echo after the refusals");
    assert_eq!(&back, b"still here");
}

/// `server.deny` (an extension of SPEC §3): a denied client's connection is closed at
/// once and never reaches a backend; a client not in the list is proxied.
#[test]
fn tcp_server_deny_closes_a_denied_connection() {
    let with_deny = |port: u16, backend: &TcpServer, deny: &str| {
        let (svc, pl) = tcp_service(port, "echo", &[backend.address()], no_health_check());
        let config = with(
            services_config(None, json!([svc]), json!([pl])),
            json!({ "server": { "deny": [deny] } }),
        );
        Switchyard::start_without_probe(&config_text(&config), &[port])
    };

    let echo = TcpServer::echo();
    let port = listen_port();
    let sy = with_deny(port, &echo, "127.0.0.0/8");
    let mut s = connect(port);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"hello");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!(
            "the denied connection was not closed: {other:?}; stderr:\n{}",
            sy.stderr()
        ),
    }
    assert_eq!(
        echo.accepted.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a denied client reached the backend"
    );

    let echo2 = TcpServer::echo();
    let port2 = listen_port();
    let _sy2 = with_deny(port2, &echo2, "10.0.0.0/8");
    let mut s = connect(port2);
    s.write_all(b"hello").expect("write");
    let mut back = [0u8; 5];
    s.read_exact(&mut back).expect("echo through the service");
    assert_eq!(&back, b"hello");
}

#[test]
fn tcp_session_log_line_and_metrics_count_bytes() {
    const SENT: usize = 12_345;
    const REPLY: usize = 54_321;
    let server = reply_bytes_after_eof(REPLY);
    let (lp, mp) = (listen_port(), listen_port());
    let (svc, pl) = tcp_service(lp, "app", &[server.address()], json!({}));
    let sy =
        Switchyard::start_without_probe(&config(Some(mp), json!([svc]), json!([pl])), &[lp, mp]);
    let svc_label = [("service", "app")];
    let rx = [("service", "app"), ("direction", "rx")];
    let tx = [("service", "app"), ("direction", "tx")];
    assert_eq!(
        metric(mp, "switchyard_tcp_connections_total", &svc_label).unwrap_or(0.0),
        0.0
    );
    for round in 1..=2u32 {
        let n = f64::from(round);
        let mut s = connect(lp);
        s.write_all(&[b'a'; 100]).expect("write");
        assert_eq!(
            wait_metric(mp, "switchyard_tcp_active_connections", &svc_label, 1.0),
            1.0,
            "open session counted as active"
        );
        assert_eq!(
            wait_metric(mp, "switchyard_tcp_connections_total", &svc_label, n),
            n
        );
        s.write_all(&[b'b'; SENT - 100]).expect("write");
        s.shutdown(Shutdown::Write).expect("half-close");
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).expect("reply");
        assert_eq!(reply.len(), REPLY);
        drop(s);
        assert_eq!(
            wait_metric(mp, "switchyard_tcp_active_connections", &svc_label, 0.0),
            0.0,
            "closed session no longer active"
        );
        assert_eq!(
            wait_metric(mp, "switchyard_tcp_bytes_total", &rx, n * SENT as f64),
            n * SENT as f64,
            "rx = bytes read from clients"
        );
        assert_eq!(
            wait_metric(mp, "switchyard_tcp_bytes_total", &tx, n * REPLY as f64),
            n * REPLY as f64,
            "tx = bytes written to clients"
        );
        let entries = tcp_entries(&sy, round as usize);
        assert_eq!(entries.len(), round as usize, "{entries:?}");
        let e = &entries[round as usize - 1];
        check_entry_shape(e, "app");
        assert_eq!(e["backend"], server.address(), "{e}");
        assert_eq!(e["bytes_rx"], SENT as u64, "{e}");
        assert_eq!(e["bytes_tx"], REPLY as u64, "{e}");
    }
}

/// A reset on one side ends the session on the other side too, instead of leaving the
/// other connection open until `idle_timeout` (1 h here).
#[test]
fn tcp_reset_on_one_side_closes_the_other_side() {
    // Closing a socket with unread data in its receive buffer sends a RST.
    let echo = TcpServer::echo();
    let resetting = TcpServer::start(|s| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut one = [0u8; 1];
        let _ = s.peek(&mut one); // wait for the client's bytes, leave them unread
        std::thread::sleep(Duration::from_millis(100));
        drop(s);
    });
    let (p_echo, p_reset) = (listen_port(), listen_port());
    let (s1, pl1) = tcp_service(p_echo, "echo", &[echo.address()], no_health_check());
    let (s2, pl2) = tcp_service(p_reset, "reset", &[resetting.address()], no_health_check());
    let sy = Switchyard::start_without_probe(
        &config(None, json!([s1, s2]), json!([pl1, pl2])),
        &[p_echo, p_reset],
    );

    // The client resets: the backend connection must be closed.
    let mut c = connect(p_echo);
    c.write_all(b"unread echo").expect("write");
    std::thread::sleep(Duration::from_millis(300)); // the echo arrives, unread
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    while echo.finished.load(std::sync::atomic::Ordering::Relaxed) == 0 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        echo.finished.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the backend connection stayed open after the client reset; stderr:\n{}",
        sy.stderr()
    );

    // The backend resets: the client connection must be closed.
    let mut c = connect(p_reset);
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    c.write_all(b"never read").expect("write");
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    match &r {
        Ok(0) => {}
        Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!(
            "client connection still open {:?} after the backend reset: {other:?}",
            t.elapsed()
        ),
    }
}
