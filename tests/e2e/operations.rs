//! Zero-downtime operations (SPEC §2, §9 "Signals"): SIGHUP reloads and SIGQUIT upgrades
//! under a keep-alive client load, SIGTERM with requests in flight, SIGUSR1 access-log
//! reopen, the upgrade of a daemonised process with its pid file, and `/readyz` while
//! draining.
use crate::common::config::*;
use crate::common::*;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Processes

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A switchyard we spawned ourselves (for `-u`); killed on drop.
struct Proc {
    child: Child,
    stderr: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn log(&self) -> String {
        read(&self.stderr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `switchyard -u [extra] -c config` and waits (5 s at most) until it waits on
/// `sock` for the listening sockets. The caller then sends SIGQUIT to the old process.
fn start_upgrade(config: &Path, sock: &Path, stderr: PathBuf, extra: &[&str]) -> Proc {
    let _ = std::fs::remove_file(sock);
    let child = switchyard_command()
        .stdout(Stdio::null())
        .arg("-u")
        .args(extra)
        .arg("-c")
        .arg(config)
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start switchyard -u");
    let mut p = Proc { child, stderr };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        if let Ok(Some(status)) = p.child.try_wait() {
            // `-u -d`: the launcher may not be the one waiting; only fail on an error.
            if !status.success() {
                panic!(
                    "switchyard -u exited with {status} before taking over; stderr:\n{}",
                    p.log()
                );
            }
        }
        if Instant::now() > deadline {
            panic!(
                "switchyard -u never opened {}; stderr:\n{}",
                sock.display(),
                p.log()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    p
}

// ---------------------------------------------------------------------------------------
// A keep-alive HTTP/1.1 client

/// One persistent connection used for sequential requests. It reconnects only when the
/// server closed the connection cleanly after a complete response (EOF seen before the
/// next request is sent, or `Connection: close` on the response); a refused connect, a
/// reset, a timeout or a truncated or missing response is an error.
struct KeepAlive {
    port: u16,
    conn: Option<TcpStream>,
    connects: usize,
}

impl KeepAlive {
    fn new(port: u16) -> KeepAlive {
        KeepAlive {
            port,
            conn: None,
            connects: 0,
        }
    }

    fn get(&mut self, path: &str) -> Result<Reply, String> {
        if let Some(c) = &self.conn {
            match idle_state(c) {
                Ok(true) => self.conn = None, // closed cleanly between requests
                Ok(false) => {}
                Err(e) => {
                    self.conn = None;
                    return Err(format!("idle keep-alive connection: {e}"));
                }
            }
        }
        if self.conn.is_none() {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
            let c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| format!("connect: {e}"))?;
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.set_nodelay(true);
            self.conn = Some(c);
            self.connects += 1;
        }
        let reused = self.connects;
        let c = self.conn.as_mut().expect("connection");
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        if let Err(e) = c.write_all(req.as_bytes()) {
            self.conn = None;
            return Err(format!("write (connection #{reused}): {e}"));
        }
        match read_response(c) {
            Ok((reply, close)) => {
                if close {
                    self.conn = None;
                }
                Ok(reply)
            }
            Err(e) => {
                self.conn = None;
                Err(format!("{e} (connection #{reused})"))
            }
        }
    }
}

/// Ok(true): the server closed the connection (EOF); Ok(false): open and quiet;
/// Err: reset, or bytes nobody asked for.
fn idle_state(c: &TcpStream) -> Result<bool, String> {
    c.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    let r = c.peek(&mut b);
    let _ = c.set_nonblocking(false);
    match r {
        Ok(0) => Ok(true),
        Ok(_) => Err("unsolicited bytes from the server".into()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one complete response (Content-Length or chunked framing, or until EOF with
/// `Connection: close`); returns it and whether the server closes the connection.
fn read_response(c: &mut TcpStream) -> Result<(Reply, bool), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut more = |buf: &mut Vec<u8>, c: &mut TcpStream| -> Result<bool, String> {
        if Instant::now() > deadline {
            return Err(format!(
                "no complete response within 5 s ({} bytes)",
                buf.len()
            ));
        }
        match c.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) => Err(format!("read after {} bytes: {e}", buf.len())),
        }
    };
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        if !more(&mut buf, c)? {
            return Err(format!(
                "connection closed after {} bytes, before a complete response head",
                buf.len()
            ));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let reply = parse_reply(&head).ok_or_else(|| format!("unparsable response head {head:?}"))?;
    let http10 = head.starts_with("HTTP/1.0");
    let mut close = http10
        || reply
            .headers
            .get("connection")
            .is_some_and(|v| v.iter().any(|v| v.eq_ignore_ascii_case("close")));
    let chunked = reply
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if let Some(len) = reply
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while buf.len() < head_end + len {
            if !more(&mut buf, c)? {
                return Err(format!(
                    "truncated body: {} of {len} bytes",
                    buf.len() - head_end
                ));
            }
        }
        if buf.len() > head_end + len {
            return Err("bytes after the response body".into());
        }
    } else if chunked {
        while !buf[head_end..].ends_with(b"0\r\n\r\n") {
            if !more(&mut buf, c)? {
                return Err("truncated chunked body".into());
            }
        }
    } else if reply.status != 204 && reply.status != 304 {
        // Delimited by the close.
        while more(&mut buf, c)? {}
        close = true;
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let reply = parse_reply(&text).unwrap_or(reply);
    Ok((reply, close))
}

// ---------------------------------------------------------------------------------------
// Client load

#[derive(Default)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
    connects: usize,
    configs: HashMap<String, usize>,
}

/// `threads` clients, each with one keep-alive connection, sending sequential GETs back
/// to back (the next request goes out as soon as the previous response is complete)
/// until stopped (120 s at most).
struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Tally>>,
}

impl Load {
    fn start(port: u16, threads: usize, phase: Arc<Mutex<String>>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let handles = (0..threads)
            .map(|t| {
                let (stop, phase) = (stop.clone(), phase.clone());
                std::thread::spawn(move || {
                    let mut client = KeepAlive::new(port);
                    let mut tally = Tally::default();
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < Duration::from_secs(120)
                    {
                        n += 1;
                        let path = format!("/load/{t}/{n}");
                        let at = started.elapsed();
                        let why = match client.get(&path) {
                            Ok(r) if r.status == 200 => {
                                tally.ok += 1;
                                let tag = r.header("x-config").unwrap_or("none").to_string();
                                *tally.configs.entry(tag).or_insert(0) += 1;
                                None
                            }
                            Ok(r) => Some(format!("status {}", r.status)),
                            Err(e) => Some(e),
                        };
                        if let Some(why) = why {
                            let phase = phase.lock().map(|p| p.clone()).unwrap_or_default();
                            tally.failures.push(format!(
                                "client {t} {path} at {:.3}s during [{phase}]: {why}",
                                at.as_secs_f64()
                            ));
                        }
                    }
                    tally.connects = client.connects;
                    tally
                })
            })
            .collect();
        Load { stop, handles }
    }

    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for h in self.handles {
            let t = h.join().expect("client thread");
            total.ok += t.ok;
            total.connects += t.connects;
            total.failures.extend(t.failures);
            for (k, v) in t.configs {
                *total.configs.entry(k).or_insert(0) += v;
            }
        }
        total
    }
}

fn set_phase(phase: &Mutex<String>, text: String) {
    if let Ok(mut p) = phase.lock() {
        *p = text;
    }
}

// ---------------------------------------------------------------------------------------
// 1. Reloads and upgrades under load

/// Two backends; the route stamps `X-Config: TAG` and `X-Reload: N` on every response.
fn tagged_config(port: u16, a: &Backend, b: &Backend, tag: &str, n: usize) -> Value {
    let headers = json!({ "set": { "X-Config": tag, "X-Reload": n.to_string() } });
    config_of(
        json!([listener("web", port)]),
        json!([pool("web", &[a.address(), b.address()])]),
        json!([with(
            route("all", "web"),
            json!({ "response_headers": headers })
        )]),
    )
}

#[test]
fn reloads_and_upgrades_under_keepalive_load_fail_no_request() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let port = listen_port();
    let mut first = Switchyard::start_config(&tagged_config(port, &a, &b, "A", 0), &[port]);
    let dir = first.dir.path().to_path_buf();
    let r = get(port, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-config"), Some("A"));

    let phase = Arc::new(Mutex::new("warm-up".to_string()));
    let load = Load::start(port, 4, phase.clone());
    std::thread::sleep(Duration::from_millis(500));

    // 20 valid reloads alternating B / A, and one invalid file half-way.
    let mut last = ("A", 0usize);
    for i in 1..=20usize {
        if i == 11 {
            set_phase(&phase, "invalid reload".into());
            let invalid = json!({
                "pools": [{ "name": "web", "backends": [{ "address": "127.0.0.1:1", "weight": 0 }] }],
            });
            first.rewrite_config(&config_text(&invalid));
            first.signal("-HUP");
            assert!(
                first.wait_stderr(
                    "the running configuration is unchanged",
                    1,
                    Duration::from_secs(10)
                ),
                "the invalid reload was not reported; stderr:\n{}",
                first.stderr()
            );
            let r = get(port, "/check");
            assert_eq!(r.status, 200, "the old configuration keeps serving");
            assert_eq!(r.header("x-config"), Some(last.0));
            assert_eq!(r.header("x-reload"), Some(last.1.to_string().as_str()));
        }
        let tag = if i % 2 == 1 { "B" } else { "A" };
        set_phase(&phase, format!("reload {i} to {tag}"));
        first.rewrite_config(&config_text(&tagged_config(port, &a, &b, tag, i)));
        first.signal("-HUP");
        assert!(
            first.wait_stderr("reloaded ", i, Duration::from_secs(10)),
            "reload {i} was not logged; stderr:\n{}",
            first.stderr()
        );
        let r = get(port, "/check");
        assert_eq!(r.header("x-config"), Some(tag), "reload {i} applied");
        assert_eq!(r.header("x-reload"), Some(i.to_string().as_str()));
        last = (tag, i);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        first.stderr_count("the running configuration is unchanged"),
        1
    );

    // Three upgrades in a row, each with the same configuration file.
    let sock = dir.join("upgrade.sock");
    let mut current: Option<Proc> = None;
    let mut old_exits = Vec::new();
    for u in 1..=3 {
        let new = start_upgrade(
            &first.config_path,
            &sock,
            dir.join(format!("stderr-upgrade-{u}.log")),
            &[],
        );
        let old_pid = current.as_ref().map(|p| p.pid()).unwrap_or(first.pid());
        set_phase(&phase, format!("upgrade {u}: SIGQUIT to {old_pid}"));
        signal_process("-QUIT", old_pid);
        let status = match current.as_mut() {
            None => wait_exit(&mut first.child, Duration::from_secs(30)),
            Some(p) => wait_exit(&mut p.child, Duration::from_secs(30)),
        };
        let old_log = current.as_ref().map(|p| p.log()).unwrap_or(first.stderr());
        let status = status.unwrap_or_else(|| {
            panic!("upgrade {u}: the old process {old_pid} did not exit within 30 s; stderr:\n{old_log}")
        });
        old_exits.push(status);
        let mut new = new;
        assert!(
            matches!(new.child.try_wait(), Ok(None)),
            "upgrade {u}: the new process exited; stderr:\n{}",
            new.log()
        );
        set_phase(&phase, format!("after upgrade {u}"));
        current = Some(new);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let tally = load.finish();
    let current = current.expect("final process");

    let total = tally.ok + tally.failures.len();
    eprintln!(
        "operations load: {total} requests, {} ok, {} failed, {} connections opened, X-Config seen {:?}, old processes exited with {:?}",
        tally.ok,
        tally.failures.len(),
        tally.connects,
        tally.configs,
        old_exits
    );
    // A failure about 5 s after a SIGQUIT is the old process closing a keep-alive
    // connection (Pingora's shutdown broadcast after CLOSE_TIMEOUT) while the client's
    // next request is on its way: the last response did not say `Connection: close`.
    assert!(
        tally.failures.is_empty(),
        "{} of {total} requests failed across 20 reloads and 3 upgrades:\n{}\nfinal process stderr:\n{}",
        tally.failures.len(),
        tally.failures.iter().take(30).cloned().collect::<Vec<_>>().join("\n"),
        current.log()
    );
    assert!(total >= 1000, "only {total} requests ran");
    assert!(
        tally.configs.contains_key("A") && tally.configs.contains_key("B"),
        "the load saw both configurations: {:?}",
        tally.configs
    );
    assert!(
        a.count() > 0 && b.count() > 0,
        "both backends served (a {}, b {})",
        a.count(),
        b.count()
    );

    // The final process serves the last valid configuration.
    for _ in 0..4 {
        let r = get(port, "/final");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-config"), Some(last.0));
        assert_eq!(r.header("x-reload"), Some(last.1.to_string().as_str()));
    }
}

// ---------------------------------------------------------------------------------------
// 2. SIGTERM

fn with_shutdown_timeout(timeout: &str) -> Value {
    with(
        test_config(),
        json!({ "server": { "shutdown_timeout": timeout } }),
    )
}

/// `head` (the test configuration or a variant, and any other sections), listener `web`
/// on `port` and pool `web` with backend `b` (no health check) behind route `all`.
fn single_backend_config(head: Value, port: u16, b: &Backend) -> Value {
    let web = with(
        pool("web", &[b.address()]),
        json!({ "health_check": { "kind": "none" } }),
    );
    with(
        head,
        json!({
            "listeners": [listener("web", port)],
            "pools": [web],
            "routes": [route("all", "web")],
        }),
    )
}

/// A backend `name` answering after `delay` behind switchyard with `shutdown_timeout`,
/// and a GET of `path` sent to it that has reached the backend.
struct InFlight {
    backend: Backend,
    sy: Switchyard,
    port: u16,
    request: JoinHandle<Result<u16, String>>,
}

impl InFlight {
    fn start(name: &str, delay: Duration, shutdown_timeout: &str, path: &str) -> InFlight {
        let b = Backend::start_with(name, Behaviour::with_delay(delay));
        let port = listen_port();
        let config = single_backend_config(with_shutdown_timeout(shutdown_timeout), port, &b);
        let sy = Switchyard::start_config(&config, &[port]);
        let request = get_in_background(port, path);
        assert!(
            b.wait_count(1, Duration::from_secs(5)),
            "the request reached the backend"
        );
        InFlight {
            backend: b,
            sy,
            port,
            request,
        }
    }
}

/// A GET with its own connection on a thread: the status, or why there was none.
fn get_in_background(port: u16, path: &str) -> JoinHandle<Result<u16, String>> {
    let path = path.to_string();
    std::thread::spawn(move || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| format!("write: {e}"))?;
        let (reply, _) = read_response(&mut c)?;
        Ok(reply.status)
    })
}

/// Tries new connections until one is refused (bounded); true when refused.
fn wait_refused(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ => {}
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_finishes_the_request_in_flight_refuses_new_connections_and_exits_0() {
    let InFlight {
        backend: _backend,
        mut sy,
        port,
        request: in_flight,
    } = InFlight::start("slow", Duration::from_secs(2), "5s", "/slow");
    let sent = Instant::now();
    sy.signal("-TERM");
    assert!(
        wait_refused(port, Duration::from_secs(1)),
        "new connections are still accepted after SIGTERM; stderr:\n{}",
        sy.stderr()
    );
    assert!(
        matches!(sy.child.try_wait(), Ok(None)),
        "the process must still be finishing the request when refusing; stderr:\n{}",
        sy.stderr()
    );
    let result = in_flight.join().expect("client thread");
    let answered = sent.elapsed();
    // shutdown_timeout 5 s plus a generous margin.
    let status = wait_exit(&mut sy.child, Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "still running {:?} after SIGTERM; stderr:\n{}",
            sent.elapsed(),
            sy.stderr()
        )
    });
    let exited = sent.elapsed();
    assert_eq!(
        result,
        Ok(200),
        "the in-flight request (2 s at the backend) must complete within shutdown_timeout 5s; \
         the client saw the end {answered:?} after SIGTERM, the process exited with {status} \
         {exited:?} after SIGTERM; stderr:\n{}",
        sy.stderr()
    );
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sy.stderr());
}

#[test]
fn sigterm_gives_up_on_a_long_request_after_shutdown_timeout_and_exits_0() {
    // The backend answers after 6 s, well after shutdown_timeout (1 s) plus the margin
    // allowed for the exit (3 s).
    let InFlight {
        backend: _backend,
        mut sy,
        request: in_flight,
        ..
    } = InFlight::start("slower", Duration::from_secs(6), "1s", "/slower");
    let sent = Instant::now();
    sy.signal("-TERM");
    let status = wait_exit(&mut sy.child, Duration::from_secs(4)).unwrap_or_else(|| {
        panic!(
            "still running {:?} after SIGTERM with shutdown_timeout 1s; stderr:\n{}",
            sent.elapsed(),
            sy.stderr()
        )
    });
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sy.stderr());
    let result = in_flight.join().expect("client thread");
    assert_ne!(
        result,
        Ok(200),
        "the request could not have completed before the exit"
    );
}

// ---------------------------------------------------------------------------------------
// 3. SIGUSR1

fn access_paths(path: &Path) -> Vec<String> {
    read(path)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["path"].as_str().map(str::to_string))
        .collect()
}

/// Waits (bounded) until the access log at `path` has at least `n` entries.
fn wait_access(path: &Path, n: usize, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let paths = access_paths(path);
        if paths.len() >= n || Instant::now() > deadline {
            return paths;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigusr1_reopens_the_access_log_after_a_rename() {
    let b = Backend::start("logged");
    let port = listen_port();
    let sy = Switchyard::start_config(&single_backend_config(test_config(), port, &b), &[port]);
    let log = sy.access_log.clone();
    let rotated = sy.dir.path().join("access.log.1");
    for i in 0..5 {
        assert_eq!(get(port, &format!("/before/{i}")).status, 200);
    }
    let before = wait_access(&log, 5, Duration::from_secs(3));
    assert_eq!(before.len(), 5, "lines before the rotation: {before:?}");

    std::fs::rename(&log, &rotated).expect("rotate the access log");
    sy.signal("-USR1");
    assert!(
        sy.wait_stderr("SIGUSR1: reopening", 1, Duration::from_secs(5)),
        "SIGUSR1 was not logged; stderr:\n{}",
        sy.stderr()
    );
    for i in 0..5 {
        assert_eq!(get(port, &format!("/after/{i}")).status, 200);
    }
    let after = wait_access(&log, 5, Duration::from_secs(3));
    assert_eq!(
        after,
        (0..5).map(|i| format!("/after/{i}")).collect::<Vec<_>>(),
        "the new access.log holds exactly the new requests; stderr:\n{}",
        sy.stderr()
    );
    // Nothing late reaches the rotated file.
    std::thread::sleep(Duration::from_millis(300));
    let old = access_paths(&rotated);
    assert_eq!(
        old,
        (0..5).map(|i| format!("/before/{i}")).collect::<Vec<_>>(),
        "the rotated file keeps only the old requests"
    );
    assert!(pid_alive(sy.pid()), "SIGUSR1 must not stop the process");
}

// ---------------------------------------------------------------------------------------
// 4. Daemon and the upgrade of a daemon

/// A non-panicking GET (one request per connection).
fn try_get(port: u16, path: &str) -> Result<Reply, String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    c.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    read_response(&mut c).map(|(r, _)| r)
}

#[test]
fn daemon_writes_its_pid_file_and_a_daemonised_upgrade_replaces_it() {
    let b = Backend::start("daemon");
    let port = listen_port();
    let (dir, config) = write_config(&config_text(&single_backend_config(
        test_config(),
        port,
        &b,
    )));
    let pid_file = dir.path().join("switchyard.pid");
    let mut guard = PidGuard(Vec::new());

    // switchyard -d: the command returns, the daemon writes the pid file and serves.
    let launcher_log = dir.path().join("launcher.log");
    let mut launcher = Proc {
        child: switchyard_command()
            .stdout(Stdio::null())
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stderr(std::fs::File::create(&launcher_log).expect("stderr file"))
            .spawn()
            .expect("start switchyard -d"),
        stderr: launcher_log,
    };
    let pid1 = wait_pid_file(&pid_file, None, Duration::from_secs(10));
    if let Some(p) = pid1 {
        guard.0.push(p);
    }
    let status = wait_exit(&mut launcher.child, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("switchyard -d did not return; stderr:\n{}", launcher.log()));
    assert!(status.success(), "switchyard -d exited with {status}");
    let pid1 =
        pid1.unwrap_or_else(|| panic!("no pid file with a live pid; stderr:\n{}", launcher.log()));
    assert_ne!(pid1, launcher.pid(), "the pid file names the daemon");
    assert!(
        wait_for_port(port, Duration::from_secs(10)),
        "daemon listens"
    );
    assert_eq!(get(port, "/").status, 200);

    // switchyard -u -d, then SIGQUIT to the running daemon.
    let sock = dir.path().join("upgrade.sock");
    let mut upgrader = start_upgrade(&config, &sock, dir.path().join("upgrader.log"), &["-d"]);
    signal_process("-QUIT", pid1);
    let pid2 = wait_pid_file(&pid_file, Some(pid1), Duration::from_secs(15));
    if let Some(p) = pid2 {
        guard.0.push(p);
    }
    let status = wait_exit(&mut upgrader.child, Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "switchyard -u -d did not return; stderr:\n{}",
            upgrader.log()
        )
    });
    assert!(
        status.success(),
        "switchyard -u -d exited with {status}; stderr:\n{}",
        upgrader.log()
    );
    let pid2 = pid2.unwrap_or_else(|| {
        panic!(
            "the pid file was not updated to a new live pid (still {:?}); stderr:\n{}",
            read(&pid_file).trim(),
            upgrader.log()
        )
    });
    assert_ne!(pid2, upgrader.pid(), "the pid file names the new daemon");

    // Requests keep succeeding while the old daemon drains and exits.
    let mut failures = Vec::new();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while pid_alive(pid1) && Instant::now() < deadline {
        match try_get(port, "/during") {
            Ok(r) if r.status == 200 => {}
            Ok(r) => failures.push(format!("status {}", r.status)),
            Err(e) => failures.push(e),
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        wait_pid_gone(pid1, Duration::from_secs(1)),
        "the old daemon {pid1} still runs 20 s after SIGQUIT"
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during the daemon upgrade: {failures:?}",
        failures.len()
    );
    assert!(pid_alive(pid2), "the new daemon runs");
    assert_eq!(
        read(&pid_file).trim().parse::<u32>().ok(),
        Some(pid2),
        "the pid file names the new daemon"
    );
    for _ in 0..5 {
        let r = get(port, "/after");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-backend"), Some("daemon"));
    }

    signal_process("-TERM", pid2);
    assert!(
        wait_pid_gone(pid2, Duration::from_secs(10)),
        "the new daemon {pid2} still runs 10 s after SIGTERM"
    );
}

// ---------------------------------------------------------------------------------------
// 5. /readyz while draining

/// Sends one GET on an open keep-alive connection and reads the response.
fn keepalive_get(c: &mut TcpStream, path: &str) -> Result<(Reply, bool), String> {
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    read_response(c)
}

#[test]
fn readyz_answers_503_on_an_open_connection_after_sigterm() {
    let b = Backend::start_with("busy", Behaviour::with_delay(Duration::from_secs(3)));
    let port = listen_port();
    let admin = listen_port();
    // grace_period 10s: the process lives until the slow request is done (exit when idle).
    let head = with(
        with(with_shutdown_timeout("5s"), admin_on(admin, &[])),
        json!({ "server": { "grace_period": "10s" } }),
    );
    let mut sy = Switchyard::start_config(&single_backend_config(head, port, &b), &[port, admin]);
    let mut conn = TcpStream::connect(("127.0.0.1", admin)).expect("connect admin");
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let (r, close) = keepalive_get(&mut conn, "/readyz").expect("readyz before SIGTERM");
    assert_eq!(r.status, 200, "ready while serving: {}", r.body);
    assert!(!close, "the admin connection stays open");

    // A slow request keeps the process alive while it drains.
    let in_flight = get_in_background(port, "/busy");
    assert!(
        b.wait_count(1, Duration::from_secs(5)),
        "the request reached the backend"
    );
    sy.signal("-TERM");
    assert!(
        sy.wait_stderr("SIGTERM", 1, Duration::from_secs(5)),
        "SIGTERM was not logged; stderr:\n{}",
        sy.stderr()
    );
    let draining = keepalive_get(&mut conn, "/readyz");
    let (r, _) = draining.unwrap_or_else(|e| {
        panic!(
            "the open admin connection got no /readyz answer after SIGTERM ({e}); stderr:\n{}",
            sy.stderr()
        )
    });
    assert_eq!(r.status, 503, "draining: {}", r.body);
    assert!(r.body.contains("draining"), "body: {}", r.body);
    assert!(
        wait_refused(admin, Duration::from_secs(1)),
        "the admin port still accepts new connections after SIGTERM"
    );
    assert!(
        wait_refused(port, Duration::from_secs(1)),
        "the proxy port still accepts new connections after SIGTERM"
    );
    assert_eq!(in_flight.join().expect("client thread"), Ok(200));
    let status = wait_exit(&mut sy.child, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running after SIGTERM; stderr:\n{}", sy.stderr()));
    assert_eq!(status.code(), Some(0));
}

/// A reload or log reopen sent right after start, before the signal handlers run (found
/// by benches/soak.sh: the default action killed the process), leaves it serving.
#[test]
fn sighup_and_sigusr1_right_after_start_do_not_kill_the_process() {
    let a = Backend::start("a");
    let port = listen_port();
    let p = with(
        pool("p", &[a.address()]),
        json!({ "health_check": { "kind": "none" } }),
    );
    let config = config_of(
        json!([listener("web", port)]),
        json!([p]),
        json!([route("all", "p")]),
    );
    let (dir, config) = write_config(&config_text(&config));
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let child = std::process::Command::new(BIN)
        .arg("-c")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let pid = child.0.id().to_string();
    // From the first log line (the process is past `main`'s start) until it listens.
    let stderr_path = dir.path().join("stderr.log");
    assert!(wait_until(
        Duration::from_secs(10),
        Duration::from_millis(2),
        || { std::fs::read_to_string(&stderr_path).is_ok_and(|l| !l.is_empty()) }
    ));
    for _ in 0..20 {
        for sig in ["-HUP", "-USR1"] {
            let _ = std::process::Command::new("kill")
                .args([sig, &pid])
                .status();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(wait_for_port(port, Duration::from_secs(10)), "listening");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "still running:\n{log}"
    );
    assert_eq!(get(port, "/").status, 200);
}
