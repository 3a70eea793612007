//! External programs: bounded runs of command-line tools (curl, h2load, ...), child
//! guards, and running servers unprivileged when the tests run as root.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process killed and reaped on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command-line tool with a time limit (it is killed past it); returns its output,
/// or None when the tool is not installed.
pub fn run_tool(program: &str, args: &[&str], limit: Duration) -> Option<Output> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    let mut child = child;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait for tool");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    Some(out)
}

/// Runs `cmd` with `input` on its stdin; its output (stdout and stderr captured).
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .unwrap_or_else(|e| panic!("cannot feed {cmd:?}: {e}"));
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("no output from {cmd:?}: {e}"))
}

/// Runs curl with `args` (20 s at most): (success, stdout, stderr). Fails the test when
/// curl is not installed.
pub fn curl(args: &[&str]) -> (bool, String, String) {
    let out = run_tool("curl", args, Duration::from_secs(20))
        .expect("curl is not installed (scripts/ensure-build-deps installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs h2load (nghttp2-client, 30 s at most) and returns its stdout.
pub fn h2load(args: &[&str]) -> String {
    let out = run_tool("h2load", args, Duration::from_secs(30))
        .expect("h2load is not installed: the test command must install nghttp2-client");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `cmd` with its output captured, killing it after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} did not finish within {limit:?}"));
            }
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("{cmd:?}: {e}"))
}

/// Like `run_bounded`, but only a zero exit counts: its trimmed stdout, else the error.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    let out = run_bounded(cmd, limit)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd:?} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The first of `names` found in `dirs` or on PATH.
pub fn find_program(names: &[&str], dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut all: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
    all.extend(std::env::split_paths(&path));
    for name in names {
        for dir in &all {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// True when the tests run as root (the owner of /proc/self is the effective user).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The uid and gid database servers run as when the tests run as root (nobody:nogroup).
pub const UNPRIVILEGED: u32 = 65534;

/// A command running `program` as an unprivileged user when the tests run as root
/// (PostgreSQL refuses to run as root), else as the current user.
pub fn unprivileged(program: &Path) -> Command {
    if running_as_root() {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={UNPRIVILEGED}"))
            .arg(format!("--regid={UNPRIVILEGED}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// A temporary directory under /tmp that the unprivileged user can write to.
pub fn shared_tempdir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("tempdir under /tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod tempdir");
    dir
}

/// Waits (`limit` at most, polling every `every`) until `ready(server)`; fails the test
/// with `log(server)` when time runs out or the process in `child(server)` exits first.
/// `what` ("postgres on PORT") names the server in the failure.
pub fn await_server<S>(
    server: &mut S,
    what: &str,
    (limit, every): (Duration, Duration),
    child: fn(&mut S) -> &mut Option<Child>,
    ready: fn(&S) -> bool,
    log: fn(&S) -> String,
) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(Ok(Some(status))) = child(server).as_mut().map(|c| c.try_wait()) {
            panic!("{what} exited with {status}; log:\n{}", log(server));
        }
        if ready(server) {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what} not ready; log:\n{}", log(server));
        }
        std::thread::sleep(every);
    }
}

/// Whether `cmd` exits 0 within 5 s.
pub fn succeeds(cmd: &mut Command) -> bool {
    run_bounded(cmd, Duration::from_secs(5)).is_ok_and(|o| o.status.success())
}
