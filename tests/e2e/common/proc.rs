//! The switchyard process under test: starting it on a config written to a temporary
//! directory, reading its stderr, reloading, signalling and waiting for processes, and
//! `-t` config checks.

use super::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A running switchyard process with its config and logs in a temporary directory.
pub struct Switchyard {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub access_log: PathBuf,
    pub stderr_path: PathBuf,
}

/// Writes `yaml` to a temp dir; `{dir}` in it is replaced by that directory.
pub fn write_config(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = yaml.replace("{dir}", &dir.path().display().to_string());
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, yaml).expect("write config");
    (dir, path)
}

impl Switchyard {
    /// Starts switchyard with `yaml` (a configuration's text) and waits until every
    /// port in `ports` accepts connections (10 s at most).
    pub fn start(yaml: &str, ports: &[u16]) -> Switchyard {
        Self::start_with_env(yaml, ports, &[])
    }

    /// `start` with a typed configuration (`common::config`).
    pub fn start_config(config: &serde_json::Value, ports: &[u16]) -> Switchyard {
        Self::start(&super::config::config_text(config), ports)
    }

    pub fn start_with_env(yaml: &str, ports: &[u16], env: &[(&str, &str)]) -> Switchyard {
        let (dir, config_path) = write_config(yaml);
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(BIN);
        cmd.arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start switchyard");
        let mut s = Switchyard {
            child,
            access_log: dir.path().join("access.log"),
            dir,
            config_path,
            stderr_path,
        };
        for port in ports {
            if !wait_for_port(*port, Duration::from_secs(10)) {
                let _ = s.child.kill();
                panic!(
                    "switchyard did not listen on {port}; stderr:\n{}",
                    s.stderr()
                );
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("switchyard exited with {status}; stderr:\n{}", s.stderr());
            }
        }
        s
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The access log's JSON lines, waiting (2 s at most) until at least `n` are there.
    pub fn access_entries(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let entries: Vec<Value> = std::fs::read_to_string(&self.access_log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if entries.len() >= n || Instant::now() > deadline {
                return entries;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `switchyard -t -c FILE` (plus `extra` args) on `yaml`.
pub fn check_config(yaml: &str) -> (Output, PathBuf, tempfile::TempDir) {
    check_config_env(yaml, &[])
}

pub fn check_config_env(yaml: &str, env: &[(&str, &str)]) -> (Output, PathBuf, tempfile::TempDir) {
    let (dir, path) = write_config(yaml);
    let mut cmd = Command::new(BIN);
    cmd.arg("-t").arg("-c").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run switchyard -t");
    (out, path, dir)
}

impl Switchyard {
    /// Sends `signal` (e.g. "-HUP") to the process with kill(1).
    pub fn signal(&self, signal: &str) {
        signal_process(signal, self.pid());
    }

    /// Replaces the configuration file (`{dir}` is replaced as in `write_config`).
    pub fn rewrite_config(&self, yaml: &str) {
        let yaml = yaml.replace("{dir}", &self.dir.path().display().to_string());
        let tmp = self.dir.path().join("switchyard.yaml.new");
        std::fs::write(&tmp, yaml).expect("write new config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }

    /// How many times `needle` occurs in stderr so far.
    pub fn stderr_count(&self, needle: &str) -> usize {
        self.stderr().matches(needle).count()
    }

    /// Waits (bounded by `limit`) until `needle` occurs at least `count` times in stderr.
    pub fn wait_stderr(&self, needle: &str, count: usize, limit: Duration) -> bool {
        wait_until(limit, Duration::from_millis(20), || {
            self.stderr_count(needle) >= count
        })
    }

    /// Sends SIGHUP and waits (10 s at most) until the metrics listener on `metrics`
    /// counts one successful reload, failing the test (with stderr) if it does not.
    pub fn reload_counted(&self, metrics: u16) {
        self.signal("-HUP");
        let reloads = wait_metric(
            metrics,
            "switchyard_config_reloads_total",
            &[("result", "success")],
            1.0,
        );
        assert_eq!(reloads, 1.0, "reload applied; stderr:\n{}", self.stderr());
    }

    /// Like `wait_stderr`, failing the test (with stderr) when `needle` does not come;
    /// returns how long it took.
    pub fn expect_stderr(&self, needle: &str, count: usize, limit: Duration) -> Duration {
        let t = Instant::now();
        assert!(
            self.wait_stderr(needle, count, limit),
            "no {needle:?} (x{count}) within {limit:?}; stderr:\n{}",
            self.stderr()
        );
        t.elapsed()
    }
}

/// The log line of a health check taking backend `addr` out.
pub fn went_down(addr: &str) -> String {
    format!("backend {addr} healthy -> unhealthy")
}

/// The log line of a health check bringing backend `addr` back.
pub fn came_up(addr: &str) -> String {
    format!("backend {addr} unhealthy -> healthy")
}

/// Sends `sig` (e.g. "-INT") to `pid` with kill(1); false if that failed.
pub fn send_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Sends `signal` to `pid` with kill(1), failing the test if that fails.
pub fn signal_process(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// Is `pid` a live (not zombie) process?
pub fn pid_alive(pid: u32) -> bool {
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

/// Waits (`limit` at most) until process `pid` is gone; false if it still runs.
pub fn wait_pid_gone(pid: u32, limit: Duration) -> bool {
    wait_until(limit, Duration::from_millis(25), || !pid_alive(pid))
}

/// Reads a live pid other than `not` from `pid_file`, waiting `limit` at most.
pub fn wait_pid_file(pid_file: &Path, not: Option<u32>, limit: Duration) -> Option<u32> {
    let mut pid = None;
    wait_until(limit, Duration::from_millis(25), || {
        pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|p| Some(*p) != not && pid_alive(*p));
        pid.is_some()
    });
    pid
}

/// Kills the processes of these pids on drop (daemonised instances are not our children).
pub struct PidGuard(pub Vec<u32>);

impl Drop for PidGuard {
    fn drop(&mut self) {
        for pid in &self.0 {
            if pid_alive(*pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// A switchyard command without the inherited $SWITCHYARD_CONFIG / $SWITCHYARD_LOG.
pub fn switchyard_command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("SWITCHYARD_CONFIG")
        .env_remove("SWITCHYARD_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Polls `child` until it exits, at most `limit`: its exit status, or None.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(limit, Duration::from_millis(20), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// Waits for `child` to exit, `limit` at most; kills it (SIGKILL) if it has not.
pub fn wait_or_kill(child: &mut Child, limit: Duration) {
    if wait_exit(child, limit).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Switchyard {
    /// Like `start`, but waits for the ports to be listening without connecting to
    /// them (for TCP services, where a probe connection would be a proxied session).
    pub fn start_without_probe(yaml: &str, ports: &[u16]) -> Switchyard {
        let (dir, config_path) = write_config(yaml);
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let child = Command::new(BIN)
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start switchyard");
        let mut s = Switchyard {
            child,
            access_log: dir.path().join("access.log"),
            dir,
            config_path,
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ports.iter().all(|p| is_listening(*p)) {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("switchyard exited with {status}; stderr:\n{}", s.stderr());
            }
            if Instant::now() > deadline {
                let _ = s.child.kill();
                panic!(
                    "switchyard did not listen on all of {ports:?}; stderr:\n{}",
                    s.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        s
    }
}

/// The resident set size of process `pid` in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}
