//! The command line (SPEC §1, §2): -V, -t, -c/--config, $SWITCHYARD_CONFIG, the default
//! path, $SWITCHYARD_LOG, -d (daemon with pid_file) and -u with SIGQUIT (graceful upgrade).
use crate::common::config::*;
use crate::common::*;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_CONFIG: &str = "/etc/switchyard/switchyard.yaml";

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn valid_config(port: u16, backend: &str) -> Value {
    config_of(
        json!([listener("web", port)]),
        json!([pool("web", &[backend.to_string()])]),
        json!([route("all", "web")]),
    )
}

/// Only a pool, and its backend has weight 0.
fn invalid_config() -> Value {
    json!({
        "pools": [{ "name": "web", "backends": [{ "address": "127.0.0.1:18081", "weight": 0 }] }],
    })
}

/// A valid and an invalid configuration file (keep the directories alive).
fn good_and_bad(backend: &str) -> ((tempfile::TempDir, PathBuf), (tempfile::TempDir, PathBuf)) {
    (
        write_config(&config_text(&valid_config(free_port(), backend))),
        write_config(&config_text(&invalid_config())),
    )
}

/// Runs `cmd`, asserting its exit code (`what` starts the failure message); its stderr.
fn exits_with(cmd: &mut Command, code: i32, what: &str) -> String {
    let out = cmd.output().expect("run");
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(code), "{what}{stderr}");
    stderr
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
        let out = switchyard_command()
            .arg(flag)
            .output()
            .expect("run switchyard");
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
    let ((_d1, good), (_d2, bad)) = good_and_bad(&b.address());
    for flag in ["-t", "--test"] {
        let what = format!("{flag}: ");
        exits_with(
            switchyard_command().arg(flag).arg("-c").arg(&good),
            0,
            &what,
        );
        let stderr = exits_with(switchyard_command().arg(flag).arg("-c").arg(&bad), 1, &what);
        assert!(
            stderr.contains(&bad.display().to_string()),
            "the error should name the file: {stderr}"
        );
    }
}

#[test]
fn config_long_form_is_read() {
    let ((_d1, good), (_d2, bad)) = good_and_bad("127.0.0.1:18081");
    exits_with(
        switchyard_command().arg("--config").arg(&good).arg("-t"),
        0,
        "",
    );
    let stderr = exits_with(
        switchyard_command().arg("--config").arg(&bad).arg("-t"),
        1,
        "",
    );
    assert!(stderr.contains(&format!("{}:", bad.display())), "{stderr}");
}

#[test]
fn switchyard_config_env_is_used_without_c() {
    let ((_d1, good), (_d2, bad)) = good_and_bad("127.0.0.1:18081");
    let with_env = |path: &Path| {
        let mut cmd = switchyard_command();
        cmd.arg("-t").env("SWITCHYARD_CONFIG", path);
        cmd
    };
    exits_with(&mut with_env(&good), 0, "");
    let stderr = exits_with(&mut with_env(&bad), 1, "");
    assert!(
        stderr.contains(&format!("{}:", bad.display())),
        "the errors should name $SWITCHYARD_CONFIG's file: {stderr}"
    );
}

#[test]
fn c_flag_wins_over_switchyard_config_env() {
    let ((_d1, good), (_d2, bad)) = good_and_bad("127.0.0.1:18081");
    let with_c_and_env = |c: &Path, env: &Path| {
        let mut cmd = switchyard_command();
        cmd.arg("-t").arg("-c").arg(c).env("SWITCHYARD_CONFIG", env);
        cmd
    };
    exits_with(&mut with_c_and_env(&good, &bad), 0, "");
    exits_with(&mut with_c_and_env(&bad, &good), 1, "");
}

#[test]
fn default_config_path_is_used_without_c_or_env() {
    let out = switchyard_command().arg("-t").output().expect("run");
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

fn error_level_config(port: u16, backend: &str) -> Value {
    with(
        valid_config(port, backend),
        json!({ "log": { "level": "error" } }),
    )
}

#[test]
fn switchyard_log_env_overrides_log_level() {
    let b = Backend::start("a");
    let port = free_port();
    let text = config_text(&error_level_config(port, &b.address()));
    let sy = Switchyard::start_with_env(&text, &[port], &[("SWITCHYARD_LOG", "info")]);
    assert_eq!(get(port, "/").status, 200);
    assert!(
        sy.wait_stderr("starting", 1, Duration::from_secs(5)),
        "SWITCHYARD_LOG=info should log the startup line; stderr:\n{}",
        sy.stderr()
    );
}

#[test]
fn log_level_error_hides_the_startup_line() {
    let b = Backend::start("a");
    let port = free_port();
    let (dir, path) = write_config(&config_text(&error_level_config(port, &b.address())));
    let stderr_path = dir.path().join("stderr.log");
    let child = switchyard_command()
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
    let (dir, path) = write_config(&config_text(&valid_config(port, &b.address())));
    let pid_file: PathBuf = dir.path().join("switchyard.pid");
    let launcher_stderr = dir.path().join("launcher-stderr.log");
    let mut launcher = ChildGuard(
        switchyard_command()
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&launcher_stderr).expect("stderr file"))
            .spawn()
            .expect("start switchyard -d"),
    );
    let mut guard = PidGuard(Vec::new());

    // The pid file appears within 10 s holding a live pid.
    let pid = wait_pid_file(&pid_file, None, Duration::from_secs(10));
    guard.0.extend(pid);
    // The command itself returns (bounded).
    let returned = wait_exit(&mut launcher.0, Duration::from_secs(10));
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

    signal_process("-TERM", pid);
    assert!(
        wait_pid_gone(pid, Duration::from_secs(15)),
        "daemon {pid} still running 15 s after SIGTERM"
    );
    guard.0.clear();
}

#[test]
fn sigquit_with_upgrade_hands_over_without_failed_requests() {
    let b = Backend::start("u");
    let port = free_port();
    let mut old = Switchyard::start_config(&valid_config(port, &b.address()), &[port]);
    assert_eq!(get(port, "/").status, 200);

    // Instance 2 with -u and the same configuration; it waits on upgrade_sock.
    let logs = tempfile::tempdir().expect("tempdir");
    let new_stderr = logs.path().join("new-stderr.log");
    let new = switchyard_command()
        .arg("-u")
        .arg("-c")
        .arg(&old.config_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&new_stderr).expect("stderr file"))
        .spawn()
        .expect("start switchyard -u");
    let mut new = ChildGuard(new);
    let sock = old.dir.path().join("upgrade.sock");
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            sock.exists()
        }),
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
            signal_process("-QUIT", old.pid());
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
