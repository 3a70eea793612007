//! The command line (SPEC §1, §2): -V, -t, -c/--config, $SWITCHYARD_CONFIG, the default
//! path, $SWITCHYARD_LOG, -d (daemon with pid_file) and -u with SIGQUIT (graceful upgrade).
mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_CONFIG: &str = "/etc/switchyard/switchyard.yaml";

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A plain command: no inherited $SWITCHYARD_CONFIG / $SWITCHYARD_LOG.
fn switchyard() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("SWITCHYARD_CONFIG")
        .env_remove("SWITCHYARD_LOG")
        .stdin(Stdio::null());
    cmd
}

fn valid_yaml(port: u16, backend: &str) -> String {
    format!(
        "{TEST_SERVER}
listeners:
  - name: web
    listen: 127.0.0.1:{port}
pools:
  - name: web
    backends:
      - address: {backend}
routes:
  - name: all
    pool: web
"
    )
}

const INVALID_YAML: &str = "
pools:
  - name: web
    backends:
      - address: 127.0.0.1:18081
        weight: 0
";

/// Is `pid` a live (not zombie) process?
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        // With /proc mounted, no entry means no process; without it, ask kill -0.
        Err(_) if Path::new("/proc/self").exists() => false,
        Err(_) => Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
    }
}

fn send_signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// Kills a process by pid on drop (for daemonised instances we did not spawn directly).
struct PidGuard(Option<u32>);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            if pid_alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// A child we spawned ourselves; killed on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A non-panicking GET (one request per connection): the status, or why there was none.
fn try_get(port: u16, path: &str) -> Result<u16, String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) => {
                if out.is_empty() {
                    return Err(format!("read: {e}"));
                }
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&out);
    parse_reply(&text)
        .map(|r| r.status)
        .ok_or_else(|| format!("no HTTP reply: {text:?}"))
}

#[test]
fn version_flags_print_name_and_crate_version() {
    let expected = format!("switchyard {}", env!("CARGO_PKG_VERSION"));
    for flag in ["-V", "--version"] {
        let out = switchyard().arg(flag).output().expect("run switchyard");
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", stderr_of(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.lines().next(),
            Some(expected.as_str()),
            "{flag} stdout:\n{stdout}"
        );
    }
}

#[test]
fn test_flag_exits_0_for_valid_and_1_for_invalid() {
    let b = Backend::start("a");
    let (_d1, good) = write_config(&valid_yaml(free_port(), &b.address()));
    let (_d2, bad) = write_config(INVALID_YAML);
    for flag in ["-t", "--test"] {
        let out = switchyard()
            .arg(flag)
            .arg("-c")
            .arg(&good)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", stderr_of(&out));
        let out = switchyard()
            .arg(flag)
            .arg("-c")
            .arg(&bad)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{flag}: {}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains(&bad.display().to_string()),
            "the error should name the file: {}",
            stderr_of(&out)
        );
    }
}

#[test]
fn config_long_form_is_read() {
    let (_d1, good) = write_config(&valid_yaml(free_port(), "127.0.0.1:18081"));
    let (_d2, bad) = write_config(INVALID_YAML);
    let out = switchyard()
        .arg("--config")
        .arg(&good)
        .arg("-t")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = switchyard()
        .arg("--config")
        .arg(&bad)
        .arg("-t")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains(&format!("{}:", bad.display())),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn switchyard_config_env_is_used_without_c() {
    let (_d1, good) = write_config(&valid_yaml(free_port(), "127.0.0.1:18081"));
    let (_d2, bad) = write_config(INVALID_YAML);
    let out = switchyard()
        .arg("-t")
        .env("SWITCHYARD_CONFIG", &good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = switchyard()
        .arg("-t")
        .env("SWITCHYARD_CONFIG", &bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains(&format!("{}:", bad.display())),
        "the errors should name $SWITCHYARD_CONFIG's file: {}",
        stderr_of(&out)
    );
}

#[test]
fn c_flag_wins_over_switchyard_config_env() {
    let (_d1, good) = write_config(&valid_yaml(free_port(), "127.0.0.1:18081"));
    let (_d2, bad) = write_config(INVALID_YAML);
    let out = switchyard()
        .arg("-t")
        .arg("-c")
        .arg(&good)
        .env("SWITCHYARD_CONFIG", &bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = switchyard()
        .arg("-t")
        .arg("-c")
        .arg(&bad)
        .env("SWITCHYARD_CONFIG", &good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
}

#[test]
fn default_config_path_is_used_without_c_or_env() {
    let out = switchyard().arg("-t").output().expect("run");
    if Path::new(DEFAULT_CONFIG).exists() {
        eprintln!("{DEFAULT_CONFIG} exists on this machine: not asserting the missing-file error");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains(DEFAULT_CONFIG),
        "the error should name {DEFAULT_CONFIG}: {}",
        stderr_of(&out)
    );
}

fn error_level_yaml(port: u16, backend: &str) -> String {
    valid_yaml(port, backend).replace("  level: info", "  level: error")
}

/// Waits (bounded) until `stderr_path` contains `needle`.
fn wait_for_text(path: &Path, needle: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn switchyard_log_env_overrides_log_level() {
    let b = Backend::start("a");
    let port = free_port();
    let yaml = error_level_yaml(port, &b.address());
    assert!(yaml.contains("level: error"), "test bug: {yaml}");
    let sy = Switchyard::start_with_env(&yaml, &[port], &[("SWITCHYARD_LOG", "info")]);
    assert_eq!(get(port, "/").status, 200);
    assert!(
        wait_for_text(&sy.stderr_path, "starting", Duration::from_secs(5)),
        "SWITCHYARD_LOG=info should log the startup line; stderr:\n{}",
        sy.stderr()
    );
}

#[test]
fn log_level_error_hides_the_startup_line() {
    let b = Backend::start("a");
    let port = free_port();
    let yaml = error_level_yaml(port, &b.address());
    let (dir, path) = write_config(&yaml);
    let stderr_path = dir.path().join("stderr.log");
    let child = switchyard()
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start switchyard");
    let _guard = ChildGuard(child);
    assert!(
        wait_for_port(port, Duration::from_secs(10)),
        "did not listen; stderr:\n{}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    assert_eq!(get(port, "/").status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        !stderr.contains("starting"),
        "log.level error must hide info lines; stderr:\n{stderr}"
    );
}

#[test]
fn daemon_mode_writes_pid_file_and_serves() {
    let b = Backend::start("d");
    let port = free_port();
    let (dir, path) = write_config(&valid_yaml(port, &b.address()));
    let pid_file: PathBuf = dir.path().join("switchyard.pid");
    let launcher_stderr = dir.path().join("launcher-stderr.log");
    let mut launcher = ChildGuard(
        switchyard()
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&launcher_stderr).expect("stderr file"))
            .spawn()
            .expect("start switchyard -d"),
    );
    let mut guard = PidGuard(None);

    // The pid file appears within 10 s holding a live pid.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pid = None;
    while Instant::now() < deadline {
        if let Some(p) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            if pid_alive(p) {
                pid = Some(p);
                guard.0 = pid;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // The command itself returns (bounded).
    let launcher_deadline = Instant::now() + Duration::from_secs(10);
    let mut returned = None;
    while Instant::now() < launcher_deadline {
        if let Ok(Some(status)) = launcher.0.try_wait() {
            returned = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let launcher_log = std::fs::read_to_string(&launcher_stderr).unwrap_or_default();
    let pid = pid.unwrap_or_else(|| {
        panic!("no pid_file with a live pid within 10 s; stderr:\n{launcher_log}")
    });
    let status =
        returned.unwrap_or_else(|| panic!("switchyard -d did not return; stderr:\n{launcher_log}"));
    assert!(
        status.success(),
        "switchyard -d exited with {status}; stderr:\n{launcher_log}"
    );
    assert_ne!(pid, launcher.0.id(), "the pid file names the daemon");

    assert!(
        wait_for_port(port, Duration::from_secs(10)),
        "daemon listens"
    );
    let r = get(port, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-backend"), Some("d"));

    send_signal("-TERM", pid);
    let deadline = Instant::now() + Duration::from_secs(15);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !pid_alive(pid),
        "daemon {pid} still running 15 s after SIGTERM"
    );
    guard.0 = None;
}

#[test]
fn sigquit_with_upgrade_hands_over_without_failed_requests() {
    let b = Backend::start("u");
    let port = free_port();
    let yaml = valid_yaml(port, &b.address());
    let mut old = Switchyard::start(&yaml, &[port]);
    assert_eq!(get(port, "/").status, 200);

    // Instance 2 with -u and the same configuration; it waits on upgrade_sock.
    let logs = tempfile::tempdir().expect("tempdir");
    let new_stderr = logs.path().join("new-stderr.log");
    let new = switchyard()
        .arg("-u")
        .arg("-c")
        .arg(&old.config_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&new_stderr).expect("stderr file"))
        .spawn()
        .expect("start switchyard -u");
    let mut new = ChildGuard(new);
    let sock = old.dir.path().join("upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        sock.exists(),
        "the new instance never opened upgrade_sock; stderr:\n{}",
        std::fs::read_to_string(&new_stderr).unwrap_or_default()
    );

    // Sequential requests across the handover: SIGQUIT goes out after the 10th.
    let mut failures = Vec::new();
    let mut sent = 0usize;
    let mut old_exit = None;
    let mut after_exit = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent < 2000 && Instant::now() < deadline {
        if sent == 10 {
            send_signal("-QUIT", old.pid());
        }
        match try_get(port, "/") {
            Ok(200) => {}
            Ok(code) => failures.push(format!("request {sent}: status {code}")),
            Err(e) => failures.push(format!("request {sent}: {e}")),
        }
        sent += 1;
        if old_exit.is_none() {
            if let Ok(Some(status)) = old.child.try_wait() {
                old_exit = Some(status);
            }
        } else {
            after_exit += 1;
        }
        if sent >= 200 && after_exit >= 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let new_log = std::fs::read_to_string(&new_stderr).unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed across the upgrade: {failures:#?}\nold stderr:\n{}\nnew stderr:\n{new_log}",
        failures.len(),
        old.stderr()
    );
    assert!(
        old_exit.is_some(),
        "the old instance did not exit after SIGQUIT; stderr:\n{}",
        old.stderr()
    );
    assert!(sent >= 200, "only {sent} requests ran");
    assert!(
        matches!(new.0.try_wait(), Ok(None)),
        "the new instance exited; stderr:\n{new_log}"
    );
    // The new instance keeps serving on its own.
    for _ in 0..10 {
        let r = get(port, "/");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-backend"), Some("u"));
    }
}
